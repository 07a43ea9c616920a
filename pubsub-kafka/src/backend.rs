//! The Kafka [`PubSubBackend`], topic creation and the producer.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pubsub_core::codec::CodecKind;
use pubsub_core::UnackedLimit;
use pubsub_core::{
    ensure_open, validate_subscription_name, Admin, AdminCapabilities, Capabilities, Compression, Consumer,
    ConsumerOptions, Error, MessageId, OutgoingMessage, Position, Producer, ProducerOptions, PubSubBackend, Qos,
    Reader, Result, Topic,
};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;

use crate::config::{KafkaBroker, KafkaConfig};
use crate::consumer::KafkaConsumer;
use crate::headers::to_headers;
use crate::replay::KafkaReader;

pub(crate) const NAME: &str = "kafka";

/// The producers' `message.max.bytes`: the most a record may take on the
/// wire (payload, key, headers and the record's own framing). librdkafka's
/// default, set explicitly; Apache Kafka's broker default
/// (`message.max.bytes`, 1,048,588) is above it.
const MAX_RECORD_BYTES: usize = 1_000_000;

/// Kept from [`MAX_RECORD_BYTES`] for the key and properties, so that
/// `Capabilities::max_payload` bytes fit with an ordinary key and headers.
/// Larger keys and headers are checked too: see [`record_size`].
const RECORD_RESERVE: usize = 4096;

/// The wire size librdkafka checks against `message.max.bytes`, bounded
/// from above: payload, key and each header with its two length varints
/// (at most 5 bytes each), plus the record's framing (36 bytes:
/// librdkafka's `RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD`).
fn record_size(m: &OutgoingMessage) -> usize {
    let headers: usize = m.properties.iter().map(|(k, v)| k.len() + v.len() + 10).sum();
    36 + m.payload.len() + m.key.as_ref().map_or(0, String::len) + headers
}

/// A record larger than the client or the broker takes.
fn too_large(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge)
    )
}

/// Whether `e` is the transport failing or timing out, which librdkafka
/// recovers from by itself (reconnecting, refreshing metadata).
pub(crate) fn is_transient(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::NetworkException
        )
    )
}

/// A client error as ours: transport and timeouts are `Connection`, the rest `Broker`.
pub(crate) fn map_err(what: impl fmt::Display, e: KafkaError) -> Error {
    if is_transient(&e) {
        Error::connection(NAME, format!("{what}: {e}"), e)
    } else {
        Error::broker(NAME, format!("{what}: {e}"), e)
    }
}

/// The Kafka topic of a pubsub topic: `tenant.namespace.queue`.
pub(crate) fn kafka_topic(topic: &Topic) -> String {
    topic.joined(".")
}

/// Kafka as a pub/sub backend, through rdkafka. See the crate docs.
#[derive(Clone)]
pub struct KafkaBackend {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: KafkaConfig,
    pub caps: Capabilities,
    closed: AtomicBool,
    /// Every producer, consumer and reader made: closed with the backend.
    handles: pubsub_core::handles::Handles,
    pub admin: Arc<AdminClient<DefaultClientContext>>,
    /// acks=all, idempotent: q1 (and q2 run as q1).
    reliable: FutureProducer,
    /// acks=0: q0.
    best_effort: FutureProducer,
    /// Producers with a `compression.type`, made on first use and shared by
    /// every producer asking for that codec and q0 or not (librdkafka
    /// compresses per client, not per record).
    compressed: Mutex<HashMap<(Compression, bool), FutureProducer>>,
    created: tokio::sync::Mutex<HashSet<String>>,
}

