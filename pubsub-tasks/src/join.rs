//! Joining a worker's chord members in batches: the members of one chord
//! that finish while a join of that chord is under way are joined together
//! by the next store call. So a worker's concurrent members do not contend
//! with each other on the chord's join state (the NATS store's
//! compare-and-set on one key), and Redis runs one script call for many.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::store::ResultStore;

/// What a join answers: the member ids when this member must send the
/// callback, else `None`; an error as text (it is shared by a batch).
type JoinResult = std::result::Result<Option<Vec<String>>, String>;

/// A join waiting: the member's index, and where its answer goes.
type Waiting = (usize, oneshot::Sender<JoinResult>);

/// The joins waiting per chord id, while one task joins that chord.
#[derive(Default)]
pub(crate) struct ChordJoins {
    pending: Mutex<HashMap<String, Vec<Waiting>>>,
}

impl ChordJoins {
    /// Joins member `index` of chord `chord_id` (see
    /// [`ResultStore::chord_join`]): `Some(member ids)` tells exactly one
    /// caller to send the callback.
    pub(crate) async fn join(
        self: &Arc<Self>,
        store: &Arc<dyn ResultStore>,
        chord_id: &str,
        index: usize,
        size: usize,
        lease: Duration,
    ) -> JoinResult {
        let (reply, answer) = oneshot::channel();
        let first = {
            let mut pending = self.pending.lock();
            match pending.get_mut(chord_id) {
                Some(waiting) => {
                    waiting.push((index, reply));
                    false
                }
                None => {
                    pending.insert(chord_id.to_string(), vec![(index, reply)]);
                    true
                }
            }
        };
        if first {
            // A task of its own: a handler that is dropped (a shutdown)
            // does not leave the others waiting for ever.
            let joins = self.clone();
            let (store, chord_id) = (store.clone(), chord_id.to_string());
            tokio::spawn(async move { joins.drain(store, chord_id, size, lease).await });
        }
        answer
            .await
            .unwrap_or_else(|_| Err("the chord join task ended without an answer".into()))
    }

    /// Joins what waits for `chord_id`, batch after batch, until nothing does.
    async fn drain(&self, store: Arc<dyn ResultStore>, chord_id: String, size: usize, lease: Duration) {
        loop {
            let batch = {
                let mut pending = self.pending.lock();
                let batch = pending.get_mut(&chord_id).map(std::mem::take).unwrap_or_default();
                if batch.is_empty() {
                    pending.remove(&chord_id);
                    return;
                }
                batch
            };
            let indices: Vec<usize> = batch.iter().map(|(index, _)| *index).collect();
            let (mut members, error) = match store.chord_join(&chord_id, &indices, size, lease).await {
                Ok(members) => (members, None),
                Err(e) => (None, Some(e.to_string())),
            };
            for (_, reply) in batch {
                // The member list goes to the first only (the store holds its
                // index as the claimant); the rest get `None`.
                let _ = reply.send(match &error {
                    Some(e) => Err(e.clone()),
                    None => Ok(members.take()),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryResultStore;

    /// 200 members joined at once on 8 threads: one caller, and only one,
    /// is told to send the callback, with the member list.
    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn one_of_many_concurrent_joins_sends_the_callback() {
        let store: Arc<dyn ResultStore> = Arc::new(MemoryResultStore::new());
        let ids: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
        store.chord_start("c", &ids).await.unwrap();
        let joins = Arc::new(ChordJoins::default());
        let calls = (0..200).map(|i| {
            let (joins, store) = (joins.clone(), store.clone());
            tokio::spawn(async move { joins.join(&store, "c", i, 200, Duration::from_secs(60)).await })
        });
        let answers: Vec<JoinResult> = futures::future::try_join_all(calls).await.unwrap();
        let told: Vec<_> = answers.into_iter().filter_map(|a| a.unwrap()).collect();
        assert_eq!(told, vec![ids]);
        assert!(joins.pending.lock().is_empty());
    }
}
