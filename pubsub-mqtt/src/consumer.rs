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
//!
//! Scaling down: a closed consumer's session would keep taking its share of
//! the subscription (MQTT brokers deal shares to offline sessions too), and
//! what it held unacked would wait for its client id to return. So a
//! consumer that closes while others of its subscription are open in this
//! process unsubscribes first (no more shares), then hands what it held back
//! to them through the subscription's return topic (see
//! [`return_topic`](crate::mapping::return_topic)), acking each original
//! once the broker confirmed its copy. The last one to close stays
//! subscribed, so the broker keeps queuing for the subscription, and the
//! next consumer made in this process resumes its session (its slot).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use pubsub_core::inbox::Inbox;
use pubsub_core::{
    ensure_open, AckTarget, Consumer, ConsumerOptions, Error, Message, MessageId, MessageParts, NoAck, Qos, Result,
    Topic,
};
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use crate::backend::Inner;
use crate::connection::{connect, Session, NAME};
use crate::mapping::{from_properties, handed_back, qos, redelivery_count, return_filter, return_topic, share_filter};

/// The consumers of one subscription (of one topic, on one broker) in this
/// process: how many are open, and the slot whose session the last one to
/// close left subscribed.
#[derive(Debug, Default)]
struct Group {
    open: usize,
    parked: Option<u32>,
}

static GROUPS: LazyLock<std::sync::Mutex<HashMap<String, Group>>> = LazyLock::new(Default::default);

fn groups() -> std::sync::MutexGuard<'static, HashMap<String, Group>> {
    GROUPS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The slot the last closed consumer of `group` parked, for the next one to resume.
fn take_parked(group: &str) -> Option<u32> {
    groups().get_mut(group).and_then(|g| g.parked.take())
}

fn join(group: &str) {
    groups().entry(group.to_string()).or_default().open += 1;
}

/// One consumer of `group` closes: `true` if others are still open (it
/// should hand back); else, if `park`, its `slot` is remembered.
fn leave(group: &str, slot: Option<u32>, park: bool) -> bool {
    let mut groups = groups();
    let g = groups.entry(group.to_string()).or_default();
    g.open = g.open.saturating_sub(1);
    if g.open > 0 {
        return true;
    }
    if park && slot.is_some() {
        g.parked = slot;
    }
    false
}

