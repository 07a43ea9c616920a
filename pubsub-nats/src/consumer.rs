//! Consumers: JetStream durable pull consumers (q1/q2) and core NATS queue
//! subscriptions (q0).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::{self, pull, AckPolicy, DeliverPolicy, FromConsumer, PullConsumer};
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::stream;
use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use pubsub_core::{
    ensure_open, receive_within, AckTarget, Consumer, ConsumerOptions, Error, InitialPosition, Message, MessageId,
    MessageParts, NoAck, OutgoingMessage, Position, Qos, Result, Topic,
};
use tokio::sync::{Mutex, Notify};

use crate::backend::{broker_err, Inner};
use crate::headers::{from_headers, to_headers};
use crate::naming::{durable_name, subject};

/// `max_ack_pending` of the durable consumers made here: no server-side
/// limit, as `ConsumerOptions::max_unacked` bounds each consumer.
const UNLIMITED_ACK_PENDING: i64 = -1;

/// A durable made before `max_unacked` existed (or by another client) may
/// carry a `max_ack_pending` (1,000 by default) that would stall receiving
/// below `max_unacked`: lifted to unlimited, keeping everything else of its
/// configuration. If the server refuses, the durable keeps its limit and a
/// warning says so.
async fn lift_ack_pending_limit(stream: &stream::Stream, consumer: PullConsumer, subscription: &str) -> PullConsumer {
    let current = consumer.cached_info().config.clone();
    if current.max_ack_pending == UNLIMITED_ACK_PENDING {
        return consumer;
    }
    let limit = current.max_ack_pending;
    let lifted = pull::Config::try_from_consumer_config(consumer::Config {
        max_ack_pending: UNLIMITED_ACK_PENDING,
        ..current
    });
    let result = match lifted {
        Ok(config) => stream.create_consumer(config).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(updated) => updated,
        Err(e) => {
            tracing::warn!(
                subscription,
                max_ack_pending = limit,
                error = %e,
                "the subscription's JetStream consumer keeps its max_ack_pending: receiving stops at that many unacked messages"
            );
            consumer
        }
    }
}

/// `ack_wait` for consumers without an ack timeout: unacked messages then
/// come back only when their consumer closes (it naks them) or after this.
const NO_TIMEOUT_ACK_WAIT: Duration = Duration::from_secs(30 * 24 * 3600);

/// The shortest nak delay sent. Broker quirk (nats-server 2.9.10): an
/// immediate NAK (`-NAK` with no delay) that arrives while the consumer has
/// no pull request waiting made the server re-send the highest stream
/// sequence as a *new* delivery (delivered = 1), although it was acked.
/// A delayed NAK goes another way through the server and redelivers just
/// the nacked message, with its delivery count raised. Shown by the
/// conformance case `acks_from_other_tasks_out_of_order`.
const MIN_NAK_DELAY: Duration = Duration::from_millis(1);

/// On close, how long to keep handing back a prefetched batch at most, how
/// long a quiet stream means the batch is done, and the delay given to
/// what is handed back then.
const CLOSE_DRAIN_MAX: Duration = Duration::from_secs(2);
const CLOSE_DRAIN_QUIET: Duration = Duration::from_millis(250);
const CLOSE_NAK_DELAY: Duration = Duration::from_millis(500);

fn nak(delay: Duration) -> AckKind {
    AckKind::Nak(Some(delay.max(MIN_NAK_DELAY)))
}

struct Shared {
    inner: Arc<Inner>,
    topic: Topic,
    subscription: String,
    durable: String,
    options: ConsumerOptions,
    stream: stream::Stream,
    consumer: PullConsumer,
    closed: AtomicBool,
    stop: Notify,
    /// Messages handed to the application and not yet acked or nacked, by
    /// stream sequence: nacked when the consumer closes.
    held: std::sync::Mutex<HashMap<u64, Arc<Acker>>>,
}

