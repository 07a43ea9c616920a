//! The [`PubSubBackend`], [`Producer`] and [`Consumer`] of the embedded log.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use pubsub_core::UnackedLimit;
use pubsub_core::{
    validate_subscription_name, AckTarget, Admin, AdminCapabilities, Capabilities, Consumer, ConsumerOptions, Error,
    Message, MessageId, MessageParts, OutgoingMessage, Position, Producer, ProducerOptions, PubSubBackend, Reader,
    Result, Topic,
};
use tokio::time::Instant;

use crate::config::EmbeddedConfig;
use crate::reader::EmbeddedReader;
use crate::record::Record;
use crate::storage::{parse_topic_dir_name, topic_dir_name};
use crate::topic::TopicHandle;

const NAME: &str = "embedded";

/// Property set on a dead-lettered message: the topic it came from.
pub const DEAD_LETTER_ORIGIN_PROPERTY: &str = "pubsub.dead-letter.origin";
/// Property set on a dead-lettered message: how often it was redelivered.
pub const DEAD_LETTER_REDELIVERIES_PROPERTY: &str = "pubsub.dead-letter.redeliveries";

/// The in-process log backend: the default, for tests and small deployments.
///
/// Every topic is an append-only log; subscriptions keep a cursor and
/// per-message acks, so acks may come in any order and from any task. In
/// memory by default; with a data directory, q1/q2 topics and subscription
/// positions survive a crash (see [`EmbeddedConfig`] and the crate docs).
///
/// ```
/// use pubsub_core::{ConsumerOptions, OutgoingMessage, PubSubBackend, Topic};
/// use pubsub_embedded::EmbeddedBackend;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pubsub_core::Result<()> {
/// let backend = EmbeddedBackend::memory();
/// let topic: Topic = "q1/tg/flow/greetings".parse()?;
/// let consumer = backend.create_consumer(&topic, "workers", ConsumerOptions::default()).await?;
/// let producer = backend.create_producer(&topic, Default::default()).await?;
/// producer.send(OutgoingMessage::new("hello")).await?;
/// let msg = consumer.receive().await?;
/// assert_eq!(msg.payload().as_ref(), b"hello");
/// msg.ack().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EmbeddedBackend {
    pub(crate) broker: Arc<Broker>,
}

pub(crate) struct Broker {
    pub(crate) config: Arc<EmbeddedConfig>,
    caps: Capabilities,
    pub(crate) topics: Mutex<HashMap<Topic, Arc<TopicHandle>>>,
    closed: AtomicBool,
    next_consumer: AtomicU64,
    /// Every producer, consumer and reader made: closed with the backend.
    handles: pubsub_core::handles::Handles,
}

impl fmt::Debug for EmbeddedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedBackend")
            .field("data_dir", &self.broker.config.data_dir)
            .field("topics", &self.broker.topics.lock().len())
            .finish()
    }
}

impl EmbeddedBackend {
    /// A backend that keeps everything in memory.
    pub fn memory() -> Self {
        Self::open(EmbeddedConfig::memory()).expect("a memory backend touches no files")
    }

