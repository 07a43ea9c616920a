//! An outsider's attacks on the task layer, judged by what README.md's
//! "Tasks" and "The `pubsub` command line" sections promise (written from
//! the README alone; the failures it found are fixed and stay covered
//! here: a panicking task, a result too large for NATS key-value, a
//! stopping worker holding a task for its eta). Redis and NATS at their
//! standard loopback ports; without them those cases report SKIPPED
//! (a failure under CI=true).
#![cfg(all(feature = "tasks", feature = "embedded", feature = "redis", feature = "nats"))]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot_free::Counts;
use pubsub::processor::{Backoff, ProcessorOptions, Shutdown};
use pubsub::tasks::{
    async_trait, Error, MemoryResultStore, NatsResultStore, RedisResultStore, ResultStore, SendOptions, Signature,
    Task, TaskContext, TaskError, TaskOptions, TaskState, Tasks, Worker,
};
use pubsub::{ConsumerOptions, InitialPosition, OutgoingMessage, PubSubBackend, Topic};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);
const REDIS: &str = "redis://127.0.0.1:6379";
const NATS: &str = "nats://127.0.0.1:4222";

mod parking_lot_free {
    use std::collections::HashMap;
    use std::sync::Mutex;
    /// Runs per task id.
    #[derive(Default)]
    pub struct Counts(pub Mutex<HashMap<String, usize>>);
    impl Counts {
        pub fn hit(&self, id: &str) -> usize {
            let mut m = self.0.lock().unwrap();
            let n = m.entry(id.to_string()).or_default();
            *n += 1;
            *n
        }
        pub fn get(&self, id: &str) -> usize {
            *self.0.lock().unwrap().get(id).unwrap_or(&0)
        }
        pub fn snapshot(&self) -> HashMap<String, usize> {
            self.0.lock().unwrap().clone()
        }
    }
}

fn uniq() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{:x}{}{}", nanos, std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

fn queue(tag: &str) -> Topic {
    format!("q1/outsider/{tag}{}/default", uniq()).parse().unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Embedded,
    Redis,
    Nats,
}

/// A backend and its result store.
type Env = (Arc<dyn PubSubBackend>, Arc<dyn ResultStore>);

/// The backend and result store of `kind`; `None` (the test is reported
/// skipped, or fails under CI=true) when its broker is not running.
async fn env(kind: Kind) -> Option<Env> {
    let made: Result<Env, pubsub::Error> = async {
        Ok(match kind {
            Kind::Embedded => (
                Arc::new(pubsub::embedded::EmbeddedBackend::memory()) as Arc<dyn PubSubBackend>,
                Arc::new(MemoryResultStore::new()) as Arc<dyn ResultStore>,
            ),
            Kind::Redis => (
                Arc::new(pubsub::redis::RedisBackend::connect(pubsub::redis::RedisConfig::new(REDIS)).await?) as _,
                Arc::new(RedisResultStore::connect(REDIS).await?) as _,
            ),
            Kind::Nats => (
                Arc::new(pubsub::nats::NatsBackend::connect(pubsub::nats::NatsConfig::new(NATS)).await?) as _,
                Arc::new(NatsResultStore::connect(NATS).await?) as _,
            ),
        })
    }
    .await;
    match made {
        Ok(env) => Some(env),
        Err(e) => {
            pubsub_core::testkit::broker_unavailable(&format!("tasks_outsider on {kind:?}"), &e);
            None
        }
    }
}

fn quick() -> TaskOptions {
    TaskOptions::default().with_backoff(Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        factor: 2.0,
    })
}

struct Add;

#[async_trait]
impl Task for Add {
    const NAME: &'static str = "add";
    type Args = (i64, i64);
    type Output = i64;
    async fn run(&self, (a, b): (i64, i64), _ctx: TaskContext) -> Result<i64, TaskError> {
        Ok(a + b)
    }
}

/// A worker with the attack tasks; `counts` counts runs per task id.
fn worker(
    backend: &Arc<dyn PubSubBackend>,
    store: &Arc<dyn ResultStore>,
    queue: &Topic,
    name: &str,
    counts: Arc<Counts>,
) -> Worker {
    let c1 = counts.clone();
    let c2 = counts.clone();
    let c3 = counts.clone();
    let c4 = counts.clone();
    let c5 = counts.clone();
    Worker::new(backend.clone(), store.clone(), queue.clone())
        .with_name(name)
        .register(Add)
        .register_fn("count", quick(), move |args, ctx| {
            let c = c1.clone();
            async move {
                c.hit(&ctx.id);
                Ok(args)
            }
        })
        .register_fn("boom", quick().with_max_retries(0), {
            let c = counts.clone();
            move |_a, ctx| {
                let c = c.clone();
                async move {
                    c.hit(&ctx.id);
                    if true {
                        panic!("kaboom in handler");
                    }
                    Ok(Value::Null)
                }
            }
        })
        .register_fn("huge", quick(), {
            let c = counts.clone();
            move |_a, ctx| {
                let c = c.clone();
                async move {
                    c.hit(&format!("huge-{}", ctx.id));
                    Ok(json!("x".repeat(1 << 20)))
                }
            }
        })
        // sleeps args[0] ms, counting the run at its start.
        .register_fn("nap", quick().with_max_retries(0), move |args, ctx| {
            let c = c2.clone();
            async move {
                c.hit(&ctx.id);
                let ms = args[0].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(json!(ms))
            }
        })
        // fails (retriable) until its attempt args[0].
        .register_fn(
            "flaky",
            TaskOptions::default().with_max_retries(3).with_backoff(Backoff {
                initial: Duration::from_millis(300),
                max: Duration::from_secs(2),
                factor: 2.0,
            }),
            move |args, ctx| {
                let c = c3.clone();
                async move {
                    let n = c.hit(&ctx.id);
                    let on = args[0].as_u64().unwrap() as usize;
                    if n < on {
                        return Err(TaskError::retry(format!("attempt {n} failed")));
                    }
                    Ok(json!(format!("ok on {n}")))
                }
            },
        )
        .register_fn("fail", quick().with_max_retries(0), |args, _c| async move {
            Err(TaskError::fatal(format!("refused {args}")))
        })
        .register_fn(
            "slow",
            quick().with_max_retries(1).with_time_limit(Duration::from_millis(300)),
            move |_a, ctx| {
                let c = c4.clone();
                async move {
                    c.hit(&ctx.id);
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    c.hit(&format!("{}-finished", ctx.id));
                    Ok(Value::Null)
                }
            },
        )
        .register_fn("sum", quick(), move |args, ctx| {
            let c = c5.clone();
            async move {
                c.hit("sum-callback");
                c.hit(&ctx.id);
                let (parts,): (Vec<Value>,) = serde_json::from_value(args).map_err(TaskError::fatal)?;
                Ok(json!(parts))
            }
        })
}