/// A delivery from the broker not yet acked (local redeliveries share it).
struct Unsettled {
    publish: Arc<Publish>,
    settled: Arc<AtomicBool>,
    redeliveries: u32,
}

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
    /// q1/q2: a persistent session, subscribed to the return topic too.
    persistent: bool,
    /// Key of this consumer's [`Group`].
    group: String,
    /// Counted in its group (set once started).
    joined: AtomicBool,
    /// `close` or `unsubscribe` began.
    shutting: AtomicBool,
    /// While set, the event loop keeps running although `closed` is.
    handing_back: AtomicBool,
    /// One permit per UNSUBACK.
    unsubacks: Semaphore,
    /// Deliveries not yet acked, by their `settled` flag's address.
    unsettled: std::sync::Mutex<HashMap<usize, Unsettled>>,
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
        self.unsettled.lock().unwrap_or_else(|e| e.into_inner()).insert(
            Arc::as_ptr(&settled) as usize,
            Unsettled {
                publish: publish.clone(),
                settled: settled.clone(),
                redeliveries,
            },
        );
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
        let group = format!(
            "{}:{}/{}/{subscription}/{topic}",
            inner.config.host, inner.config.port, inner.config.client_id_prefix
        );
        // A stable client id, so a consumer that comes back finds its session:
        // the subscription plus the consumer's name, or else the slot the
        // last closed consumer of the subscription parked, or else the
        // lowest slot this process is not using for the subscription.
        let parked = if persistent && options.name.is_none() {
            take_parked(&group)
        } else {
            None
        };
        // The id names the topic too (by a stable hash, to keep it short):
        // subscription `s` on another topic is another subscription, and two
        // processes with consumers of `s` on two topics took each other's
        // sessions (MQTT lets one client id connect once) when the id was
        // `{prefix}-s-0` in both.
        let base = format!(
            "{}-{subscription}-{:08x}",
            inner.config.client_id_prefix,
            pubsub_core::stable_hash(topic.to_string().as_bytes()) as u32
        );
        let (client_id, slot) = match &options.name {
            Some(name) => (format!("{base}-{name}"), None),
            None => {
                let slot = inner.take_slot(&group, parked);
                (format!("{base}-{slot}"), Some(slot))
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
                    inner.release_slot(&group, s);
                }
                if let Some(p) = parked {
                    groups().entry(group).or_default().parked.get_or_insert(p);
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
            persistent,
            group,
            joined: AtomicBool::new(false),
            shutting: AtomicBool::new(false),
            handing_back: AtomicBool::new(false),
            unsubacks: Semaphore::new(0),
            unsettled: Default::default(),
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
            Ok(Ok(Ok(()))) => {
                if consumer.shared.persistent {
                    join(&consumer.shared.group);
                    consumer.shared.joined.store(true, Ordering::Release);
                }
                Ok(consumer)
            }
            Ok(Ok(Err(e))) => {
                consumer.shut(false).await;
                Err(e)
            }
            _ => {
                consumer.shut(false).await;
                Err(Error::Connection {
                    backend: NAME,
                    message: format!("no SUBACK within {timeout:?}"),
                    source: None,
                })
            }
        }
    }

    /// Closes; with `may_hand_back`, what it holds goes back to the other
    /// consumers of the subscription if there are any (see the module docs).
    async fn shut(&self, may_hand_back: bool) {
        let shared = &self.shared;
        if shared.shutting.swap(true, Ordering::AcqRel) || shared.closed.load(Ordering::Acquire) {
            return;
        }
        let others_open = shared.joined.load(Ordering::Acquire) && leave(&shared.group, shared.slot, may_hand_back);
        let hand_back = may_hand_back && others_open;
        // Set before `closed`, so the event loop never sees `closed` alone.
        shared.handing_back.store(hand_back, Ordering::Release);
        shared.closed.store(true, Ordering::Release);
        shared.stop.notify_waiters();
        if hand_back {
            give_back(shared).await;
            shared.handing_back.store(false, Ordering::Release);
        }
        // DISCONNECT goes out after the PUBACKs queued before it.
        let _ = self.shared.client.disconnect().await;
        let task = self.task.lock().expect("task lock").take();
        if let Some(task) = task {
            if tokio::time::timeout(Duration::from_secs(2), task).await.is_err() {
                tracing::warn!(client_id = %self.shared.client_id, "mqtt consumer did not stop in time");
            }
        }
        if let Some(s) = self.shared.slot {
            self.shared.inner.release_slot(&self.shared.group, s);
        }
    }
}

fn subscribe(shared: &Shared) -> Result<()> {
    let q = qos(shared.topic.qos());
    let mut filters = vec![Filter::new(share_filter(&shared.subscription, &shared.topic), q)];
    if shared.persistent {
        filters.push(Filter::new(return_filter(&shared.subscription, &shared.topic), q));
    }
    shared
        .client
        .try_subscribe_many(filters)
        .map_err(|e| Error::connection(NAME, format!("subscribe: {e}"), e))
}