impl Shared {
    fn ensure_open(&self) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "consumer")?;
        self.inner.ensure_open()
    }

    async fn open_messages(&self) -> Result<pull::Stream> {
        self.consumer
            .stream()
            // Never prefetch more than the consumer may hold.
            .max_messages_per_batch(self.options.batch_size.min(self.options.max_unacked))
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| broker_err(format!("pull from {}", self.topic), e))
    }

    /// Turns a JetStream message into ours; `None` if it went to the dead-letter topic.
    async fn convert(self: &Arc<Self>, m: async_nats::jetstream::Message) -> Result<Option<Message>> {
        let info = m
            .info()
            .map_err(|e| Error::broker("nats", format!("message without JetStream info: {e}"), e))?;
        let (seq, delivered, published) = (
            info.stream_sequence,
            info.delivered.max(1) as u64,
            SystemTime::from(info.published),
        );
        let (msg, acker) = m.split();
        let acker = Arc::new(acker);
        let redeliveries = delivered - 1;
        if self
            .options
            .max_redeliveries
            .is_some_and(|max| redeliveries > max as u64)
        {
            self.dead_letter(&msg).await?;
            acker
                .ack()
                .await
                .map_err(|e| Error::broker("nats", format!("ack dead-lettered: {e}"), e))?;
            return Ok(None);
        }
        let (properties, key) = from_headers(msg.headers.as_ref());
        let parts = MessageParts {
            payload: msg.payload,
            properties,
            key,
            publish_time: published,
            redelivery_count: redeliveries as u32,
            ..MessageParts::new(MessageId::from_seq(seq), self.topic.clone())
        };
        self.held.lock().expect("held lock").insert(seq, acker.clone());
        let target = NatsAck {
            shared: self.clone(),
            seq,
            acker,
            done: AtomicBool::new(false),
        };
        Ok(Some(Message::new(parts, Arc::new(target))))
    }

    async fn dead_letter(&self, msg: &async_nats::Message) -> Result<()> {
        let Some(dlq) = &self.options.dead_letter_topic else {
            tracing::warn!(topic = %self.topic, "dropping a message past max_redeliveries (no dead_letter_topic)");
            return Ok(());
        };
        let (properties, key) = from_headers(msg.headers.as_ref());
        let mut out = OutgoingMessage::new(msg.payload.clone());
        out.properties = properties;
        out.key = key;
        let (mut headers, _) = to_headers(&out, None);
        headers.insert("pubsub.dead-letter.origin", self.topic.to_string().as_str());
        if dlq.qos() != Qos::AtMostOnce {
            self.inner.ensure_stream(dlq).await?;
        }
        let ack = self
            .inner
            .js
            .publish_with_headers(subject(dlq), headers, out.payload)
            .await
            .map_err(|e| broker_err("dead-letter", e))?;
        ack.await.map_err(|e| broker_err("dead-letter", e))?;
        Ok(())
    }

    /// Naks everything still held, so it is redelivered at once.
    async fn release_held(&self) {
        let held: Vec<Arc<Acker>> = self.held.lock().expect("held lock").drain().map(|(_, a)| a).collect();
        for acker in held {
            if let Err(e) = acker.ack_with(nak(Duration::ZERO)).await {
                tracing::warn!(topic = %self.topic, error = %e, "nak on close failed; redelivery waits for ack_wait");
            }
        }
    }
}

/// A q1/q2 consumer: a durable pull consumer named after the subscription.
pub(crate) struct JetStreamConsumer {
    shared: Arc<Shared>,
    messages: Mutex<Option<pull::Stream>>,
}

impl fmt::Debug for JetStreamConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsJetStreamConsumer")
            .field("topic", &self.shared.topic)
            .field("durable", &self.shared.durable)
            .finish()
    }
}