struct Rig {
    backend: Arc<dyn PubSubBackend>,
    store: Arc<dyn ResultStore>,
    queue: Topic,
    tasks: Tasks,
    counts: Arc<Counts>,
    shutdown: Shutdown,
    running: Vec<tokio::task::JoinHandle<pubsub::tasks::Result<Vec<pubsub::processor::ProcessorReport>>>>,
}

impl Rig {
    async fn start(kind: Kind, workers: usize, concurrency: usize, opts: Option<ProcessorOptions>) -> Option<Rig> {
        let (backend, store) = env(kind).await?;
        let queue = queue(&format!("{kind:?}").to_lowercase());
        let counts = Arc::new(Counts::default());
        let shutdown = Shutdown::new();
        let mut running = Vec::new();
        for n in 0..workers {
            let mut w = worker(&backend, &store, &queue, &format!("out{n}-{}", uniq()), counts.clone());
            if let Some(o) = &opts {
                w = w.with_processor_options(o.clone());
            }
            w = w.with_concurrency(concurrency);
            running.push(tokio::spawn(w.run(shutdown.clone())));
        }
        let tasks = Tasks::new(backend.clone(), store.clone(), queue.clone());
        Some(Rig {
            backend,
            store,
            queue,
            tasks,
            counts,
            shutdown,
            running,
        })
    }

    async fn stop(self) {
        self.shutdown.trigger();
        for r in self.running {
            r.await.unwrap().expect("worker run");
        }
        self.tasks.close().await.unwrap();
        self.backend.close().await.unwrap();
    }
}

// ---------------------------------------------------------------- results

/// README: get() gives "the typed output, or Error::TaskFailed with the
/// handler's message". A handler that panics must end in a failure, not a
/// result that never comes, and the worker must keep running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_handler_fails_the_task_and_worker_survives() {
    let Some(rig) = Rig::start(Kind::Embedded, 1, 2, None).await else {
        return;
    };
    let r = rig
        .tasks
        .send::<Value>(Signature::new("boom", ()).unwrap())
        .await
        .unwrap();
    let got = r.get(Duration::from_secs(10)).await;
    let info = r.info().await.unwrap();
    let after = rig.tasks.delay::<Add>((2, 3)).await.unwrap();
    let survived = after.get(WAIT).await;
    assert!(
        matches!(got, Err(Error::TaskFailed { .. })),
        "a panicking task: {got:?}, record {info:?}; a later task: {survived:?}"
    );
    assert_eq!(survived.unwrap(), 5, "the worker keeps running after a panic");
    rig.stop().await;
}

