//! Errors of the task layer.

use std::time::Duration;

/// What can go wrong sending a task or waiting for its result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The task failed for good; `message` is what its handler said.
    #[error("task {id} failed: {message}")]
    TaskFailed {
        /// The task id.
        id: String,
        /// The handler's error message (or why the workflow stopped).
        message: String,
    },
    /// The task was revoked (or expired) before it started.
    #[error("task {id} was revoked: {reason}")]
    Revoked {
        /// The task id.
        id: String,
        /// Why.
        reason: String,
    },
    /// No final state within the time asked for.
    #[error("task {id}: no result within {timeout:?}")]
    Timeout {
        /// The task id.
        id: String,
        /// How long was waited.
        timeout: Duration,
    },
    /// The result is not of the type asked for.
    #[error("task {id}: the result does not decode as the type asked for: {message}")]
    Decode {
        /// The task id.
        id: String,
        /// The decoder's message.
        message: String,
    },
    /// The arguments do not encode, or the task is not known here.
    #[error("invalid task: {0}")]
    Invalid(String),
    /// The backend or the result store failed.
    #[error(transparent)]
    PubSub(#[from] pubsub_core::Error),
}

/// Shorthand for `Result<T, pubsub_tasks::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a task's `run` fails, and so what the worker does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskError {
    /// Retried (with the task's backoff) until `max_retries`, then a failure.
    Retry(String),
    /// A failure at once, without retries.
    Fatal(String),
}

impl TaskError {
    /// A retriable failure.
    pub fn retry(why: impl std::fmt::Display) -> Self {
        TaskError::Retry(why.to_string())
    }

    /// A failure no retry can fix.
    pub fn fatal(why: impl std::fmt::Display) -> Self {
        TaskError::Fatal(why.to_string())
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            TaskError::Retry(m) | TaskError::Fatal(m) => m,
        }
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for TaskError {}
