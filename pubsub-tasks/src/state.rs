//! What is known about a task: its state and its result record.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a task is in its life (Celery's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Sent, not yet received by a worker (or unknown id).
    Pending,
    /// A worker received it (waiting for its eta, or for a free slot).
    Received,
    /// Running.
    Started,
    /// Failed and sent again; runs again after its backoff.
    Retry,
    /// Finished with a result.
    Success,
    /// Failed for good (retries used up, a fatal error, a failed chain step
    /// or chord member before it).
    Failure,
    /// Revoked before it started, or expired.
    Revoked,
}

impl TaskState {
    /// Whether the state is final: [`Success`](Self::Success),
    /// [`Failure`](Self::Failure) or [`Revoked`](Self::Revoked).
    pub fn is_ready(self) -> bool {
        matches!(self, TaskState::Success | TaskState::Failure | TaskState::Revoked)
    }
}

/// A task's result record in a [`ResultStore`](crate::ResultStore).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task id.
    pub id: String,
    /// The task name, when known.
    #[serde(default)]
    pub name: String,
    /// The state.
    pub state: TaskState,
    /// The result, on success (JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The last error message (failure, retry, revoke reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Attempts started so far.
    #[serde(default)]
    pub attempts: u32,
    /// The worker that last handled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// When it was sent, started and finished (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<u64>,
    /// When the last attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    /// When it reached a final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
}

impl TaskRecord {
    /// A record in `state` with nothing else known.
    pub fn new(id: impl Into<String>, name: impl Into<String>, state: TaskState) -> Self {
        TaskRecord {
            id: id.into(),
            name: name.into(),
            state,
            result: None,
            error: None,
            attempts: 0,
            worker: None,
            sent_at: None,
            started_at: None,
            finished_at: None,
        }
    }
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A worker's heartbeat in the [`ResultStore`](crate::ResultStore): who
/// it is, what it serves and what it runs, as of `at`. Workers write it
/// every `interval_ms` and delete it when they stop, so other processes
/// (`pubsub tasks inspect`) see running tasks across workers; one whose
/// `at` is older than a few intervals stopped without saying so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The worker's name ([`Worker::with_name`](crate::Worker::with_name)).
    pub name: String,
    /// The queue topics it serves.
    #[serde(default)]
    pub queues: Vec<String>,
    /// Its process id and host name, to find it.
    #[serde(default)]
    pub pid: u32,
    /// Its host name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// When it wrote this (Unix milliseconds).
    pub at: u64,
    /// How often it writes it (milliseconds).
    pub interval_ms: u64,
    /// The tasks running at `at`.
    #[serde(default)]
    pub running: Vec<RunningRecord>,
}

impl WorkerStatus {
    /// Whether it was written within `intervals` of its interval before `now_ms`
    /// (a worker that was SIGKILLed stops writing and goes stale).
    pub fn is_live(&self, now_ms: u64, intervals: u64) -> bool {
        now_ms.saturating_sub(self.at) <= self.interval_ms.saturating_mul(intervals)
    }
}

/// One running task in a [`WorkerStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningRecord {
    /// The task id.
    pub id: String,
    /// The task name.
    pub name: String,
    /// When it started (Unix milliseconds).
    pub started_at: u64,
}

/// The heartbeats of several workers, as the stores that keep them in one
/// value (NATS key-value, a data dir) hold them. Entries not written for
/// an hour are dropped at the next write.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct WorkerTable {
    pub workers: Vec<WorkerStatus>,
}

impl WorkerTable {
    /// Puts `status` in place of its worker's last one, dropping old entries.
    pub(crate) fn put(&mut self, status: &WorkerStatus) {
        let now = now_ms();
        self.workers
            .retain(|w| w.name != status.name && now.saturating_sub(w.at) < 3_600_000);
        self.workers.push(status.clone());
    }

    /// Removes worker `name`.
    pub(crate) fn remove(&mut self, name: &str) {
        self.workers.retain(|w| w.name != name);
    }
}