impl fmt::Debug for KafkaBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaBackend")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl KafkaBackend {
    /// Connects and checks (bounded by `config.timeout`) that the cluster answers.
    pub async fn connect(config: KafkaConfig) -> Result<Self> {
        config.check()?;
        let bad_config = |e: KafkaError| Error::InvalidConfiguration(format!("kafka client settings: {e}"));
        let admin: AdminClient<DefaultClientContext> = config.client_config().create().map_err(bad_config)?;
        let reliable = make_producer(&config, true, Compression::None)?;
        let best_effort = make_producer(&config, false, Compression::None)?;
        probe(&config).await?;
        let caps = Capabilities {
            persistence: true,
            // Acks above an unacked record live in the commit metadata,
            // which Apache Kafka keeps and the stand-ins return empty.
            individual_acks: config.broker.keeps_commit_metadata(),
            earliest: true,
            shared: true,
            nack: true,
            redelivery_count: true,
            key_ordering: true,
            properties: true,
            keys: true,
            max_payload: Some(MAX_RECORD_BYTES - RECORD_RESERVE),
            // librdkafka reads all four (zstd with rdkafka's `zstd`
            // feature). Not claimed on Tansu, which dropped the connection
            // on snappy-compressed fetches and was not checked with the others.
            compression: match config.broker {
                KafkaBroker::Tansu => &[],
                KafkaBroker::Apache | KafkaBroker::Noida => Compression::ALL,
            },
            default_codec: CodecKind::Avro,
            replay: true,
            positions: true,
            admin: AdminCapabilities {
                topics: true,
                q0_topics: true,
                delete_topic: config.broker != KafkaBroker::Tansu,
                list_topics: true,
                partitions: true,
                subscriptions: true,
            },
            ..Capabilities::none(NAME)
        };
        Ok(KafkaBackend {
            inner: Arc::new(Inner {
                config,
                caps,
                closed: AtomicBool::new(false),
                handles: Default::default(),
                admin: Arc::new(admin),
                reliable,
                best_effort,
                compressed: Default::default(),
                created: Default::default(),
            }),
        })
    }
}

/// Remembers the last error librdkafka reported: a failed TLS handshake or a
/// refused login otherwise shows only as a metadata request that timed out.
#[derive(Default)]
struct ProbeContext {
    last_error: Mutex<Option<String>>,
}

impl rdkafka::ClientContext for ProbeContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!("kafka probe: {error}: {reason}");
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{error}: {reason}"));
    }
}

impl rdkafka::producer::ProducerContext for ProbeContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Checks (bounded by `config.timeout`) that the cluster answers a metadata
/// request, with a client of its own that keeps librdkafka's reason when it
/// does not: [`Error::Tls`] for a refused certificate, [`Error::Authentication`]
/// for refused credentials, [`Error::Connection`] otherwise.
async fn probe(config: &KafkaConfig) -> Result<()> {
    let client: rdkafka::producer::BaseProducer<ProbeContext> = config
        .client_config()
        .create_with_context(ProbeContext::default())
        .map_err(|e| Error::InvalidConfiguration(format!("kafka client settings: {e}")))?;
    let timeout = config.timeout;
    // The client is dropped on the blocking thread too: closing it waits
    // for librdkafka's threads.
    // librdkafka hands its errors to the context only when the client is
    // polled: ask in short rounds, polling between them, and stop at once
    // when a refused handshake or login is reported.
    let (answer, reason) = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let round = left.min(std::time::Duration::from_millis(500));
            let answer = client.client().fetch_metadata(None, Timeout::After(round)).map(drop);
            client.poll(std::time::Duration::ZERO);
            let reason = client
                .context()
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let refused = reason
                .as_deref()
                .is_some_and(|r| is_auth_failure(r) || r.contains("SSL"));
            if answer.is_ok() || refused || left == round {
                return (answer, reason);
            }
        }
    })
    .await
    .map_err(|e| Error::broker(NAME, "metadata task failed", e))?;
    let Err(e) = answer else {
        return Ok(());
    };
    let servers = &config.bootstrap_servers;
    let Some(why) = reason else {
        return Err(Error::connection(
            NAME,
            format!("no answer from {servers} within {timeout:?}: {e}"),
            e,
        ));
    };
    let explained = pubsub_core::tls_failure(&std::io::Error::other(why.clone()));
    Err(if is_auth_failure(&why) {
        let user = config.sasl_username.as_deref().unwrap_or("");
        Error::Authentication {
            backend: NAME,
            message: format!("{servers}: the login of user {user:?} was refused: {why}"),
            source: Some(Box::new(e)),
        }
    } else if explained.is_some() || why.contains("SSL") {
        Error::Tls {
            backend: NAME,
            message: format!("{servers}: {}", explained.unwrap_or(why)),
            source: Some(Box::new(e)),
        }
    } else {
        Error::connection(NAME, format!("no answer from {servers} within {timeout:?}: {why}"), e)
    })
}

/// Whether librdkafka's error text is a refused SASL login.
fn is_auth_failure(reason: &str) -> bool {
    reason.contains("SASL authentication error") || reason.contains("Authentication failed")
}

