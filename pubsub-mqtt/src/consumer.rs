//! MQTT consumers: one connection each, subscribed to
//! `$share/{subscription}/tenant/namespace/queue`.
//!
//! q1/q2 consumers keep a persistent session (clean start off, session
//! expiry from the config) under a client id derived from the subscription,
//! so what is published while they are away is queued by the broker, and
//! acks are manual: the PUBACK/PUBREC goes out when the application acks.
//! A nack hands the message back to this consumer's own queue (after the
//! delay) with a higher redelivery count; the broker itself redelivers
//! unacked messages when the session reconnects.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pubsub_core::inbox::Inbox;
use pubsub_core::{
    ensure_open, AckTarget, Consumer, ConsumerOptions, Error, Message, MessageId, MessageParts, NoAck, Qos, Result,
    Topic,
};
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::backend::Inner;
use crate::connection::{connect, Session, NAME};
use crate::mapping::{from_properties, qos, share_filter};

struct Shared {
    inner: Arc<Inner>,
    topic: Topic,
    subscription: String,
    client_id: String,
    slot: Option<u32>,
    options: ConsumerOptions,
    client: AsyncClient,
    closed: AtomicBool,
    stop: Notify,
    tx: mpsc::UnboundedSender<Message>,
    counter: AtomicU64,
}

impl Shared {
    fn ensure_open(&self) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "consumer")?;
        self.inner.ensure_open()
    }

    fn message(self: &Arc<Self>, publish: Arc<Publish>, redeliveries: u32, settled: Arc<AtomicBool>) -> Message {
        let (properties, key) = from_properties(publish.properties.as_ref());
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let parts = MessageParts {
            payload: publish.payload.clone(),
            properties,
            key,
            redelivery_count: redeliveries,
            ..MessageParts::new(
                MessageId::from_text(format!("{}:{n}", self.client_id)),
                self.topic.clone(),
            )
        };
        if publish.qos == rumqttc::v5::mqttbytes::QoS::AtMostOnce {
            return Message::new(parts, Arc::new(NoAck));
        }
        let target = MqttAck {
            shared: self.clone(),
            publish,
            redeliveries: AtomicU32::new(redeliveries),
            settled,
            nacked: AtomicBool::new(false),
        };
        Message::new(parts, Arc::new(target))
    }
}

/// A consumer of one MQTT shared subscription.
pub(crate) struct MqttConsumer {
    shared: Arc<Shared>,
    inbox: Inbox<mpsc::UnboundedReceiver<Message>>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl fmt::Debug for MqttConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConsumer")
            .field("topic", &self.shared.topic)
            .field("client_id", &self.shared.client_id)
            .finish()
    }
}

impl MqttConsumer {
    pub(crate) async fn start(
        inner: Arc<Inner>,
        topic: Topic,
        subscription: &str,
        options: ConsumerOptions,
    ) -> Result<Self> {
        let persistent = topic.qos() != Qos::AtMostOnce;
        // A stable client id, so a consumer that comes back finds its session:
        // the subscription plus the consumer's name, or else the lowest slot
        // this process is not using for the subscription.
        let (client_id, slot) = match &options.name {
            Some(name) => (format!("{}-{subscription}-{name}", inner.config.client_id_prefix), None),
            None => {
                let slot = inner.take_slot(subscription);
                (
                    format!("{}-{subscription}-{slot}", inner.config.client_id_prefix),
                    Some(slot),
                )
            }
        };
        let session = Session {
            client_id: client_id.clone(),
            persistent,
            manual_acks: persistent,
            // `max_unacked` (not `batch_size`) is the MQTT v5 receive maximum:
            // the broker stops sending at that many unacked (ceiling 65,535).
            receive_maximum: Some(options.max_unacked.clamp(1, u16::MAX as usize) as u16),
        };
        let connected = connect(&inner.config, &session).await;
        let (client, eventloop, _ack) = match connected {
            Ok(c) => c,
            Err(e) => {
                if let Some(s) = slot {
                    inner.release_slot(subscription, s);
                }
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            inner,
            topic,
            subscription: subscription.to_string(),
            client_id,
            slot,
            options,
            client,
            closed: AtomicBool::new(false),
            stop: Notify::new(),
            tx,
            counter: AtomicU64::new(0),
        });
        let (subscribed_tx, subscribed_rx) = oneshot::channel();
        subscribe(&shared)?;
        let task = tokio::spawn(drive(shared.clone(), eventloop, Some(subscribed_tx)));
        let consumer = MqttConsumer {
            shared,
            inbox: Inbox::new(rx),
            task: std::sync::Mutex::new(Some(task)),
        };
        // Latest means "everything after this returns": wait for the SUBACK.
        let timeout = consumer.shared.inner.config.timeout * 2;
        match tokio::time::timeout(timeout, subscribed_rx).await {
            Ok(Ok(Ok(()))) => Ok(consumer),
            Ok(Ok(Err(e))) => {
                consumer.shut().await;
                Err(e)
            }
            _ => {
                consumer.shut().await;
                Err(Error::Connection {
                    backend: NAME,
                    message: format!("no SUBACK within {timeout:?}"),
                    source: None,
                })
            }
        }
    }

