//! An outsider's attacks on chords and groups of the task layer, judged by
//! what README.md's "Tasks" section and the rustdoc of `pubsub-tasks`
//! promise: a chord's callback runs exactly once, with its members' results
//! in member order; a failed member fails it with the member's message.
//! On embedded (memory results), Redis (Redis results) and NATS (key-value
//! results) at their standard loopback ports; without a broker the case is
//! reported SKIPPED (a failure under CI=true).
#![cfg(all(feature = "tasks", feature = "embedded", feature = "redis", feature = "nats"))]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pubsub::processor::{Backoff, Shutdown};
use pubsub::tasks::{
    async_trait, Error, MemoryResultStore, NatsResultStore, RedisResultStore, ResultStore, Signature, Task,
    TaskContext, TaskError, TaskOptions, TaskState, Tasks, Worker,
};
use pubsub::{PubSubBackend, Topic};
use serde_json::{json, Value};

const REDIS: &str = "redis://127.0.0.1:6379";
const NATS: &str = "nats://127.0.0.1:4222";

fn uniq() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{:x}{}{}", nanos, std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

fn queue(tag: &str) -> Topic {
    format!("q1/chordout/{tag}{}/default", uniq()).parse().unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Embedded,
    Redis,
    Nats,
}

type Env = (Arc<dyn PubSubBackend>, Arc<dyn ResultStore>);

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
            pubsub_core::testkit::broker_unavailable(&format!("tasks_chord_outsider on {kind:?}"), &e);
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

/// What the handlers saw.
#[derive(Default)]
struct Stats {
    /// Runs per task id (members and callbacks).
    runs: Mutex<HashMap<String, usize>>,
    /// Member runs ("val", "flaky") in all.
    member_runs: AtomicUsize,
    /// Callback ("collect") invocations in all.
    callbacks: AtomicUsize,
    /// When the `n`th member run starts ("val"), trigger this shutdown.
    stop_at: Mutex<Option<(usize, Shutdown)>>,
}

impl Stats {
    fn hit(&self, id: &str) -> usize {
        let mut m = self.runs.lock().unwrap();
        let n = m.entry(id.to_string()).or_default();
        *n += 1;
        *n
    }
    fn get(&self, id: &str) -> usize {
        *self.runs.lock().unwrap().get(id).unwrap_or(&0)
    }
}

