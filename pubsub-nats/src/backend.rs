//! The NATS [`PubSubBackend`] and its producer.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use async_trait::async_trait;
use pubsub_core::UnackedLimit;
use pubsub_core::{
    ensure_open, validate_subscription_name, Admin, AdminCapabilities, Capabilities, Consumer, ConsumerOptions, Error,
    MessageId, OutgoingMessage, Position, Producer, ProducerOptions, PubSubBackend, Qos, Reader, Result, Topic,
};

use crate::config::NatsConfig;
use crate::consumer::{CoreConsumer, JetStreamConsumer};
use crate::headers::to_headers;
use crate::naming::{stream_name, subject};
use crate::replay::NatsReader;

pub(crate) const NAME: &str = "nats";

/// A broker error from any async-nats error, keeping its source.
pub(crate) fn broker_err(what: impl fmt::Display, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::broker(NAME, format!("{what}: {e}"), e)
}

/// NATS as a pub/sub backend: q0 on core NATS, q1/q2 on JetStream.
/// See the crate docs for the mapping.
#[derive(Clone)]
pub struct NatsBackend {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: NatsConfig,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub caps: Capabilities,
    pub closed: AtomicBool,
    /// Every producer, consumer and reader made: closed with the backend.
    pub handles: pubsub_core::handles::Handles,
    /// Streams known to exist (created or found) by this backend.
    streams: tokio::sync::Mutex<HashSet<String>>,
    /// The server's limit for payload plus headers.
    pub server_max_payload: usize,
}

impl fmt::Debug for NatsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBackend")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl NatsBackend {
    /// Connects (bounded by `config.timeout`) and reads the server's
    /// `max_payload`, which sets [`Capabilities::max_payload`].
    pub async fn connect(config: NatsConfig) -> Result<Self> {
        let shown = pubsub_core::redact_url(&config.url);
        let mut opts = async_nats::ConnectOptions::new()
            .connection_timeout(config.timeout)
            .request_timeout(Some(config.timeout));
        if let Some(token) = &config.token {
            opts = opts.token(token.expose().to_string());
        }
        let client = tokio::time::timeout(config.timeout * 2, opts.connect(config.url.as_str()))
            .await
            .map_err(|_| Error::Connection {
                backend: NAME,
                message: format!("no answer from {shown} within {:?}", config.timeout * 2),
                source: None,
            })?
            .map_err(|e| Error::connection(NAME, format!("connect to {shown}: {e}"), e))?;
        let server_max_payload = client.server_info().max_payload;
        let js = jetstream::new(client.clone());
        // Fail now, clearly, if JetStream is off (the server says so in its INFO).
        if !client.server_info().jetstream {
            return Err(Error::InvalidConfiguration(format!(
                "JetStream is not enabled on {shown}; start nats-server with -js"
            )));
        }
        let caps = Capabilities {
            persistence: true,
            earliest: true,
            shared: true,
            nack: true,
            nack_delay: true,
            ack_timeout: true,
            redelivery_count: true,
            redelivery_count_across_restarts: true,
            max_redeliveries: true,
            individual_acks: true,
            exactly_once: true,
            key_ordering: true,
            topic_ordering: true,
            max_payload: Some(server_max_payload.saturating_sub(config.header_reserve)),
            properties: true,
            keys: true,
            replay: true,
            positions: true,
            admin: AdminCapabilities {
                topics: true,
                q0_topics: false,
                delete_topic: true,
                list_topics: true,
                partitions: false,
                subscriptions: true,
            },
            ..Capabilities::none(NAME)
        };
        Ok(NatsBackend {
            inner: Arc::new(Inner {
                config,
                client,
                js,
                caps,
                closed: AtomicBool::new(false),
                handles: Default::default(),
                streams: Default::default(),
                server_max_payload,
            }),
        })
    }
}

