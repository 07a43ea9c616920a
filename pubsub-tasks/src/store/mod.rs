//! Where results live: the [`ResultStore`] trait and its implementations.

use std::time::Duration;

use async_trait::async_trait;
use pubsub_core::Result;

use crate::state::TaskRecord;

mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use memory::MemoryResultStore;
#[cfg(feature = "redis")]
pub use redis::RedisResultStore;

/// How long results are kept unless a store is told otherwise: one day.
pub const DEFAULT_RESULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Results, revocations and chord joins, shared by the senders and the
/// workers of one application. Records expire (each store's `ttl`).
#[async_trait]
pub trait ResultStore: Send + Sync + 'static {
    /// Writes `record` (replacing the one of its id) and wakes whoever waits for it.
    async fn put(&self, record: &TaskRecord) -> Result<()>;

    /// The record of `id`, if any.
    async fn get(&self, id: &str) -> Result<Option<TaskRecord>>;

    /// Waits, without polling in a loop, until the record of `id` is in a
    /// final state, and returns it; `Ok(None)` when `timeout` passed first.
    async fn wait_ready(&self, id: &str, timeout: Duration) -> Result<Option<TaskRecord>>;

    /// Deletes the record of `id`.
    async fn forget(&self, id: &str) -> Result<()>;

    /// Marks `id` revoked: a worker that receives it later does not run it.
    async fn revoke(&self, id: &str) -> Result<()>;

    /// Whether `id` was revoked.
    async fn is_revoked(&self, id: &str) -> Result<bool>;

    /// Records that member `index` of the chord `chord_id` (of `size`
    /// members) succeeded. `true` tells the caller to send the chord's
    /// callback: exactly one caller gets it once every member has joined,
    /// however often members are redelivered, unless that caller did not
    /// confirm with [`chord_sent`](Self::chord_sent) within `lease`, in
    /// which case the next join of any member gets it again (so a worker
    /// that died in between does not lose the callback).
    async fn chord_join(&self, chord_id: &str, index: usize, size: usize, lease: Duration) -> Result<bool>;

    /// Confirms that the chord's callback was sent.
    async fn chord_sent(&self, chord_id: &str) -> Result<()>;
}