/// The value member `i` returns.
fn f(i: i64) -> i64 {
    i * 3 + 1
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

fn worker(env: &Env, queue: &Topic, stats: Arc<Stats>, concurrency: usize) -> Worker {
    let (backend, store) = env;
    let (s1, s2, s3, s4) = (stats.clone(), stats.clone(), stats.clone(), stats.clone());
    let inner = Arc::new(Tasks::new(backend.clone(), store.clone(), queue.clone()));
    Worker::new(backend.clone(), store.clone(), queue.clone())
        .with_name(format!("chordout-{}", uniq()))
        .register(Add)
        // val(i, [sleep ms]) -> f(i)
        .register_fn("val", quick(), move |args, ctx| {
            let s = s1.clone();
            async move {
                s.hit(&ctx.id);
                s.member_runs.fetch_add(1, Ordering::SeqCst);
                let i = args[0]
                    .as_i64()
                    .ok_or_else(|| TaskError::fatal(format!("bad args {args}")))?;
                if let Some(ms) = args.get(1).and_then(Value::as_u64) {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Ok(json!(f(i)))
            }
        })
        // flaky(i, failures): a retriable failure on its first `failures` attempts, then f(i).
        .register_fn("flaky", quick().with_max_retries(3), move |args, ctx| {
            let s = s2.clone();
            async move {
                let n = s.hit(&ctx.id);
                s.member_runs.fetch_add(1, Ordering::SeqCst);
                let i = args[0].as_i64().unwrap();
                let failures = args[1].as_u64().unwrap() as usize;
                if n <= failures {
                    return Err(TaskError::retry(format!("flaky {i} attempt {n}")));
                }
                Ok(json!(f(i)))
            }
        })
        // blob(i, size): a string of about `size` bytes naming i.
        .register_fn("blob", quick().with_max_retries(0), |args, _ctx| async move {
            let i = args[0].as_i64().unwrap();
            let size = args[1].as_u64().unwrap() as usize;
            Ok(json!(format!("{i}:{}", "x".repeat(size))))
        })
        .register_fn("fail", quick().with_max_retries(0), |args, _ctx| async move {
            Err(TaskError::fatal(format!(
                "member refused: {}",
                args[0].as_str().unwrap_or("?")
            )))
        })
        // The chord callback: its first argument back (the ordered results), counted.
        .register_fn("collect", quick(), move |args, ctx| {
            let s = s3.clone();
            async move {
                s.hit(&ctx.id);
                s.callbacks.fetch_add(1, Ordering::SeqCst);
                Ok(args)
            }
        })
        // A callback that starts a chain from inside the worker: total(list) then add(_, 100).
        .register_fn("then_chain", quick(), move |args, ctx| {
            let s = s4.clone();
            let inner = inner.clone();
            async move {
                s.hit(&ctx.id);
                let list: Vec<i64> = serde_json::from_value(args[0].clone()).map_err(TaskError::fatal)?;
                let total: i64 = list.iter().sum();
                let chain = inner
                    .chain(vec![
                        Signature::new("add", (total, 0)).map_err(TaskError::fatal)?,
                        Signature::partial("add", (100,)).map_err(TaskError::fatal)?,
                    ])
                    .await
                    .map_err(TaskError::retry)?;
                Ok(json!(chain.id()))
            }
        })
        .with_concurrency(concurrency)
}

type Running = tokio::task::JoinHandle<pubsub::tasks::Result<Vec<pubsub::processor::ProcessorReport>>>;

struct Rig {
    kind: Kind,
    env: Env,
    queue: Topic,
    tasks: Tasks,
    stats: Arc<Stats>,
    workers: Vec<Option<(Shutdown, Running)>>,
}

impl Rig {
    /// A rig with no worker yet.
    async fn new(kind: Kind) -> Option<Rig> {
        let env = env(kind).await?;
        let queue = queue(&format!("{kind:?}").to_lowercase());
        let tasks = Tasks::new(env.0.clone(), env.1.clone(), queue.clone());
        Some(Rig {
            kind,
            env,
            queue,
            tasks,
            stats: Arc::new(Stats::default()),
            workers: Vec::new(),
        })
    }

    async fn start(kind: Kind, workers: usize, concurrency: usize) -> Option<Rig> {
        let mut rig = Rig::new(kind).await?;
        for _ in 0..workers {
            rig.add_worker(concurrency);
        }
        Some(rig)
    }

    /// Starts a worker; its index for `stop_worker`.
    fn add_worker(&mut self, concurrency: usize) -> usize {
        let shutdown = Shutdown::new();
        let w = worker(&self.env, &self.queue, self.stats.clone(), concurrency);
        self.workers
            .push(Some((shutdown.clone(), tokio::spawn(w.run(shutdown)))));
        self.workers.len() - 1
    }

    /// Graceful shutdown of worker `i`, waited for (at most 40 s).
    async fn stop_worker(&mut self, i: usize) {
        let (sd, run) = self.workers[i].take().expect("worker running");
        sd.trigger();
        let r = tokio::time::timeout(Duration::from_secs(40), run)
            .await
            .unwrap_or_else(|_| panic!("{:?}: worker {i} did not stop within 40 s", self.kind));
        r.unwrap().expect("worker run");
    }

    async fn stop(mut self) {
        for i in 0..self.workers.len() {
            if self.workers[i].is_some() {
                self.stop_worker(i).await;
            }
        }
        self.tasks.close().await.unwrap();
        self.env.0.close().await.unwrap();
    }
}

/// The callback's output as the list of member results.
fn as_list(v: &Value) -> Vec<i64> {
    serde_json::from_value(v[0].clone()).unwrap_or_else(|e| panic!("callback output {v}: {e}"))
}

/// Waits a little for a late duplicate, then checks the callback `id` ran once.
async fn assert_called_once(rig: &Rig, id: &str, what: &str) {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        rig.stats.get(id),
        1,
        "{:?} {what}: the chord callback {id} ran {} times (all callbacks: {})",
        rig.kind,
        rig.stats.get(id),
        rig.stats.callbacks.load(Ordering::SeqCst)
    );
}

macro_rules! on_all {
    ($scenario:ident) => {
        mod $scenario {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$scenario(Kind::Embedded).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                super::$scenario(Kind::Redis).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nats() {
                super::$scenario(Kind::Nats).await;
            }
        }
    };
}

// ---------------------------------------------------------------- big chord

/// 3,000 members, 3 workers at concurrency 50: the callback once, with
/// every result in member order; every member ran once.
async fn chord_3000_three_workers(kind: Kind) {
    const N: i64 = 3000;
    let Some(rig) = Rig::start(kind, 3, 50).await else {
        return;
    };
    let members: Vec<Signature> = (0..N).map(|i| Signature::new("val", (i,)).unwrap()).collect();
    let ids: Vec<String> = members.iter().map(|s| s.id.clone()).collect();
    let t0 = Instant::now();
    let chord = rig
        .tasks
        .chord(members, Signature::partial("collect", ()).unwrap())
        .await
        .unwrap();
    let sent = t0.elapsed();
    let got = chord.get(Duration::from_secs(45)).await;
    let runs = rig.stats.member_runs.load(Ordering::SeqCst);
    let got = got.unwrap_or_else(|e| panic!("{kind:?}: chord of {N}: {e}; member runs so far {runs}"));
    println!(
        "{kind:?}: chord of {N} sent in {sent:?}, called back after {:?}",
        t0.elapsed()
    );
    assert_eq!(
        as_list(&got),
        (0..N).map(f).collect::<Vec<_>>(),
        "{kind:?}: callback's list"
    );
    assert_called_once(&rig, chord.id(), "chord of 3000").await;
    assert_eq!(
        rig.stats.callbacks.load(Ordering::SeqCst),
        1,
        "{kind:?}: callbacks in all"
    );
    let twice: Vec<_> = ids.iter().filter(|id| rig.stats.get(id) != 1).take(5).collect();
    assert!(twice.is_empty(), "{kind:?}: members not run exactly once: {twice:?}");
    rig.stop().await;
}
on_all!(chord_3000_three_workers);

/// Scaling: one worker starts the chord, a second joins at about a third,
/// the first stops gracefully at about two thirds. The callback still runs
/// once with every result.
async fn scaling(kind: Kind, concurrency: usize, sleep_ms: u64) {
    const N: i64 = 1500;
    let Some(mut rig) = Rig::start(kind, 1, concurrency).await else {
        return;
    };
    // 1500 × sleep_ms at `concurrency`: about 1.5 s of work per worker.
    let members: Vec<Signature> = (0..N).map(|i| Signature::new("val", (i, sleep_ms)).unwrap()).collect();
    let ids: Vec<String> = members.iter().map(|s| s.id.clone()).collect();
    let chord = rig
        .tasks
        .chord(members, Signature::partial("collect", ()).unwrap())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while rig.stats.member_runs.load(Ordering::SeqCst) < (N / 3) as usize {
        assert!(
            Instant::now() < deadline,
            "{kind:?}: no third of the members ran in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rig.add_worker(concurrency);
    while rig.stats.member_runs.load(Ordering::SeqCst) < (2 * N / 3) as usize {
        assert!(
            Instant::now() < deadline,
            "{kind:?}: no two thirds of the members ran in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let at_stop = rig.stats.member_runs.load(Ordering::SeqCst);
    let stopping = Instant::now();
    rig.stop_worker(0).await;
    let stopped_in = stopping.elapsed();
    // Past the 30 s ack timeout: a message a NATS pull was still delivering
    // to the stopping worker after its drain went quiet comes back only
    // then. What this asserts is that nothing is lost and the callback runs
    // once, not how soon.
    let got = chord.get(Duration::from_secs(50)).await;
    let got = match got {
        Ok(v) => v,
        Err(e) => {
            let runs = rig.stats.member_runs.load(Ordering::SeqCst);
            let missing: Vec<String> = ids.iter().filter(|id| rig.stats.get(id) == 0).cloned().collect();
            let mut states = Vec::new();
            for id in missing.iter().take(3) {
                states.push(
                    rig.tasks
                        .result::<Value>(id)
                        .info()
                        .await
                        .unwrap()
                        .map(|r| (r.state, r.attempts)),
                );
            }
            // How much longer until the chord ends (diagnosis only: the test fails either way).
            let later = chord.get(Duration::from_secs(20)).await.map(|_| stopping.elapsed());
            panic!(
                "{kind:?}: chord after scaling: {e} (the stopped worker took {stopped_in:?} to stop); member runs at \
                 the stop {at_stop}, 50 s later {runs}; {} members never run, first states {states:?}; the \
                 chord then ended {later:?} after the stop began",
                missing.len()
            )
        }
    };
    assert_eq!(
        as_list(&got),
        (0..N).map(f).collect::<Vec<_>>(),
        "{kind:?}: callback's list"
    );
    assert_called_once(&rig, chord.id(), "chord across a scale-out and a stop").await;
    let missing: Vec<_> = ids.iter().filter(|id| rig.stats.get(id) == 0).take(5).collect();
    assert!(missing.is_empty(), "{kind:?}: members never run: {missing:?}");
    println!(
        "{kind:?}: scaling: {} member runs for {N} members (stop at {at_stop}, took {stopped_in:?})",
        rig.stats.member_runs.load(Ordering::SeqCst)
    );
    rig.stop().await;
}
async fn chord_survives_scaling(kind: Kind) {
    scaling(kind, 10, 10).await;
}
on_all!(chord_survives_scaling);

/// The same at concurrency 50 (50 members in flight when the first stops).
async fn chord_survives_scaling_c50(kind: Kind) {
    scaling(kind, 50, 50).await;
}
on_all!(chord_survives_scaling_c50);

/// The only worker is told to stop while the chord's last members run
/// (their joins still to be made, perhaps batched); it drains, then a new
/// worker starts: the callback must come, once, with every result.
async fn chord_worker_stops_during_last_members(kind: Kind) {
    const N: i64 = 400;
    let Some(mut rig) = Rig::new(kind).await else {
        return;
    };
    let w = rig.add_worker(25);
    let sd = rig.workers[w].as_ref().unwrap().0.clone();
    *rig.stats.stop_at.lock().unwrap() = Some((N as usize, sd));
    // 30 ms each at concurrency 25: ~25 members in flight at the last start.
    let members: Vec<Signature> = (0..N).map(|i| Signature::new("val", (i, 30)).unwrap()).collect();
    let ids: Vec<String> = members.iter().map(|s| s.id.clone()).collect();
    let chord = rig
        .tasks
        .chord(members, Signature::partial("collect", ()).unwrap())
        .await
        .unwrap();
    let t0 = Instant::now();
    while rig.stats.member_runs.load(Ordering::SeqCst) < N as usize {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{kind:?}: the members did not all start in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rig.stop_worker(w).await;
    let mut not_final = 0;
    for id in &ids {
        if !rig.tasks.result::<Value>(id).ready().await.unwrap() {
            not_final += 1;
        }
    }
    assert_eq!(
        not_final, 0,
        "{kind:?}: members without a final record after the worker drained"
    );
    let state_after_stop = chord.state().await.unwrap();
    rig.add_worker(25);
    let got = chord.get(Duration::from_secs(30)).await.unwrap_or_else(|e| {
        panic!("{kind:?}: callback after the only worker drained during the last joins: {e}; callback state right after the drain: {state_after_stop:?}")
    });
    assert_eq!(as_list(&got), (0..N).map(f).collect::<Vec<_>>(), "{kind:?}");
    assert_called_once(&rig, chord.id(), "worker stopped during the last members").await;
    rig.stop().await;
}
on_all!(chord_worker_stops_during_last_members);

// ---------------------------------------------------------------- retries

/// Every third member fails its first attempt (a retry), every seventh its
/// first two: the callback once, every result in order.
async fn chord_with_retrying_members(kind: Kind) {
    const N: i64 = 300;
    let Some(rig) = Rig::start(kind, 2, 20).await else {
        return;
    };
    let failures = |i: i64| {
        if i % 7 == 0 {
            2
        } else if i % 3 == 0 {
            1
        } else {
            0
        }
    };
    let members: Vec<Signature> = (0..N)
        .map(|i| Signature::new("flaky", (i, failures(i))).unwrap())
        .collect();
    let ids: Vec<String> = members.iter().map(|s| s.id.clone()).collect();
    let chord = rig
        .tasks
        .chord(members, Signature::partial("collect", ()).unwrap())
        .await
        .unwrap();
    let got = chord
        .get(Duration::from_secs(40))
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: chord with retrying members: {e}"));
    assert_eq!(as_list(&got), (0..N).map(f).collect::<Vec<_>>(), "{kind:?}");
    assert_called_once(&rig, chord.id(), "chord with retrying members").await;
    for (i, id) in ids.iter().enumerate() {
        let want = failures(i as i64) + 1;
        assert_eq!(rig.stats.get(id), want, "{kind:?}: member {i} runs");
        let info = rig.tasks.result::<Value>(id).info().await.unwrap().unwrap();
        assert_eq!(info.state, TaskState::Success, "{kind:?}: member {i}");
        assert_eq!(info.attempts as usize, want, "{kind:?}: member {i} info().attempts");
    }
    rig.stop().await;
}
on_all!(chord_with_retrying_members);

// ---------------------------------------------------------------- odd shapes

/// A chord of 1 member, and a chord whose member list has the same
/// Signature (same id) twice: the callback gets the result at both places
/// (or the chord is refused up front as invalid); never a hang.
async fn chord_of_one_and_duplicate_member(kind: Kind) {
    let Some(rig) = Rig::start(kind, 2, 8).await else {
        return;
    };
    let one = rig
        .tasks
        .chord(
            vec![Signature::new("val", (41,)).unwrap()],
            Signature::partial("collect", ()).unwrap(),
        )
        .await
        .unwrap();
    let got = one.get(Duration::from_secs(15)).await.unwrap();
    assert_eq!(got, json!([[f(41)]]), "{kind:?}: chord of one");
    assert_called_once(&rig, one.id(), "chord of one").await;

    let a = Signature::new("val", (1,)).unwrap();
    let b = Signature::new("val", (2,)).unwrap();
    let c = Signature::new("val", (3,)).unwrap();
    let members = vec![a.clone(), b.clone(), a.clone(), c.clone(), a.clone()];
    match rig
        .tasks
        .chord(members, Signature::partial("collect", ()).unwrap())
        .await
    {
        Err(Error::Invalid(why)) => println!("{kind:?}: duplicate member refused: {why}"),
        Err(e) => panic!("{kind:?}: a chord with a duplicate member: {e}"),
        Ok(dup) => {
            let got = dup.get(Duration::from_secs(20)).await;
            let state_a = rig.tasks.result::<Value>(&a.id).info().await.unwrap();
            let got = got.unwrap_or_else(|e| {
                panic!(
                    "{kind:?}: chord with member {} three times: {e}; runs of it {}; its record {state_a:?}",
                    a.id,
                    rig.stats.get(&a.id)
                )
            });
            assert_eq!(
                as_list(&got),
                vec![f(1), f(2), f(1), f(3), f(1)],
                "{kind:?}: duplicate member"
            );
            assert_called_once(&rig, dup.id(), "chord with a duplicate member").await;
        }
    }
    // A member already finished in another chord (same Signature, same id)
    // joins this chord too: its kept result, not a hang.
    let a_runs = rig.stats.get(&a.id);
    let again = rig
        .tasks
        .chord(
            vec![a.clone(), Signature::new("val", (4,)).unwrap()],
            Signature::partial("collect", ()).unwrap(),
        )
        .await;
    if let Ok(again) = again {
        let got = again
            .get(Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: a chord reusing a finished member {}: {e}", a.id));
        assert_eq!(as_list(&got), vec![f(1), f(4)], "{kind:?}: reused finished member");
        assert_called_once(&rig, again.id(), "chord reusing a finished member").await;
        assert!(rig.stats.get(&a.id) >= a_runs, "{kind:?}");
    }
    rig.stop().await;
}
on_all!(chord_of_one_and_duplicate_member);

/// Two chords at once on the same queue and workers, sent concurrently,
/// members of different lengths of work: each callback once with its own list.
async fn two_chords_at_once(kind: Kind) {
    let Some(rig) = Rig::start(kind, 2, 25).await else {
        return;
    };
    let first: Vec<Signature> = (0..400).map(|i| Signature::new("val", (i, i % 3)).unwrap()).collect();
    let second: Vec<Signature> = (1000..1250).map(|i| Signature::new("val", (i,)).unwrap()).collect();
    let (c1, c2) = tokio::join!(
        rig.tasks.chord(first, Signature::partial("collect", ()).unwrap()),
        rig.tasks
            .chord(second, Signature::partial("collect", ("second",)).unwrap()),
    );
    let (c1, c2) = (c1.unwrap(), c2.unwrap());
    let (g1, g2) = tokio::join!(c1.get(Duration::from_secs(40)), c2.get(Duration::from_secs(40)));
    let (g1, g2) = (g1.unwrap(), g2.unwrap());
    assert_eq!(
        as_list(&g1),
        (0..400).map(f).collect::<Vec<_>>(),
        "{kind:?}: first chord"
    );
    assert_eq!(g1.as_array().unwrap().len(), 1, "{kind:?}: first callback args {g1}");
    assert_eq!(
        as_list(&g2),
        (1000..1250).map(f).collect::<Vec<_>>(),
        "{kind:?}: second chord"
    );
    assert_eq!(
        g2[1],
        json!("second"),
        "{kind:?}: the callback's own args follow the list"
    );
    assert_called_once(&rig, c1.id(), "first of two chords").await;
    assert_eq!(rig.stats.get(c2.id()), 1, "{kind:?}: second callback runs");
    assert_eq!(
        rig.stats.callbacks.load(Ordering::SeqCst),
        2,
        "{kind:?}: callbacks in all"
    );
    rig.stop().await;
}
on_all!(two_chords_at_once);

/// Nesting as far as the API allows: a chord's callback cannot carry a
/// chain (a Signature has no callbacks), so the callback starts a chain
/// itself from inside the worker; and an immutable callback gets its own
/// arguments only.
async fn chord_callback_starts_a_chain(kind: Kind) {
    let Some(rig) = Rig::start(kind, 2, 8).await else {
        return;
    };
    let members: Vec<Signature> = (0..20).map(|i| Signature::new("val", (i,)).unwrap()).collect();
    let chord = rig
        .tasks
        .chord(members, Signature::partial("then_chain", ()).unwrap())
        .await
        .unwrap();
    let chain_id: String = serde_json::from_value(chord.get(Duration::from_secs(20)).await.unwrap()).unwrap();
    let total: i64 = (0..20).map(f).sum();
    let end = rig
        .tasks
        .result::<i64>(&chain_id)
        .get(Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(end, total + 100, "{kind:?}: chain started by the chord callback");
    assert_eq!(rig.stats.get(chord.id()), 1, "{kind:?}: callback runs");

    let members: Vec<Signature> = (0..5).map(|i| Signature::new("val", (i,)).unwrap()).collect();
    let imm = rig
        .tasks
        .chord(members, Signature::new("collect", ("own", 7)).unwrap().immutable())
        .await
        .unwrap();
    assert_eq!(
        imm.get(Duration::from_secs(20)).await.unwrap(),
        json!(["own", 7]),
        "{kind:?}: immutable callback"
    );
    assert_called_once(&rig, imm.id(), "immutable callback").await;
    rig.stop().await;
}
on_all!(chord_callback_starts_a_chain);

// ---------------------------------------------------------------- failure

/// A member that fails for good: the callback fails with that member's
/// message and never runs; every other member's result can still be read.
async fn chord_member_fails_permanently(kind: Kind) {
    const N: i64 = 30;
    let Some(rig) = Rig::start(kind, 2, 8).await else {
        return;
    };
    let members: Vec<Signature> = (0..N)
        .map(|i| {
            if i == 17 {
                Signature::new("fail", ("number seventeen",)).unwrap()
            } else {
                Signature::new("val", (i, 20)).unwrap()
            }
        })
        .collect();
    let ids: Vec<String> = members.iter().map(|s| s.id.clone()).collect();
    let chord = rig
        .tasks
        .chord(members, Signature::partial("collect", ()).unwrap())
        .await
        .unwrap();
    let got = chord.get(Duration::from_secs(20)).await;
    match &got {
        Err(Error::TaskFailed { message, .. }) => assert!(
            message.contains("member refused: number seventeen"),
            "{kind:?}: the callback's failure does not carry the member's message: {message}"
        ),
        other => panic!("{kind:?}: a chord with a failed member: {other:?}"),
    }
    let failed = rig.tasks.result::<Value>(&ids[17]).get(Duration::from_secs(5)).await;
    assert!(
        matches!(&failed, Err(Error::TaskFailed { message, .. }) if message.contains("number seventeen")),
        "{kind:?}: the failed member: {failed:?}"
    );
    for (i, id) in ids.iter().enumerate() {
        if i == 17 {
            continue;
        }
        let r = rig.tasks.result::<i64>(id).get(Duration::from_secs(10)).await;
        assert_eq!(r.unwrap(), f(i as i64), "{kind:?}: member {i} after the chord failed");
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        rig.stats.get(chord.id()),
        0,
        "{kind:?}: the callback of a failed chord ran"
    );
    assert_eq!(chord.state().await.unwrap(), TaskState::Failure, "{kind:?}");
    rig.stop().await;
}
on_all!(chord_member_fails_permanently);

/// A member that exhausts its retries: same as a permanent failure.
async fn chord_member_exhausts_retries(kind: Kind) {
    let Some(rig) = Rig::start(kind, 1, 8).await else {
        return;
    };
    let mut members: Vec<Signature> = (0..6).map(|i| Signature::new("val", (i,)).unwrap()).collect();
    // flaky with max_retries 3 failing 10 times: fails after 4 attempts.
    let bad = Signature::new("flaky", (99, 10)).unwrap();
    members.insert(2, bad.clone());
    let chord = rig
        .tasks
        .chord(members, Signature::partial("collect", ()).unwrap())
        .await
        .unwrap();
    let got = chord.get(Duration::from_secs(30)).await;
    assert!(
        matches!(&got, Err(Error::TaskFailed { message, .. }) if message.contains("flaky 99 attempt 4")),
        "{kind:?}: chord whose member ran out of retries: {got:?}"
    );
    assert_eq!(
        rig.stats.get(&bad.id),
        4,
        "{kind:?}: attempts of the member (1 + max_retries 3)"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(rig.stats.get(chord.id()), 0, "{kind:?}: the callback ran");
    rig.stop().await;
}
on_all!(chord_member_exhausts_retries);

// ---------------------------------------------------------------- late worker

/// A chord sent while no worker runs; a worker starts 2 s later.
async fn chord_before_any_worker(kind: Kind) {
    let Some(mut rig) = Rig::new(kind).await else {
        return;
    };
    let members: Vec<Signature> = (0..200).map(|i| Signature::new("val", (i,)).unwrap()).collect();
    let chord = rig
        .tasks
        .chord(members, Signature::partial("collect", ()).unwrap())
        .await
        .unwrap();
    let early = chord.get(Duration::from_millis(500)).await;
    assert!(
        matches!(early, Err(Error::Timeout { .. })),
        "{kind:?}: a result with no worker: {early:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(chord.state().await.unwrap(), TaskState::Pending, "{kind:?}");
    rig.add_worker(20);
    let got = chord
        .get(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: chord sent before any worker: {e}"));
    assert_eq!(as_list(&got), (0..200).map(f).collect::<Vec<_>>(), "{kind:?}");
    assert_called_once(&rig, chord.id(), "chord sent before any worker").await;
    rig.stop().await;
}
on_all!(chord_before_any_worker);

// ---------------------------------------------------------------- bad input

/// A member with a task name no worker knows: the chord must end (failed,
/// with the member's message), not wait forever; the others still run.
async fn chord_with_unknown_task_member(kind: Kind) {
    let Some(rig) = Rig::start(kind, 1, 8).await else {
        return;
    };
    let ghost = Signature::new("no_such_task_here", (1, 2)).unwrap();
    let members = vec![
        Signature::new("val", (0,)).unwrap(),
        ghost.clone(),
        Signature::new("val", (2,)).unwrap(),
    ];
    let ids: Vec<String> = members.iter().map(|s| s.id.clone()).collect();
    let t0 = Instant::now();
    let chord = rig
        .tasks
        .chord(members, Signature::partial("collect", ()).unwrap())
        .await
        .unwrap();
    let got = chord.get(Duration::from_secs(40)).await;
    let at_once = rig.tasks.result::<Value>(&ghost.id).info().await.unwrap();
    // The member's own result must end too (waited for: the chord may fail first).
    let ghost_get = rig.tasks.result::<Value>(&ghost.id).get(Duration::from_secs(5)).await;
    let ghost_rec = rig.tasks.result::<Value>(&ghost.id).info().await.unwrap();
    println!(
        "{kind:?}: unknown member after {:?}: {got:?}; its record right after the chord failed {at_once:?}; \
         its get {ghost_get:?}",
        t0.elapsed()
    );
    assert!(
        matches!(&ghost_get, Err(Error::TaskFailed { .. })),
        "{kind:?}: the unknown member's own result: {ghost_get:?}; its record right after the chord \
         failed {at_once:?}, 5 s later {ghost_rec:?}"
    );
    let member_error = ghost_rec.as_ref().and_then(|r| r.error.clone()).unwrap_or_default();
    match &got {
        Err(Error::TaskFailed { message, .. }) => {
            assert!(
                !member_error.is_empty(),
                "{kind:?}: the unknown member's record has no error: {ghost_rec:?}"
            );
            assert!(
                message.contains(&member_error),
                "{kind:?}: callback message {message:?} is not the member's {member_error:?}"
            );
        }
        other => panic!("{kind:?}: chord with an unknown task member: {other:?}; member record {ghost_rec:?}"),
    }
    assert_eq!(ghost_rec.unwrap().state, TaskState::Failure, "{kind:?}");
    assert_eq!(
        rig.tasks
            .result::<i64>(&ids[2])
            .get(Duration::from_secs(5))
            .await
            .unwrap(),
        f(2)
    );
    assert_eq!(rig.stats.get(chord.id()), 0, "{kind:?}: callback ran");
    rig.stop().await;
}
on_all!(chord_with_unknown_task_member);

/// Members whose args do not fit the typed task (a string, too few, an
/// object): each fails, the chord fails with a decode message, the callback
/// never runs; a callback whose args do not fit fails the chord's handle.
async fn chord_with_bad_args(kind: Kind) {
    let Some(rig) = Rig::start(kind, 1, 8).await else {
        return;
    };
    for bad in [
        Signature::new("add", ("x", 1)).unwrap(),
        Signature::new("add", (1,)).unwrap(),
        Signature::new("add", json!({"a": 1, "b": 2})).unwrap(),
    ] {
        let members = vec![Add::s((1, 2)).unwrap(), bad.clone(), Add::s((3, 4)).unwrap()];
        let chord = rig
            .tasks
            .chord(members, Signature::partial("collect", ()).unwrap())
            .await
            .unwrap();
        let got = chord.get(Duration::from_secs(20)).await;
        let member = rig.tasks.result::<i64>(&bad.id).get(Duration::from_secs(5)).await;
        assert!(
            matches!(&member, Err(Error::TaskFailed { .. })),
            "{kind:?}: member add{} : {member:?}",
            bad.args
        );
        assert!(
            matches!(&got, Err(Error::TaskFailed { .. })),
            "{kind:?}: chord with member add{}: {got:?}",
            bad.args
        );
        assert_eq!(rig.stats.get(chord.id()), 0, "{kind:?}: callback ran");
    }
    // The callback itself cannot take the list: add(list, 1).
    let members: Vec<Signature> = (0..4).map(|i| Add::s((i, i)).unwrap()).collect();
    let chord = rig
        .tasks
        .chord(members, Signature::partial("add", (1,)).unwrap())
        .await
        .unwrap();
    let got = chord.get(Duration::from_secs(20)).await;
    assert!(
        matches!(&got, Err(Error::TaskFailed { .. })),
        "{kind:?}: a callback whose args do not fit: {got:?}"
    );
    rig.stop().await;
}
on_all!(chord_with_bad_args);

// ---------------------------------------------------------------- groups

/// A group of 2,000 members on two workers: results in member order,
/// completed_count reaches the size, every member ran once.
async fn group_2000(kind: Kind) {
    const N: i64 = 2000;
    let Some(rig) = Rig::start(kind, 2, 50).await else {
        return;
    };
    let members: Vec<Signature> = (0..N).map(|i| Signature::new("val", (i,)).unwrap()).collect();
    let g = rig.tasks.group(members).await.unwrap();
    let got = g.get(Duration::from_secs(40)).await.unwrap();
    assert_eq!(got, (0..N).map(|i| json!(f(i))).collect::<Vec<_>>(), "{kind:?}");
    assert_eq!(g.completed_count().await.unwrap(), N as usize, "{kind:?}");
    assert_eq!(g.members().len(), N as usize);
    assert_eq!(
        rig.stats.member_runs.load(Ordering::SeqCst),
        N as usize,
        "{kind:?}: member runs"
    );
    // A group with one failing member: get() gives that member's error.
    let g = rig
        .tasks
        .group(vec![
            Signature::new("val", (1,)).unwrap(),
            Signature::new("fail", ("in a group",)).unwrap(),
        ])
        .await
        .unwrap();
    let got = g.get(Duration::from_secs(20)).await;
    assert!(
        matches!(&got, Err(Error::TaskFailed { message, .. }) if message.contains("in a group")),
        "{kind:?}: {got:?}"
    );
    assert_eq!(g.completed_count().await.unwrap(), 1, "{kind:?}");
    rig.stop().await;
}
on_all!(group_2000);

/// Causality: when a chord's handle reports a member's failure, that
/// member's own record is final already (a caller who looks at the member
/// next must not find it Pending). Thirty chords, each with one member that
/// fails (fatal) and one whose task no worker knows.
async fn failed_member_final_before_chord_fails(kind: Kind) {
    let Some(rig) = Rig::start(kind, 1, 8).await else {
        return;
    };
    let mut seen = Vec::new();
    for round in 0..30 {
        let bad = if round % 2 == 0 {
            Signature::new("fail", (format!("round {round}"),)).unwrap()
        } else {
            Signature::new("not_registered_anywhere", (round,)).unwrap()
        };
        let members = vec![Signature::new("val", (round,)).unwrap(), bad.clone()];
        let chord = rig
            .tasks
            .chord(members, Signature::partial("collect", ()).unwrap())
            .await
            .unwrap();
        let got = chord.get(Duration::from_secs(20)).await;
        assert!(
            matches!(&got, Err(Error::TaskFailed { .. })),
            "{kind:?}: round {round}: {got:?}"
        );
        let state = rig.tasks.result::<Value>(&bad.id).state().await.unwrap();
        if state != TaskState::Failure {
            seen.push((round, bad.name.clone(), state));
        }
    }
    assert!(
        seen.is_empty(),
        "{kind:?}: the chord had failed while its failed member was still not final: {seen:?} (round, task, state)"
    );
    rig.stop().await;
}
on_all!(failed_member_final_before_chord_fails);

/// Members on two queues served by two different workers (one queue
/// each), one member with a 1.5 s countdown, the callback on the second
/// queue: the callback waits for the delayed member and runs once.
async fn chord_across_queues(kind: Kind) {
    let Some(mut rig) = Rig::start(kind, 1, 10).await else {
        return;
    };
    let other = queue("other");
    let shutdown = Shutdown::new();
    let w = worker(&rig.env, &other, rig.stats.clone(), 10);
    rig.workers
        .push(Some((shutdown.clone(), tokio::spawn(w.run(shutdown)))));
    let members: Vec<Signature> = (0..40)
        .map(|i| {
            let s = Signature::new("val", (i,)).unwrap();
            let s = if i % 2 == 1 { s.on_queue(&other) } else { s };
            if i == 5 {
                s.with_countdown(Duration::from_millis(1500))
            } else {
                s
            }
        })
        .collect();
    let t0 = Instant::now();
    let chord = rig
        .tasks
        .chord(members, Signature::partial("collect", ()).unwrap().on_queue(&other))
        .await
        .unwrap();
    let got = chord.get(Duration::from_secs(20)).await.unwrap();
    let took = t0.elapsed();
    assert_eq!(as_list(&got), (0..40).map(f).collect::<Vec<_>>(), "{kind:?}");
    assert!(
        took >= Duration::from_millis(1400),
        "{kind:?}: the callback did not wait for the delayed member: {took:?}"
    );
    let cb = rig.tasks.result::<Value>(chord.id()).info().await.unwrap().unwrap();
    println!("{kind:?}: callback ran on {:?} after {took:?}", cb.worker);
    assert_called_once(&rig, chord.id(), "chord across queues").await;
    rig.stop().await;
}
on_all!(chord_across_queues);

/// A chord whose results together pass 1 MB (200 × 8 KB): where the
/// callback's message or record can hold it, the callback gets it all;
/// where a limit refuses it (NATS: 1 MB max_payload), the chord's handle
/// must end with a failure, never wait forever or run the callback twice.
async fn chord_results_over_a_megabyte(kind: Kind) {
    const N: i64 = 200;
    let Some(rig) = Rig::start(kind, 2, 20).await else {
        return;
    };
    let members: Vec<Signature> = (0..N).map(|i| Signature::new("blob", (i, 8192)).unwrap()).collect();
    let ids: Vec<String> = members.iter().map(|s| s.id.clone()).collect();
    let chord = rig
        .tasks
        .chord(members, Signature::partial("collect", ()).unwrap())
        .await
        .unwrap();
    let got = chord.get(Duration::from_secs(30)).await;
    let info = rig.tasks.result::<Value>(chord.id()).info().await.unwrap();
    match &got {
        Ok(v) => {
            let list: Vec<String> = serde_json::from_value(v[0].clone()).unwrap();
            assert_eq!(list.len(), N as usize, "{kind:?}");
            for (i, s) in list.iter().enumerate() {
                assert!(
                    s.starts_with(&format!("{i}:")) && s.len() == 8192 + format!("{i}:").len(),
                    "{kind:?}: item {i}"
                );
            }
        }
        Err(Error::TaskFailed { message, .. }) => {
            println!("{kind:?}: chord of 1.6 MB of results failed: {message}");
            assert_eq!(kind, Kind::Nats, "{kind:?}: only NATS has a 1 MB limit here: {message}");
        }
        Err(e) => {
            let mut ok = 0;
            for id in &ids {
                if rig.tasks.result::<Value>(id).state().await.unwrap() == TaskState::Success {
                    ok += 1;
                }
            }
            panic!(
                "{kind:?}: chord of 1.6 MB of results: {e}; callback record {:?}; members succeeded {ok}/{N}; \
                 callback runs {}",
                info.map(|r| (r.state, r.error, r.attempts)),
                rig.stats.get(chord.id())
            )
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        rig.stats.get(chord.id()) <= 1,
        "{kind:?}: callback ran {} times",
        rig.stats.get(chord.id())
    );
    rig.stop().await;
}
on_all!(chord_results_over_a_megabyte);

/// One member Signature shared by 20 chords sent at once, while it runs
/// (300 ms): every chord gets its result, each callback once.
async fn member_shared_by_chords_in_flight(kind: Kind) {
    let Some(rig) = Rig::start(kind, 2, 20).await else {
        return;
    };
    let shared = Signature::new("val", (7, 300)).unwrap();
    let mut chords = Vec::new();
    for k in 0..20i64 {
        let members = vec![shared.clone(), Signature::new("val", (100 + k,)).unwrap()];
        chords.push(
            rig.tasks
                .chord(members, Signature::partial("collect", ()).unwrap())
                .await
                .unwrap(),
        );
    }
    let mut bad = Vec::new();
    for (k, c) in chords.iter().enumerate() {
        match c.get(Duration::from_secs(20)).await {
            Ok(v) if as_list(&v) == vec![f(7), f(100 + k as i64)] => {}
            other => bad.push((k, format!("{other:?}"))),
        }
    }
    println!("{kind:?}: the shared member ran {} times", rig.stats.get(&shared.id));
    assert!(bad.is_empty(), "{kind:?}: chords sharing a running member: {bad:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for c in &chords {
        assert_eq!(rig.stats.get(c.id()), 1, "{kind:?}: callback {} runs", c.id());
    }
    rig.stop().await;
}
on_all!(member_shared_by_chords_in_flight);

/// A callback whose task no worker knows: the chord's handle fails.
async fn chord_with_unknown_callback(kind: Kind) {
    let Some(rig) = Rig::start(kind, 1, 8).await else {
        return;
    };
    let members: Vec<Signature> = (0..5).map(|i| Signature::new("val", (i,)).unwrap()).collect();
    let chord = rig
        .tasks
        .chord(members, Signature::partial("no_such_callback", ()).unwrap())
        .await
        .unwrap();
    let got = chord.get(Duration::from_secs(20)).await;
    assert!(
        matches!(&got, Err(Error::TaskFailed { message, .. }) if message.contains("no_such_callback")),
        "{kind:?}: a chord whose callback is unknown: {got:?}"
    );
    rig.stop().await;
}
on_all!(chord_with_unknown_callback);
