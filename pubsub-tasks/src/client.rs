//! The sending side: [`Tasks`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use pubsub_core::{PubSubBackend, Topic};
use serde_json::Value;

use crate::canvas::Signature;
use crate::envelope::{ChordInfo, TaskMessage};
use crate::error::{Error, Result};
use crate::result::{AsyncResult, GroupResult};
use crate::sender::Sender;
use crate::store::ResultStore;
use crate::task::Task;

/// How many members of a group or chord are sent at once.
const SEND_AHEAD: usize = 64;

/// Options of one [`Tasks::apply_async`] call.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SendOptions {
    /// Run no sooner than this long after sending.
    pub countdown: Option<Duration>,
    /// Run no sooner than this time (the later of `countdown` and `eta` wins).
    pub eta: Option<SystemTime>,
    /// Revoke instead of running when still queued at this time.
    pub expires: Option<SystemTime>,
    /// The task id (default: a fresh UUID). On a q2 queue topic of a
    /// backend with exactly-once sends, sending the same id twice runs it once.
    pub task_id: Option<String>,
    /// The queue topic (default: the client's default queue).
    pub queue: Option<Topic>,
}

impl SendOptions {
    /// Sets the countdown.
    pub fn with_countdown(mut self, delay: Duration) -> Self {
        self.countdown = Some(delay);
        self
    }

    /// Sets the eta.
    pub fn with_eta(mut self, eta: SystemTime) -> Self {
        self.eta = Some(eta);
        self
    }

    /// Sets the expiry.
    pub fn with_expires(mut self, expires: SystemTime) -> Self {
        self.expires = Some(expires);
        self
    }

    /// Sets the task id.
    pub fn with_task_id(mut self, id: impl Into<String>) -> Self {
        self.task_id = Some(id.into());
        self
    }

    /// Sets the queue.
    pub fn with_queue(mut self, queue: Topic) -> Self {
        self.queue = Some(queue);
        self
    }
}

