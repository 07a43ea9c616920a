//! The task layer end to end, the same cases on the embedded backend (memory
//! results) and on real Redis (Redis results) and NATS (JetStream key-value
//! results; NATS has no delayed delivery, so countdowns take the worker's hold).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pubsub_core::processor::{Backoff, Shutdown};
use pubsub_core::{OutgoingMessage, PubSubBackend, Topic};
use pubsub_tasks::{
    async_trait, DirResultStore, Error, MemoryResultStore, NatsResultStore, RedisResultStore, ResultStore, SendOptions,
    Signature, Task, TaskContext, TaskError, TaskMessage, TaskOptions, TaskState, Tasks, Worker, WIRE_VERSION,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

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

/// Fails with a retriable error until its attempt `succeed_on` (1-based).
struct Flaky {
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl Task for Flaky {
    const NAME: &'static str = "flaky";
    type Args = (u32,);
    type Output = String;
    async fn run(&self, (succeed_on,): (u32,), ctx: TaskContext) -> Result<String, TaskError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if ctx.retries + 1 < succeed_on {
            return Err(TaskError::retry(format!("attempt {} failed", ctx.retries + 1)));
        }
        Ok(format!("ok on attempt {}", ctx.retries + 1))
    }
    fn options(&self) -> TaskOptions {
        quick().with_max_retries(2)
    }
}

fn quick() -> TaskOptions {
    TaskOptions::default().with_backoff(Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        factor: 2.0,
    })
}

struct Env {
    backend: Arc<dyn PubSubBackend>,
    store: Arc<dyn ResultStore>,
    queue: Topic,
    tasks: Tasks,
    shutdown: Shutdown,
    worker: tokio::task::JoinHandle<()>,
    callbacks: Arc<AtomicUsize>,
    flaky_calls: Arc<AtomicUsize>,
}

impl Env {
    async fn start(backend: Arc<dyn PubSubBackend>, store: Arc<dyn ResultStore>) -> Env {
        let queue: Topic = format!("q1/tasks/t{}/default", &uuid::Uuid::new_v4().simple().to_string()[..10])
            .parse()
            .unwrap();
        let callbacks = Arc::new(AtomicUsize::new(0));
        let flaky_calls = Arc::new(AtomicUsize::new(0));
        let shutdown = Shutdown::new();
        let mut workers = Vec::new();
        // Two workers on the queue: chords must join correctly across them.
        for n in 0..2 {
            let cb = callbacks.clone();
            let worker = Worker::new(backend.clone(), store.clone(), queue.clone())
                .with_name(format!("w{n}"))
                .with_concurrency(4)
                .register(Add)
                .register(Flaky {
                    calls: flaky_calls.clone(),
                })
                .register_fn("sum", quick(), move |args, _ctx| {
                    let cb = cb.clone();
                    async move {
                        cb.fetch_add(1, Ordering::SeqCst);
                        let (parts,): (Vec<i64>,) = serde_json::from_value(args).map_err(TaskError::fatal)?;
                        Ok(json!(parts.iter().sum::<i64>()))
                    }
                })
                .register_fn("fail", quick().with_max_retries(0), |args, _ctx| async move {
                    Err(TaskError::fatal(format!("refused {args}")))
                })
                .register_fn(
                    "sleep",
                    quick().with_max_retries(0).with_time_limit(Duration::from_millis(200)),
                    |_a, _c| async move {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        Ok(Value::Null)
                    },
                );
            workers.push(worker.run(shutdown.clone()));
        }
        let worker = tokio::spawn(async move {
            for r in futures::future::join_all(workers).await {
                r.expect("worker run");
            }
        });
        let tasks = Tasks::new(backend.clone(), store.clone(), queue.clone());
        Env {
            backend,
            store,
            queue,
            tasks,
            shutdown,
            worker,
            callbacks,
            flaky_calls,
        }
    }

