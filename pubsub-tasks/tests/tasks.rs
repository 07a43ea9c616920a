//! The task layer end to end, the same cases on the embedded backend (memory
//! and data-dir results), on real Redis (Redis results), NATS (JetStream
//! key-value results; NATS has no delayed delivery, so countdowns take the
//! worker's hold), Apache Kafka, Apache Pulsar and MQTT (memory results:
//! those runs test the backend's carrying of tasks). A case a backend
//! cannot carry is reported UNSUPPORTED by name, as the conformance suite does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pubsub_core::processor::{Backoff, ProcessorOptions, Shutdown};
use pubsub_core::{ConsumerOptions, OutgoingMessage, PubSubBackend, Topic};
use pubsub_tasks::{
    async_trait, ChordInfo, DirResultStore, Error, MemoryResultStore, NatsResultStore, RedisResultStore, ResultStore,
    SendOptions, Signature, Task, TaskContext, TaskError, TaskMessage, TaskOptions, TaskRecord, TaskState, Tasks,
    Worker, WIRE_VERSION,
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
        if !backend.capabilities().earliest {
            // MQTT: a worker must have subscribed before tasks are sent
            // (no Earliest), so give the two workers time to subscribe.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
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
    // An expiry that passes during the countdown: revoked, never run (on
    // NATS, Kafka and MQTT the worker holds it, and checks again after).
    let r = env
        .tasks
        .apply_async::<Add>(
            (3, 3),
            SendOptions::default()
                .with_countdown(Duration::from_millis(700))
                .with_expires(SystemTime::now() + Duration::from_millis(200)),
        )
        .await
        .unwrap();
    match r.get(WAIT).await {
        Err(Error::Revoked { reason, .. }) => assert!(reason.contains("expired"), "{name}: {reason}"),
        other => panic!("{name}: expected the task to expire, got {other:?}"),
    }
    assert_eq!(
        r.info().await.unwrap().unwrap().started_at,
        None,
        "{name}: never started"
    );

    // A send the backend refuses (the id becomes the message key, which
    // cannot have surrounding whitespace or control characters) is a typed
    // error and leaves no record behind.
    for bad in [" padded", "ctl\u{1}"] {
        let sent = env
            .tasks
            .apply_async::<Add>((1, 1), SendOptions::default().with_task_id(bad))
            .await;
        assert!(
            matches!(sent, Err(Error::PubSub(pubsub_core::Error::InvalidProperty { .. }))),
            "{name}: {:?}",
            sent.err()
        );
        assert_eq!(
            env.store.get(bad).await.unwrap(),
            None,
            "{name}: a record of a refused send"
        );
    }

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
    let members: Vec<_> = (0..100).map(|i| Add::s((i, i)).unwrap()).collect();
    let group = env.tasks.group(members).await.unwrap();
    let got = group.get(WAIT).await.unwrap();
    assert_eq!(got, (0..100).map(|i| json!(2 * i)).collect::<Vec<_>>(), "{name}");
    assert_eq!(group.completed_count().await.unwrap(), 100);

    // Chord over two workers: the callback runs once, with every result in order.
    let before = env.callbacks.load(Ordering::SeqCst);
    let members: Vec<_> = (0..100).map(|i| Add::s((i, 1)).unwrap()).collect();
    let chord = env
        .tasks
        .chord(members, Signature::partial("sum", ()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        chord.get(WAIT).await.unwrap(),
        json!((0..100).map(|i| i + 1).sum::<i64>()),
        "{name}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.callbacks.load(Ordering::SeqCst), before + 1, "{name}: one callback");
    // A chord of no members: the callback runs at once with an empty list.
    let before = env.callbacks.load(Ordering::SeqCst);
    let empty = env
        .tasks
        .chord(Vec::new(), Signature::partial("sum", ()).unwrap())
        .await
        .unwrap();
    assert_eq!(empty.get(WAIT).await.unwrap(), json!(0), "{name}");
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

    // A chord member whose worker died after its result and before its
    // join: the redelivered message finds the final record and joins.
    // Here both members' records are final before their messages come.
    let chord_id = uuid::Uuid::new_v4().to_string();
    let (a, b) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    env.store.chord_start(&chord_id, &[a.clone(), b.clone()]).await.unwrap();
    let callback = Signature::partial("sum", ()).unwrap();
    for (index, (id, value)) in [(&a, 30), (&b, 12)].into_iter().enumerate() {
        let mut done = TaskRecord::new(id, "add", TaskState::Success);
        done.result = Some(json!(value));
        env.store.put(&done).await.unwrap();
        let mut member = TaskMessage::new(id, "add", json!([0, 0]));
        member.chord = Some(ChordInfo {
            id: chord_id.clone(),
            index,
            size: 2,
            callback: callback.clone(),
        });
        producer.send(OutgoingMessage::new(member.to_bytes())).await.unwrap();
    }
    assert_eq!(
        env.tasks.result::<i64>(&callback.id).get(WAIT).await.unwrap(),
        42,
        "{name}: members finished before their join"
    );
    producer.close().await.unwrap();

    // The same signature twice in a chord: it runs once, and both places
    // in the callback's list hold its result.
    let twice = Add::s((2, 3)).unwrap();
    let chord = env
        .tasks
        .chord(
            vec![twice.clone(), Add::s((1, 1)).unwrap(), twice],
            Signature::partial("sum", ()).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(chord.get(WAIT).await.unwrap(), json!(12), "{name}: a member twice");

    // Ids that the stores must encode keep separate records.
    distinct_ids_keep_distinct_records(&*env.store, name).await;
    chord_joins_claim_once(&*env.store, name).await;
    put_if_absent_is_atomic(env.store.clone(), name).await;

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

/// A sender's Pending record goes while its task is sent: a record already
/// there (the worker's) stays, and of 32 writers racing on one id exactly
/// one writes.
async fn put_if_absent_is_atomic(store: Arc<dyn ResultStore>, name: &str) {
    let id = uuid::Uuid::new_v4().to_string();
    store
        .put(&TaskRecord::new(&id, "add", TaskState::Success))
        .await
        .unwrap();
    let pending = TaskRecord::new(&id, "add", TaskState::Pending);
    assert!(!store.put_if_absent(&pending).await.unwrap(), "{name}");
    assert_eq!(
        store.get(&id).await.unwrap().unwrap().state,
        TaskState::Success,
        "{name}"
    );
    let id = uuid::Uuid::new_v4().to_string();
    let racers = (0..32).map(|n| {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move {
            let mut record = TaskRecord::new(&id, "add", TaskState::Pending);
            record.attempts = n;
            store.put_if_absent(&record).await.unwrap().then_some(n)
        })
    });
    let won: Vec<u32> = futures::future::try_join_all(racers)
        .await
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(won.len(), 1, "{name}: {won:?}");
    assert_eq!(store.get(&id).await.unwrap().unwrap().attempts, won[0], "{name}");
}

/// The store's chord join, as the worker uses it: batches with repeats
/// count each member once, one call is told to send the callback (with
/// the member list), a claim not confirmed goes again to the claiming
/// member's redelivery or to anyone after its lease, a confirmed one never
/// does, a batch of 9,000 joins, and a chord without
/// a member list is an error, not a callback without results.
async fn chord_joins_claim_once(store: &dyn ResultStore, name: &str) {
    let chord = uuid::Uuid::new_v4().to_string();
    let members: Vec<String> = (0..5).map(|i| format!("{chord}-m{i}")).collect();
    store.chord_start(&chord, &members).await.unwrap();
    let lease = Duration::from_millis(300);
    assert_eq!(
        store.chord_join(&chord, &[0, 2, 2], 5, lease).await.unwrap(),
        None,
        "{name}"
    );
    assert_eq!(
        store.chord_join(&chord, &[0, 1], 5, lease).await.unwrap(),
        None,
        "{name}: 3 of 5"
    );
    assert_eq!(
        store.chord_join(&chord, &[4, 3], 5, lease).await.unwrap(),
        Some(members.clone()),
        "{name}: the last two"
    );
    assert_eq!(
        store.chord_join(&chord, &[3], 5, lease).await.unwrap(),
        None,
        "{name}: a redelivered member while the claim holds"
    );
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    assert_eq!(
        store.chord_join(&chord, &[1], 5, lease).await.unwrap(),
        Some(members.clone()),
        "{name}: the claim lapsed unconfirmed"
    );
    assert_eq!(
        store.chord_join(&chord, &[1], 5, lease).await.unwrap(),
        Some(members.clone()),
        "{name}: the claimer's message came back (its worker died before confirming)"
    );
    assert_eq!(
        store.chord_join(&chord, &[4], 5, lease).await.unwrap(),
        None,
        "{name}: another member while 1's claim holds"
    );
    store.chord_sent(&chord).await.unwrap();
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    assert_eq!(
        store.chord_join(&chord, &[2], 5, lease).await.unwrap(),
        None,
        "{name}: sent"
    );
    // A batch larger than a Redis script takes in one call (9,000 indices).
    let big = uuid::Uuid::new_v4().to_string();
    let ids: Vec<String> = (0..9000).map(|i| format!("m{i}")).collect();
    store.chord_start(&big, &ids).await.unwrap();
    let all_but_last: Vec<usize> = (0..8999).collect();
    assert_eq!(
        store.chord_join(&big, &all_but_last, 9000, lease).await.unwrap(),
        None,
        "{name}"
    );
    let all: Vec<usize> = (0..9000).collect();
    assert_eq!(
        store.chord_join(&big, &all, 9000, lease).await.unwrap(),
        Some(ids),
        "{name}: a batch of 9,000"
    );
    let unlisted = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        store.chord_join(&unlisted, &[0], 2, lease).await.unwrap(),
        None,
        "{name}"
    );
    let err = store.chord_join(&unlisted, &[1], 2, lease).await.unwrap_err();
    assert!(err.to_string().contains("member list"), "{name}: {err}");
}

/// Ids shaped like another id's encoding in a key or file name ("x612062"
/// was "a b" in NatsResultStore's first encoding) keep their own records.
async fn distinct_ids_keep_distinct_records(store: &dyn ResultStore, name: &str) {
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let ids = [
        format!("a b{run}"),
        format!(
            "x{}",
            format!("a b{run}")
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
        format!(
            "x.{}",
            format!("a b{run}")
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
        format!("x{run}"),
    ];
    for (n, id) in ids.iter().enumerate() {
        let mut record = TaskRecord::new(id, "add", TaskState::Success);
        record.result = Some(json!(n));
        store.put(&record).await.unwrap();
    }
    for (n, id) in ids.iter().enumerate() {
        let got = store
            .get(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{name}: no record of {id:?}"));
        assert_eq!((got.id.as_str(), got.result), (id.as_str(), Some(json!(n))), "{name}");
        store.forget(id).await.unwrap();
    }
    store.revoke(&ids[0]).await.unwrap();
    assert!(
        !store.is_revoked(&ids[1]).await.unwrap(),
        "{name}: a revocation of another id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_kafka() {
    let servers = std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let config = pubsub_kafka::KafkaConfig::new(servers).with_timeout(Duration::from_secs(5));
    let backend = match pubsub_kafka::KafkaBackend::connect(config).await {
        Ok(b) => b,
        Err(e) => return pubsub_core::testkit::broker_unavailable("tasks on kafka", &e),
    };
    suite(Env::start(Arc::new(backend), Arc::new(MemoryResultStore::new())).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_pulsar() {
    let (url, admin) = match std::env::var("PULSAR_URL") {
        Ok(url) => (url, std::env::var("PULSAR_ADMIN_URL").ok()),
        Err(_) => ("pulsar://127.0.0.1:6652".into(), Some("http://127.0.0.1:8082".into())),
    };
    let mut config = pubsub_pulsar::PulsarConfig::new(url);
    if let Some(admin) = admin {
        config = config.with_admin_url(admin);
    }
    let backend = match pubsub_pulsar::PulsarBackend::connect(config).await {
        Ok(b) => b,
        Err(e) => return pubsub_core::testkit::broker_unavailable("tasks on pulsar", &e),
    };
    suite(Env::start(Arc::new(backend), Arc::new(MemoryResultStore::new())).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_mqtt() {
    let host = std::env::var("MQTT_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("MQTT_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1883);
    let backend = match pubsub_mqtt::MqttBackend::connect(pubsub_mqtt::MqttConfig::new(host, port)).await {
        Ok(b) => b,
        Err(e) => return pubsub_core::testkit::broker_unavailable("tasks on mqtt", &e),
    };
    suite(Env::start(Arc::new(backend), Arc::new(MemoryResultStore::new())).await).await;
}

/// On NATS (no delayed delivery) a countdown is held by the worker; held
/// past JetStream's ack wait (1 s here, 30 s by default), its message would
/// be redelivered to the other worker and the task run twice, unless the
/// worker tells the server it is in progress while it holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_countdown_longer_than_the_ack_wait_runs_once() {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let backend: Arc<dyn PubSubBackend> =
        match pubsub_nats::NatsBackend::connect(pubsub_nats::NatsConfig::new(url.clone())).await {
            Ok(b) => Arc::new(b),
            Err(e) => return pubsub_core::testkit::broker_unavailable("nats countdown over the ack wait", &e),
        };
    let store: Arc<dyn ResultStore> = Arc::new(NatsResultStore::connect(&url).await.expect("nats result store"));
    let queue: Topic = format!("q1/tasks/t{}/held", &uuid::Uuid::new_v4().simple().to_string()[..10])
        .parse()
        .unwrap();
    let ack_wait = Duration::from_secs(1);
    let options = ProcessorOptions::default()
        .with_max_attempts(10)
        .with_concurrency(4)
        .with_consumer(ConsumerOptions::default().with_ack_timeout(Some(ack_wait)));
    let runs = Arc::new(AtomicUsize::new(0));
    let shutdown = Shutdown::new();
    let mut workers = Vec::new();
    for n in 0..2 {
        let counted = runs.clone();
        let worker = Worker::new(backend.clone(), store.clone(), queue.clone())
            .with_name(format!("held{n}"))
            .with_processor_options(options.clone())
            .register_fn("count", TaskOptions::default(), move |_a, _c| {
                let counted = counted.clone();
                async move { Ok(json!(counted.fetch_add(1, Ordering::SeqCst) + 1)) }
            });
        workers.push(tokio::spawn(worker.run(shutdown.clone())));
    }
    let tasks = Tasks::new(backend.clone(), store, queue);
    let countdown = Duration::from_millis(3500);
    let sig = Signature::new("count", ()).unwrap().with_countdown(countdown);
    let r = tasks.send::<usize>(sig).await.unwrap();
    assert_eq!(r.get(WAIT).await.unwrap(), 1);
    let info = r.info().await.unwrap().unwrap();
    assert!(info.started_at.unwrap() >= info.sent_at.unwrap() + countdown.as_millis() as u64);
    // Long enough for a redelivered copy held to the same eta to have run.
    tokio::time::sleep(ack_wait * 2).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the held task ran more than once");
    shutdown.trigger();
    for w in workers {
        w.await.unwrap().unwrap();
    }
    tasks.close().await.unwrap();
    backend.close().await.unwrap();
}

/// Ids longer than a file name can be (a 1000-byte id) are kept under a
/// digest of the id, and two that differ only at the end stay apart,
/// reopened too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_results_keep_long_ids() {
    let dir = tempfile::tempdir().unwrap();
    let long = |last: char| format!("{}{last}", "i".repeat(999));
    let (a, b) = (long('a'), long('b'));
    let members = |chord: &str| vec![format!("{chord}-0"), format!("{chord}-1")];
    let lease = Duration::from_secs(60);
    let hexed = format!("{} {}", "é".repeat(200), "b"); // not plain: hex-encoded, then too long
    {
        let store = DirResultStore::open(dir.path()).unwrap();
        for (n, id) in [&a, &b, &hexed].into_iter().enumerate() {
            let mut record = TaskRecord::new(id, "add", TaskState::Success);
            record.result = Some(json!(n));
            store.put(&record).await.unwrap();
        }
        store.revoke(&a).await.unwrap();
        store.chord_start(&a, &members(&a)).await.unwrap();
        store.chord_start(&b, &members(&b)).await.unwrap();
        assert_eq!(store.chord_join(&a, &[0], 2, lease).await.unwrap(), None);
        assert_eq!(store.chord_join(&b, &[0], 2, lease).await.unwrap(), None);
        assert_eq!(
            store.chord_join(&a, &[1], 2, lease).await.unwrap(),
            Some(members(&a)),
            "a's chord: both joined"
        );
        store.chord_sent(&a).await.unwrap();
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(name.len() < 255, "{name:?}");
    }
    let again = DirResultStore::open(dir.path()).unwrap();
    for (n, id) in [&a, &b, &hexed].into_iter().enumerate() {
        let got = again.get(id).await.unwrap().expect("kept across a reopen");
        assert_eq!((&got.id, got.result), (id, Some(json!(n))));
    }
    assert!(again.is_revoked(&a).await.unwrap());
    assert!(!again.is_revoked(&b).await.unwrap());
    assert_eq!(
        again.chord_join(&a, &[1], 2, lease).await.unwrap(),
        None,
        "a's callback was sent"
    );
    assert_eq!(
        again.chord_join(&b, &[1], 2, lease).await.unwrap(),
        Some(members(&b)),
        "b's chord is its own, members and all"
    );
    again.forget(&a).await.unwrap();
    assert_eq!(again.get(&a).await.unwrap(), None);
    assert!(again.get(&b).await.unwrap().is_some());
}

/// The queue a child worker process serves, and its backend (`redis` or `nats`).
const CHILD_QUEUE: &str = "PUBSUB_TASKS_CHILD_QUEUE";
const CHILD_BACKEND: &str = "PUBSUB_TASKS_CHILD_BACKEND";

/// Both the killed and the surviving worker's ack timeout: a message of
/// the killed one comes back to the survivor after it.
const CRASH_ACK_TIMEOUT: Duration = Duration::from_secs(2);

async fn crash_env(backend: &str) -> Option<(Arc<dyn PubSubBackend>, Arc<dyn ResultStore>)> {
    match backend {
        "redis" => {
            let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            let b = match pubsub_redis::RedisBackend::connect(pubsub_redis::RedisConfig::new(url.clone())).await {
                Ok(b) => b,
                Err(e) => {
                    pubsub_core::testkit::broker_unavailable("a worker killed mid-task on redis", &e);
                    return None;
                }
            };
            Some((Arc::new(b), Arc::new(RedisResultStore::connect(&url).await.unwrap())))
        }
        _ => {
            let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
            let b = match pubsub_nats::NatsBackend::connect(pubsub_nats::NatsConfig::new(url.clone())).await {
                Ok(b) => b,
                Err(e) => {
                    pubsub_core::testkit::broker_unavailable("a worker killed mid-task on nats", &e);
                    return None;
                }
            };
            Some((Arc::new(b), Arc::new(NatsResultStore::connect(&url).await.unwrap())))
        }
    }
}

/// A worker of the crash test: `stuck` never returns in the child (which is
/// killed while running it) and returns at once in the survivor.
fn crash_worker(
    backend: Arc<dyn PubSubBackend>,
    store: Arc<dyn ResultStore>,
    queue: Topic,
    name: &str,
    stuck_for: Duration,
    callbacks: Arc<AtomicUsize>,
) -> Worker {
    let options = ProcessorOptions::default()
        .with_max_attempts(10)
        .with_concurrency(4)
        .with_consumer(ConsumerOptions::default().with_ack_timeout(Some(CRASH_ACK_TIMEOUT)));
    Worker::new(backend, store, queue)
        .with_name(name)
        .with_heartbeat(Duration::from_millis(200))
        .with_processor_options(options)
        .register(Add)
        .register_fn("stuck", TaskOptions::default(), move |_a, _c| async move {
            tokio::time::sleep(stuck_for).await;
            Ok(json!(1000))
        })
        .register_fn("sum", TaskOptions::default(), move |args, _ctx| {
            let callbacks = callbacks.clone();
            async move {
                callbacks.fetch_add(1, Ordering::SeqCst);
                let (parts,): (Vec<i64>,) = serde_json::from_value(args).map_err(TaskError::fatal)?;
                Ok(json!(parts.iter().sum::<i64>()))
            }
        })
}

/// Not a test of its own: the worker process that
/// `a_worker_killed_mid_task_*` starts (this test binary, run with
/// `--exact child_worker_process`) and SIGKILLs. Run without its
/// variables (as in the normal test run) it returns at once: it is not
/// `#[ignore]`d, so the run reports no skipped test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_worker_process() {
    let (Ok(queue), Ok(kind)) = (std::env::var(CHILD_QUEUE), std::env::var(CHILD_BACKEND)) else {
        return;
    };
    let (backend, store) = crash_env(&kind).await.expect("the child's broker");
    let worker = crash_worker(
        backend,
        store,
        queue.parse().unwrap(),
        "child",
        Duration::from_secs(3600),
        Arc::default(),
    );
    worker.run(Shutdown::new()).await.unwrap();
}

/// A worker SIGKILLed while it runs a chord member: the member runs again
/// on another worker once the broker gives its message back, and the chord
/// calls back exactly once with every result.
async fn a_worker_killed_mid_task(kind: &str) {
    let Some((backend, store)) = crash_env(kind).await else {
        return;
    };
    let queue: Topic = format!("q1/tasks/k{}/crash", &uuid::Uuid::new_v4().simple().to_string()[..10])
        .parse()
        .unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_worker_process", "--nocapture"])
        .env(CHILD_QUEUE, queue.as_str())
        .env(CHILD_BACKEND, kind)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the child worker");
    // Its heartbeat says it is up (and subscribed, so it takes the members).
    let deadline = tokio::time::Instant::now() + WAIT;
    while !store.workers().await.unwrap().iter().any(|w| w.name == "child") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind}: the child worker never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tasks = Tasks::new(backend.clone(), store.clone(), queue.clone());
    let mut members: Vec<Signature> = (0..5).map(|i| Add::s((i, i)).unwrap()).collect();
    members.push(Signature::new("stuck", ()).unwrap());
    let stuck_id = members[5].id.clone();
    let chord = tasks
        .chord(members, Signature::partial("sum", ()).unwrap())
        .await
        .unwrap();
    let stuck = tasks.result::<i64>(&stuck_id);
    while stuck.state().await.unwrap() != TaskState::Started {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind}: the child never started the stuck member"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // a heartbeat with it running
    child.kill().unwrap(); // SIGKILL: no drain, no nack
    child.wait().unwrap();
    let callbacks = Arc::new(AtomicUsize::new(0));
    let shutdown = Shutdown::new();
    let survivor = crash_worker(
        backend.clone(),
        store.clone(),
        queue.clone(),
        "survivor",
        Duration::ZERO,
        callbacks.clone(),
    );
    let running = tokio::spawn(survivor.run(shutdown.clone()));
    assert_eq!(
        chord.get(WAIT).await.unwrap(),
        json!(1000 + (0..5).map(|i| 2 * i).sum::<i64>()),
        "{kind}"
    );
    let info = stuck.info().await.unwrap().unwrap();
    assert_eq!(
        info.worker.as_deref(),
        Some("survivor"),
        "{kind}: ran again on the survivor"
    );
    // The killed worker's heartbeat is left behind, and shows as stale.
    let child_status = store
        .workers()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.name == "child")
        .expect("the killed worker's heartbeat");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(!child_status.is_live(now, 3), "{kind}: {child_status:?}");
    assert_eq!(child_status.running.len(), 1, "{kind}: it was running the stuck member");
    store.remove_worker("child").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(callbacks.load(Ordering::SeqCst), 1, "{kind}: one callback");
    shutdown.trigger();
    running.await.unwrap().unwrap();
    tasks.close().await.unwrap();
    backend.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_task_on_redis() {
    a_worker_killed_mid_task("redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_task_on_nats() {
    a_worker_killed_mid_task("nats").await;
}

/// Results expire after the store's TTL, in each store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_expire() {
    let ttl = Duration::from_millis(300);
    let record = |id: &str| TaskRecord::new(id, "add", TaskState::Success);
    let memory = MemoryResultStore::with_ttl(ttl);
    memory.put(&record("m")).await.unwrap();
    assert!(memory.get("m").await.unwrap().is_some());
    let dir = tempfile::tempdir().unwrap();
    DirResultStore::open_with_ttl(dir.path(), ttl)
        .unwrap()
        .put(&record("d"))
        .await
        .unwrap();
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis = match RedisResultStore::connect(&redis_url).await {
        Ok(r) => Some(
            r.with_ttl(ttl)
                .with_prefix(format!("ttl-{}", uuid::Uuid::new_v4().simple())),
        ),
        Err(e) => {
            pubsub_core::testkit::broker_unavailable("results expire on redis", &e);
            None
        }
    };
    if let Some(r) = &redis {
        r.put(&record("r")).await.unwrap();
        assert!(r.get("r").await.unwrap().is_some());
    }
    // NATS: a bucket of its own whose max_age is the TTL (JetStream's
    // shortest useful age is about a second), deleted afterwards.
    let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let bucket = format!("pubsub-tasks-ttl-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let nats = match async_nats::connect(&nats_url).await {
        Ok(client) => {
            let store = NatsResultStore::open(client.clone(), &bucket, Duration::from_secs(1))
                .await
                .unwrap();
            store.put(&record("n")).await.unwrap();
            assert!(store.get("n").await.unwrap().is_some());
            Some((client, store))
        }
        Err(e) => {
            pubsub_core::testkit::broker_unavailable("results expire on nats", &e);
            None
        }
    };
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert_eq!(memory.get("m").await.unwrap(), None, "memory");
    let reopened = DirResultStore::open_with_ttl(dir.path(), ttl).unwrap();
    assert_eq!(reopened.get("d").await.unwrap(), None, "dir, reopened");
    if let Some(r) = &redis {
        assert_eq!(r.get("r").await.unwrap(), None, "redis");
    }
    if let Some((client, store)) = nats {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while store.get("n").await.unwrap().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats: not expired 5 s after a 1 s max_age"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let js = async_nats::jetstream::new(client);
        js.delete_stream(format!("KV_{bucket}")).await.unwrap();
    }
}

/// Every wait of a Redis result store shares one Pub/Sub connection: many
/// concurrent waits, with results written before, during and after they
/// began, and while that connection was dropped by the server, all end
/// with their result (none missed, none read from another id's notice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_waits_share_one_connection_and_survive_its_loss() {
    // Database 13, to find the store's Pub/Sub connection in CLIENT LIST.
    let base = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let url = format!("{}/13", base.trim_end_matches('/'));
    let prefix = format!("wait-test-{}", uuid_like());
    let store = match RedisResultStore::connect(&url).await {
        Ok(s) => Arc::new(s.with_prefix(prefix.clone())),
        Err(e) => return pubsub_core::testkit::broker_unavailable("redis result store", &e),
    };
    let admin = redis::Client::open(url.as_str()).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
    let ready = |i: usize| {
        let mut r = TaskRecord::new(format!("t{i}"), "t", TaskState::Success);
        r.result = Some(json!(i));
        r
    };
    for i in 0..100 {
        store.put(&ready(i)).await.unwrap();
    }
    let waits: Vec<_> = (0..300)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { (i, store.wait_ready(&format!("t{i}"), WAIT).await) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 100..200 {
        store.put(&ready(i)).await.unwrap();
    }
    for i in 200..300 {
        store
            .put(&TaskRecord::new(format!("t{i}"), "t", TaskState::Started))
            .await
            .unwrap();
    }
    // The server drops the store's Pub/Sub connection; results are written
    // while it is gone and after it is back.
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .unwrap();
    let ids: Vec<String> = list
        .lines()
        .filter(|l| l.contains(" db=13 ") && l.contains(" psub=1 "))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")).map(String::from))
        .collect();
    assert!(!ids.is_empty(), "the store's Pub/Sub connection: {list}");
    for id in ids {
        let _: redis::Value = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(&id)
            .query_async(&mut admin)
            .await
            .unwrap();
    }
    for i in 200..250 {
        store.put(&ready(i)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 250..300 {
        store.put(&ready(i)).await.unwrap();
    }
    for w in waits {
        let (i, got) = w.await.unwrap();
        let record = got.unwrap().unwrap_or_else(|| panic!("t{i} timed out"));
        assert_eq!(record.id, format!("t{i}"));
        assert_eq!(record.result, Some(json!(i)));
    }
    // A wait for what never ends times out, on the same store.
    assert_eq!(
        store.wait_ready("never", Duration::from_millis(50)).await.unwrap(),
        None
    );
    // Twice the same id at once.
    let clone = store.clone();
    let a = tokio::spawn(async move { clone.wait_ready("dup", WAIT).await });
    let clone = store.clone();
    let b = tokio::spawn(async move { clone.wait_ready("dup", WAIT).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut dup = ready(7);
    dup.id = "dup".into();
    store.put(&dup).await.unwrap();
    assert!(a.await.unwrap().unwrap().is_some());
    assert!(b.await.unwrap().unwrap().is_some());
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Every wait of a NATS key-value result store shares one watch: many
/// concurrent waits, with results written before, during and after they
/// began, all end with their own result; a wait for what never ends times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_waits_share_one_watch() {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let store = match NatsResultStore::connect(&url).await {
        Ok(s) => Arc::new(s),
        Err(e) => return pubsub_core::testkit::broker_unavailable("nats result store", &e),
    };
    let run = uuid_like();
    let id = move |i: usize| format!("w{run}-{i}");
    let ready = |i: usize| {
        let mut r = TaskRecord::new(id(i), "t", TaskState::Success);
        r.result = Some(json!(i));
        r
    };
    for i in 0..50 {
        store.put(&ready(i)).await.unwrap();
    }
    let waits: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            let key = id(i);
            tokio::spawn(async move { (i, store.wait_ready(&key, WAIT).await) })
        })
        .collect();
    for i in 50..100 {
        store.put(&ready(i)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 100..200 {
        store
            .put(&TaskRecord::new(id(i), "t", TaskState::Started))
            .await
            .unwrap();
        store.put(&ready(i)).await.unwrap();
    }
    for w in waits {
        let (i, got) = w.await.unwrap();
        let record = got.unwrap().unwrap_or_else(|| panic!("{} timed out", id(i)));
        assert_eq!(record.id, id(i));
        assert_eq!(record.result, Some(json!(i)));
    }
    assert_eq!(
        store.wait_ready(&id(999), Duration::from_millis(50)).await.unwrap(),
        None
    );
}
