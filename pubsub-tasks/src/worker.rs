//! The running side: a [`Worker`] runs registered tasks from queue topics on
//! the processor runtime (one processor per queue; retries, time limits,
//! chains and chords are handled here, dead letters and graceful drain by
//! the processor).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{FutureExt, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use pubsub_core::processor::{HandlerError, Processor, ProcessorOptions, ProcessorReport, Shutdown};
use pubsub_core::{InitialPosition, Message, PubSubBackend, Topic};
use serde_json::Value;

use crate::client::message;
use crate::envelope::TaskMessage;
use crate::error::{Result, TaskError};
use crate::join::ChordJoins;
use crate::sender::Sender;
use crate::state::{now_ms, RunningRecord, TaskRecord, TaskState, WorkerStatus};
use crate::store::ResultStore;
use crate::task::{Task, TaskContext, TaskOptions};

/// The subscription every worker of a queue shares (competing consumers).
pub const WORKER_SUBSCRIPTION: &str = "pubsub-tasks";

/// How long the worker told to send a chord's callback has to confirm it
/// before another member's join sends it instead.
const CHORD_LEASE: Duration = Duration::from_secs(60);

/// A task with its types erased, as the registry keeps it.
#[async_trait]
trait Runnable: Send + Sync {
    fn options(&self) -> TaskOptions;
    async fn call(&self, args: Value, ctx: TaskContext) -> std::result::Result<Value, TaskError>;
}

struct Typed<T>(T);

#[async_trait]
impl<T: Task> Runnable for Typed<T> {
    fn options(&self) -> TaskOptions {
        self.0.options()
    }

    async fn call(&self, args: Value, ctx: TaskContext) -> std::result::Result<Value, TaskError> {
        // Arguments that do not fit the task's type never will: fatal.
        let args: T::Args = serde_json::from_value(args)
            .map_err(|e| TaskError::fatal(format!("arguments do not fit {}: {e}", T::NAME)))?;
        let out = self.0.run(args, ctx).await?;
        serde_json::to_value(out).map_err(|e| TaskError::fatal(format!("the result does not encode: {e}")))
    }
}

type BoxFuture = std::pin::Pin<Box<dyn Future<Output = std::result::Result<Value, TaskError>> + Send>>;

struct Plain {
    options: TaskOptions,
    f: Box<dyn Fn(Value, TaskContext) -> BoxFuture + Send + Sync>,
}

#[async_trait]
impl Runnable for Plain {
    fn options(&self) -> TaskOptions {
        self.options.clone()
    }

    async fn call(&self, args: Value, ctx: TaskContext) -> std::result::Result<Value, TaskError> {
        (self.f)(args, ctx).await
    }
}

/// The tasks running in this worker: id → (name, since, since in Unix ms).
type Running = Arc<Mutex<HashMap<String, (String, Instant, u64)>>>;

/// How often a worker writes its heartbeat by default.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(2);

/// A task running now, as [`Inspector::running`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningTask {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// How long it has been running.
    pub running_for: Duration,
}

/// Looks into a worker while it runs.
#[derive(Clone)]
pub struct Inspector {
    running: Running,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector")
            .field("running", &self.running.lock().len())
            .finish()
    }
}