/// A producer client: acks=all and idempotent when `reliable` (q1, q2 run
/// as q1), acks=0 otherwise (q0); `compression` as its `compression.type`.
fn make_producer(config: &KafkaConfig, reliable: bool, compression: Compression) -> Result<FutureProducer> {
    // linger.ms 0, not librdkafka's 5: a message goes out at once, and
    // what queues while a request is in flight still goes out together.
    // Measured on Apache Kafka 4.4 against 1 ms (the old setting), three
    // pairs of runs: latency p50 0.25-0.38 ms instead of 1.32-1.36 ms, p99
    // 1.4-2.2 instead of 2.5-3.7 ms, throughput within the noise (5 ms:
    // a third of it, since a send_batch waits out the linger).
    let mut c = config.client_config_with(&[("linger.ms", "0")]);
    if reliable {
        c.set("acks", "all").set("enable.idempotence", "true");
    } else {
        c.set("acks", "0");
    }
    if compression != Compression::None {
        // Asked for by this producer's options: above `config.extra`.
        c.set("compression.type", compression.to_string());
    }
    c.set("message.max.bytes", MAX_RECORD_BYTES.to_string())
        .set("message.timeout.ms", config.timeout.as_millis().to_string())
        .create()
        .map_err(|e: KafkaError| Error::InvalidConfiguration(format!("kafka client settings: {e}")))
}

impl Inner {
    /// The producer client for a q0 topic or not, with `compression`.
    fn producer_for(&self, reliable: bool, compression: Compression) -> Result<FutureProducer> {
        match (compression, reliable) {
            (Compression::None, true) => return Ok(self.reliable.clone()),
            (Compression::None, false) => return Ok(self.best_effort.clone()),
            _ => {}
        }
        let mut made = self.compressed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = made.get(&(compression, reliable)) {
            return Ok(p.clone());
        }
        let p = make_producer(&self.config, reliable, compression)?;
        made.insert((compression, reliable), p.clone());
        Ok(p)
    }

    pub(crate) fn ensure_open(&self) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "kafka backend")
    }

    /// Creates the topic through the admin API if this backend has not yet
    /// (the broker may not auto-create topics; Tansu does not).
    pub(crate) async fn ensure_topic(&self, topic: &Topic) -> Result<String> {
        let name = kafka_topic(topic);
        let mut created = self.created.lock().await;
        if created.contains(&name) {
            return Ok(name);
        }
        self.create_kafka_topic(&name, self.config.partitions).await?;
        created.insert(name.clone());
        Ok(name)
    }

    pub(crate) async fn remember_created(&self, name: String) {
        self.created.lock().await.insert(name);
    }

    pub(crate) async fn forget_created(&self, name: &str) {
        self.created.lock().await.remove(name);
    }

    /// The admin client, shared, for blocking calls on another thread.
    pub(crate) fn admin_client(&self) -> Arc<AdminClient<DefaultClientContext>> {
        self.admin.clone()
    }
}

#[async_trait]
impl PubSubBackend for KafkaBackend {
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
        self.inner.caps.check_producer(topic, &options)?;
        let name = self.inner.ensure_topic(topic).await?;
        let timeout = options.send_timeout.unwrap_or(self.inner.config.timeout);
        let client = self
            .inner
            .producer_for(topic.qos() != Qos::AtMostOnce, options.compression)?;
        let producer = KafkaProducer {
            client,
            inner: self.inner.clone(),
            topic: topic.clone(),
            name,
            timeout,
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
        let name = self.inner.ensure_topic(topic).await?;
        let max_unacked = options.max_unacked;
        let consumer = KafkaConsumer::start(self.inner.clone(), topic.clone(), name, subscription, options).await?;
        self.inner
            .handles
            .consumer(UnackedLimit::new(consumer, max_unacked))
            .await
    }

    async fn create_reader(&self, topic: &Topic, start: Position) -> Result<Box<dyn Reader>> {
        self.inner.ensure_open()?;
        self.inner.caps.check_replay(topic)?;
        self.inner.ensure_topic(topic).await?;
        let reader = KafkaReader::open(self.inner.clone(), topic, start).await?;
        self.inner.handles.reader(reader).await
    }

