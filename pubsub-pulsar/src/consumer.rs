//! Consumers: one `pulsar::Consumer` per SDK consumer, owned by a
//! background task. `pulsar::Consumer` needs `&mut self` to receive, ack
//! and nack, so the task does all three; messages reach the application
//! through a bounded [`Inbox`] and acks come back as commands.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use pubsub_core::inbox::{CurrentOnly, Inbox, SeekGeneration, Tagged};
use pubsub_core::{
    ensure_open, AckTarget, Consumer, ConsumerOptions, Error, InitialPosition, Message, MessageParts, Position, Result,
    SubscriptionType, Topic,
};
use pulsar::consumer::{DeadLetterPolicy, InitialPosition as PulsarPosition};
use pulsar::proto::MessageIdData;
use pulsar::{SubType, TokioExecutor};
use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use tokio::task::JoinHandle;

use crate::backend::Inner;
use crate::config::PulsarBroker;
use crate::errors::{convert, is_consumer_busy};
use crate::naming::{message_id, pulsar_topic};

pub(crate) type RawConsumer = pulsar::Consumer<Vec<u8>, TokioExecutor>;

/// What the application asks of the task that owns the Pulsar consumer.
enum Command {
    Ack(MessageIdData),
    Nack(MessageIdData),
    Close(oneshot::Sender<Result<()>>),
    Unsubscribe(oneshot::Sender<Result<()>>),
    /// Move the subscription; later messages carry the next generation.
    Seek(Position, oneshot::Sender<Result<()>>),
}

/// A message id as a map key (`MessageIdData` is not `Hash` on every field
/// we need); within a topic, keys sort in log order.
pub(crate) type IdKey = (u64, u64, i32, i32);

pub(crate) fn id_key(id: &MessageIdData) -> IdKey {
    (
        id.ledger_id,
        id.entry_id,
        id.partition.unwrap_or(-1),
        id.batch_index.unwrap_or(-1),
    )
}

/// State shared by the consumer handle and the ack handles of its messages.
struct Shared {
    topic: Topic,
    closed: AtomicBool,
    commands: mpsc::UnboundedSender<Command>,
    nack_delay: Duration,
    /// Seeks so far: the task tags each message with it.
    generation: SeekGeneration,
}

impl Shared {
    fn ensure_open(&self) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "consumer")
    }

    fn command(&self, c: Command) -> Result<()> {
        self.ensure_open()?;
        self.commands.send(c).map_err(|_| Error::Closed("consumer"))
    }
}

/// A Pulsar subscription consumer. See the crate docs for the mapping.
pub(crate) struct PulsarConsumer {
    backend: Arc<Inner>,
    shared: Arc<Shared>,
    subscription: String,
    inbox: Inbox<CurrentOnly>,
    stop: Notify,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for PulsarConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PulsarConsumer")
            .field("topic", &self.shared.topic)
            .field("subscription", &self.subscription)
            .finish()
    }
}

fn sub_type(kind: SubscriptionType) -> SubType {
    match kind {
        SubscriptionType::Shared => SubType::Shared,
        SubscriptionType::Exclusive => SubType::Exclusive,
        SubscriptionType::Failover => SubType::Failover,
        SubscriptionType::KeyShared => SubType::KeyShared,
    }
}

/// The least receiver queue of a q0 (non-persistent) consumer: the broker
/// drops what arrives for a consumer without permits, so the queue bounds
/// the burst it takes whole. The Java client's default `receiverQueueSize`.
/// With the default `batch_size` (100), a burst of 200 gave 151.
const Q0_RECEIVER_QUEUE: usize = 1000;

/// The receiver queue (flow permits): for q1/q2 never more than the
/// consumer may hold; for q0 at least [`Q0_RECEIVER_QUEUE`].
fn receiver_queue(ptopic: &str, options: &ConsumerOptions) -> usize {
    if ptopic.starts_with("non-persistent://") {
        options.batch_size.max(Q0_RECEIVER_QUEUE)
    } else {
        options.batch_size.min(options.max_unacked)
    }
}

