//! Putting task messages on queue topics: shared by [`Tasks`](crate::Tasks)
//! and the worker (retries, chain steps, chord callbacks).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pubsub_core::{OutgoingMessage, Producer, PubSubBackend, Qos, Topic, CONTENT_TYPE_PROPERTY};
use tokio::sync::Mutex;

use crate::envelope::{TaskMessage, CONTENT_TYPE};
use crate::error::{Error, Result};
use crate::state::{now_ms, TaskRecord, TaskState};
use crate::store::ResultStore;

/// Sends task messages, one producer per queue topic.
pub(crate) struct Sender {
    pub backend: Arc<dyn PubSubBackend>,
    pub store: Arc<dyn ResultStore>,
    pub default_queue: Topic,
    producers: Mutex<HashMap<Topic, Arc<dyn Producer>>>,
}

impl Sender {
    pub fn new(backend: Arc<dyn PubSubBackend>, store: Arc<dyn ResultStore>, default_queue: Topic) -> Self {
        Sender {
            backend,
            store,
            default_queue,
            producers: Mutex::new(HashMap::new()),
        }
    }

    /// The topic a signature's `queue` names, or the default.
    pub fn queue(&self, queue: Option<&str>) -> Result<Topic> {
        match queue {
            Some(q) => Ok(q.parse()?),
            None => Ok(self.default_queue.clone()),
        }
    }

    async fn producer(&self, topic: &Topic) -> Result<Arc<dyn Producer>> {
        let mut producers = self.producers.lock().await;
        if let Some(p) = producers.get(topic) {
            return Ok(p.clone());
        }
        let p: Arc<dyn Producer> = Arc::from(self.backend.create_producer(topic, Default::default()).await?);
        producers.insert(topic.clone(), p.clone());
        Ok(p)
    }

    /// Sends `msg` to `topic`, to run after `countdown`: with the broker's
    /// delayed delivery where `Capabilities::delayed_delivery` says so;
    /// elsewhere the message carries its `eta` and the worker holds it until
    /// then. Records the task as pending alongside, so its state is known
    /// once this returns.
    pub async fn send(&self, topic: &Topic, mut msg: TaskMessage, countdown: Option<Duration>) -> Result<()> {
        // One clock reading for both: the eta is never before sent_at + countdown.
        let sent_at = now_ms();
        if let Some(delay) = countdown.filter(|d| !d.is_zero()) {
            msg.eta = Some(sent_at + delay.as_millis() as u64);
        }
        let mut out = OutgoingMessage::new(msg.to_bytes())
            .with_property(CONTENT_TYPE_PROPERTY, CONTENT_TYPE)
            .with_key(msg.id.clone());
        if topic.qos() == Qos::ExactlyOnce {
            // A caller-chosen id sent twice runs once where the broker dedups.
            out = out.with_dedup_id(format!("{}-{}", msg.id, msg.retries));
        }
        if let Some(delay) = countdown.filter(|d| !d.is_zero()) {
            if self.backend.capabilities().delayed_delivery {
                out = out.with_deliver_after(delay);
            }
        }
        // Refused before anything is recorded (an id that cannot be a
        // message key, a payload over the backend's limit): no record of
        // a task that was never sent.
        out.validate(self.backend.capabilities().max_payload)?;
        // A known id keeps its record: a retry's, or (an id sent again) one
        // that may already be final, which a fresh Pending would hide.
        let mut record = TaskRecord::new(&msg.id, &msg.name, TaskState::Pending);
        record.sent_at = Some(sent_at);
        // The record and the send go at once (one round trip of latency,
        // not two). Put-if-absent cannot hide a worker's later record: if
        // the worker writes first, the Pending is not written.
        let send = async {
            match self.producer(topic).await {
                Ok(p) => p.send(out).await.map(drop).map_err(Error::from),
                Err(e) => Err(e),
            }
        };
        let (fresh, sent) = tokio::join!(self.store.put_if_absent(&record), send);
        match (fresh, sent) {
            (Ok(_), Ok(())) => Ok(()),
            (Err(e), Ok(())) => {
                // Sent: the worker's records will say how it went; only
                // `state()` reads nothing until the worker starts it.
                tracing::warn!(id = %msg.id, error = %e, "the pending record of a sent task was not written");
                Ok(())
            }
            (fresh, Err(e)) => {
                // The backend refused it (or was unreachable): a Pending
                // record would wait for ever, so the one made here goes again.
                if matches!(fresh, Ok(true)) {
                    if let Err(forget) = self.store.forget(&msg.id).await {
                        tracing::warn!(id = %msg.id, error = %forget, "removing the record of a task whose send failed");
                    }
                }
                Err(e)
            }
        }
    }

    pub async fn close(&self) -> Result<()> {
        for (_, p) in self.producers.lock().await.drain() {
            p.close().await?;
        }
        Ok(())
    }
}
