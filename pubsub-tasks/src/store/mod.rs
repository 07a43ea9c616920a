//! Where results live: the [`ResultStore`] trait and its implementations.

use std::time::Duration;

use async_trait::async_trait;
use pubsub_core::Result;
use serde::{Deserialize, Serialize};

use crate::state::{TaskRecord, WorkerStatus};

mod dir;
mod memory;
#[cfg(feature = "nats")]
mod nats;
#[cfg(any(feature = "redis", feature = "nats"))]
mod notices;
mod open;
#[cfg(feature = "redis")]
mod redis;

pub use dir::DirResultStore;
pub use memory::MemoryResultStore;
#[cfg(feature = "nats")]
pub use nats::NatsResultStore;
pub use open::{open_result_store, result_store_from_env, RESULTS_ENV};
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

    /// Whether `record` can be stored (a store with a size limit says
    /// `PayloadTooLarge`), asked before anything depends on storing it.
    fn check(&self, record: &TaskRecord) -> Result<()> {
        let _ = record;
        Ok(())
    }

    /// The record of `id`, if any.
    async fn get(&self, id: &str) -> Result<Option<TaskRecord>>;

    /// Writes `record` unless its id has one already, atomically (a
    /// sender's Pending record goes while its task is sent, so a worker's
    /// record may come first and must win); `true` when written.
    async fn put_if_absent(&self, record: &TaskRecord) -> Result<bool>;

    /// The record of `id` and whether `id` was revoked, as a worker reads
    /// them before running it (Redis in one `MGET`; the default asks both
    /// at once).
    async fn get_with_revoked(&self, id: &str) -> Result<(Option<TaskRecord>, bool)> {
        // Both at once: one round trip of latency where they are two requests.
        let (record, revoked) = futures::join!(self.get(id), self.is_revoked(id));
        Ok((record?, revoked?))
    }

    /// Waits, without polling in a loop, until the record of `id` is in a
    /// final state, and returns it; `Ok(None)` when `timeout` passed first.
    async fn wait_ready(&self, id: &str, timeout: Duration) -> Result<Option<TaskRecord>>;

    /// Deletes the record of `id`.
    async fn forget(&self, id: &str) -> Result<()>;

    /// Marks `id` revoked: a worker that receives it later does not run it.
    async fn revoke(&self, id: &str) -> Result<()>;

    /// Whether `id` was revoked.
    async fn is_revoked(&self, id: &str) -> Result<bool>;

    /// Keeps the member ids of the chord `chord_id`, in order, until the
    /// results expire: written once before the members are sent, read back
    /// by the join that sends the callback (so a member's message carries
    /// its index, not every member's id).
    async fn chord_start(&self, chord_id: &str, members: &[String]) -> Result<()>;

    /// Records that the members at `indices` of the chord `chord_id` (of
    /// `size` members) succeeded. `Some(member ids)` tells the caller to send
    /// the chord's callback: one call gets it once every member has joined,
    /// and that claim is the first index's of the call. Until the claimer
    /// confirms with [`chord_sent`](Self::chord_sent), the claim goes again
    /// to a later call that includes the claiming member (its message came
    /// back: its worker died or failed before confirming), or to any call
    /// once `lease` has passed; after the confirmation, to none. Workers
    /// pass the joins of one chord that arrive together in one call.
    async fn chord_join(
        &self,
        chord_id: &str,
        indices: &[usize],
        size: usize,
        lease: Duration,
    ) -> Result<Option<Vec<String>>>;

    /// Confirms that the chord's callback was sent.
    async fn chord_sent(&self, chord_id: &str) -> Result<()>;

    /// Writes a worker's heartbeat, replacing its last one.
    async fn put_worker(&self, status: &WorkerStatus) -> Result<()>;

    /// Deletes worker `name`'s heartbeat (it stopped).
    async fn remove_worker(&self, name: &str) -> Result<()>;

    /// Every worker heartbeat kept, stale ones included (see
    /// [`WorkerStatus::is_live`]), ordered by name.
    async fn workers(&self) -> Result<Vec<WorkerStatus>>;
}

