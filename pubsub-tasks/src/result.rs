//! Handles on results: [`AsyncResult`] and [`GroupResult`].

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::state::{TaskRecord, TaskState};
use crate::store::ResultStore;

/// The result of one task, to be waited for. `T` is the task's output
/// (`serde_json::Value` for untyped signatures and workflows).
pub struct AsyncResult<T = Value> {
    id: String,
    store: Arc<dyn ResultStore>,
    _output: PhantomData<fn() -> T>,
}

impl<T> Clone for AsyncResult<T> {
    fn clone(&self) -> Self {
        AsyncResult {
            id: self.id.clone(),
            store: self.store.clone(),
            _output: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult").field("id", &self.id).finish()
    }
}

impl<T: DeserializeOwned> AsyncResult<T> {
    /// The handle of task `id`'s result in `store`.
    pub fn new(id: impl Into<String>, store: Arc<dyn ResultStore>) -> Self {
        AsyncResult {
            id: id.into(),
            store,
            _output: PhantomData,
        }
    }

    /// The task id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The current state; [`TaskState::Pending`] until a worker has it
    /// (and for an unknown or expired id).
    pub async fn state(&self) -> Result<TaskState> {
        Ok(self.info().await?.map_or(TaskState::Pending, |r| r.state))
    }

    /// Whether the task reached a final state.
    pub async fn ready(&self) -> Result<bool> {
        Ok(self.state().await?.is_ready())
    }

    /// Everything known: state, attempts, timestamps, worker, last error.
    pub async fn info(&self) -> Result<Option<TaskRecord>> {
        Ok(self.store.get(&self.id).await?)
    }

    /// Waits up to `timeout` for the result: the output, or
    /// [`Error::TaskFailed`] with the handler's message, [`Error::Revoked`],
    /// [`Error::Timeout`].
    pub async fn get(&self, timeout: Duration) -> Result<T> {
        let record = self
            .store
            .wait_ready(&self.id, timeout)
            .await?
            .ok_or_else(|| Error::Timeout {
                id: self.id.clone(),
                timeout,
            })?;
        outcome(record)
    }

    /// Deletes the stored result.
    pub async fn forget(&self) -> Result<()> {
        Ok(self.store.forget(&self.id).await?)
    }
}

/// A final record as the caller's result.
fn outcome<T: DeserializeOwned>(record: TaskRecord) -> Result<T> {
    let id = record.id;
    match record.state {
        TaskState::Success => serde_json::from_value(record.result.unwrap_or(Value::Null)).map_err(|e| Error::Decode {
            id,
            message: e.to_string(),
        }),
        TaskState::Revoked => Err(Error::Revoked {
            id,
            reason: record.error.unwrap_or_else(|| "revoked".into()),
        }),
        _ => Err(Error::TaskFailed {
            id,
            message: record.error.unwrap_or_default(),
        }),
    }
}

/// How many members of a group [`GroupResult::get`] waits for at once.
const WAIT_AHEAD: usize = 256;

/// The results of a group, in the order of its members.
#[derive(Debug, Clone)]
pub struct GroupResult<T = Value> {
    members: Vec<AsyncResult<T>>,
}

impl<T: DeserializeOwned> GroupResult<T> {
    pub(crate) fn new(members: Vec<AsyncResult<T>>) -> Self {
        GroupResult { members }
    }

    /// Each member's handle, in order.
    pub fn members(&self) -> &[AsyncResult<T>] {
        &self.members
    }

    /// How many members succeeded so far.
    pub async fn completed_count(&self) -> Result<usize> {
        let mut n = 0;
        for m in &self.members {
            if m.state().await? == TaskState::Success {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Waits (up to `timeout` in all) for every member; their outputs in
    /// order, or the first member's error.
    pub async fn get(&self, timeout: Duration) -> Result<Vec<T>> {
        // Waited for WAIT_AHEAD at a time, in order: the first error in
        // member order is the one reported, as when waited one by one.
        let deadline = Instant::now() + timeout;
        futures::stream::iter(&self.members)
            .map(|m| m.get(deadline.saturating_duration_since(Instant::now())))
            .buffered(WAIT_AHEAD)
            .try_collect()
            .await
    }
}