    /// Closes every producer, consumer and reader made from it first, as
    /// their own `close` would (acks committed, unacked records left for
    /// the group), then flushes the shared producers.
    async fn close(&self) -> Result<()> {
        if !self.inner.closed.swap(true, Ordering::AcqRel) {
            self.inner.handles.close_all().await?;
            let (a, b) = (self.inner.reliable.clone(), self.inner.best_effort.clone());
            let t = self.inner.config.timeout;
            tokio::task::spawn_blocking(move || {
                let _ = a.flush(Timeout::After(t));
                let _ = b.flush(Timeout::After(t));
            })
            .await
            .map_err(|e| Error::broker(NAME, "flush task failed", e))?;
        }
        Ok(())
    }
}

struct KafkaProducer {
    /// One of `Inner`'s producer clients, chosen by q0 and compression.
    client: FutureProducer,
    inner: Arc<Inner>,
    topic: Topic,
    name: String,
    timeout: std::time::Duration,
    closed: AtomicBool,
}

impl fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaProducer").field("topic", &self.topic).finish()
    }
}

impl KafkaProducer {
    fn check(&self, m: &OutgoingMessage) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "producer")?;
        self.inner.ensure_open()?;
        m.validate(self.inner.caps.max_payload)?;
        let size = record_size(m);
        if size > MAX_RECORD_BYTES {
            return Err(Error::PayloadTooLarge {
                size,
                max: MAX_RECORD_BYTES,
            });
        }
        if m.deliver_after.is_some() {
            return Err(Error::unsupported(
                NAME,
                "deliver_after (Kafka has no delayed delivery)",
            ));
        }
        Ok(())
    }

    fn producer(&self) -> &FutureProducer {
        &self.client
    }

    /// Queues one message; the future resolves with its delivery report.
    fn enqueue(&self, m: &OutgoingMessage) -> Result<rdkafka::producer::DeliveryFuture> {
        let mut record = FutureRecord::to(&self.name)
            .payload(m.payload.as_ref())
            .headers(to_headers(m));
        if let Some(k) = &m.key {
            record = record.key(k.as_str());
        }
        self.producer()
            .send_result(record)
            .map_err(|(e, _)| self.send_error(e, m))
    }

    /// A failed send as our error: a record the client or the broker (a
    /// topic's `max.message.bytes` may be lower than the client's limit)
    /// finds too large is `PayloadTooLarge`, which no retry can fix.
    fn send_error(&self, e: KafkaError, m: &OutgoingMessage) -> Error {
        if too_large(e.rdkafka_error_code()) {
            let size = record_size(m);
            return Error::PayloadTooLarge {
                size,
                max: size.saturating_sub(1).min(MAX_RECORD_BYTES),
            };
        }
        map_err(format!("send to {}", self.topic), e)
    }

    async fn delivered(&self, future: rdkafka::producer::DeliveryFuture, m: &OutgoingMessage) -> Result<MessageId> {
        match tokio::time::timeout(self.timeout + std::time::Duration::from_secs(1), future).await {
            Ok(Ok(Ok(d))) => Ok(MessageId::from_text(format!("{}:{}", d.partition, d.offset))),
            Ok(Ok(Err((e, _)))) => Err(self.send_error(e, m)),
            Ok(Err(_cancelled)) => Err(Error::Closed("producer")),
            Err(_) => Err(Error::Timeout(self.timeout)),
        }
    }
}

#[async_trait]
impl Producer for KafkaProducer {
    fn topic(&self) -> &Topic {
        &self.topic
    }

    async fn send(&self, message: OutgoingMessage) -> Result<MessageId> {
        self.check(&message)?;
        let f = self.enqueue(&message)?;
        self.delivered(f, &message).await
    }

    async fn send_batch(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<MessageId>> {
        for m in &messages {
            self.check(m)?;
        }
        // Queue all (librdkafka batches them), then collect the reports in order.
        let futures = messages.iter().map(|m| self.enqueue(m)).collect::<Result<Vec<_>>>()?;
        let mut ids = Vec::with_capacity(futures.len());
        for (f, m) in futures.into_iter().zip(&messages) {
            ids.push(self.delivered(f, m).await?);
        }
        Ok(ids)
    }

    async fn flush(&self) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "producer")?;
        let p = self.producer().clone();
        let t = self.timeout;
        tokio::task::spawn_blocking(move || p.flush(Timeout::After(t)))
            .await
            .map_err(|e| Error::broker(NAME, "flush task failed", e))?
            .map_err(|e| map_err("flush", e))
    }

    async fn close(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let r = self.flush().await;
        self.closed.store(true, Ordering::Release);
        r
    }
}