impl JetStreamConsumer {
    pub(crate) async fn start(
        inner: Arc<Inner>,
        topic: Topic,
        subscription: &str,
        options: ConsumerOptions,
    ) -> Result<Self> {
        let stream = inner.ensure_stream(&topic).await?;
        let durable = durable_name(subscription);
        let config = pull::Config {
            durable_name: Some(durable.clone()),
            // The subscription as given, for the admin API's listing.
            description: Some(subscription.to_string()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: options.ack_timeout.unwrap_or(NO_TIMEOUT_ACK_WAIT),
            // Past max_redeliveries the message is dead-lettered here, so the
            // server must offer it once more.
            max_deliver: -1,
            // The bound is `ConsumerOptions::max_unacked`, per consumer, held
            // by the SDK; the server's default (1,000 for the whole durable,
            // shared by all its consumers) would stall receiving below it.
            max_ack_pending: UNLIMITED_ACK_PENDING,
            deliver_policy: match options.initial_position {
                InitialPosition::Earliest => DeliverPolicy::All,
                InitialPosition::Latest => DeliverPolicy::New,
            },
            ..Default::default()
        };
        let consumer: PullConsumer = stream
            .get_or_create_consumer(&durable, config)
            .await
            .map_err(|e| broker_err(format!("create subscription {subscription} on {topic}"), e))?;
        let consumer = lift_ack_pending_limit(&stream, consumer, subscription).await;
        let shared = Arc::new(Shared {
            inner,
            topic,
            subscription: subscription.to_string(),
            durable,
            options,
            stream,
            consumer,
            closed: AtomicBool::new(false),
            stop: Notify::new(),
            held: Default::default(),
        });
        let messages = shared.open_messages().await?;
        Ok(JetStreamConsumer {
            shared,
            messages: Mutex::new(Some(messages)),
        })
    }

    /// Stops receiving and naks what was fetched but not handed out, and
    /// what was handed out but not acked.
    async fn shut(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.stop.notify_waiters();
        let stream = self.messages.lock().await.take();
        if let Some(mut stream) = stream {
            // The pull request may still be delivering a prefetched batch:
            // hand back whatever arrives until it goes quiet (bounded), with
            // a short delay so it does not bounce back to this consumer.
            let deadline = tokio::time::Instant::now() + CLOSE_DRAIN_MAX;
            while let Some(left) = deadline.checked_duration_since(tokio::time::Instant::now()) {
                match tokio::time::timeout(left.min(CLOSE_DRAIN_QUIET), stream.next()).await {
                    Ok(Some(Ok(m))) => {
                        let _ = m.ack_with(nak(CLOSE_NAK_DELAY)).await;
                    }
                    Ok(Some(Err(_))) => continue,
                    _ => break,
                }
            }
        }
        self.shared.release_held().await;
        // Acks and naks are publishes the client buffers: written before
        // `close` returns, so a new consumer never sees an acked message.
        if let Err(e) = self.shared.inner.client.flush().await {
            tracing::debug!(topic = %self.shared.topic, error = %e, "flushing acks on close");
        }
    }
}

#[async_trait]
impl Consumer for JetStreamConsumer {
    fn topic(&self) -> &Topic {
        &self.shared.topic
    }

    fn subscription(&self) -> &str {
        &self.shared.subscription
    }

    /// Publishes every ack, then flushes the connection once (q2: the
    /// double acks wait for their confirmations together).
    async fn ack_all(&self, messages: &[Message]) -> Result<()> {
        let own = |a: &NatsAck| Arc::ptr_eq(&a.shared, &self.shared);
        pubsub_core::ack_all_with(messages, own, |acks: Vec<&NatsAck>| async move {
            self.shared.ensure_open()?;
            // Skips those acked before (or twice in this call).
            let todo: Vec<&NatsAck> = acks
                .into_iter()
                .filter(|a| !a.done.swap(true, Ordering::AcqRel))
                .collect();
            {
                let mut held = self.shared.held.lock().expect("held lock");
                for a in &todo {
                    held.remove(&a.seq);
                }
            }
            let r = if self.shared.topic.qos() == Qos::ExactlyOnce {
                futures::future::join_all(todo.iter().map(|a| a.acker.double_ack()))
                    .await
                    .into_iter()
                    .find_map(|r| r.err())
                    .map_or(Ok(()), |e| Err(Error::broker("nats", format!("ack: {e}"), e)))
            } else {
                publish_acks(&self.shared, &todo).await
            };
            if r.is_err() {
                for a in &todo {
                    a.done.store(false, Ordering::Release);
                }
            }
            r
        })
        .await
    }