/// Sends tasks and workflows, and hands out their results.
///
/// ```no_run
/// # async fn demo(backend: std::sync::Arc<dyn pubsub_core::PubSubBackend>) -> pubsub_tasks::Result<()> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use pubsub_tasks::{MemoryResultStore, Signature, Tasks};
///
/// let tasks = Tasks::new(backend, Arc::new(MemoryResultStore::new()), "q1/app/tasks/default".parse()?);
/// let sum = tasks.send(Signature::new("add", (1, 2))?).await?;
/// let three: i64 = serde_json::from_value(sum.get(Duration::from_secs(10)).await?).unwrap();
/// # Ok(()) }
/// ```
pub struct Tasks {
    sender: Arc<Sender>,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks")
            .field("backend", &self.sender.backend.name())
            .field("default_queue", &self.sender.default_queue)
            .finish()
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Tasks {
    /// A client sending on `backend`, results in `store`, to `default_queue`
    /// unless a task or call names another queue topic.
    pub fn new(backend: Arc<dyn PubSubBackend>, store: Arc<dyn ResultStore>, default_queue: Topic) -> Self {
        Tasks {
            sender: Arc::new(Sender::new(backend, store, default_queue)),
        }
    }

    /// Sends task `T` with `args` now.
    pub async fn delay<T: Task>(&self, args: T::Args) -> Result<AsyncResult<T::Output>> {
        self.apply_async::<T>(args, SendOptions::default()).await
    }

    /// Sends task `T` with `args` and `options`.
    pub async fn apply_async<T: Task>(&self, args: T::Args, options: SendOptions) -> Result<AsyncResult<T::Output>> {
        let mut sig = T::s(args)?;
        if let Some(id) = &options.task_id {
            sig = sig.with_id(id.clone());
        }
        if let Some(queue) = &options.queue {
            sig = sig.on_queue(queue);
        }
        let id = sig.id.clone();
        let countdown = countdown_of(&options);
        let mut msg = message(&sig);
        msg.expires = options.expires.map(millis);
        let topic = self.sender.queue(sig.queue.as_deref())?;
        self.sender.send(&topic, msg, countdown).await?;
        Ok(AsyncResult::new(id, self.sender.store.clone()))
    }

    /// Sends a signature (untyped; `T` is what its output decodes as).
    pub async fn send<T: serde::de::DeserializeOwned>(&self, sig: Signature) -> Result<AsyncResult<T>> {
        let id = sig.id.clone();
        self.send_message(message(&sig), &sig).await?;
        Ok(AsyncResult::new(id, self.sender.store.clone()))
    }

    async fn send_message(&self, msg: TaskMessage, sig: &Signature) -> Result<()> {
        let topic = self.sender.queue(sig.queue.as_deref())?;
        let countdown = sig.countdown_ms.map(Duration::from_millis);
        self.sender.send(&topic, msg, countdown).await
    }

    /// Runs `steps` one after another, each getting the previous result as
    /// its first argument (unless immutable). The handle is the last step's;
    /// a failed step fails every later one with its message.
    pub async fn chain(&self, steps: Vec<Signature>) -> Result<AsyncResult<Value>> {
        let mut steps = steps.into_iter();
        let first = steps.next().ok_or_else(|| Error::Invalid("an empty chain".into()))?;
        let mut msg = message(&first);
        msg.callbacks = steps.collect();
        msg.root_id = Some(first.id.clone());
        let last = msg.callbacks.last().map_or(first.id.clone(), |s| s.id.clone());
        self.send_message(msg, &first).await?;
        Ok(AsyncResult::new(last, self.sender.store.clone()))
    }

    /// Runs `members` in parallel.
    pub async fn group(&self, members: Vec<Signature>) -> Result<GroupResult<Value>> {
        // Sent SEND_AHEAD at a time (each send waits for the broker).
        let handles = futures::stream::iter(members)
            .map(|sig| self.send(sig))
            .buffered(SEND_AHEAD)
            .try_collect()
            .await?;
        Ok(GroupResult::new(handles))
    }

    /// Runs `members` in parallel, then `callback` with their results in
    /// member order as its first argument. The handle is the callback's; a
    /// failed member fails it with the member's message. A chord of no
    /// members sends the callback at once with an empty list as its first
    /// argument (as Celery does; an immutable callback gets its own args).
    pub async fn chord(&self, members: Vec<Signature>, callback: Signature) -> Result<AsyncResult<Value>> {
        if members.is_empty() {
            let mut msg = message(&callback);
            msg.args = callback.args_after(Value::Array(Vec::new()));
            self.send_message(msg, &callback).await?;
            return Ok(AsyncResult::new(callback.id, self.sender.store.clone()));
        }
        let chord_id = uuid::Uuid::new_v4().to_string();
        let ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
        self.sender.store.chord_start(&chord_id, &ids).await?;
        futures::stream::iter(members.iter().enumerate())
            .map(|(index, sig)| {
                let mut msg = message(sig);
                msg.chord = Some(ChordInfo {
                    id: chord_id.clone(),
                    index,
                    size: members.len(),
                    callback: callback.clone(),
                });
                msg.root_id = Some(chord_id.clone());
                self.send_message(msg, sig)
            })
            .buffer_unordered(SEND_AHEAD)
            .try_collect::<()>()
            .await?;
        Ok(AsyncResult::new(callback.id, self.sender.store.clone()))
    }

    /// Revokes task `id`: a worker that has not started it yet will not.
    pub async fn revoke(&self, id: &str) -> Result<()> {
        Ok(self.sender.store.revoke(id).await?)
    }

    /// The handle of task `id`'s result.
    pub fn result<T: serde::de::DeserializeOwned>(&self, id: &str) -> AsyncResult<T> {
        AsyncResult::new(id, self.sender.store.clone())
    }

    /// Closes the producers.
    pub async fn close(&self) -> Result<()> {
        self.sender.close().await
    }
}

/// The delay until the later of `countdown` and `eta`.
fn countdown_of(options: &SendOptions) -> Option<Duration> {
    let until_eta = options
        .eta
        .map(|eta| eta.duration_since(SystemTime::now()).unwrap_or_default());
    match (options.countdown, until_eta) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// A fresh message for a signature.
pub(crate) fn message(sig: &Signature) -> TaskMessage {
    TaskMessage::new(&sig.id, &sig.name, sig.args.clone())
}
