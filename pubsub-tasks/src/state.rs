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