/// Everything needed to subscribe, again after the connection broke.
struct Recipe {
    backend: Arc<Inner>,
    ptopic: String,
    subscription: String,
    /// `options.name`, or one that sorts in creation order (pulsar-lite
    /// picks a Failover subscription's active consumer by name or arrival).
    /// Kept across resubscribing.
    consumer_name: String,
    /// The priority level of a Failover consumer on Apache Pulsar (see
    /// [`failover_priority`]); `None` for the other types and on
    /// pulsar-lite, which picks by name order and made the consumer of the
    /// higher level active (`failover_takes_over` got 0 of 6 with levels
    /// sent). Kept across resubscribing.
    priority: Option<i32>,
    options: ConsumerOptions,
}

/// A consumer name unique to this process that sorts in creation order.
pub(crate) fn ordered_name(subscription: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let micros = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{subscription}-{micros:020}-{n:08}-{:08x}", std::process::id())
}

/// The priority level of the next Failover consumer made in this process:
/// 0, 1, 2, ... so the first one made is the active one while it lives.
///
/// Apache Pulsar picks the active consumer of a non-partitioned topic's
/// Failover subscription among the consumers of the best (lowest) priority
/// level by hashing the topic name onto a ring of their names, not by
/// name order or arrival: with equal levels the second consumer was the
/// active one in 2 of 6 runs of `failover_takes_over`, and the first got
/// nothing. Distinct levels leave it one candidate, the oldest consumer of
/// this process still open, so a newcomer never takes over from a running
/// one; consumers of other processes with the same level are still picked
/// by the broker's hash.
fn failover_priority() -> i32 {
    static NEXT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
    NEXT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_add(1)))
        .unwrap_or(i32::MAX)
}

impl Recipe {
    /// Subscribes, bounded by the backend's timeout.
    async fn subscribe(&self) -> std::result::Result<RawConsumer, SubscribeError> {
        self.subscribe_with(self.options.ack_timeout).await
    }

    /// Subscribes with the given ack timeout. A `pulsar` crate consumer
    /// with one is never stopped by being dropped (its redelivery ticker
    /// keeps the engine going), so a consumer that may be dropped without
    /// `close` (the one a seek is sent through) is made without.
    async fn subscribe_with(&self, ack_timeout: Option<Duration>) -> std::result::Result<RawConsumer, SubscribeError> {
        let options = &self.options;
        let position = match options.initial_position {
            InitialPosition::Earliest => PulsarPosition::Earliest,
            InitialPosition::Latest => PulsarPosition::Latest,
        };
        let mut pulsar_options = pulsar::ConsumerOptions::default()
            .durable(true)
            .with_initial_position(position);
        if let Some(level) = self.priority {
            pulsar_options = pulsar_options.with_priority_level(level);
        }
        let mut builder = self
            .backend
            .client
            .consumer()
            .with_topic(self.ptopic.clone())
            .with_subscription(self.subscription.clone())
            .with_subscription_type(sub_type(options.subscription_type))
            .with_batch_size(receiver_queue(&self.ptopic, options).min(u32::MAX as usize) as u32)
            .with_options(pulsar_options)
            // The client redelivers what stays unacked this long.
            .with_unacked_message_resend_delay(ack_timeout)
            .with_consumer_name(self.consumer_name.clone());
        if let Some(max) = options.max_redeliveries {
            // Pulsar's own convention names the topic when none is given.
            let dead_letter_topic = match &options.dead_letter_topic {
                Some(t) => pulsar_topic(t),
                None => format!("{}-{}-DLQ", self.ptopic, self.subscription),
            };
            builder = builder.with_dead_letter_policy(DeadLetterPolicy {
                max_redeliver_count: max as usize,
                dead_letter_topic,
            });
        }
        let timeout = self.backend.config.timeout;
        match tokio::time::timeout(timeout, builder.build()).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(SubscribeError::Pulsar(e)),
            Err(_) => Err(SubscribeError::Timeout(timeout)),
        }
    }
}