impl Inspector {
    /// The tasks running now.
    pub fn running(&self) -> Vec<RunningTask> {
        let mut out: Vec<RunningTask> = self
            .running
            .lock()
            .iter()
            .map(|(id, (name, since, _))| RunningTask {
                id: id.clone(),
                name: name.clone(),
                running_for: since.elapsed(),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

/// Runs registered tasks from one or more queue topics.
///
/// ```no_run
/// # async fn demo(backend: std::sync::Arc<dyn pubsub_core::PubSubBackend>) -> pubsub_tasks::Result<()> {
/// use std::sync::Arc;
/// use pubsub_core::processor::Shutdown;
/// use pubsub_tasks::{MemoryResultStore, TaskError, TaskOptions, Worker};
///
/// let store = Arc::new(MemoryResultStore::new());
/// let worker = Worker::new(backend, store, "q1/app/tasks/default".parse()?)
///     .register_fn("add", TaskOptions::default(), |args, _ctx| async move {
///         let (a, b): (i64, i64) = serde_json::from_value(args).map_err(TaskError::fatal)?;
///         Ok(serde_json::json!(a + b))
///     })
///     .with_concurrency(8);
/// worker.run(Shutdown::on_signals()).await?;
/// # Ok(()) }
/// ```
pub struct Worker {
    backend: Arc<dyn PubSubBackend>,
    store: Arc<dyn ResultStore>,
    queues: Vec<Topic>,
    registry: HashMap<String, Arc<dyn Runnable>>,
    name: String,
    processor: ProcessorOptions,
    running: Running,
    heartbeat: Duration,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .field("queues", &self.queues)
            .field("tasks", &self.registry.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Worker {
    /// A worker of `queue` (more with [`queue`](Self::queue)), results in `store`.
    pub fn new(backend: Arc<dyn PubSubBackend>, store: Arc<dyn ResultStore>, queue: Topic) -> Self {
        Worker {
            backend,
            store,
            queues: vec![queue],
            registry: HashMap::new(),
            name: format!("worker-{}", &uuid::Uuid::new_v4().to_string()[..8]),
            // Task retries are the worker's (re-sent with their backoff);
            // the processor retries only what failed around the task
            // (the result store down), and dead-letters final failures.
            processor: ProcessorOptions::default().with_max_attempts(10),
            running: Arc::default(),
            heartbeat: DEFAULT_HEARTBEAT,
        }
    }

    /// Also runs tasks from `queue`.
    pub fn queue(mut self, queue: Topic) -> Self {
        if !self.queues.contains(&queue) {
            self.queues.push(queue);
        }
        self
    }

    /// Registers task `T`.
    pub fn register<T: Task>(mut self, task: T) -> Self {
        self.registry.insert(T::NAME.to_string(), Arc::new(Typed(task)));
        self
    }

    /// Registers a plain async function taking and returning JSON.
    pub fn register_fn<F, Fut>(mut self, name: &str, options: TaskOptions, f: F) -> Self
    where
        F: Fn(Value, TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Value, TaskError>> + Send + 'static,
    {
        let f: Box<dyn Fn(Value, TaskContext) -> BoxFuture + Send + Sync> = Box::new(move |a, c| Box::pin(f(a, c)));
        self.registry.insert(name.to_string(), Arc::new(Plain { options, f }));
        self
    }

    /// Runs up to `n` tasks at once per queue.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.processor = self.processor.with_concurrency(n);
        self
    }

    /// At most `per_second` tasks start per second per queue.
    pub fn with_rate_limit(mut self, per_second: f64) -> Self {
        self.processor = self.processor.with_rate_limit(per_second);
        self
    }

    /// The processor options of each queue (concurrency, dead-letter topic,
    /// shutdown grace...).
    pub fn with_processor_options(mut self, options: ProcessorOptions) -> Self {
        self.processor = options;
        self
    }

    /// Names this worker (results record it; default `worker-<random>`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How often the worker writes its heartbeat (a [`WorkerStatus`] with
    /// its running tasks) to the result store, for `pubsub tasks inspect`
    /// and [`ResultStore::workers`] in other processes (default 2 s). What
    /// they see is at most this old.
    pub fn with_heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(Duration::from_millis(10));
        self
    }

    /// A handle that lists the running tasks while [`run`](Self::run) runs.
    pub fn inspector(&self) -> Inspector {
        Inspector {
            running: self.running.clone(),
        }
    }

    /// Runs until `shutdown` (e.g. `Shutdown::on_signals()` for SIGTERM)
    /// triggers, then lets running tasks finish (the processor's grace)
    /// and reports per queue.
    pub async fn run(self, shutdown: Shutdown) -> Result<Vec<ProcessorReport>> {
        // Where unacked messages come back after an ack timeout, a task
        // held for its eta or running longer than that timeout is kept
        // from a second worker by telling the broker it is in progress, a
        // third of the timeout at a time (where the backend can: NATS).
        let keepalive = match self.processor.consumer.ack_timeout {
            Some(t) if self.backend.capabilities().ack_timeout => Some((t / 3).max(Duration::from_millis(50))),
            _ => None,
        };
        let core = Arc::new(Core {
            sender: Sender::new(self.backend.clone(), self.store.clone(), self.queues[0].clone()),
            store: self.store,
            joins: Arc::default(),
            registry: self.registry,
            name: self.name,
            running: self.running,
            keepalive,
            warned: std::sync::atomic::AtomicBool::new(false),
            shutdown: shutdown.clone(),
        });
        // Tasks sent before any worker subscribed wait for one, as in a
        // task queue they must: the shared subscription starts at the
        // earliest message where the backend can (not MQTT: there a
        // worker must have subscribed once before tasks are sent).
        let mut options = self.processor.clone();
        if self.backend.capabilities().earliest {
            options.consumer = options.consumer.with_initial_position(InitialPosition::Earliest);
        }
        let heartbeat = tokio::spawn(heartbeats(
            core.clone(),
            self.queues.iter().map(|q| q.to_string()).collect(),
            self.heartbeat,
        ));
        let runs = self.queues.into_iter().map(|queue| {
            let core = core.clone();
            let handler = move |m: Message| {
                let core = core.clone();
                async move { core.handle(m).await }
            };
            Processor::new(self.backend.clone(), queue, WORKER_SUBSCRIPTION, handler)
                .with_options(options.clone())
                .run(shutdown.clone())
        });
        let reports = futures::future::join_all(runs).await;
        heartbeat.abort();
        let _ = heartbeat.await;
        if let Err(e) = core.store.remove_worker(&core.name).await {
            tracing::warn!(worker = %core.name, error = %e, "removing the worker's heartbeat");
        }
        let _ = core.sender.close().await;
        reports.into_iter().map(|r| r.map_err(Into::into)).collect()
    }
}

/// What the handler of every queue shares.
struct Core {
    sender: Sender,
    store: Arc<dyn ResultStore>,
    /// Joins this worker's finished chord members, a batch per chord.
    joins: Arc<ChordJoins>,
    registry: HashMap<String, Arc<dyn Runnable>>,
    name: String,
    running: Running,
    /// How often to tell the broker a held or running task's message is
    /// still in progress; `None` where nothing redelivers it meanwhile.
    keepalive: Option<Duration>,
    /// Whether the warning that this backend cannot extend an ack timeout was logged.
    warned: std::sync::atomic::AtomicBool,
    /// The worker's stop signal: ends a hold for an eta early.
    shutdown: Shutdown,
}

/// Writes `core`'s heartbeat every `every` until aborted.
async fn heartbeats(core: Arc<Core>, queues: Vec<String>, every: Duration) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|h| !h.is_empty());
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut running: Vec<RunningRecord> = core
            .running
            .lock()
            .iter()
            .map(|(id, (name, _, started_at))| RunningRecord {
                id: id.clone(),
                name: name.clone(),
                started_at: *started_at,
            })
            .collect();
        running.sort_by(|a, b| a.id.cmp(&b.id));
        let status = WorkerStatus {
            name: core.name.clone(),
            queues: queues.clone(),
            pid: std::process::id(),
            host: host.clone(),
            at: now_ms(),
            interval_ms: every.as_millis() as u64,
            running,
        };
        if let Err(e) = core.store.put_worker(&status).await {
            tracing::warn!(worker = %core.name, error = %e, "writing the worker's heartbeat");
        }
    }
}

/// A store or backend failure around a task: the processor retries the message.
fn around(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::retry(e)
}

/// What a task's panic said, if it said it with a string.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Whether `e` fails the same way however often it is tried (a result too
/// large for the store or the broker), so retrying the message cannot help.
fn is_permanent(e: &crate::error::Error) -> bool {
    match e {
        crate::error::Error::PubSub(e) => !e.is_retriable(),
        crate::error::Error::Invalid(_) => true,
        _ => false,
    }
}

impl Core {
    async fn handle(&self, m: Message) -> std::result::Result<(), HandlerError> {
        let msg = TaskMessage::from_bytes(m.payload()).map_err(|e| HandlerError::fatal(e.to_string()))?;
        let queue = m.topic().clone();
        let (existing, revoked) = self.store.get_with_revoked(&msg.id).await.map_err(around)?;
        if let Some(done) = existing.as_ref().filter(|r| r.state.is_ready()) {
            // A duplicate delivery of a finished task: nothing to run. What
            // followed its record may not have happened (its worker died
            // after it), or it is the same task twice in a chord.
            return match done.state {
                TaskState::Success => self.join_chord(&msg).await,
                // Its worker may have died before failing what depended on it.
                _ => {
                    let why = done.error.clone().unwrap_or_else(|| format!("{:?}", done.state));
                    self.fail_downstream(&msg, &why).await
                }
            };
        }
        let mut record = existing.unwrap_or_else(|| TaskRecord::new(&msg.id, &msg.name, TaskState::Pending));
        record.worker = Some(self.name.clone());
        if revoked {
            return self.stop(&msg, record, TaskState::Revoked, "revoked".into()).await;
        }
        if msg.expires.is_some_and(|at| at <= now_ms()) {
            return self
                .stop(&msg, record, TaskState::Revoked, "expired before it started".into())
                .await;
        }
        let Some(task) = self.registry.get(&msg.name).cloned() else {
            let why = format!("no task {:?} is registered on worker {}", msg.name, self.name);
            self.stop(&msg, record, TaskState::Failure, why.clone()).await?;
            return Err(HandlerError::fatal(why));
        };
        if let Some(eta) = msg.eta {
            let now = now_ms();
            if eta > now {
                // The broker could not delay it: hold it until its time,
                // keeping its message from being redelivered meanwhile.
                record.state = TaskState::Received;
                self.store.put(&record).await.map_err(around)?;
                let hold = self.keeping(&m, tokio::time::sleep(Duration::from_millis(eta - now)));
                tokio::select! {
                    _ = hold => {}
                    _ = self.shutdown.wait() => {
                        // A stopping worker does not sit out the eta: the
                        // task goes back to the queue for another worker.
                        record.state = TaskState::Pending;
                        record.worker = None;
                        self.store.put(&record).await.map_err(around)?;
                        return Err(HandlerError::retry("the worker is stopping: a held task goes back to the queue"));
                    }
                }
                if self.store.is_revoked(&msg.id).await.map_err(around)? {
                    return self.stop(&msg, record, TaskState::Revoked, "revoked".into()).await;
                }
                if msg.expires.is_some_and(|at| at <= now_ms()) {
                    return self
                        .stop(
                            &msg,
                            record,
                            TaskState::Revoked,
                            "expired while waiting for its eta".into(),
                        )
                        .await;
                }
            }
        }
        let options = task.options();
        record.state = TaskState::Started;
        // A retry counts through `retries`; a redelivery of an attempt
        // that began (its worker died) counts through the record.
        record.attempts = (record.attempts + 1).max(msg.retries + 1);
        record.started_at = Some(now_ms());
        self.store.put(&record).await.map_err(around)?;
        let ctx = TaskContext {
            id: msg.id.clone(),
            retries: msg.retries,
            root_id: msg.root_id.clone(),
            parent_id: msg.parent_id.clone(),
            kwargs: msg.kwargs.clone(),
            worker: self.name.clone(),
        };
        self.running.lock().insert(
            msg.id.clone(),
            (msg.name.clone(), Instant::now(), record.started_at.unwrap_or_default()),
        );
        // A panic fails the task (as an exception does in Celery) instead
        // of leaving it Started while the message is redelivered.
        let call = task.call(msg.args.clone(), ctx);
        let run = async move {
            match std::panic::AssertUnwindSafe(call).catch_unwind().await {
                Ok(outcome) => outcome,
                Err(panic) => Err(TaskError::fatal(format!(
                    "the task panicked: {}",
                    panic_text(panic.as_ref())
                ))),
            }
        };
        let outcome = match options.time_limit {
            Some(limit) => self
                .keeping(&m, tokio::time::timeout(limit, run))
                .await
                .unwrap_or_else(|_| Err(TaskError::retry(format!("time limit of {limit:?} exceeded")))),
            None => self.keeping(&m, run).await,
        };
        self.running.lock().remove(&msg.id);
        match outcome {
            Ok(value) => self.succeeded(&msg, record, value).await,
            Err(TaskError::Retry(why)) if msg.retries < options.max_retries => {
                record.state = TaskState::Retry;
                record.error = Some(why);
                self.store.put(&record).await.map_err(around)?;
                let mut again = msg.clone();
                again.retries += 1;
                let delay = options.backoff.delay(again.retries);
                self.sender.send(&queue, again, Some(delay)).await.map_err(around)?;
                Ok(())
            }
            Err(e) => self.fail(&msg, record, e.message().to_string()).await,
        }
    }

    /// Runs `work`, telling the broker every `keepalive` that `m` is still
    /// in progress so its ack timeout does not hand it to another worker.
    /// Where the backend cannot say so, logs once that such a task may run
    /// twice (a longer ack timeout in the processor options avoids it).
    async fn keeping<F: Future>(&self, m: &Message, work: F) -> F::Output {
        let Some(every) = self.keepalive else {
            return work.await;
        };
        tokio::pin!(work);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut extending = true;
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick(), if extending => match m.in_progress().await {
                    Ok(()) => {}
                    Err(pubsub_core::Error::Unsupported { .. }) => {
                        extending = false;
                        if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                            tracing::warn!(
                                topic = %m.topic(),
                                "this backend cannot extend a message's ack timeout: a task held or running longer than it may be redelivered and run twice"
                            );
                        }
                    }
                    Err(e) => tracing::warn!(topic = %m.topic(), error = %e, "telling the broker a task is in progress failed"),
                },
            }
        }
    }

    /// Records a final failure and sends the message to the dead letters.
    async fn fail(&self, msg: &TaskMessage, record: TaskRecord, why: String) -> std::result::Result<(), HandlerError> {
        self.stop(msg, record, TaskState::Failure, why.clone()).await?;
        Err(HandlerError::fatal(format!("task {} failed: {why}", msg.id)))
    }

    /// Records a final failure or revocation, and fails what depended on it.
    async fn stop(
        &self,
        msg: &TaskMessage,
        mut record: TaskRecord,
        state: TaskState,
        why: String,
    ) -> std::result::Result<(), HandlerError> {
        record.state = state;
        record.error = Some(why.clone());
        record.finished_at = Some(now_ms());
        // Its own record first, so whoever sees what depended on it fail
        // sees it final too; a worker that dies in between leaves the rest
        // to this message's redelivery (see `fail_downstream`).
        self.store.put(&record).await.map_err(around)?;
        self.fail_downstream(msg, &why).await
    }

    /// Fails what depended on `msg`, a task that did not succeed for `why`:
    /// the rest of its chain, its chord's callback. Records that are final
    /// already are left alone (this runs again on a redelivery).
    async fn fail_downstream(&self, msg: &TaskMessage, why: &str) -> std::result::Result<(), HandlerError> {
        let downstream = msg
            .callbacks
            .iter()
            .map(|s| (&s.id, &s.name))
            .chain(msg.chord.as_ref().map(|c| (&c.callback.id, &c.callback.name)));
        for (id, name) in downstream {
            let mut failed = TaskRecord::new(id, name, TaskState::Failure);
            failed.error = Some(format!("{} ({}) did not succeed: {why}", msg.name, msg.id));
            failed.finished_at = Some(now_ms());
            if !self.store.put_if_absent(&failed).await.map_err(around)? {
                let now = self.store.get(id).await.map_err(around)?;
                if !now.is_some_and(|r| r.state.is_ready()) {
                    self.store.put(&failed).await.map_err(around)?;
                }
            }
        }
        Ok(())
    }

    async fn succeeded(
        &self,
        msg: &TaskMessage,
        mut record: TaskRecord,
        value: Value,
    ) -> std::result::Result<(), HandlerError> {
        record.state = TaskState::Success;
        record.result = Some(value);
        record.error = None;
        record.finished_at = Some(now_ms());
        if let Err(e) = self.store.check(&record) {
            // Refused every time it is tried: a failure, not a retry loop.
            record.result = None;
            return self
                .fail(msg, record, format!("the result store cannot keep its result: {e}"))
                .await;
        }
        // The next chain step is sent before the result is final, so a
        // crash in between re-runs this task rather than losing the step.
        if let Some((next, rest)) = msg.callbacks.split_first() {
            let mut step = message(next);
            step.args = next.args_after(record.result.clone().unwrap_or_default());
            step.callbacks = rest.to_vec();
            step.parent_id = Some(msg.id.clone());
            step.root_id = msg.root_id.clone().or_else(|| Some(msg.id.clone()));
            let topic = self.sender.queue(next.queue.as_deref()).map_err(around)?;
            let countdown = next.countdown_ms.map(Duration::from_millis);
            match self.sender.send(&topic, step, countdown).await {
                Ok(()) => {}
                Err(e) if is_permanent(&e) => {
                    record.result = None;
                    return self
                        .fail(msg, record, format!("the next step of its chain cannot be sent: {e}"))
                        .await;
                }
                Err(e) => return Err(around(e)),
            }
        }
        self.store.put(&record).await.map_err(around)?;
        self.join_chord(msg).await
    }

    /// Joins the chord of `msg`, a member that succeeded, and sends the
    /// callback when this join is told to. Joining again is harmless: a
    /// redelivered member whose record is final joins too, for a worker
    /// that died between the record and the join.
    async fn join_chord(&self, msg: &TaskMessage) -> std::result::Result<(), HandlerError> {
        if let Some(chord) = &msg.chord {
            let told = self
                .joins
                .join(&self.store, &chord.id, chord.index, chord.size, CHORD_LEASE)
                .await
                .map_err(around)?;
            if let Some(members) = told {
                // Read 64 at a time, kept in member order.
                let results: Vec<Value> = futures::stream::iter(members)
                    .map(|id| {
                        let store = self.store.clone();
                        async move { store.get(&id).await }
                    })
                    .buffered(64)
                    .map_ok(|r| r.and_then(|r| r.result).unwrap_or(Value::Null))
                    .try_collect()
                    .await
                    .map_err(around)?;
                let cb = &chord.callback;
                let mut call = message(cb);
                call.args = cb.args_after(Value::Array(results));
                call.root_id = msg.root_id.clone();
                let sent = match self.sender.queue(cb.queue.as_deref()) {
                    Ok(topic) => {
                        self.sender
                            .send(&topic, call, cb.countdown_ms.map(Duration::from_millis))
                            .await
                    }
                    Err(e) => Err(e),
                };
                match sent {
                    Ok(()) => {}
                    Err(e) if is_permanent(&e) => {
                        // Refused every time (the results together over the
                        // backend's message limit, a bad queue): the callback
                        // fails, once, instead of the chord waiting for ever.
                        let mut failed = TaskRecord::new(&cb.id, &cb.name, TaskState::Failure);
                        failed.error = Some(format!("the chord's callback cannot be sent: {e}"));
                        failed.finished_at = Some(now_ms());
                        self.store.put(&failed).await.map_err(around)?;
                    }
                    Err(e) => return Err(around(e)),
                }
                self.store.chord_sent(&chord.id).await.map_err(around)?;
            }
        }
        Ok(())
    }
}