impl Inner {
    pub(crate) fn ensure_open(&self) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "nats backend")
    }

    /// The stream of a q1/q2 topic, created if missing.
    pub(crate) async fn ensure_stream(&self, topic: &Topic) -> Result<stream::Stream> {
        let name = stream_name(topic);
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![subject(topic)],
            storage: stream::StorageType::File,
            max_age: self.config.stream_max_age,
            duplicate_window: self.config.dedup_window,
            ..Default::default()
        };
        let s = self
            .js
            .get_or_create_stream(config)
            .await
            .map_err(|e| broker_err(format!("create stream {name} for {topic}"), e))?;
        self.streams.lock().await.insert(name);
        Ok(s)
    }

    pub(crate) async fn forget_stream(&self, topic: &Topic) {
        self.streams.lock().await.remove(&stream_name(topic));
    }

    async fn stream_known(&self, topic: &Topic) -> bool {
        self.streams.lock().await.contains(&stream_name(topic))
    }
}

#[async_trait]
impl PubSubBackend for NatsBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> &Capabilities {
        &self.inner.caps
    }

    fn admin(&self) -> &dyn Admin {
        self
    }

    async fn create_producer(&self, topic: &Topic, options: ProducerOptions) -> Result<Box<dyn Producer>> {
        self.inner.ensure_open()?;
        self.inner.caps.check_producer(topic, options.allow_degraded_qos)?;
        if topic.qos() != Qos::AtMostOnce {
            self.inner.ensure_stream(topic).await?;
        }
        let producer = NatsProducer {
            inner: self.inner.clone(),
            topic: topic.clone(),
            subject: subject(topic),
            closed: AtomicBool::new(false),
        };
        self.inner.handles.producer(producer).await
    }

    async fn create_consumer(
        &self,
        topic: &Topic,
        subscription: &str,
        options: ConsumerOptions,
    ) -> Result<Box<dyn Consumer>> {
        self.inner.ensure_open()?;
        validate_subscription_name(subscription)?;
        self.inner.caps.check_consumer(topic, &options)?;
        if topic.qos() == Qos::AtMostOnce {
            let consumer = CoreConsumer::start(self.inner.clone(), topic.clone(), subscription).await?;
            return self.inner.handles.consumer(consumer).await;
        }
        let max_unacked = options.max_unacked;
        let consumer = JetStreamConsumer::start(self.inner.clone(), topic.clone(), subscription, options).await?;
        self.inner
            .handles
            .consumer(UnackedLimit::new(consumer, max_unacked))
            .await
    }

    async fn create_reader(&self, topic: &Topic, start: Position) -> Result<Box<dyn Reader>> {
        self.inner.ensure_open()?;
        self.inner.caps.check_replay(topic)?;
        let reader = NatsReader::open(self.inner.clone(), topic, &start).await?;
        self.inner.handles.reader(reader).await
    }

    /// Closes every producer, consumer and reader made from it first, as
    /// their own `close` would: blocked receives end, unacked messages go
    /// back; then flushes the connection.
    async fn close(&self) -> Result<()> {
        if !self.inner.closed.swap(true, Ordering::AcqRel) {
            let handles = self.inner.handles.close_all().await;
            // Acks are publishes: make sure the buffered ones reach the server.
            self.inner
                .client
                .flush()
                .await
                .map_err(|e| broker_err("flush on close", e))?;
            handles?;
        }
        Ok(())
    }
}

struct NatsProducer {
    inner: Arc<Inner>,
    topic: Topic,
    subject: String,
    closed: AtomicBool,
}

impl fmt::Debug for NatsProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsProducer").field("topic", &self.topic).finish()
    }
}

