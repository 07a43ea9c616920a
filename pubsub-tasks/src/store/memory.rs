//! Results in this process's memory: for the embedded backend and tests.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use pubsub_core::Result;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{chord_members_gone, ChordJoin, ResultStore, DEFAULT_RESULT_TTL};
use crate::state::{now_ms, TaskRecord, WorkerStatus};

/// A [`ResultStore`] in memory, shared by the senders and workers of one
/// process (clone the `Arc`). Records expire after `ttl`.
///
/// ```
/// # tokio_test_block(async {
/// use pubsub_tasks::{MemoryResultStore, ResultStore, TaskRecord, TaskState};
/// let store = MemoryResultStore::new();
/// store.put(&TaskRecord::new("t1", "add", TaskState::Success)).await?;
/// assert_eq!(store.get("t1").await?.unwrap().state, TaskState::Success);
/// # Ok::<(), pubsub_core::Error>(()) });
/// # fn tokio_test_block<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f) }
/// ```
#[derive(Debug)]
pub struct MemoryResultStore {
    ttl: Duration,
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    records: HashMap<String, (TaskRecord, Instant)>,
    revoked: HashMap<String, Instant>,
    /// Join states and member lists, until they expire as records do.
    chords: HashMap<String, (ChordJoin, Instant)>,
    chord_members: HashMap<String, (Vec<String>, Instant)>,
    workers: HashMap<String, WorkerStatus>,
}

impl Default for MemoryResultStore {
    fn default() -> Self {
        Self::with_ttl(DEFAULT_RESULT_TTL)
    }
}

impl MemoryResultStore {
    /// A store whose records live for a day.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose records live for `ttl`.
    pub fn with_ttl(ttl: Duration) -> Self {
        MemoryResultStore {
            ttl,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }

    /// Adds a record read back from elsewhere (a data dir), without waking anyone.
    pub(crate) fn insert(&self, record: TaskRecord) {
        let until = Instant::now() + self.ttl;
        self.state.lock().records.insert(record.id.clone(), (record, until));
    }

    /// Whether `id` has a live record.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.live(id).is_some()
    }

    /// Deletes the record of `id`.
    pub(crate) fn remove(&self, id: &str) {
        self.state.lock().records.remove(id);
    }

    /// Wakes the waits, after [`insert`](Self::insert)s that finish a task.
    pub(crate) fn notify(&self) {
        self.changed.notify_waiters();
    }

    /// Marks `id` revoked (read back from a data dir).
    pub(crate) fn mark_revoked(&self, id: &str) {
        let until = Instant::now() + self.ttl;
        self.state.lock().revoked.insert(id.to_string(), until);
    }

    fn live(&self, id: &str) -> Option<TaskRecord> {
        let mut state = self.state.lock();
        match state.records.get(id) {
            Some((record, until)) if *until > Instant::now() => Some(record.clone()),
            Some(_) => {
                state.records.remove(id);
                None
            }
            None => None,
        }
    }
}

#[async_trait]
impl ResultStore for MemoryResultStore {
    async fn put(&self, record: &TaskRecord) -> Result<()> {
        let until = Instant::now() + self.ttl;
        self.state
            .lock()
            .records
            .insert(record.id.clone(), (record.clone(), until));
        self.changed.notify_waiters();
        Ok(())
    }

    async fn put_if_absent(&self, record: &TaskRecord) -> Result<bool> {
        let now = Instant::now();
        let mut state = self.state.lock();
        if state.records.get(&record.id).is_some_and(|(_, until)| *until > now) {
            return Ok(false);
        }
        state
            .records
            .insert(record.id.clone(), (record.clone(), now + self.ttl));
        drop(state);
        self.changed.notify_waiters();
        Ok(true)
    }

    async fn get(&self, id: &str) -> Result<Option<TaskRecord>> {
        Ok(self.live(id))
    }

    async fn wait_ready(&self, id: &str, timeout: Duration) -> Result<Option<TaskRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            // Registered before looking, so a put in between is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(record) = self.live(id).filter(|r| r.state.is_ready()) {
                return Ok(Some(record));
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn forget(&self, id: &str) -> Result<()> {
        self.remove(id);
        Ok(())
    }

    async fn revoke(&self, id: &str) -> Result<()> {
        let until = Instant::now() + self.ttl;
        self.state.lock().revoked.insert(id.to_string(), until);
        Ok(())
    }

    async fn is_revoked(&self, id: &str) -> Result<bool> {
        Ok(self
            .state
            .lock()
            .revoked
            .get(id)
            .is_some_and(|until| *until > Instant::now()))
    }

    async fn chord_start(&self, chord_id: &str, members: &[String]) -> Result<()> {
        let now = Instant::now();
        let mut state = self.state.lock();
        state.chords.retain(|_, (_, until)| *until > now);
        state.chord_members.retain(|_, (_, until)| *until > now);
        let until = now + self.ttl;
        state
            .chord_members
            .insert(chord_id.to_string(), (members.to_vec(), until));
        Ok(())
    }

    async fn chord_join(
        &self,
        chord_id: &str,
        indices: &[usize],
        size: usize,
        lease: Duration,
    ) -> Result<Option<Vec<String>>> {
        let until = Instant::now() + self.ttl;
        let mut state = self.state.lock();
        let (chord, _) = state
            .chords
            .entry(chord_id.to_string())
            .or_insert_with(|| (ChordJoin::default(), until));
        if !chord.join(indices, size, lease, now_ms()) {
            return Ok(None);
        }
        match state.chord_members.get(chord_id) {
            Some((members, _)) => Ok(Some(members.clone())),
            None => Err(chord_members_gone("embedded", chord_id)),
        }
    }

    async fn chord_sent(&self, chord_id: &str) -> Result<()> {
        if let Some((chord, _)) = self.state.lock().chords.get_mut(chord_id) {
            chord.sent();
        }
        Ok(())
    }

    async fn put_worker(&self, status: &WorkerStatus) -> Result<()> {
        self.state.lock().workers.insert(status.name.clone(), status.clone());
        Ok(())
    }

    async fn remove_worker(&self, name: &str) -> Result<()> {
        self.state.lock().workers.remove(name);
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerStatus>> {
        let mut all: Vec<WorkerStatus> = self.state.lock().workers.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::TaskState;

    #[tokio::test]
    async fn a_waiter_wakes_on_the_final_state_only() {
        let store = std::sync::Arc::new(MemoryResultStore::new());
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.wait_ready("t", Duration::from_secs(5)).await })
        };
        store.put(&TaskRecord::new("t", "x", TaskState::Started)).await.unwrap();
        tokio::task::yield_now().await;
        store.put(&TaskRecord::new("t", "x", TaskState::Success)).await.unwrap();
        let got = waiter.await.unwrap().unwrap().unwrap();
        assert_eq!(got.state, TaskState::Success);
        assert_eq!(store.wait_ready("none", Duration::from_millis(20)).await.unwrap(), None);
    }
}