enum SubscribeError {
    Pulsar(pulsar::Error),
    Timeout(Duration),
}

impl PulsarConsumer {
    pub(crate) async fn start(
        backend: Arc<Inner>,
        topic: Topic,
        subscription: &str,
        options: ConsumerOptions,
    ) -> Result<Self> {
        let recipe = Recipe {
            backend: backend.clone(),
            ptopic: pulsar_topic(&topic),
            subscription: subscription.to_string(),
            consumer_name: options.name.clone().unwrap_or_else(|| ordered_name(subscription)),
            priority: (options.subscription_type == SubscriptionType::Failover
                && backend.config.broker == PulsarBroker::Apache)
                .then(failover_priority),
            options,
        };
        let consumer = recipe.subscribe().await.map_err(|e| match e {
            SubscribeError::Timeout(t) => Error::Timeout(t),
            SubscribeError::Pulsar(e) if is_consumer_busy(&e) => Error::ConsumerBusy {
                subscription: subscription.to_string(),
            },
            SubscribeError::Pulsar(e) => convert(format!("subscribe {subscription} to {topic}"), e),
        })?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        // `batch_size` (q0: the larger receiver queue, so a burst is taken whole).
        let inbox = recipe
            .options
            .batch_size
            .max(receiver_queue(&recipe.ptopic, &recipe.options));
        let (tx, rx) = mpsc::channel(inbox.max(1));
        let generation = SeekGeneration::default();
        let shared = Arc::new(Shared {
            topic: topic.clone(),
            closed: AtomicBool::new(false),
            commands,
            nack_delay: recipe.options.nack_redelivery_delay,
            generation: generation.clone(),
        });
        let pump = Pump {
            shared: shared.clone(),
            consumer: Some(consumer),
            recipe,
            deliveries: HashMap::new(),
            unsent_acks: Vec::new(),
        };
        let task = tokio::spawn(pump.run(command_rx, tx));
        Ok(PulsarConsumer {
            backend,
            shared,
            subscription: subscription.to_string(),
            inbox: Inbox::new(CurrentOnly::new(rx, generation)),
            stop: Notify::new(),
            task: Mutex::new(Some(task)),
        })
    }

    fn ensure_open(&self) -> Result<()> {
        self.shared.ensure_open()?;
        self.backend.ensure_open()
    }

    /// Marks the consumer closed, asks the task to end the Pulsar consumer
    /// (`unsubscribe` first if asked) and waits for it, bounded.
    async fn shut(&self, unsubscribe: bool) -> Result<()> {
        let Some(task) = self.task.lock().await.take() else {
            return Ok(()); // closed before
        };
        let (reply, answer) = oneshot::channel();
        let command = if unsubscribe {
            Command::Unsubscribe(reply)
        } else {
            Command::Close(reply)
        };
        // Sent before marking closed: acks queued earlier still go out first.
        let sent = self.shared.commands.send(command).is_ok();
        self.shared.closed.store(true, Ordering::Release);
        self.stop.notify_waiters();
        let timeout = self.backend.config.timeout;
        let result = if sent {
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Ok(()), // the task had ended already
                Err(_) => Err(Error::Timeout(timeout)),
            }
        } else {
            Ok(())
        };
        task.abort();
        result
    }
}

/// Longest wait between attempts to subscribe again.
const MAX_RESUBSCRIBE_BACKOFF: Duration = Duration::from_secs(1);

/// The task owning the Pulsar consumer.
struct Pump {
    shared: Arc<Shared>,
    /// `None` while the connection is broken and the task subscribes again.
    consumer: Option<RawConsumer>,
    recipe: Recipe,
    /// Deliveries to this consumer of each message not yet acked: its
    /// redelivery count (the `pulsar` crate does not expose the broker's).
    deliveries: HashMap<IdKey, u32>,
    /// Acks given while there was no consumer, sent once there is one.
    unsent_acks: Vec<MessageIdData>,
}