/// A chord's join state, for the stores that keep it as a value (memory,
/// data dir, NATS key-value; Redis does the same in a Lua script).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct ChordJoin {
    /// The chord's id, where the key or file name may not say it (a hashed
    /// file name in a [`DirResultStore`]), to check what was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    joined: std::collections::BTreeSet<usize>,
    /// Until when (Unix ms) the caller told to send the callback has to confirm.
    claim_until: Option<u64>,
    /// The member whose join holds the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claimant: Option<usize>,
    sent: bool,
}

impl ChordJoin {
    /// Adds the members at `indices`; `true` when this caller must send the
    /// callback (see [`ResultStore::chord_join`]).
    pub(crate) fn join(&mut self, indices: &[usize], size: usize, lease: Duration, now_ms: u64) -> bool {
        self.joined.extend(indices);
        let lapsed = self.claim_until.is_none_or(|until| until <= now_ms);
        let claimant_back = self.claimant.is_some_and(|c| indices.contains(&c));
        if self.joined.len() >= size && !self.sent && (lapsed || claimant_back) {
            self.claim_until = Some(now_ms + lease.as_millis() as u64);
            self.claimant = indices.first().copied();
            return true;
        }
        false
    }

    /// The callback was sent: no later join sends it again.
    pub(crate) fn sent(&mut self) {
        self.sent = true;
    }
}

/// The error of a join that found every member but not the chord's member
/// list (it expired, or was never written by [`ResultStore::chord_start`]).
pub(crate) fn chord_members_gone(backend: &'static str, chord_id: &str) -> pubsub_core::Error {
    pubsub_core::Error::broker_msg(
        backend,
        format!("result store: chord {chord_id} has every member but no member list (expired?)"),
    )
}

/// A name for `id` made of `[-_=.a-zA-Z0-9]` only (a key-value key, a file
/// name), different for different ids: `{kind}.{id}` when the id is made of
/// `[-_=a-zA-Z0-9]` (so it has no dot), else `{kind}.x.{hex of its bytes}`
/// (two dots, so no plain id's name has that form).
pub(crate) fn safe_name(kind: &str, id: &str) -> String {
    let plain = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='));
    if plain {
        format!("{kind}.{id}")
    } else {
        let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
        format!("{kind}.x.{hex}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_in_a_safe_alphabet() {
        assert_eq!(safe_name("t", "3f0b-ed"), "t.3f0b-ed");
        assert_eq!(safe_name("t", "a b"), "t.x.612062");
        assert_eq!(safe_name("t", "../x"), "t.x.2e2e2f78");
        assert_eq!(safe_name("t", ""), "t.x.");
    }

    #[test]
    fn an_id_shaped_like_an_encoding_keeps_its_own_name() {
        // "x612062" is how the old encoding wrote "a b": now they differ.
        assert_ne!(safe_name("t", "x612062"), safe_name("t", "a b"));
        let ids = ["a b", "x612062", "x.612062", "x", "", "t.x", ".", "x.", "ab", "6162"];
        let names: std::collections::HashSet<_> = ids.iter().map(|id| safe_name("t", id)).collect();
        assert_eq!(names.len(), ids.len(), "{names:?}");
    }

    #[test]
    fn a_chord_join_claims_once_unless_the_claim_lapses() {
        let mut j = ChordJoin::default();
        let lease = Duration::from_millis(50);
        assert!(!j.join(&[0], 3, lease, 1000));
        assert!(!j.join(&[0, 0], 3, lease, 1000), "a member joined twice counts once");
        assert!(j.join(&[2, 1], 3, lease, 1000));
        assert!(
            !j.join(&[1], 3, lease, 1010),
            "a redelivered member while the claim holds"
        );
        assert!(j.join(&[0], 3, lease, 1060), "the claimer never confirmed");
        j.sent();
        assert!(!j.join(&[0], 3, lease, 2000));
    }
}