    async fn receive(&self) -> Result<Message> {
        let stop = self.shared.stop.notified();
        tokio::pin!(stop);
        stop.as_mut().enable();
        self.shared.ensure_open()?;
        let mut guard = self.messages.lock().await;
        let mut backoff = Duration::from_millis(100);
        loop {
            let stream = guard.as_mut().ok_or(Error::Closed("consumer"))?;
            let item = tokio::select! {
                item = stream.next() => item,
                _ = &mut stop => return Err(Error::Closed("consumer")),
            };
            match item {
                Some(Ok(m)) => {
                    if let Some(msg) = self.shared.convert(m).await? {
                        return Ok(msg);
                    }
                }
                Some(Err(e)) => {
                    // Missed heartbeats, a lost connection: the stream
                    // re-issues its pulls when the server is back.
                    tracing::debug!(topic = %self.shared.topic, error = %e, "nats pull stream");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = &mut stop => return Err(Error::Closed("consumer")),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                None => {
                    tracing::warn!(topic = %self.shared.topic, "nats pull stream ended; reopening");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = &mut stop => return Err(Error::Closed("consumer")),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    if let Ok(s) = self.shared.open_messages().await {
                        *guard = Some(s);
                    }
                }
            }
        }
    }

    async fn receive_batch(&self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        let Some(first) = receive_within(self, timeout).await? else {
            return Ok(Vec::new());
        };
        let mut out = vec![first];
        let mut guard = self.messages.lock().await;
        while out.len() < max {
            let Some(stream) = guard.as_mut() else { break };
            match stream.next().now_or_never() {
                Some(Some(Ok(m))) => {
                    if let Some(msg) = self.shared.convert(m).await? {
                        out.push(msg);
                    }
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// Re-creates the durable consumer with its start at `position` (a
    /// JetStream consumer's start cannot be changed in place); pulls in
    /// flight on the old one fail and are re-issued to the new one.
    async fn seek(&self, position: Position) -> Result<()> {
        self.shared.ensure_open()?;
        self.shared.inner.caps.check_replay(&self.shared.topic)?;
        let mut stream = self.shared.stream.clone();
        let mut config = self.shared.consumer.cached_info().config.clone();
        config.deliver_policy = crate::replay::deliver_policy(&mut stream, &position).await?;
        let durable = &self.shared.durable;
        stream.delete_consumer(durable).await.map_err(|e| {
            broker_err(
                format!("seek {}: delete consumer {durable}", self.shared.subscription),
                e,
            )
        })?;
        stream.create_consumer(config).await.map_err(|e| {
            broker_err(
                format!("seek {}: create consumer {durable}", self.shared.subscription),
                e,
            )
        })?;
        // What this consumer held belonged to the old one.
        self.shared.held.lock().expect("held lock").clear();
        // Unless a receive is waiting on it (it recovers by itself), pull afresh now.
        if let Ok(mut guard) = self.messages.try_lock() {
            *guard = Some(self.shared.open_messages().await?);
        }
        Ok(())
    }

    async fn unsubscribe(&self) -> Result<()> {
        self.shared.ensure_open()?;
        self.shut().await;
        self.shared
            .stream
            .delete_consumer(&self.shared.durable)
            .await
            .map_err(|e| broker_err(format!("unsubscribe {}", self.shared.subscription), e))?;
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.shut().await;
        Ok(())
    }
}

impl Drop for JetStreamConsumer {
    fn drop(&mut self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.stop.notify_waiters();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let shared = self.shared.clone();
            handle.spawn(async move { shared.release_held().await });
        }
    }
}

/// Acks one JetStream message. q2 acks wait for the server's confirmation
/// (double ack); acking twice is a no-op.
struct NatsAck {
    shared: Arc<Shared>,
    seq: u64,
    acker: Arc<Acker>,
    done: AtomicBool,
}

impl fmt::Debug for NatsAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NatsAck({} #{})", self.shared.durable, self.seq)
    }
}

#[async_trait]
impl AckTarget for NatsAck {
    async fn ack(&self) -> Result<()> {
        self.shared.ensure_open()?;
        if self.done.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.shared.held.lock().expect("held lock").remove(&self.seq);
        let r = if self.shared.topic.qos() == Qos::ExactlyOnce {
            self.acker.double_ack().await
        } else {
            self.acker.ack().await
        };
        r.map_err(|e| {
            self.done.store(false, Ordering::Release);
            Error::broker("nats", format!("ack: {e}"), e)
        })
    }

    async fn nack(&self, delay: Option<Duration>) -> Result<()> {
        self.shared.ensure_open()?;
        if self.done.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.shared.held.lock().expect("held lock").remove(&self.seq);
        let delay = delay.unwrap_or(self.shared.options.nack_redelivery_delay);
        self.acker
            .ack_with(nak(delay))
            .await
            .map_err(|e| Error::broker("nats", format!("nak: {e}"), e))
    }

    async fn in_progress(&self) -> Result<()> {
        self.shared.ensure_open()?;
        if self.done.load(Ordering::Acquire) {
            return Ok(()); // settled already: nothing left to extend
        }
        // `+WPI`: the server restarts this delivery's ack_wait.
        self.acker
            .ack_with(AckKind::Progress)
            .await
            .map_err(|e| Error::broker("nats", format!("in progress: {e}"), e))
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// Publishes the acks of `acks`, then one flush of the connection.
async fn publish_acks(shared: &Shared, acks: &[&NatsAck]) -> Result<()> {
    for a in acks {
        a.acker
            .ack()
            .await
            .map_err(|e| Error::broker("nats", format!("ack: {e}"), e))?;
    }
    shared
        .inner
        .client
        .flush()
        .await
        .map_err(|e| broker_err("flush acks", e))
}

/// A q0 consumer: a core NATS queue subscription named after the
/// subscription, so consumers sharing it compete for messages.
pub(crate) struct CoreConsumer {
    topic: Topic,
    subscription: String,
    closed: AtomicBool,
    stop: Notify,
    subscriber: Mutex<Option<async_nats::Subscriber>>,
    counter: AtomicU64,
}

impl fmt::Debug for CoreConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsCoreConsumer").field("topic", &self.topic).finish()
    }
}

impl CoreConsumer {
    pub(crate) async fn start(inner: Arc<Inner>, topic: Topic, subscription: &str) -> Result<Self> {
        let subscriber = inner
            .client
            .queue_subscribe(subject(&topic), durable_name(subscription))
            .await
            .map_err(|e| broker_err(format!("subscribe to {topic}"), e))?;
        // The subscription must be known to the server before we return.
        inner.client.flush().await.map_err(|e| broker_err("flush", e))?;
        Ok(CoreConsumer {
            topic,
            subscription: subscription.to_string(),
            closed: AtomicBool::new(false),
            stop: Notify::new(),
            subscriber: Mutex::new(Some(subscriber)),
            counter: AtomicU64::new(0),
        })
    }

    /// A core NATS message as ours: no ack, an id numbering this consumer's messages.
    fn convert(&self, m: async_nats::Message) -> Message {
        let (properties, key) = from_headers(m.headers.as_ref());
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let parts = MessageParts {
            payload: m.payload,
            properties,
            key,
            ..MessageParts::new(MessageId::from_text(format!("q0-{n}")), self.topic.clone())
        };
        Message::new(parts, Arc::new(NoAck))
    }
}

#[async_trait]
impl Consumer for CoreConsumer {
    fn topic(&self) -> &Topic {
        &self.topic
    }

    fn subscription(&self) -> &str {
        &self.subscription
    }

    async fn receive(&self) -> Result<Message> {
        let stop = self.stop.notified();
        tokio::pin!(stop);
        stop.as_mut().enable();
        ensure_open(self.closed.load(Ordering::Acquire), "consumer")?;
        let mut guard = self.subscriber.lock().await;
        let sub = guard.as_mut().ok_or(Error::Closed("consumer"))?;
        let m = tokio::select! {
            m = sub.next() => m.ok_or(Error::Closed("consumer"))?,
            _ = stop => return Err(Error::Closed("consumer")),
        };
        Ok(self.convert(m))
    }

    /// The first message within `timeout`, then what the subscription holds
    /// already, under one lock.
    async fn receive_batch(&self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        let Some(first) = receive_within(self, timeout).await? else {
            return Ok(Vec::new());
        };
        let mut out = vec![first];
        let mut guard = self.subscriber.lock().await;
        let Some(sub) = guard.as_mut() else {
            return Ok(out);
        };
        while out.len() < max {
            match sub.next().now_or_never() {
                Some(Some(m)) => out.push(self.convert(m)),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn unsubscribe(&self) -> Result<()> {
        self.close().await
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.stop.notify_waiters();
        if let Some(mut sub) = self.subscriber.lock().await.take() {
            sub.unsubscribe().await.map_err(|e| broker_err("unsubscribe", e))?;
        }
        Ok(())
    }
}