    async fn stop(self) {
        self.shutdown.trigger();
        self.worker.await.unwrap();
        self.tasks.close().await.unwrap();
        self.backend.close().await.unwrap();
    }
}

async fn suite(env: Env) {
    let name = env.backend.name();
    // delay and get, with what info() records.
    let r = env.tasks.delay::<Add>((1, 2)).await.unwrap();
    let got = r.get(WAIT).await;
    if got.is_err() {
        panic!("{name}: {got:?} info {:?}", r.info().await);
    }
    assert_eq!(got.unwrap(), 3, "{name}");
    let info = r.info().await.unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (TaskState::Success, 1), "{name}");
    assert!(info.worker.is_some() && info.finished_at.is_some(), "{name}: {info:?}");
    assert!(r.ready().await.unwrap());

    // Retries with backoff until it succeeds; then one that uses them up.
    let r = env.tasks.delay::<Flaky>((3,)).await.unwrap();
    assert_eq!(r.get(WAIT).await.unwrap(), "ok on attempt 3", "{name}");
    assert_eq!(r.info().await.unwrap().unwrap().attempts, 3);
    let r = env.tasks.delay::<Flaky>((9,)).await.unwrap();
    match r.get(WAIT).await {
        Err(Error::TaskFailed { message, .. }) => assert_eq!(message, "attempt 3 failed", "{name}"),
        other => panic!("{name}: expected TaskFailed, got {other:?}"),
    }
    assert_eq!(env.flaky_calls.load(Ordering::SeqCst), 6, "{name}: 3 + 3 attempts");

    // A fatal error fails at once; a time limit fails the attempt.
    let r = env
        .tasks
        .send::<Value>(Signature::new("fail", ("x",)).unwrap())
        .await
        .unwrap();
    match r.get(WAIT).await {
        Err(Error::TaskFailed { message, .. }) => assert_eq!(message, r#"refused ["x"]"#),
        other => panic!("{name}: expected TaskFailed, got {other:?}"),
    }
    let r = env
        .tasks
        .send::<Value>(Signature::new("sleep", ()).unwrap())
        .await
        .unwrap();
    match r.get(WAIT).await {
        Err(Error::TaskFailed { message, .. }) => assert!(message.contains("time limit"), "{message}"),
        other => panic!("{name}: expected TaskFailed, got {other:?}"),
    }

    // Unknown task names fail, typed.
    let r = env
        .tasks
        .send::<Value>(Signature::new("nope", ()).unwrap())
        .await
        .unwrap();
    assert!(matches!(r.get(WAIT).await, Err(Error::TaskFailed { .. })), "{name}");

    // Countdown: it does not start before its time (checked on the
    // recorded timestamps, not the wall clock of this test).
    let countdown = Duration::from_millis(800);
    let r = env
        .tasks
        .apply_async::<Add>((2, 2), SendOptions::default().with_countdown(countdown))
        .await
        .unwrap();
    assert!(!r.ready().await.unwrap());
    assert_eq!(r.get(WAIT).await.unwrap(), 4);
    let info = r.info().await.unwrap().unwrap();
    let (sent, started) = (info.sent_at.unwrap(), info.started_at.unwrap());
    assert!(
        started >= sent + countdown.as_millis() as u64,
        "{name}: started {started} sent {sent}"
    );

    // Revoked before it starts; expired before it starts.
    let r = env
        .tasks
        .apply_async::<Add>(
            (1, 1),
            SendOptions::default().with_countdown(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    env.tasks.revoke(r.id()).await.unwrap();
    assert!(matches!(r.get(WAIT).await, Err(Error::Revoked { .. })), "{name}");
    let past = SystemTime::now() - Duration::from_secs(1);
    let r = env
        .tasks
        .apply_async::<Add>((1, 1), SendOptions::default().with_expires(past))
        .await
        .unwrap();
    assert!(matches!(r.get(WAIT).await, Err(Error::Revoked { .. })), "{name}");

    // A timeout while waiting is typed too.
    let r = env
        .tasks
        .apply_async::<Add>(
            (5, 5),
            SendOptions::default().with_countdown(Duration::from_millis(600)),
        )
        .await
        .unwrap();
    assert!(matches!(
        r.get(Duration::from_millis(50)).await,
        Err(Error::Timeout { .. })
    ));
    assert_eq!(r.get(WAIT).await.unwrap(), 10);

    // Chain: (1 + 2) + 10, then an immutable step; a failing step stops it.
    let chain = vec![
        Add::s((1, 2)).unwrap(),
        Signature::partial("add", (10,)).unwrap(),
        Signature::partial("add", (100,)).unwrap(),
    ];
    assert_eq!(
        env.tasks.chain(chain).await.unwrap().get(WAIT).await.unwrap(),
        json!(113)
    );
    let fixed = vec![Add::s((1, 2)).unwrap(), Add::s((7, 7)).unwrap().immutable()];
    assert_eq!(
        env.tasks.chain(fixed).await.unwrap().get(WAIT).await.unwrap(),
        json!(14)
    );
    let broken = vec![
        Add::s((1, 2)).unwrap(),
        Signature::partial("fail", ()).unwrap(),
        Signature::partial("add", (1,)).unwrap(),
    ];
    match env.tasks.chain(broken).await.unwrap().get(WAIT).await {
        Err(Error::TaskFailed { message, .. }) => assert!(message.contains("refused [3]"), "{name}: {message}"),
        other => panic!("{name}: expected the chain to fail, got {other:?}"),
    }

    // Group: results in member order.
    let members: Vec<_> = (0..10).map(|i| Add::s((i, i)).unwrap()).collect();
    let group = env.tasks.group(members).await.unwrap();
    let got = group.get(WAIT).await.unwrap();
    assert_eq!(got, (0..10).map(|i| json!(2 * i)).collect::<Vec<_>>(), "{name}");
    assert_eq!(group.completed_count().await.unwrap(), 10);

    // Chord over two workers: the callback runs once, with every result in order.
    let before = env.callbacks.load(Ordering::SeqCst);
    let members: Vec<_> = (0..30).map(|i| Add::s((i, 1)).unwrap()).collect();
    let chord = env
        .tasks
        .chord(members, Signature::partial("sum", ()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        chord.get(WAIT).await.unwrap(),
        json!((0..30).map(|i| i + 1).sum::<i64>()),
        "{name}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.callbacks.load(Ordering::SeqCst), before + 1, "{name}: one callback");
    // A failed member fails the callback with its message.
    let members = vec![Add::s((1, 1)).unwrap(), Signature::new("fail", ("m",)).unwrap()];
    let chord = env
        .tasks
        .chord(members, Signature::partial("sum", ()).unwrap())
        .await
        .unwrap();
    match chord.get(WAIT).await {
        Err(Error::TaskFailed { message, .. }) => assert!(message.contains(r#"refused ["m"]"#), "{message}"),
        other => panic!("{name}: expected the chord to fail, got {other:?}"),
    }

    // The wire format, as another language would send it.
    let id = uuid::Uuid::new_v4().to_string();
    let raw = json!({"v": WIRE_VERSION, "id": id, "name": "add", "args": [20, 22]});
    let producer = env
        .backend
        .create_producer(&env.queue, Default::default())
        .await
        .unwrap();
    producer
        .send(OutgoingMessage::new(serde_json::to_vec(&raw).unwrap()))
        .await
        .unwrap();
    assert_eq!(env.tasks.result::<i64>(&id).get(WAIT).await.unwrap(), 42, "{name}");
    let parsed = TaskMessage::from_bytes(raw.to_string().as_bytes()).unwrap();
    assert!(parsed.callbacks.is_empty() && parsed.retries == 0);
    producer.close().await.unwrap();

    // forget() deletes the result.
    let r = env.tasks.delay::<Add>((0, 0)).await.unwrap();
    r.get(WAIT).await.unwrap();
    r.forget().await.unwrap();
    assert!(env.store.get(r.id()).await.unwrap().is_none());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_embedded() {
    let backend: Arc<dyn PubSubBackend> = Arc::new(pubsub_embedded::EmbeddedBackend::memory());
    suite(Env::start(backend, Arc::new(MemoryResultStore::new())).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_embedded_data_dir_with_dir_results() {
    let dir = tempfile::tempdir().unwrap();
    let config = pubsub_embedded::EmbeddedConfig::data_dir(dir.path().join("log"));
    let backend: Arc<dyn PubSubBackend> = Arc::new(pubsub_embedded::EmbeddedBackend::open(config).unwrap());
    let results = dir.path().join("results");
    let store = Arc::new(DirResultStore::open(&results).unwrap());
    let tasks = Tasks::new(backend.clone(), store.clone(), "q1/tasks/dir/default".parse().unwrap());
    let revoked = tasks
        .apply_async::<Add>((1, 1), SendOptions::default().with_countdown(Duration::from_secs(60)))
        .await
        .unwrap();
    tasks.revoke(revoked.id()).await.unwrap();
    suite(Env::start(backend, store).await).await;
    // What was stored is there after the store is opened again.
    let again: Arc<dyn ResultStore> = Arc::new(DirResultStore::open(&results).unwrap());
    assert!(again.is_revoked(revoked.id()).await.unwrap());
    let finished = again.get(revoked.id()).await.unwrap();
    assert!(finished.is_some(), "the pending record of the revoked task is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_redis_with_redis_results() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let backend = match pubsub_redis::RedisBackend::connect(pubsub_redis::RedisConfig::new(url.clone())).await {
        Ok(b) => b,
        Err(e) => return pubsub_core::testkit::broker_unavailable("tasks on redis", &e),
    };
    let store = RedisResultStore::connect(&url).await.expect("redis result store");
    suite(Env::start(Arc::new(backend), Arc::new(store)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_nats_with_key_value_results() {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let backend = match pubsub_nats::NatsBackend::connect(pubsub_nats::NatsConfig::new(url.clone())).await {
        Ok(b) => b,
        Err(e) => return pubsub_core::testkit::broker_unavailable("tasks on nats", &e),
    };
    let store = NatsResultStore::connect(&url).await.expect("nats result store");
    suite(Env::start(Arc::new(backend), Arc::new(store)).await).await;
}

/// A caller-chosen id on a q2 queue of a backend with exactly-once sends
/// runs once, however often it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chosen_id_on_q2_runs_once() {
    let backend: Arc<dyn PubSubBackend> = Arc::new(pubsub_embedded::EmbeddedBackend::memory());
    let store: Arc<dyn ResultStore> = Arc::new(MemoryResultStore::new());
    let queue: Topic = "q2/tasks/once/default".parse().unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let shutdown = Shutdown::new();
    let worker = Worker::new(backend.clone(), store.clone(), queue.clone()).register_fn(
        "count",
        TaskOptions::default(),
        move |_a, _c| {
            let counted = counted.clone();
            async move { Ok(json!(counted.fetch_add(1, Ordering::SeqCst) + 1)) }
        },
    );
    let running = tokio::spawn(worker.run(shutdown.clone()));
    let tasks = Tasks::new(backend.clone(), store, queue);
    for _ in 0..3 {
        let sig = Signature::new("count", ()).unwrap().with_id("order-17");
        tasks.send::<Value>(sig).await.unwrap();
    }
    let got = tasks.result::<usize>("order-17").get(WAIT).await;
    if got.is_err() {
        shutdown.trigger();
        panic!(
            "{got:?} {:?} worker {:?}",
            tasks.result::<usize>("order-17").info().await,
            running.await
        );
    }
    assert_eq!(got.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    shutdown.trigger();
    running.await.unwrap().unwrap();
}
