//! Defining tasks: the [`Task`] trait, its options, and what a running task sees.

use std::time::Duration;

use async_trait::async_trait;
use pubsub_core::processor::Backoff;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::canvas::Signature;
use crate::error::TaskError;

/// A task: a name, typed arguments and output, and the code that runs.
///
/// ```
/// use pubsub_tasks::{async_trait, Task, TaskContext, TaskError};
///
/// struct Add;
///
/// #[async_trait]
/// impl Task for Add {
///     const NAME: &'static str = "add";
///     type Args = (i64, i64);
///     type Output = i64;
///     async fn run(&self, (a, b): (i64, i64), _ctx: TaskContext) -> Result<i64, TaskError> {
///         Ok(a + b)
///     }
/// }
///
/// let sig = Add::s((1, 2)).unwrap();
/// assert_eq!(sig.name, "add");
/// ```
#[async_trait]
pub trait Task: Send + Sync + 'static {
    /// The name it is sent and registered under.
    const NAME: &'static str;
    /// Its arguments (a tuple, for Celery-style positional arguments).
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// Its result.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Runs once per attempt.
    async fn run(&self, args: Self::Args, ctx: TaskContext) -> Result<Self::Output, TaskError>;

    /// Retries, backoff and time limit (see [`TaskOptions`]).
    fn options(&self) -> TaskOptions {
        TaskOptions::default()
    }

    /// A signature of this task with `args`.
    fn s(args: Self::Args) -> crate::Result<Signature>
    where
        Self: Sized,
    {
        Signature::new(Self::NAME, args)
    }
}

/// How a worker runs a task.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TaskOptions {
    /// Attempts after the first (default 3); then the task fails and its
    /// message goes to the queue's dead-letter topic.
    pub max_retries: u32,
    /// Wait before each retry (default: 1 s doubling to 60 s).
    pub backoff: Backoff,
    /// An attempt still running after this fails (as a retriable error).
    pub time_limit: Option<Duration>,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            max_retries: 3,
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
                factor: 2.0,
            },
            time_limit: None,
        }
    }
}

impl TaskOptions {
    /// Sets the retries after the first attempt.
    pub fn with_max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Sets the backoff between retries.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the time limit of one attempt.
    pub fn with_time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }
}

/// What a running task knows about itself.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// Its id.
    pub id: String,
    /// Attempts made before this one.
    pub retries: u32,
    /// The workflow's first task.
    pub root_id: Option<String>,
    /// The task whose result started this one.
    pub parent_id: Option<String>,
    /// The keyword arguments it was sent with.
    pub kwargs: serde_json::Map<String, serde_json::Value>,
    /// The worker running it.
    pub worker: String,
}