/// What the task does after a command.
enum Next {
    Continue,
    Stop,
}

impl Pump {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>, tx: mpsc::Sender<Tagged>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let Some(consumer) = self.consumer.as_mut() else {
                // The `pulsar` consumer ends its stream when its connection
                // breaks (a broker restart): subscribe again, with backoff.
                // Meanwhile acks are kept for later and a close ends the task.
                if tx.is_closed() {
                    return;
                }
                while let Ok(c) = commands.try_recv() {
                    if let Next::Stop = self.handle(c).await {
                        return;
                    }
                }
                match self.recipe.subscribe().await {
                    Ok(c) => {
                        tracing::info!(topic = %self.shared.topic, "pulsar consumer subscribed again");
                        self.consumer = Some(c);
                        backoff = Duration::from_millis(50);
                        for id in std::mem::take(&mut self.unsent_acks) {
                            self.handle(Command::Ack(id)).await;
                        }
                    }
                    Err(_) => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_RESUBSCRIBE_BACKOFF);
                    }
                }
                continue;
            };
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(c) => if let Next::Stop = self.handle(c).await { return },
                    None => return,
                },
                // The consumer handle is gone (dropped without close).
                _ = tx.closed() => {
                    let _ = consumer.close().await;
                    return;
                }
                // Room in the inbox: take the next message. (Only this task
                // sends, so the room is still there when the message comes.)
                next = consumer.next(), if tx.capacity() > 0 => match next {
                    Some(Ok(m)) => {
                        let m = (self.shared.generation.current(), self.convert(m));
                        if tx.try_send(m).is_err() {
                            return; // the inbox closed in between
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(topic = %self.shared.topic, error = %e, "pulsar consumer error");
                    }
                    None => {
                        tracing::warn!(topic = %self.shared.topic, "pulsar consumer lost its connection; subscribing again");
                        self.consumer = None;
                    }
                },
                // The inbox is full: wait for room without holding it.
                permit = tx.reserve(), if tx.capacity() == 0 => {
                    if permit.is_err() {
                        return;
                    }
                }
            }
        }
    }

    async fn handle(&mut self, command: Command) -> Next {
        let Some(consumer) = self.consumer.as_mut() else {
            match command {
                Command::Ack(id) => self.unsent_acks.push(id),
                // Redelivered anyway: the broker gives unacked messages back
                // when their consumer's connection goes.
                Command::Nack(_) => {}
                // Closed already on the broker's side: the connection is gone,
                // and with it everything this consumer held.
                Command::Close(reply) => {
                    let _ = reply.send(Ok(()));
                    return Next::Stop;
                }
                Command::Unsubscribe(reply) => {
                    let _ = reply.send(Err(reconnecting("the subscription was not deleted")));
                    return Next::Stop;
                }
                Command::Seek(_, reply) => {
                    let _ = reply.send(Err(reconnecting("the subscription was not moved")));
                }
            }
            return Next::Continue;
        };
        let ptopic = &self.recipe.ptopic;
        match command {
            Command::Ack(id) => {
                self.deliveries.remove(&id_key(&id));
                if let Err(e) = consumer.ack_with_id(ptopic, id).await {
                    tracing::warn!(topic = %self.shared.topic, error = %e, "pulsar ack failed");
                }
            }
            Command::Nack(id) => {
                if let Err(e) = consumer.nack_with_id(ptopic, id).await {
                    tracing::warn!(topic = %self.shared.topic, error = %e, "pulsar nack failed");
                }
            }
            Command::Close(reply) => {
                let r = consumer.close().await;
                let _ = reply.send(r.map_err(|e| convert("close consumer", e)));
                return Next::Stop;
            }
            Command::Unsubscribe(reply) => {
                let r = consumer.unsubscribe().await;
                let _ = consumer.close().await;
                let _ = reply.send(r.map_err(|e| convert("unsubscribe", e)));
                return Next::Stop;
            }
            Command::Seek(position, reply) => {
                let _ = reply.send(self.seek(&position).await);
            }
        }
        Next::Continue
    }

    /// Moves the subscription with Pulsar's `Seek` (see [`crate::replay`]),
    /// then subscribes afresh: the crate's seek subscribes a new consumer
    /// while the old one may still be attached (pulsar-lite keeps it and
    /// dispatches to both, out of order). Messages fetched before the seek
    /// are dropped unread.
    async fn seek(&mut self, position: &Position) -> Result<()> {
        let Some(mut consumer) = self.consumer.take() else {
            return Err(reconnecting("the subscription was not moved"));
        };
        let backend = self.recipe.backend.clone();
        if backend.config.broker == PulsarBroker::Apache {
            return self.seek_apache(consumer, position).await;
        }
        let target = match crate::replay::seek_target(&backend, &self.recipe.ptopic, &mut consumer, position).await {
            Ok(Some(target)) => target,
            other => {
                // Nothing to move (an empty topic), or no move possible.
                self.consumer = Some(consumer);
                return other.map(drop);
            }
        };
        let (id, time) = target;
        let result = consumer
            .seek(None, id, time, backend.client.clone())
            .await
            .map_err(|e| convert(format!("seek subscription {}", self.recipe.subscription), e));
        if let Err(e) = consumer.close().await {
            tracing::debug!(topic = %self.shared.topic, error = %e, "closing the pulsar consumer after a seek");
        }
        drop(consumer);
        self.shared.generation.advance();
        self.deliveries.clear();
        match self.recipe.subscribe().await {
            Ok(c) => self.consumer = Some(c),
            // The task's loop subscribes again.
            Err(_) => tracing::warn!(topic = %self.shared.topic, "subscribing after a seek failed; the task retries"),
        }
        result
    }

    /// A seek on Apache Pulsar. The broker answers `Seek` by closing every
    /// consumer of the subscription; the crate's consumer answers that by
    /// subscribing again with the same id, while the crate's `seek` also
    /// subscribes a new one and drops the old handle. With an ack timeout
    /// set, that dropped consumer's engine never stops: it stays subscribed,
    /// takes messages from the rewound cursor and hands them to nobody. So
    /// the seek goes through a consumer of its own without an ack timeout
    /// (whose dropped engine stops and closes it), after ours is closed
    /// (an Exclusive subscription takes one consumer), and ours subscribes
    /// afresh after it.
    async fn seek_apache(&mut self, mut consumer: RawConsumer, position: &Position) -> Result<()> {
        let backend = self.recipe.backend.clone();
        let subscription = self.recipe.subscription.clone();
        let target = match crate::replay::seek_target(&backend, &self.recipe.ptopic, &mut consumer, position).await {
            Ok(Some(target)) => target,
            other => {
                self.consumer = Some(consumer);
                return other.map(drop);
            }
        };
        if let Err(e) = consumer.close().await {
            tracing::debug!(topic = %self.shared.topic, error = %e, "closing the pulsar consumer before a seek");
        }
        drop(consumer);
        self.shared.generation.advance();
        self.deliveries.clear();
        let (id, time) = target;
        let result = match self.recipe.subscribe_with(None).await {
            Ok(mut seeker) => {
                let moved = match seeker.seek(None, id, time, backend.client.clone()).await {
                    // The Seek itself went through; only the crate's new
                    // consumer was refused, the old one not being gone yet
                    // (an Exclusive subscription).
                    Err(e) if is_consumer_busy(&e) => Ok(()),
                    r => r.map_err(|e| convert(format!("seek subscription {subscription}"), e)),
                };
                let _ = seeker.close().await;
                moved
            }
            Err(SubscribeError::Pulsar(e)) => Err(convert(format!("seek subscription {subscription}"), e)),
            Err(SubscribeError::Timeout(t)) => Err(Error::Timeout(t)),
        };
        match self.recipe.subscribe().await {
            Ok(c) => self.consumer = Some(c),
            Err(_) => tracing::warn!(topic = %self.shared.topic, "subscribing after a seek failed; the task retries"),
        }
        result
    }

    fn convert(&mut self, m: pulsar::consumer::Message<Vec<u8>>) -> Message {
        let id = m.message_id.id.clone();
        let count = self.deliveries.entry(id_key(&id)).or_insert(0);
        let redelivery_count = *count;
        *count += 1;
        let parts = message_parts(m, self.shared.topic.clone(), redelivery_count);
        let ack = PulsarAck {
            shared: self.shared.clone(),
            id,
        };
        Message::new(parts, Arc::new(ack))
    }
}