/// Hands back what a closing consumer holds: unsubscribes (no new shares),
/// then republishes each unacked delivery to the subscription's return
/// topic, where the other consumers of the subscription take it, and acks
/// the original once the broker confirmed the copy. Anything it cannot hand
/// back stays with its session, as before.
async fn give_back(shared: &Arc<Shared>) {
    let wait = shared.inner.config.timeout;
    for filter in [
        share_filter(&shared.subscription, &shared.topic),
        return_filter(&shared.subscription, &shared.topic),
    ] {
        if let Err(e) = shared.client.unsubscribe(filter).await {
            tracing::warn!(client_id = %shared.client_id, error = %e, "mqtt unsubscribe on close failed; unacked messages stay with the session");
            return;
        }
    }
    // Every delivery sent before the UNSUBACKs has been read once they are.
    match tokio::time::timeout(wait, shared.unsubacks.acquire_many(2)).await {
        Ok(Ok(permits)) => permits.forget(),
        _ => {
            tracing::warn!(client_id = %shared.client_id, "no UNSUBACK on close; unacked messages stay with the session");
            return;
        }
    }
    let held: Vec<Unsettled> = {
        let mut unsettled = shared.unsettled.lock().unwrap_or_else(|e| e.into_inner());
        unsettled.drain().map(|(_, u)| u).collect()
    };
    let topic = return_topic(&shared.subscription, &shared.topic);
    let publisher = &shared.inner.publisher;
    let mut sent = Vec::new();
    for u in held.into_iter().filter(|u| !u.settled.load(Ordering::Acquire)) {
        let props = handed_back(u.publish.properties.as_ref(), u.redeliveries + 1);
        match publisher
            .hand_over(topic.clone(), u.publish.qos, u.publish.payload.clone(), props)
            .await
        {
            Ok(rx) => sent.push((u, rx)),
            Err(e) => tracing::warn!(error = %e, "hand back failed; the message stays with the session"),
        }
    }
    for (u, rx) in sent {
        match publisher.confirmed(rx).await {
            Ok(()) => {
                if !u.settled.swap(true, Ordering::AcqRel) {
                    let _ = shared.client.ack(&u.publish).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "hand back not confirmed; the message stays with the session"),
        }
    }
}

async fn drive(shared: Arc<Shared>, mut eventloop: EventLoop, mut subscribed: Option<oneshot::Sender<Result<()>>>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = shared.stop.notified(), if shared.closed.load(Ordering::Acquire) && !shared.handing_back.load(Ordering::Acquire) => {
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
                // A handed-back copy carries its count.
                let redelivered = redelivery_count(p.properties.as_ref()).unwrap_or(u32::from(p.dup));
                let m = shared.message(Arc::new(p), redelivered, Arc::new(AtomicBool::new(false)));
                let _ = shared.tx.send(m);
            }
            Ok(Event::Incoming(Packet::UnsubAck(_))) => shared.unsubacks.add_permits(1),
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
        self.shut(false).await;
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
        self.shut(true).await;
        Ok(())
    }
}

impl Drop for MqttConsumer {
    /// Dropped without `close`: the same as `close`, in a task (when a
    /// runtime is there to run it): it hands back what it held if others of
    /// its subscription are open, else its session stays subscribed, parked.
    fn drop(&mut self) {
        let shared = &self.shared;
        if shared.shutting.swap(true, Ordering::AcqRel) || shared.closed.load(Ordering::Acquire) {
            return;
        }
        let others_open = shared.joined.load(Ordering::Acquire) && leave(&shared.group, shared.slot, true);
        let runtime = tokio::runtime::Handle::try_current().ok().filter(|_| others_open);
        shared.handing_back.store(runtime.is_some(), Ordering::Release);
        shared.closed.store(true, Ordering::Release);
        shared.stop.notify_waiters();
        match runtime {
            Some(runtime) => {
                let shared = shared.clone();
                runtime.spawn(async move {
                    give_back(&shared).await;
                    shared.handing_back.store(false, Ordering::Release);
                    let _ = shared.client.disconnect().await;
                    if let Some(s) = shared.slot {
                        shared.inner.release_slot(&shared.group, s);
                    }
                });
            }
            None => {
                let _ = shared.client.try_disconnect();
                if let Some(s) = shared.slot {
                    shared.inner.release_slot(&shared.group, s);
                }
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
            .unsettled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(Arc::as_ptr(&self.settled) as usize));
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