/// A 1 MB output is stored and returned on every result store.
async fn huge_output(kind: Kind) {
    let Some(rig) = Rig::start(kind, 1, 2, None).await else {
        return;
    };
    let r = rig
        .tasks
        .send::<String>(Signature::new("huge", ()).unwrap())
        .await
        .unwrap();
    let got = r.get(WAIT).await;
    let state = r.state().await;
    match got {
        Ok(s) => assert_eq!(s.len(), 1 << 20, "{kind:?}"),
        Err(e) => {
            let mut probe = pubsub::tasks::TaskRecord::new(format!("probe-{}", uniq()), "huge", TaskState::Success);
            probe.result = Some(json!("x".repeat(1 << 20)));
            println!(
                "{kind:?}: ResultStore::put of a 1 MB result: {:?}",
                rig.store.put(&probe).await
            );
            let runs = rig.counts.get(&format!("huge-{}", r.id()));
            tokio::time::sleep(Duration::from_secs(20)).await;
            panic!(
                "{kind:?}: 1 MB output: {e}; state {state:?}; runs of the task (max_retries 3): {runs} after 20 s, \
                 {} after 40 s, then state {:?}",
                rig.counts.get(&format!("huge-{}", r.id())),
                r.info().await
            )
        }
    }
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_output_on_embedded() {
    huge_output(Kind::Embedded).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_output_on_redis() {
    huge_output(Kind::Redis).await;
}
/// NATS key-value results hold at most the server's `max_payload` (1 MB
/// by default, README): a larger result fails the task once, with the
/// limit in its message, instead of re-running it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_output_on_nats_fails_once_with_the_limit() {
    let Some(rig) = Rig::start(Kind::Nats, 1, 2, None).await else {
        return;
    };
    let r = rig
        .tasks
        .send::<String>(Signature::new("huge", ()).unwrap())
        .await
        .unwrap();
    match r.get(WAIT).await {
        Err(Error::TaskFailed { message, .. }) => {
            assert!(
                message.contains("exceeds the limit"),
                "the failure names the limit: {message}"
            )
        }
        other => panic!("a 1 MB result on NATS key-value: {other:?}"),
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rig.counts.get(&format!("huge-{}", r.id())), 1, "run once, not retried");
    let after = rig.tasks.delay::<Add>((2, 3)).await.unwrap();
    assert_eq!(after.get(WAIT).await.unwrap(), 5, "the worker keeps running");
    rig.stop().await;
}

/// Output type mismatch: Error::Decode (typed), not a panic or a hang;
/// forget() deletes; revoke of an unknown id; revoke after start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_mismatch_forget_revoke() {
    let Some(rig) = Rig::start(Kind::Redis, 1, 4, None).await else {
        return;
    };
    let r = rig.tasks.delay::<Add>((1, 2)).await.unwrap();
    assert_eq!(r.get(WAIT).await.unwrap(), 3);
    let wrong = rig.tasks.result::<String>(r.id());
    assert!(
        matches!(wrong.get(WAIT).await, Err(Error::Decode { .. })),
        "type mismatch"
    );
    r.forget().await.unwrap();
    assert!(r.info().await.unwrap().is_none());
    assert!(matches!(
        r.get(Duration::from_millis(300)).await,
        Err(Error::Timeout { .. })
    ));
    assert_eq!(
        r.state().await.unwrap(),
        TaskState::Pending,
        "a forgotten id is unknown: pending"
    );

    // Revoke of an id never sent: fine, and a later send of it is not run.
    let ghost = format!("ghost-{}", uniq());
    rig.tasks.revoke(&ghost).await.unwrap();
    let later = rig
        .tasks
        .send::<Value>(Signature::new("count", (1,)).unwrap().with_id(ghost.clone()))
        .await
        .unwrap();
    assert!(matches!(later.get(WAIT).await, Err(Error::Revoked { .. })));
    assert_eq!(rig.counts.get(&ghost), 0);

    // Revoke after start: README: only "a worker that has not started it
    // records it revoked", so a started task finishes and keeps its result.
    let r = rig
        .tasks
        .send::<u64>(Signature::new("nap", (800,)).unwrap())
        .await
        .unwrap();
    let t0 = Instant::now();
    while r.state().await.unwrap() != TaskState::Started {
        assert!(t0.elapsed() < WAIT, "never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rig.tasks.revoke(r.id()).await.unwrap();
    let got = r.get(WAIT).await;
    assert_eq!(
        got.ok(),
        Some(800),
        "a task revoked after it started runs to its result"
    );
    assert_eq!(rig.counts.get(r.id()), 1);
    rig.stop().await;
}

/// README: "a task whose result is already final is not run again when its
/// message comes back (redelivery), so a re-sent id is a no-op while its
/// result is kept".
async fn resent_id_is_a_noop(kind: Kind) {
    let Some(rig) = Rig::start(kind, 2, 4, None).await else {
        return;
    };
    let id = format!("order-{}", uniq());
    let first = rig
        .tasks
        .send::<Value>(Signature::new("count", ("first",)).unwrap().with_id(id.clone()))
        .await
        .unwrap();
    assert_eq!(first.get(WAIT).await.unwrap(), json!(["first"]));
    let before = first.info().await.unwrap().unwrap();
    let again = rig
        .tasks
        .send::<Value>(Signature::new("count", ("second",)).unwrap().with_id(id.clone()))
        .await;
    // Either refused or accepted; either way the kept result must stay.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = rig.tasks.result::<Value>(&id).info().await.unwrap();
    assert_eq!(
        rig.counts.get(&id),
        1,
        "{kind:?}: a re-sent final id ran again (send: {:?})",
        again.err()
    );
    let after = after.expect("record kept");
    assert_eq!(
        (after.state, after.result.clone()),
        (TaskState::Success, Some(json!(["first"]))),
        "{kind:?}: the kept result changed: before {before:?} after {after:?}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_id_is_a_noop_on_embedded() {
    resent_id_is_a_noop(Kind::Embedded).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_id_is_a_noop_on_redis() {
    resent_id_is_a_noop(Kind::Redis).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_id_is_a_noop_on_nats() {
    resent_id_is_a_noop(Kind::Nats).await;
}

/// README: "Any id that can be a message key works".
async fn odd_ids(kind: Kind) {
    let Some(rig) = Rig::start(kind, 1, 4, None).await else {
        return;
    };
    let u = uniq();
    let ids = [
        format!("ünïcødé-✓-日本-{u}"),
        format!("a/b/c/{u}"),
        format!("a.b.c.{u}"),
        format!("../../etc/{u}"),
        format!("{}{u}", "z".repeat(300)),
        format!("*>{u}"),
        format!("a b {u}"),
    ];
    let mut failures = Vec::new();
    for id in &ids {
        match rig
            .tasks
            .send::<Value>(Signature::new("count", (id,)).unwrap().with_id(id.clone()))
            .await
        {
            Err(e) => failures.push(format!("send {id:?}: {e}")),
            Ok(r) => match r.get(WAIT).await {
                Ok(v) if v == json!([id]) => {}
                other => failures.push(format!("get {id:?}: {other:?} state {:?}", r.state().await)),
            },
        }
    }
    assert!(failures.is_empty(), "{kind:?}: {failures:#?}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_ids_on_embedded() {
    odd_ids(Kind::Embedded).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_ids_on_redis() {
    odd_ids(Kind::Redis).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_ids_on_nats() {
    odd_ids(Kind::Nats).await;
}

// ---------------------------------------------------------------- workers

/// Two workers (competing consumers), concurrency 4, 200 tasks: each runs
/// exactly once and every result arrives.
async fn two_workers_200(kind: Kind) {
    let Some(rig) = Rig::start(kind, 2, 4, None).await else {
        return;
    };
    let mut results = Vec::new();
    for i in 0..200 {
        results.push(
            rig.tasks
                .send::<Value>(Signature::new("count", (i,)).unwrap())
                .await
                .unwrap(),
        );
    }
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.get(WAIT).await.unwrap(), json!([i]), "{kind:?}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = rig.counts.snapshot();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert_eq!(counts.len(), 200, "{kind:?}");
    assert!(twice.is_empty(), "{kind:?}: ran more than once: {twice:?}");
    let mut by_worker: HashMap<String, usize> = HashMap::new();
    for r in &results {
        *by_worker
            .entry(r.info().await.unwrap().unwrap().worker.unwrap())
            .or_default() += 1;
    }
    println!("{kind:?}: tasks per worker {by_worker:?}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_200_tasks_once_on_embedded() {
    two_workers_200(Kind::Embedded).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_200_tasks_once_on_redis() {
    two_workers_200(Kind::Redis).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_200_tasks_once_on_nats() {
    two_workers_200(Kind::Nats).await;
}

/// README: workers "drain on shutdown like any processor": a running task
/// finishes (within the grace) and keeps its result.
async fn shutdown_mid_task(kind: Kind) {
    let Some(rig) = Rig::start(kind, 1, 2, None).await else {
        return;
    };
    let r = rig
        .tasks
        .send::<u64>(Signature::new("nap", (1500,)).unwrap())
        .await
        .unwrap();
    let t0 = Instant::now();
    while r.state().await.unwrap() != TaskState::Started {
        assert!(t0.elapsed() < WAIT, "never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let store = rig.store.clone();
    let counts = rig.counts.clone();
    let id = r.id().to_string();
    rig.stop().await;
    let rec = store.get(&id).await.unwrap().expect("record");
    assert_eq!(
        (rec.state, rec.result.clone()),
        (TaskState::Success, Some(json!(1500))),
        "{kind:?}: drained task: {rec:?}"
    );
    assert_eq!(counts.get(&id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_task_drains_on_redis() {
    shutdown_mid_task(Kind::Redis).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_task_drains_on_nats() {
    shutdown_mid_task(Kind::Nats).await;
}

/// Retries honour the backoff (300 ms then 600 ms), info() counts attempts;
/// a time limit fails each attempt promptly, with "time limit" in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_backoff_and_time_limit() {
    let Some(rig) = Rig::start(Kind::Embedded, 1, 4, None).await else {
        return;
    };
    let t0 = Instant::now();
    let r = rig
        .tasks
        .send::<String>(Signature::new("flaky", (3,)).unwrap())
        .await
        .unwrap();
    assert_eq!(r.get(WAIT).await.unwrap(), "ok on 3");
    let took = t0.elapsed();
    let info = r.info().await.unwrap().unwrap();
    assert_eq!(info.attempts, 3, "{info:?}");
    assert!(
        took >= Duration::from_millis(850),
        "backoff 300 + 600 ms not honoured: {took:?}"
    );
    assert_eq!(info.state, TaskState::Success);

    let t0 = Instant::now();
    let r = rig
        .tasks
        .send::<Value>(Signature::new("slow", ()).unwrap())
        .await
        .unwrap();
    match r.get(WAIT).await {
        Err(Error::TaskFailed { message, .. }) => assert!(message.contains("time limit"), "{message}"),
        other => panic!("time limit: {other:?}"),
    }
    let took = t0.elapsed();
    let info = r.info().await.unwrap().unwrap();
    assert_eq!(info.attempts, 2, "1 + max_retries 1: {info:?}");
    assert!(
        took < Duration::from_millis(2500),
        "time limit not enforced promptly: {took:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        rig.counts.get(&format!("{}-finished", r.id())),
        0,
        "an attempt past its time limit kept running to its end"
    );
    rig.stop().await;
}

/// A task held past a 2 s ack timeout, two workers: it runs once.
/// NATS: README promises in_progress keeps it (for a long run and for a
/// countdown hold). Embedded: the countdown is a broker delay, no hold.
async fn held_past_ack_timeout(kind: Kind, run_ms: u64, countdown: Option<Duration>) {
    let opts = ProcessorOptions::default()
        .with_max_attempts(10)
        .with_consumer(ConsumerOptions::default().with_ack_timeout(Some(Duration::from_secs(2))));
    let Some(rig) = Rig::start(kind, 2, 4, Some(opts)).await else {
        return;
    };
    let mut sig = Signature::new("nap", (run_ms,)).unwrap();
    if let Some(c) = countdown {
        sig = sig.with_countdown(c);
    }
    let sent = Instant::now();
    let r = rig.tasks.send::<u64>(sig).await.unwrap();
    assert_eq!(r.get(WAIT).await.unwrap(), run_ms, "{kind:?}");
    if let Some(c) = countdown {
        assert!(sent.elapsed() >= c, "{kind:?}: ran before its countdown");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        rig.counts.get(r.id()),
        1,
        "{kind:?}: run {run_ms} ms countdown {countdown:?}: ran more than once"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_run_past_ack_timeout_runs_once_on_nats() {
    held_past_ack_timeout(Kind::Nats, 5000, None).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn countdown_past_ack_timeout_runs_once_on_nats() {
    held_past_ack_timeout(Kind::Nats, 10, Some(Duration::from_secs(5))).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn countdown_past_ack_timeout_runs_once_on_embedded() {
    held_past_ack_timeout(Kind::Embedded, 10, Some(Duration::from_secs(5))).await;
}

// ---------------------------------------------------------------- workflows

/// README: "a failed step fails every later one with its message".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_middle_step_fails_the_rest() {
    let Some(rig) = Rig::start(Kind::Nats, 2, 4, None).await else {
        return;
    };
    let steps = vec![
        Add::s((1, 2)).unwrap(),
        Signature::partial("fail", ()).unwrap(),
        Signature::partial("count", (1,)).unwrap(),
        Signature::partial("count", (2,)).unwrap(),
    ];
    let ids: Vec<String> = steps.iter().map(|s| s.id.clone()).collect();
    let last = rig.tasks.chain(steps).await.unwrap();
    match last.get(WAIT).await {
        Err(Error::TaskFailed { message, .. }) => assert!(message.contains("refused [3]"), "{message}"),
        other => panic!("chain: {other:?}"),
    }
    for id in &ids[2..] {
        let rec = rig.store.get(id).await.unwrap();
        let rec = rec.unwrap_or_else(|| panic!("no record for later step {id}"));
        assert_eq!(rec.state, TaskState::Failure, "{rec:?}");
        assert!(rec.error.as_deref().unwrap_or("").contains("refused [3]"), "{rec:?}");
        assert_eq!(rig.counts.get(id), 0, "a step after the failed one ran");
    }
    assert_eq!(rig.store.get(&ids[0]).await.unwrap().unwrap().state, TaskState::Success);
    rig.stop().await;
}

/// Chord of 50 over 3 workers, one member retries twice: one callback,
/// every result in member order.
async fn chord_with_retrying_member(kind: Kind) {
    let Some(rig) = Rig::start(kind, 3, 4, None).await else {
        return;
    };
    let mut members: Vec<Signature> = (0..50).map(|i| Add::s((i, 1)).unwrap()).collect();
    members[17] = Signature::new("flaky", (3,)).unwrap();
    let chord = rig
        .tasks
        .chord(members, Signature::partial("sum", ()).unwrap())
        .await
        .unwrap();
    let got = chord.get(Duration::from_secs(30)).await.unwrap();
    let mut want: Vec<Value> = (0..50).map(|i| json!(i + 1)).collect();
    want[17] = json!("ok on 3");
    assert_eq!(got, json!(want), "{kind:?}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(rig.counts.get("sum-callback"), 1, "{kind:?}: callbacks");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chord_50_with_retrying_member_on_redis() {
    chord_with_retrying_member(Kind::Redis).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chord_50_with_retrying_member_on_nats() {
    chord_with_retrying_member(Kind::Nats).await;
}

/// Group get() is in member order even when later members finish first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_get_in_member_order() {
    let Some(rig) = Rig::start(Kind::Redis, 2, 8, None).await else {
        return;
    };
    let members: Vec<Signature> = (0..8)
        .map(|i| Signature::new("nap", ((8 - i) * 100,)).unwrap())
        .collect();
    let g = rig.tasks.group(members).await.unwrap();
    let got = g.get(WAIT).await.unwrap();
    assert_eq!(got, (0..8).map(|i| json!((8 - i) * 100)).collect::<Vec<_>>());
    assert_eq!(g.completed_count().await.unwrap(), 8);
    // A chord of no members: callback at once with [] as its first argument.
    let empty = rig
        .tasks
        .chord(vec![], Signature::partial("sum", ()).unwrap())
        .await
        .unwrap();
    assert_eq!(empty.get(WAIT).await.unwrap(), json!([]));
    // An empty group: nothing to wait for.
    let g = rig.tasks.group(vec![]).await.unwrap();
    assert_eq!(g.get(Duration::from_secs(2)).await.unwrap(), Vec::<Value>::new());
    rig.stop().await;
}

// ---------------------------------------------------------------- countdown

/// A 2 s countdown never starts early (wall clock at the handler); an eta
/// in the past runs at once; an expiry before the countdown revokes it.
async fn countdown(kind: Kind) {
    let Some(rig) = Rig::start(kind, 2, 4, None).await else {
        return;
    };
    let sent = Instant::now();
    let r = rig
        .tasks
        .apply_async::<Add>((1, 1), SendOptions::default().with_countdown(Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(r.get(WAIT).await.unwrap(), 2);
    let took = sent.elapsed();
    let info = r.info().await.unwrap().unwrap();
    assert!(
        took >= Duration::from_secs(2),
        "{kind:?}: 2 s countdown done after {took:?}"
    );
    assert!(
        info.started_at.unwrap() >= info.sent_at.unwrap() + 2000,
        "{kind:?}: {info:?}"
    );
    assert!(took < Duration::from_secs(6), "{kind:?}: 2 s countdown took {took:?}");

    let sent = Instant::now();
    let r = rig
        .tasks
        .apply_async::<Add>(
            (2, 2),
            SendOptions::default().with_eta(SystemTime::now() - Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    assert_eq!(r.get(WAIT).await.unwrap(), 4);
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{kind:?}: past eta took {:?}",
        sent.elapsed()
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn countdown_on_embedded() {
    countdown(Kind::Embedded).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn countdown_on_redis() {
    countdown(Kind::Redis).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn countdown_on_nats() {
    countdown(Kind::Nats).await;
}

// ---------------------------------------------------------------- bad input

/// Raw wire-format messages another language might send: an unknown name,
/// args of the wrong JSON type, a garbage payload. Each known id ends in a
/// failure with a clear error, nothing blocks, the worker keeps running,
/// and the undecodable one lands in the dead-letter topic.
async fn bad_wire_input(kind: Kind) {
    let Some(rig) = Rig::start(kind, 1, 2, None).await else {
        return;
    };
    let producer = rig
        .backend
        .create_producer(&rig.queue, Default::default())
        .await
        .unwrap();
    let send = |v: Vec<u8>| {
        let p = &producer;
        async move { p.send(OutgoingMessage::new(v)).await.unwrap() }
    };
    let u = uniq();
    let unknown = format!("unknown-{u}");
    let wrong = format!("wrong-{u}");
    let object = format!("object-{u}");
    let notargs = format!("notarray-{u}");
    send(serde_json::to_vec(&json!({"v": 1, "id": unknown, "name": "no-such-task", "args": []})).unwrap()).await;
    send(serde_json::to_vec(&json!({"v": 1, "id": wrong, "name": "add", "args": ["a", {"b": 1}]})).unwrap()).await;
    send(serde_json::to_vec(&json!({"v": 1, "id": object, "name": "add", "args": {"a": 1}})).unwrap()).await;
    send(serde_json::to_vec(&json!({"v": 1, "id": notargs, "name": "add", "args": 7})).unwrap()).await;
    send(b"this is not json {".to_vec()).await;
    send(serde_json::to_vec(&json!({"v": 99, "id": format!("v99-{u}"), "name": "add", "args": [1, 2]})).unwrap()).await;
    let mut problems = Vec::new();
    for (id, must) in [(&unknown, "no-such-task"), (&wrong, ""), (&object, ""), (&notargs, "")] {
        match rig.tasks.result::<Value>(id).get(Duration::from_secs(10)).await {
            Err(Error::TaskFailed { message, .. }) if message.contains(must) && !message.is_empty() => {
                println!("{kind:?}: {id}: {message}")
            }
            other => problems.push(format!("{id}: {other:?}")),
        }
    }
    let good = rig.tasks.delay::<Add>((20, 22)).await.unwrap();
    assert_eq!(
        good.get(WAIT).await.unwrap(),
        42,
        "{kind:?}: the worker stopped working"
    );
    assert!(problems.is_empty(), "{kind:?}: {problems:#?}");
    // The undecodable message is not lost: dead-lettered.
    let dlq: Topic = format!("{}-dlq", rig.queue.as_str()).parse().unwrap();
    let consumer = rig
        .backend
        .create_consumer(
            &dlq,
            "outsider",
            ConsumerOptions::default().with_initial_position(InitialPosition::Earliest),
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Ok(m) = consumer.receive_timeout(Duration::from_secs(2)).await {
        seen.push(String::from_utf8_lossy(m.payload()).to_string());
        let _ = m.ack().await;
    }
    assert!(
        seen.iter().any(|p| p.contains("this is not json")),
        "{kind:?}: the garbage message is not in {dlq}: {seen:?}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_wire_input_on_embedded() {
    bad_wire_input(Kind::Embedded).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_wire_input_on_nats() {
    bad_wire_input(Kind::Nats).await;
}

/// README: "a payload over the backend's limit is a typed error before
/// anything is recorded". NATS's default max payload is 1 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_args_refused_before_recording_on_nats() {
    let Some(rig) = Rig::start(Kind::Nats, 1, 2, None).await else {
        return;
    };
    let sig = Signature::new("count", ("y".repeat(3 << 20),)).unwrap();
    let id = sig.id.clone();
    let sent = rig.tasks.send::<Value>(sig).await;
    assert!(sent.is_err(), "a 3 MB task on NATS was accepted");
    assert_eq!(rig.store.get(&id).await.unwrap(), None, "a record of a refused send");
    rig.stop().await;
}

// ---------------------------------------------------------------- CLI

fn cli() -> std::process::Command {
    // target/debug/deps/tasks_outsider-… -> target/debug/pubsub
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("pubsub");
    let mut c = std::process::Command::new(exe);
    c.env_remove("PUBSUB_RESULTS").env_remove("PUBSUB_BACKEND");
    c
}

fn run(c: &mut std::process::Command) -> (i32, String, String) {
    let o = c
        .output()
        .expect("run target/debug/pubsub (cargo build --bin pubsub first)");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tasks_on_redis() {
    let Some(rig) = Rig::start(Kind::Redis, 1, 2, None).await else {
        return;
    };
    let r = rig.tasks.delay::<Add>((1, 2)).await.unwrap();
    assert_eq!(r.get(WAIT).await.unwrap(), 3);
    let slow = rig
        .tasks
        .send::<u64>(Signature::new("nap", (6000,)).unwrap())
        .await
        .unwrap();
    let t0 = Instant::now();
    while slow.state().await.unwrap() != TaskState::Started {
        assert!(t0.elapsed() < WAIT);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(2200)).await; // a heartbeat with it running
    let cli_started = Instant::now();

    // inspect: pending count and the worker with its running task.
    let (code, out, err) = run(cli()
        .env("PUBSUB_RESULTS", REDIS)
        .env("PUBSUB_BACKEND", "redis")
        .env("REDIS_URL", REDIS)
        .args(["tasks", "inspect", "--queue", rig.queue.as_str()]));
    assert_eq!(code, 0, "{out}{err}");
    println!("inspect ({:?} after the heartbeat wait):\n{out}", cli_started.elapsed());
    assert!(
        out.contains(&format!("queue {}: 1 pending", rig.queue.as_str())),
        "{out}"
    );
    assert!(
        out.contains(slow.id()) && out.contains("nap"),
        "running task not listed: {out}"
    );
    let (code, out, err) = run(cli()
        .env("PUBSUB_RESULTS", REDIS)
        .env("PUBSUB_BACKEND", "redis")
        .env("REDIS_URL", REDIS)
        .args(["tasks", "inspect", "--queue", rig.queue.as_str(), "--json"]));
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str::<Value>(out.trim()).unwrap_or_else(|e| panic!("inspect --json: {e}: {out}"));
    let (code, out, err) = run(cli()
        .env("PUBSUB_RESULTS", REDIS)
        .env("PUBSUB_BACKEND", "redis")
        .env("REDIS_URL", REDIS)
        .args(["tasks", "inspect", "--queue", "not a topic"]));
    assert_eq!(code, 2, "bad topic: {out}{err}");
    let (code, out, err) = run(cli().env("PUBSUB_RESULTS", REDIS).args(["tasks", "result", r.id()]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("state: success") && out.contains("result: 3") && out.contains("name: add"),
        "{out}"
    );
    let (code, out, err) = run(cli()
        .env("PUBSUB_RESULTS", REDIS)
        .args(["tasks", "result", "--json", r.id()]));
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("--json: {e}: {out}"));
    assert_eq!(
        (v["state"].clone(), v["result"].clone()),
        (json!("success"), json!(3)),
        "{v}"
    );
    // --results instead of the variable.
    let (code, out, err) = run(cli().args(["tasks", "result", r.id(), "--results", REDIS]));
    assert_eq!(code, 0, "--results flag: {out}{err}");

    // Missing result: exit 1; no result store: 2; malformed URL: 2; unreachable: 3.
    let (code, out, err) = run(cli()
        .env("PUBSUB_RESULTS", REDIS)
        .args(["tasks", "result", "no-such-id-xyz"]));
    assert_eq!(code, 1, "missing result: {out}{err}");
    let (code, out, err) = run(cli().args(["tasks", "result", r.id()]));
    assert_eq!(code, 2, "no result store: {out}{err}");
    assert!(!err.trim().is_empty(), "no error text");
    let (code, out, err) = run(cli()
        .env("PUBSUB_RESULTS", "bogus://x")
        .args(["tasks", "result", r.id()]));
    assert_eq!(code, 2, "malformed results URL: {out}{err}");
    let (code, out, err) = run(cli()
        .env("PUBSUB_RESULTS", "redis://127.0.0.1:1")
        .args(["tasks", "result", r.id()]));
    assert_eq!(code, 3, "unreachable result store: {out}{err}");
    let (code, out, err) = run(cli().env("PUBSUB_RESULTS", REDIS).args(["tasks", "result"]));
    assert_eq!(code, 2, "usage: {out}{err}");
    let (code, out, err) = run(cli().env("PUBSUB_RESULTS", REDIS).args(["tasks", "frobnicate"]));
    assert_eq!(code, 2, "usage: {out}{err}");

    assert_eq!(slow.get(WAIT).await.unwrap(), 6000);
    rig.stop().await;
}

/// README: "After the last retry the task fails and its message goes to the
/// queue's dead-letter topic (`{queue}-dlq`)".
async fn retries_exhausted_dead_letter(kind: Kind) {
    let Some(rig) = Rig::start(kind, 1, 2, None).await else {
        return;
    };
    let sig = Signature::new("flaky", (99,)).unwrap();
    let id = sig.id.clone();
    let r = rig.tasks.send::<String>(sig).await.unwrap();
    match r.get(Duration::from_secs(30)).await {
        Err(Error::TaskFailed { message, .. }) => assert_eq!(message, "attempt 4 failed", "{kind:?}"),
        other => panic!("{kind:?}: {other:?}"),
    }
    assert_eq!(r.info().await.unwrap().unwrap().attempts, 4, "{kind:?}: 1 + 3 retries");
    assert_eq!(rig.counts.get(&id), 4, "{kind:?}");
    let dlq: Topic = format!("{}-dlq", rig.queue.as_str()).parse().unwrap();
    let consumer = rig
        .backend
        .create_consumer(
            &dlq,
            "outsider",
            ConsumerOptions::default().with_initial_position(InitialPosition::Earliest),
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Ok(m) = consumer.receive_timeout(Duration::from_secs(2)).await {
        seen.push(String::from_utf8_lossy(m.payload()).to_string());
        let _ = m.ack().await;
    }
    assert!(
        seen.iter().any(|p| p.contains(&id)),
        "{kind:?}: the failed task is not in {dlq}: {seen:?}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_exhausted_dead_letter_on_embedded() {
    retries_exhausted_dead_letter(Kind::Embedded).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_exhausted_dead_letter_on_nats() {
    retries_exhausted_dead_letter(Kind::Nats).await;
}

/// An expiry that passes while the task waits in the queue behind a busy
/// worker (concurrency 1): revoked, "expired", never run. An expiry in the
/// past at send: revoked, not run.
async fn expiry_while_queued(kind: Kind) {
    let Some(rig) = Rig::start(kind, 1, 1, None).await else {
        return;
    };
    let busy = rig
        .tasks
        .send::<u64>(Signature::new("nap", (1500,)).unwrap())
        .await
        .unwrap();
    let t0 = Instant::now();
    while busy.state().await.unwrap() != TaskState::Started {
        assert!(t0.elapsed() < WAIT);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let late = rig
        .tasks
        .apply_async::<Add>(
            (1, 1),
            SendOptions::default().with_expires(SystemTime::now() + Duration::from_millis(300)),
        )
        .await
        .unwrap();
    match late.get(WAIT).await {
        Err(Error::Revoked { reason, .. }) => assert!(reason.contains("expire"), "{kind:?}: {reason}"),
        other => panic!("{kind:?}: a task that expired while queued: {other:?}"),
    }
    let past = rig
        .tasks
        .send::<Value>(Signature::new("count", (1,)).unwrap())
        .await
        .unwrap();
    past.get(WAIT).await.unwrap();
    let p = rig
        .tasks
        .apply_async::<Add>(
            (1, 1),
            SendOptions::default().with_expires(SystemTime::now() - Duration::from_secs(60)),
        )
        .await;
    match p {
        Err(e) => println!("{kind:?}: past expiry refused at send: {e}"),
        Ok(r) => assert!(matches!(r.get(WAIT).await, Err(Error::Revoked { .. })), "{kind:?}"),
    }
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_while_queued_on_redis() {
    expiry_while_queued(Kind::Redis).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_while_queued_on_nats() {
    expiry_while_queued(Kind::Nats).await;
}

/// A revoked chord member: the chord must still end (never hang).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chord_with_revoked_member_ends() {
    let Some(rig) = Rig::start(Kind::Redis, 2, 4, None).await else {
        return;
    };
    let mut members: Vec<Signature> = (0..5).map(|i| Add::s((i, 0)).unwrap()).collect();
    members.push(Add::s((9, 9)).unwrap().with_countdown(Duration::from_secs(2)));
    let revoked = members[5].id.clone();
    let chord = rig
        .tasks
        .chord(members, Signature::partial("sum", ()).unwrap())
        .await
        .unwrap();
    rig.tasks.revoke(&revoked).await.unwrap();
    let got = chord.get(Duration::from_secs(15)).await;
    assert!(
        !matches!(got, Err(Error::Timeout { .. })),
        "a chord with a revoked member never ends: {got:?}, member state {:?}",
        rig.store.get(&revoked).await.unwrap().map(|r| r.state)
    );
    println!("chord with a revoked member: {got:?}");
    rig.stop().await;
}

/// Odd ids in the dir store (embedded with a data dir): nothing escapes the
/// directory ("../" in an id), every id keeps its own record, across a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_store_odd_ids_stay_inside() {
    let root = tempfile::tempdir().unwrap();
    let results = root.path().join("results");
    let config = pubsub::embedded::EmbeddedConfig::data_dir(root.path().join("log"));
    let backend: Arc<dyn PubSubBackend> = Arc::new(pubsub::embedded::EmbeddedBackend::open(config).unwrap());
    let store: Arc<dyn ResultStore> = Arc::new(pubsub::tasks::DirResultStore::open(&results).unwrap());
    let q = queue("dir");
    let counts = Arc::new(Counts::default());
    let shutdown = Shutdown::new();
    let w = tokio::spawn(worker(&backend, &store, &q, "dirw", counts.clone()).run(shutdown.clone()));
    let tasks = Tasks::new(backend.clone(), store.clone(), q.clone());
    let ids = [
        "../escape".to_string(),
        "../../escape2".to_string(),
        "/abs/path".to_string(),
        "ünï/../cødé".to_string(),
        "t.x.2e2e".to_string(),
        ".".to_string(),
        "..".to_string(),
        "z".repeat(300),
    ];
    for id in &ids {
        let r = tasks
            .send::<Value>(Signature::new("count", (id,)).unwrap().with_id(id.clone()))
            .await
            .unwrap();
        assert_eq!(r.get(WAIT).await.unwrap(), json!([id]), "{id:?}");
    }
    shutdown.trigger();
    w.await.unwrap().unwrap();
    let outside: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n != "results" && n != "log")
        .collect();
    assert!(outside.is_empty(), "files outside the results dir: {outside:?}");
    let again = pubsub::tasks::DirResultStore::open(&results).unwrap();
    for id in &ids {
        let rec = again
            .get(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{id:?} lost on reopen"));
        assert_eq!((rec.id.as_str(), rec.result), (id.as_str(), Some(json!([id]))));
    }
    tasks.close().await.unwrap();
    backend.close().await.unwrap();
}

/// README: Redis results are "JSON under `pubsub-tasks:<id>`", expiring
/// after a TTL (a day by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_record_key_and_ttl() {
    let Some(rig) = Rig::start(Kind::Redis, 1, 2, None).await else {
        return;
    };
    let r = rig.tasks.delay::<Add>((4, 5)).await.unwrap();
    assert_eq!(r.get(WAIT).await.unwrap(), 9);
    let key = format!("pubsub-tasks:{}", r.id());
    let out = std::process::Command::new("redis-cli")
        .args(["GET", &key])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("GET {key}: {e}: {text:?}"));
    assert_eq!(
        (v["state"].clone(), v["result"].clone(), v["name"].clone()),
        (json!("success"), json!(9), json!("add"))
    );
    let out = std::process::Command::new("redis-cli")
        .args(["TTL", &key])
        .output()
        .unwrap();
    let ttl: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(ttl > 86000 && ttl <= 86400, "TTL of {key}: {ttl}");
    rig.stop().await;
}

/// get() with a zero timeout of a task already done returns it; the
/// inspector lists a running task; a stopped worker removes its heartbeat;
/// the rate limit holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_zero_inspector_heartbeat_rate_limit() {
    let Some((backend, store)) = env(Kind::Redis).await else {
        return;
    };
    let q = queue("misc");
    let counts = Arc::new(Counts::default());
    let shutdown = Shutdown::new();
    let name = format!("misc-{}", uniq());
    let w = worker(&backend, &store, &q, &name, counts.clone())
        .with_concurrency(4)
        .with_heartbeat(Duration::from_millis(200));
    let inspector = w.inspector();
    let running = tokio::spawn(w.run(shutdown.clone()));
    let tasks = Tasks::new(backend.clone(), store.clone(), q.clone());
    let r = tasks.delay::<Add>((1, 1)).await.unwrap();
    assert_eq!(r.get(WAIT).await.unwrap(), 2);
    assert_eq!(r.get(Duration::ZERO).await.unwrap(), 2, "get(0) of a finished task");
    let slow = tasks
        .send::<u64>(Signature::new("nap", (1500,)).unwrap())
        .await
        .unwrap();
    let t0 = Instant::now();
    while slow.state().await.unwrap() != TaskState::Started {
        assert!(t0.elapsed() < WAIT);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed = inspector.running();
    assert!(
        listed.iter().any(|t| t.id == slow.id() && t.name == "nap"),
        "inspector: {listed:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hb = store.workers().await.unwrap();
    let mine = hb.iter().find(|s| s.name == name).expect("heartbeat");
    assert!(mine.running.iter().any(|t| t.id == slow.id()), "{mine:?}");
    slow.get(WAIT).await.unwrap();
    shutdown.trigger();
    running.await.unwrap().unwrap();
    assert!(
        !store.workers().await.unwrap().iter().any(|s| s.name == name),
        "a stopped worker's heartbeat is kept"
    );

    // Rate limit 4/s: 12 tasks need about 2.75 s at least.
    let shutdown = Shutdown::new();
    let w = worker(&backend, &store, &q, "rl", counts.clone())
        .with_concurrency(8)
        .with_rate_limit(4.0);
    let running = tokio::spawn(w.run(shutdown.clone()));
    let t0 = Instant::now();
    let mut rs = Vec::new();
    for i in 0..12 {
        rs.push(
            tasks
                .send::<Value>(Signature::new("count", (i,)).unwrap())
                .await
                .unwrap(),
        );
    }
    for r in &rs {
        r.get(WAIT).await.unwrap();
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(2500),
        "12 tasks at 4/s in {:?}",
        t0.elapsed()
    );
    shutdown.trigger();
    running.await.unwrap().unwrap();
    tasks.close().await.unwrap();
    backend.close().await.unwrap();
}

/// A chain step with its own countdown waits for it after the previous one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_step_countdown_is_honoured() {
    let Some(rig) = Rig::start(Kind::Nats, 2, 4, None).await else {
        return;
    };
    let t0 = Instant::now();
    let chain = rig
        .tasks
        .chain(vec![
            Add::s((1, 1)).unwrap(),
            Signature::partial("add", (1,))
                .unwrap()
                .with_countdown(Duration::from_millis(1500)),
        ])
        .await
        .unwrap();
    assert_eq!(chain.get(WAIT).await.unwrap(), json!(3));
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "chain step countdown skipped: {:?}",
        t0.elapsed()
    );
    rig.stop().await;
}

/// A worker stopped while it holds a countdown task (NATS: the worker
/// holds it): the stop does not run it early, it is not lost, and after a
/// new worker starts it runs once, not before its countdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_holding_an_eta_on_nats() {
    let Some((backend, store)) = env(Kind::Nats).await else {
        return;
    };
    let q = queue("hold");
    let counts = Arc::new(Counts::default());
    let opts = ProcessorOptions::default()
        .with_consumer(ConsumerOptions::default().with_ack_timeout(Some(Duration::from_secs(2))));
    let shutdown = Shutdown::new();
    let w = worker(&backend, &store, &q, "holder", counts.clone()).with_processor_options(opts.clone());
    let running = tokio::spawn(w.run(shutdown.clone()));
    let tasks = Tasks::new(backend.clone(), store.clone(), q.clone());
    let sent = Instant::now();
    let r = tasks
        .send::<Value>(
            Signature::new("count", ("held",))
                .unwrap()
                .with_countdown(Duration::from_secs(8)),
        )
        .await
        .unwrap();
    let t0 = Instant::now();
    while r.state().await.unwrap() != TaskState::Received {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "never received: {:?}",
            r.state().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stop_at = Instant::now();
    shutdown.trigger();
    running.await.unwrap().unwrap();
    println!("stop while holding took {:?}", stop_at.elapsed());
    assert!(
        counts.get(r.id()) == 0 || sent.elapsed() >= Duration::from_secs(8),
        "ran early at the stop"
    );
    assert!(
        stop_at.elapsed() < Duration::from_secs(5),
        "a worker holding a not-yet-started eta task took {:?} to stop (it waited for the held eta)",
        stop_at.elapsed()
    );
    let shutdown = Shutdown::new();
    let w = worker(&backend, &store, &q, "successor", counts.clone()).with_processor_options(opts);
    let running = tokio::spawn(w.run(shutdown.clone()));
    let got = r.get(WAIT).await;
    assert_eq!(got.unwrap(), json!(["held"]));
    assert!(
        sent.elapsed() >= Duration::from_secs(8),
        "ran before its countdown: {:?}",
        sent.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(counts.get(r.id()), 1);
    shutdown.trigger();
    running.await.unwrap().unwrap();
    tasks.close().await.unwrap();
    backend.close().await.unwrap();
}

/// `pubsub tasks result` with NATS key-value results, and a dir: store
/// that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tasks_result_on_nats_and_dir() {
    let Some(rig) = Rig::start(Kind::Nats, 1, 2, None).await else {
        return;
    };
    let id = format!("ünï/cli.{}", uniq());
    let r = rig
        .tasks
        .send::<Value>(Signature::new("count", (7,)).unwrap().with_id(id.clone()))
        .await
        .unwrap();
    assert_eq!(r.get(WAIT).await.unwrap(), json!([7]));
    let (code, out, err) = run(cli().env("PUBSUB_RESULTS", NATS).args(["tasks", "result", &id]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("state: success") && out.contains(&id), "{out}");
    let (code, out, err) = run(cli().env("PUBSUB_RESULTS", NATS).args(["tasks", "result", "nope-nope"]));
    assert_eq!(code, 1, "{out}{err}");
    let (code, out, err) = run(cli()
        .env("PUBSUB_RESULTS", "dir:/nonexistent/outsider/results")
        .args(["tasks", "result", "x"]));
    assert!(
        code == 1 || code == 2,
        "dir store that does not exist: {code} {out}{err}"
    );
    println!("dir store that does not exist: exit {code}: {err}");
    rig.stop().await;
}

/// Consequence of a panicking member: does the chord ever end?
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chord_with_panicking_member_ends() {
    let Some(rig) = Rig::start(Kind::Embedded, 2, 4, None).await else {
        return;
    };
    let members = vec![Add::s((1, 1)).unwrap(), Signature::new("boom", ()).unwrap()];
    let chord = rig
        .tasks
        .chord(members, Signature::partial("sum", ()).unwrap())
        .await
        .unwrap();
    let got = chord.get(Duration::from_secs(10)).await;
    assert!(
        matches!(got, Err(Error::TaskFailed { .. })),
        "chord with a panicking member: {got:?}"
    );
    rig.stop().await;
}

/// A group with a failed member: get() ends with that failure, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_with_failed_member_ends() {
    let Some(rig) = Rig::start(Kind::Redis, 2, 4, None).await else {
        return;
    };
    let g = rig
        .tasks
        .group(vec![
            Add::s((1, 1)).unwrap(),
            Signature::new("fail", ("g",)).unwrap(),
            Add::s((2, 2)).unwrap(),
        ])
        .await
        .unwrap();
    match g.get(Duration::from_secs(10)).await {
        Err(Error::TaskFailed { message, .. }) => assert!(message.contains(r#"refused ["g"]"#), "{message}"),
        other => panic!("group with a failed member: {other:?}"),
    }
    assert_eq!(
        g.completed_count().await.unwrap(),
        2,
        "completed_count counts successes"
    );
    rig.stop().await;
}

/// A panicking task on NATS with a 2 s ack timeout: it must end in a
/// failure (max_retries 0), not run again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_task_on_nats_with_ack_timeout() {
    let opts = ProcessorOptions::default()
        .with_consumer(ConsumerOptions::default().with_ack_timeout(Some(Duration::from_secs(2))));
    let Some(rig) = Rig::start(Kind::Nats, 2, 4, Some(opts)).await else {
        return;
    };
    let r = rig
        .tasks
        .send::<Value>(Signature::new("boom", ()).unwrap())
        .await
        .unwrap();
    let got = r.get(Duration::from_secs(10)).await;
    let runs = rig.counts.get(r.id());
    let info = r.info().await.unwrap();
    assert!(
        matches!(got, Err(Error::TaskFailed { .. })) && runs == 1,
        "panicking task (max_retries 0): {got:?} after {runs} runs in 10 s; record {info:?}"
    );
    rig.stop().await;
}

/// README table: NATS has a pending count in `tasks inspect`; the running
/// task and the revoked held task are reported as the README says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_inspect_on_nats_and_revoke_while_held() {
    let opts = ProcessorOptions::default().with_consumer(ConsumerOptions::default());
    let Some(rig) = Rig::start(Kind::Nats, 1, 4, Some(opts)).await else {
        return;
    };
    let slow = rig
        .tasks
        .send::<u64>(Signature::new("nap", (5000,)).unwrap())
        .await
        .unwrap();
    let held = rig
        .tasks
        .send::<Value>(
            Signature::new("count", (1,))
                .unwrap()
                .with_countdown(Duration::from_secs(6)),
        )
        .await
        .unwrap();
    let t0 = Instant::now();
    while slow.state().await.unwrap() != TaskState::Started || held.state().await.unwrap() != TaskState::Received {
        assert!(t0.elapsed() < WAIT);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (code, out, err) = run(cli()
        .env("PUBSUB_RESULTS", NATS)
        .env("PUBSUB_BACKEND", "nats")
        .env("NATS_URL", NATS)
        .args(["tasks", "inspect", "--queue", rig.queue.as_str()]));
    println!("inspect on nats:\n{out}{err}");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("queue {}: 2 pending", rig.queue.as_str())),
        "running + held = 2 pending: {out}"
    );
    assert!(out.contains(slow.id()), "{out}");
    // Revoke the held one: it never runs, and get() says Revoked.
    rig.tasks.revoke(held.id()).await.unwrap();
    let t1 = Instant::now();
    let got = held.get(WAIT).await;
    println!("revoked while held: {got:?} after {:?}", t1.elapsed());
    assert!(matches!(got, Err(Error::Revoked { .. })), "{got:?}");
    assert_eq!(rig.counts.get(held.id()), 0);
    slow.get(WAIT).await.unwrap();
    rig.stop().await;
}