    /// A backend with this configuration. With a data directory, every
    /// topic in it is recovered now, so a corrupt file is reported here.
    pub fn open(config: EmbeddedConfig) -> Result<Self> {
        if config.retained_messages == 0 || config.segment_bytes == 0 || config.q0_buffer == 0 {
            return Err(Error::InvalidConfiguration(
                "retained_messages, segment_bytes and q0_buffer must be positive".into(),
            ));
        }
        let caps = Capabilities {
            persistence: config.data_dir.is_some(),
            earliest: true,
            shared: true,
            exclusive: true,
            failover: true,
            key_shared: true,
            nack: true,
            nack_delay: true,
            ack_timeout: true,
            extend_ack_timeout: true,
            redelivery_count: true,
            redelivery_count_across_restarts: true,
            max_redeliveries: true,
            individual_acks: true,
            delayed_delivery: true,
            exactly_once: true,
            key_ordering: true,
            topic_ordering: true,
            max_payload: Some(config.max_payload),
            properties: true,
            keys: true,
            replay: true,
            positions: true,
            admin: AdminCapabilities {
                topics: true,
                q0_topics: true,
                delete_topic: true,
                list_topics: true,
                partitions: false,
                subscriptions: true,
            },
            ..Capabilities::none(NAME)
        };
        let config = Arc::new(config);
        let mut topics = HashMap::new();
        if let Some(dir) = &config.data_dir {
            let root = dir.join("topics");
            std::fs::create_dir_all(&root)
                .map_err(|e| Error::broker(NAME, format!("cannot create {}: {e}", root.display()), e))?;
            let entries = std::fs::read_dir(&root)
                .map_err(|e| Error::broker(NAME, format!("cannot read {}: {e}", root.display()), e))?;
            for entry in entries.flatten() {
                let Some(topic) = entry.file_name().to_str().and_then(parse_topic_dir_name) else {
                    tracing::warn!(path = %entry.path().display(), "ignoring an entry that is not a topic directory");
                    continue;
                };
                let handle = TopicHandle::open(topic.clone(), config.clone(), Some(entry.path()))?;
                topics.insert(topic, Arc::new(handle));
            }
        }
        Ok(EmbeddedBackend {
            broker: Arc::new(Broker {
                config,
                caps,
                topics: Mutex::new(topics),
                closed: AtomicBool::new(false),
                next_consumer: AtomicU64::new(1),
                handles: Default::default(),
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &EmbeddedConfig {
        &self.broker.config
    }
}

impl Broker {
    pub(crate) fn ensure_open(&self) -> Result<()> {
        pubsub_core::ensure_open(self.closed.load(Ordering::Acquire), "embedded backend")
    }

    fn topic(&self, topic: &Topic) -> Result<Arc<TopicHandle>> {
        self.open_topic(topic).map(|(handle, _)| handle)
    }

    /// The topic's handle, opened (and created) if needed; `true` if it was created now.
    pub(crate) fn open_topic(&self, topic: &Topic) -> Result<(Arc<TopicHandle>, bool)> {
        self.ensure_open()?;
        let mut topics = self.topics.lock();
        if let Some(t) = topics.get(topic) {
            return Ok((t.clone(), false));
        }
        let handle = Arc::new(TopicHandle::open(
            topic.clone(),
            self.config.clone(),
            self.topic_dir(topic),
        )?);
        topics.insert(topic.clone(), handle.clone());
        Ok((handle, true))
    }

    /// Where a topic's files live, in data-dir mode.
    pub(crate) fn topic_dir(&self, topic: &Topic) -> Option<std::path::PathBuf> {
        self.config
            .data_dir
            .as_ref()
            .map(|d| d.join("topics").join(topic_dir_name(topic)))
    }
}

#[async_trait]
impl PubSubBackend for EmbeddedBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> &Capabilities {
        &self.broker.caps
    }

    fn admin(&self) -> &dyn Admin {
        self
    }

    async fn create_producer(&self, topic: &Topic, options: ProducerOptions) -> Result<Box<dyn Producer>> {
        self.broker.caps.check_producer(topic, &options)?;
        let handle = self.broker.topic(topic)?;
        let producer = EmbeddedProducer {
            topic: handle,
            broker: self.broker.clone(),
            closed: AtomicBool::new(false),
        };
        self.broker.handles.producer(producer).await
    }

    async fn create_consumer(
        &self,
        topic: &Topic,
        subscription: &str,
        options: ConsumerOptions,
    ) -> Result<Box<dyn Consumer>> {
        validate_subscription_name(subscription)?;
        self.broker.caps.check_consumer(topic, &options)?;
        if let Some(dlq) = &options.dead_letter_topic {
            if dlq == topic {
                return Err(Error::InvalidConfiguration(
                    "the dead-letter topic must differ from the topic".into(),
                ));
            }
        }
        let handle = self.broker.topic(topic)?;
        let id = self.broker.next_consumer.fetch_add(1, Ordering::Relaxed);
        handle.attach(subscription, id, &options)?;
        let max_unacked = options.max_unacked;
        let scope = Arc::new(AckScope {
            topic: handle,
            subscription: subscription.into(),
            consumer: id,
            closed: AtomicBool::new(false),
            nack_delay: options.nack_redelivery_delay,
        });
        let consumer = EmbeddedConsumer {
            scope,
            broker: self.broker.clone(),
            options,
        };
        self.broker
            .handles
            .consumer(UnackedLimit::new(consumer, max_unacked))
            .await
    }

    async fn create_reader(&self, topic: &Topic, start: Position) -> Result<Box<dyn Reader>> {
        self.broker.caps.check_replay(topic)?;
        let handle = self.broker.topic(topic)?;
        let offset = handle.resolve(&start)?;
        let reader = EmbeddedReader::new(handle, offset, self.broker.clone());
        self.broker.handles.reader(reader).await
    }

    /// Closes every producer, consumer and reader made from it first, as
    /// their own `close` would (unacked messages go back to their
    /// subscription), then persists every topic.
    async fn close(&self) -> Result<()> {
        if self.broker.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.broker.handles.close_all().await?;
        let topics: Vec<_> = self.broker.topics.lock().values().cloned().collect();
        for t in &topics {
            t.persist_all()?;
            t.notify.notify_waiters();
        }
        Ok(())
    }
}

struct EmbeddedProducer {
    topic: Arc<TopicHandle>,
    broker: Arc<Broker>,
    closed: AtomicBool,
}

impl fmt::Debug for EmbeddedProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedProducer")
            .field("topic", &self.topic.topic)
            .finish()
    }
}

impl EmbeddedProducer {
    fn ensure_open(&self) -> Result<()> {
        pubsub_core::ensure_open(self.closed.load(Ordering::Acquire), "producer")?;
        self.broker.ensure_open()
    }
}

#[async_trait]
impl Producer for EmbeddedProducer {
    fn topic(&self) -> &Topic {
        &self.topic.topic
    }

    async fn send(&self, message: OutgoingMessage) -> Result<MessageId> {
        self.ensure_open()?;
        self.broker.caps.check_message(&message)?;
        let mut ids = self.topic.append(vec![message]).await?;
        Ok(ids.pop().expect("one id per message"))
    }

    async fn send_batch(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<MessageId>> {
        self.ensure_open()?;
        for m in &messages {
            self.broker.caps.check_message(m)?;
        }
        self.topic.append(messages).await
    }

    async fn flush(&self) -> Result<()> {
        // `send` returns only once a record is as durable as configured.
        self.ensure_open()
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}

struct EmbeddedConsumer {
    /// Shared with every message's ack target.
    scope: Arc<AckScope>,
    broker: Arc<Broker>,
    options: ConsumerOptions,
}

/// What a consumer and the ack targets of its messages share: one `Arc`
/// per consumer, so a delivery clones one pointer.
struct AckScope {
    topic: Arc<TopicHandle>,
    subscription: Box<str>,
    consumer: u64,
    closed: AtomicBool,
    nack_delay: Duration,
}

impl fmt::Debug for EmbeddedConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedConsumer")
            .field("topic", &self.scope.topic.topic)
            .field("subscription", &self.scope.subscription)
            .field("id", &self.scope.consumer)
            .finish()
    }
}

impl EmbeddedConsumer {
    fn ensure_open(&self) -> Result<()> {
        pubsub_core::ensure_open(self.scope.closed.load(Ordering::Acquire), "consumer")?;
        self.broker.ensure_open()
    }

    /// Waits until at least one message is available (or `deadline`), then
    /// takes up to `max`. Cancel safe: messages are taken and returned in
    /// one step, after the last await.
    async fn take_waiting(&self, max: usize, deadline: Option<Instant>) -> Result<Vec<Message>> {
        loop {
            let notified = self.scope.topic.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.ensure_open()?;
            let taken = self
                .scope
                .topic
                .take(&self.scope.subscription, self.scope.consumer, max)?;
            if !taken.dead.is_empty() {
                self.dead_letter(taken.dead).await?;
            }
            if !taken.deliveries.is_empty() {
                return Ok(taken
                    .deliveries
                    .into_iter()
                    .map(|d| self.to_message(d.record, d.redelivery_count))
                    .collect());
            }
            let wake = match (taken.next_wake, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Vec::new());
            }
            match wake {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    fn to_message(&self, record: Arc<Record>, redelivery_count: u32) -> Message {
        let parts = MessageParts {
            redelivery_count,
            ..record.parts(&self.scope.topic.topic)
        };
        let ack = EmbeddedAck {
            scope: self.scope.clone(),
            offset: record.offset,
        };
        Message::new(parts, Arc::new(ack))
    }

    /// Moves messages past `max_redeliveries` to the dead-letter topic (or
    /// drops them with a warning when there is none), then acks them.
    async fn dead_letter(&self, dead: Vec<Arc<Record>>) -> Result<()> {
        for record in dead {
            match &self.options.dead_letter_topic {
                Some(dlq) => {
                    let mut m = OutgoingMessage::new(record.payload.clone());
                    m.properties = record.properties().clone();
                    m.properties
                        .insert(DEAD_LETTER_ORIGIN_PROPERTY.into(), self.scope.topic.topic.to_string());
                    m.properties.insert(
                        DEAD_LETTER_REDELIVERIES_PROPERTY.into(),
                        self.options.max_redeliveries.unwrap_or(0).to_string(),
                    );
                    m.key = record.key().map(str::to_string);
                    self.broker.topic(dlq)?.append(vec![m]).await?;
                }
                None => tracing::warn!(
                    topic = %self.scope.topic.topic,
                    subscription = %self.scope.subscription,
                    offset = record.offset,
                    "dropping a message past max_redeliveries (no dead_letter_topic set)"
                ),
            }
            self.scope.topic.ack(&self.scope.subscription, record.offset).await?;
        }
        Ok(())
    }

    fn detach(&self) {
        if !self.scope.closed.swap(true, Ordering::AcqRel) {
            self.scope.topic.detach(&self.scope.subscription, self.scope.consumer);
        }
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    fn topic(&self) -> &Topic {
        &self.scope.topic.topic
    }

    fn subscription(&self) -> &str {
        &self.scope.subscription
    }

    async fn receive(&self) -> Result<Message> {
        let mut batch = self.take_waiting(1, None).await?;
        Ok(batch.pop().expect("take_waiting without deadline returns a message"))
    }

    async fn receive_timeout(&self, timeout: Duration) -> Result<Message> {
        let mut batch = self.take_waiting(1, Some(Instant::now() + timeout)).await?;
        batch.pop().ok_or(Error::Timeout(timeout))
    }

    async fn receive_batch(&self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.take_waiting(max, Some(Instant::now() + timeout)).await
    }

    async fn ack_all(&self, messages: &[Message]) -> Result<()> {
        let own = |a: &EmbeddedAck| Arc::ptr_eq(&a.scope, &self.scope);
        pubsub_core::ack_all_with(messages, own, |acks: Vec<&EmbeddedAck>| async move {
            self.ensure_open()?;
            let offsets: Vec<u64> = acks.iter().map(|a| a.offset).collect();
            self.scope.topic.ack_many(&self.scope.subscription, &offsets).await
        })
        .await
    }

    async fn seek(&self, position: Position) -> Result<()> {
        self.ensure_open()?;
        self.broker.caps.check_replay(&self.scope.topic.topic)?;
        let offset = self.scope.topic.resolve(&position)?;
        self.scope.topic.seek(&self.scope.subscription, offset)
    }

    async fn unsubscribe(&self) -> Result<()> {
        self.ensure_open()?;
        self.scope
            .topic
            .unsubscribe(&self.scope.subscription, self.scope.consumer)?;
        self.scope.closed.store(true, Ordering::Release);
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.detach();
        Ok(())
    }
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        self.detach();
    }
}

/// Acks one message of one consumer.
struct EmbeddedAck {
    scope: Arc<AckScope>,
    offset: u64,
}

impl fmt::Debug for EmbeddedAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmbeddedAck({}@{})", self.scope.subscription, self.offset)
    }
}

#[async_trait]
impl AckTarget for EmbeddedAck {
    async fn ack(&self) -> Result<()> {
        let scope = &self.scope;
        pubsub_core::ensure_open(scope.closed.load(Ordering::Acquire), "consumer")?;
        scope.topic.ack(&scope.subscription, self.offset).await
    }

    async fn nack(&self, delay: Option<Duration>) -> Result<()> {
        let scope = &self.scope;
        pubsub_core::ensure_open(scope.closed.load(Ordering::Acquire), "consumer")?;
        scope.topic.nack(
            &scope.subscription,
            self.offset,
            scope.consumer,
            delay.unwrap_or(scope.nack_delay),
        );
        Ok(())
    }

    async fn in_progress(&self) -> Result<()> {
        let scope = &self.scope;
        pubsub_core::ensure_open(scope.closed.load(Ordering::Acquire), "consumer")?;
        scope.topic.extend(&scope.subscription, self.offset, scope.consumer);
        Ok(())
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}