/// A received Pulsar message as ours: properties, partition key, publish time.
pub(crate) fn message_parts(
    m: pulsar::consumer::Message<Vec<u8>>,
    topic: Topic,
    redelivery_count: u32,
) -> MessageParts {
    let metadata = &m.payload.metadata;
    let properties = metadata
        .properties
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    MessageParts {
        properties,
        key: metadata.partition_key.clone(),
        publish_time: UNIX_EPOCH + Duration::from_millis(metadata.publish_time),
        redelivery_count,
        payload: m.payload.data.into(),
        ..MessageParts::new(message_id(&m.message_id.id), topic)
    }
}

/// What a request gets while the consumer subscribes again.
fn reconnecting(what_failed: &str) -> Error {
    Error::Connection {
        backend: crate::errors::NAME,
        message: format!("the consumer was reconnecting: {what_failed}"),
        source: None,
    }
}

/// Acks and nacks one message through its consumer's task.
struct PulsarAck {
    shared: Arc<Shared>,
    id: MessageIdData,
}

impl fmt::Debug for PulsarAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PulsarAck({})", message_id(&self.id))
    }
}

#[async_trait]
impl AckTarget for PulsarAck {
    async fn ack(&self) -> Result<()> {
        self.shared.command(Command::Ack(self.id.clone()))
    }