    async fn shut(&self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.stop.notify_waiters();
        // DISCONNECT goes out after the PUBACKs queued before it.
        let _ = self.shared.client.disconnect().await;
        let task = self.task.lock().expect("task lock").take();
        if let Some(task) = task {
            if tokio::time::timeout(Duration::from_secs(2), task).await.is_err() {
                tracing::warn!(client_id = %self.shared.client_id, "mqtt consumer did not stop in time");
            }
        }
        if let Some(s) = self.shared.slot {
            self.shared.inner.release_slot(&self.shared.subscription, s);
        }
    }
}

fn subscribe(shared: &Shared) -> Result<()> {
    let filter = share_filter(&shared.subscription, &shared.topic);
    shared
        .client
        .try_subscribe(filter, qos(shared.topic.qos()))
        .map_err(|e| Error::connection(NAME, format!("subscribe: {e}"), e))
}

async fn drive(shared: Arc<Shared>, mut eventloop: EventLoop, mut subscribed: Option<oneshot::Sender<Result<()>>>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = shared.stop.notified(), if shared.closed.load(Ordering::Acquire) => {
                // Let the DISCONNECT (and acks before it) go out.
                for _ in 0..20 {
                    match tokio::time::timeout(Duration::from_millis(100), eventloop.poll()).await {
                        Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) => {
                            return until_broker_hangs_up(&mut eventloop).await;
                        }
                        Ok(Err(_)) => return,
                        _ => {}
                    }
                }
                return;
            }
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                // DUP: the broker sent it before (to this session, before a
                // restart): redelivered at least once. The exact count is not sent.
                let redelivered = u32::from(p.dup);
                let m = shared.message(Arc::new(p), redelivered, Arc::new(AtomicBool::new(false)));
                let _ = shared.tx.send(m);
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .find(|c| !matches!(c, SubscribeReasonCode::Success(_)));
                let result = match refused {
                    None => Ok(()),
                    Some(code) => Err(Error::Broker {
                        backend: NAME,
                        message: format!("the broker refused the subscription {}: {code:?}", shared.subscription),
                        source: None,
                    }),
                };
                if let Some(tx) = subscribed.take() {
                    let _ = tx.send(result);
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = Duration::from_millis(100);
                if !ack.session_present {
                    // The broker lost our session (or it expired): subscribe again.
                    if let Err(e) = subscribe(&shared) {
                        tracing::warn!(error = %e, "mqtt resubscribe failed");
                    }
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) if shared.closed.load(Ordering::Acquire) => {
                return until_broker_hangs_up(&mut eventloop).await;
            }
            Ok(_) => {}
            Err(e) => {
                if shared.closed.load(Ordering::Acquire) {
                    return;
                }
                tracing::warn!(client_id = %shared.client_id, error = %e, retry_in = ?backoff, "mqtt consumer connection lost");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shared.stop.notified() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// How long a closing consumer waits for the broker to end its connection.
const HANG_UP_WAIT: Duration = Duration::from_secs(1);

/// After our DISCONNECT went out: waits (bounded) for the broker to close
/// the connection, which it does once it has read the DISCONNECT, so every
/// PUBACK written before it has been processed. Without this, a consumer
/// taking over the same client id at once could make the broker drop the
/// old connection with acks still unread, and acked messages came back.
/// Messages arriving meanwhile are not handed out: they stay with the session.
async fn until_broker_hangs_up(eventloop: &mut EventLoop) {
    let _ = tokio::time::timeout(HANG_UP_WAIT, async { while eventloop.poll().await.is_ok() {} }).await;
}

#[async_trait]
impl Consumer for MqttConsumer {
    fn topic(&self) -> &Topic {
        &self.shared.topic
    }

    fn subscription(&self) -> &str {
        &self.shared.subscription
    }

    async fn receive(&self) -> Result<Message> {
        self.inbox
            .receive(&self.shared.stop, || self.shared.ensure_open())
            .await
    }

    async fn receive_batch(&self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        self.inbox
            .receive_batch(&self.shared.stop, || self.shared.ensure_open(), max, timeout)
            .await
    }

    async fn unsubscribe(&self) -> Result<()> {
        self.shared.ensure_open()?;
        let filter = share_filter(&self.shared.subscription, &self.shared.topic);
        let _ = self.shared.client.unsubscribe(filter).await;
        self.shut().await;
        // End the session too, so nothing it still held comes back to the
        // next consumer with this client id.
        let session = Session {
            client_id: self.shared.client_id.clone(),
            persistent: false,
            manual_acks: false,
            receive_maximum: None,
        };
        let (client, mut eventloop, _) = connect(&self.shared.inner.config, &session).await?;
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(e) = eventloop.poll().await {
                if matches!(e, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.shut().await;
        Ok(())
    }
}

impl Drop for MqttConsumer {
    fn drop(&mut self) {
        if !self.shared.closed.swap(true, Ordering::AcqRel) {
            self.shared.stop.notify_waiters();
            let _ = self.shared.client.try_disconnect();
            if let Some(s) = self.shared.slot {
                self.shared.inner.release_slot(&self.shared.subscription, s);
            }
        }
    }
}

/// Acks one delivery with the PUBACK (q1) or PUBREC (q2) of its packet.
struct MqttAck {
    shared: Arc<Shared>,
    publish: Arc<Publish>,
    redeliveries: AtomicU32,
    /// Shared by every local redelivery of the same packet.
    settled: Arc<AtomicBool>,
    /// This delivery was nacked already.
    nacked: AtomicBool,
}

impl fmt::Debug for MqttAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MqttAck({} pkid {})", self.shared.client_id, self.publish.pkid)
    }
}

#[async_trait]
impl AckTarget for MqttAck {
    async fn ack(&self) -> Result<()> {
        self.shared.ensure_open()?;
        if self.settled.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.shared
            .client
            .ack(&self.publish)
            .await
            .map_err(|e| Error::connection(NAME, format!("ack: {e}"), e))
    }

    async fn nack(&self, delay: Option<Duration>) -> Result<()> {
        self.shared.ensure_open()?;
        if self.settled.load(Ordering::Acquire) || self.nacked.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let delay = delay.unwrap_or(self.shared.options.nack_redelivery_delay);
        let count = self.redeliveries.fetch_add(1, Ordering::AcqRel) + 1;
        let (shared, publish, settled) = (self.shared.clone(), self.publish.clone(), self.settled.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if !shared.closed.load(Ordering::Acquire) && !settled.load(Ordering::Acquire) {
                let m = shared.message(publish, count, settled);
                let _ = shared.tx.send(m);
            }
        });
        Ok(())
    }
}