impl NatsProducer {
    fn ensure_open(&self) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "producer")?;
        self.inner.ensure_open()
    }

    /// Validates and builds the headers; checks payload plus headers
    /// against the server's `max_payload`.
    fn prepare(&self, m: &OutgoingMessage) -> Result<async_nats::HeaderMap> {
        self.inner.caps.check_message(m)?;
        let dedup = m.dedup_id.as_deref().filter(|_| self.topic.qos() == Qos::ExactlyOnce);
        let (headers, header_size) = to_headers(m, dedup);
        let total = m.payload.len() + header_size;
        if total > self.inner.server_max_payload {
            return Err(Error::PayloadTooLarge {
                size: total,
                max: self.inner.server_max_payload,
            });
        }
        Ok(headers)
    }

    /// Publishes one prepared message; for q1/q2 returns once JetStream
    /// stored it (the PubAck), recreating the stream once if it vanished.
    async fn publish(&self, headers: async_nats::HeaderMap, payload: bytes::Bytes) -> Result<MessageId> {
        if self.topic.qos() == Qos::AtMostOnce {
            // A plain PUB without properties or key, as for JetStream.
            let client = &self.inner.client;
            let sent = if headers.is_empty() {
                client.publish(self.subject.clone(), payload).await
            } else {
                client
                    .publish_with_headers(self.subject.clone(), headers, payload)
                    .await
            };
            sent.map_err(|e| broker_err(format!("publish to {}", self.topic), e))?;
            return Ok(MessageId::from_text("q0"));
        }
        if !self.inner.stream_known(&self.topic).await {
            self.inner.ensure_stream(&self.topic).await?;
        }
        for attempt in 0..2 {
            let sent = self.js_publish(headers.clone(), payload.clone()).await;
            let acked = match sent {
                Ok(ack_future) => ack_future.await,
                Err(e) => Err(e),
            };
            match acked {
                Ok(ack) => return Ok(MessageId::from_seq(ack.sequence)),
                Err(e) if e.kind() == PublishErrorKind::StreamNotFound && attempt == 0 => {
                    self.inner.forget_stream(&self.topic).await;
                    self.inner.ensure_stream(&self.topic).await?;
                }
                Err(e) => return Err(self.publish_error(e, payload.len())),
            }
        }
        unreachable!("the second attempt returns")
    }
}

impl NatsProducer {
    /// A JetStream publish; without headers as a plain PUB, which the server
    /// handles faster than an HPUB with an empty header block (measured by
    /// pubsub-bench: 0.65 of the raw client for 100-byte messages before).
    async fn js_publish(
        &self,
        headers: async_nats::HeaderMap,
        payload: bytes::Bytes,
    ) -> std::result::Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError> {
        if headers.is_empty() {
            self.inner.js.publish(self.subject.clone(), payload).await
        } else {
            self.inner
                .js
                .publish_with_headers(self.subject.clone(), headers, payload)
                .await
        }
    }

    fn publish_error(&self, e: async_nats::jetstream::context::PublishError, size: usize) -> Error {
        match e.kind() {
            PublishErrorKind::MaxPayloadExceeded => Error::PayloadTooLarge {
                size: size.max(self.inner.server_max_payload + 1),
                max: self.inner.server_max_payload,
            },
            PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => Error::Connection {
                backend: NAME,
                message: format!("publish to {}: {e}", self.topic),
                source: Some(Box::new(e)),
            },
            _ => broker_err(format!("publish to {}", self.topic), e),
        }
    }
}

#[async_trait]
impl Producer for NatsProducer {
    fn topic(&self) -> &Topic {
        &self.topic
    }

    async fn send(&self, message: OutgoingMessage) -> Result<MessageId> {
        self.ensure_open()?;
        let headers = self.prepare(&message)?;
        self.publish(headers, message.payload).await
    }

    async fn send_batch(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<MessageId>> {
        self.ensure_open()?;
        let prepared: Vec<_> = messages.iter().map(|m| self.prepare(m)).collect::<Result<_>>()?;
        if self.topic.qos() == Qos::AtMostOnce {
            let mut ids = Vec::with_capacity(messages.len());
            for (h, m) in prepared.into_iter().zip(messages) {
                ids.push(self.publish(h, m.payload).await?);
            }
            return Ok(ids);
        }
        if !self.inner.stream_known(&self.topic).await {
            self.inner.ensure_stream(&self.topic).await?;
        }
        // Publish every message in order, then await the PubAcks together:
        // one round trip of latency for the whole batch.
        let mut acks = Vec::with_capacity(messages.len());
        for (h, m) in prepared.into_iter().zip(messages) {
            let sent = self.js_publish(h, m.payload).await;
            acks.push(sent.map_err(|e| self.publish_error(e, 0))?);
        }
        let mut ids = Vec::with_capacity(acks.len());
        for ack in acks {
            let ack = ack.await.map_err(|e| self.publish_error(e, 0))?;
            ids.push(MessageId::from_seq(ack.sequence));
        }
        Ok(ids)
    }

    async fn flush(&self) -> Result<()> {
        self.ensure_open()?;
        self.inner.client.flush().await.map_err(|e| broker_err("flush", e))
    }

    async fn close(&self) -> Result<()> {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.inner
                .client
                .flush()
                .await
                .map_err(|e| broker_err("flush on close", e))?;
        }
        Ok(())
    }
}