    /// Pulsar clients delay nacks on the client side (the Java client's
    /// negative-ack tracker does too): the nack is sent when the delay is over.
    async fn nack(&self, delay: Option<Duration>) -> Result<()> {
        self.shared.ensure_open()?;
        let delay = delay.unwrap_or(self.shared.nack_delay);
        if delay.is_zero() {
            return self.shared.command(Command::Nack(self.id.clone()));
        }
        let shared = self.shared.clone();
        let id = self.id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // A consumer closed meanwhile gave the message back already.
            let _ = shared.command(Command::Nack(id));
        });
        Ok(())
    }
}

#[async_trait]
impl Consumer for PulsarConsumer {
    fn topic(&self) -> &Topic {
        &self.shared.topic
    }

    fn subscription(&self) -> &str {
        &self.subscription
    }

    async fn receive(&self) -> Result<Message> {
        self.inbox.receive(&self.stop, || self.ensure_open()).await
    }

    async fn receive_batch(&self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        self.inbox
            .receive_batch(&self.stop, || self.ensure_open(), max, timeout)
            .await
    }

    /// Everyone in the subscription resumes from `position`; what this
    /// consumer fetched but did not hand out yet is dropped.
    async fn seek(&self, position: Position) -> Result<()> {
        self.ensure_open()?;
        self.backend.caps.check_replay(&self.shared.topic)?;
        let (reply, answer) = oneshot::channel();
        self.shared.command(Command::Seek(position, reply))?;
        // A seek may subscribe twice and read the newest message once.
        let bound = self.backend.config.timeout * 4;
        match tokio::time::timeout(bound, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Closed("consumer")),
            Err(_) => Err(Error::Timeout(bound)),
        }
    }

    async fn unsubscribe(&self) -> Result<()> {
        self.ensure_open()?;
        self.shut(true).await
    }

    async fn close(&self) -> Result<()> {
        self.shut(false).await
    }
}

impl Drop for PulsarConsumer {
    fn drop(&mut self) {
        // The task sees the inbox close and ends the Pulsar consumer.
        self.shared.closed.store(true, Ordering::Release);
    }
}
