//! The Pulsar [`PubSubBackend`] and its producer.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pubsub_core::UnackedLimit;
use pubsub_core::{
    ensure_open, validate_subscription_name, Capabilities, Compression, Consumer, ConsumerOptions, Error, MessageId,
    OutgoingMessage, Position, Producer, ProducerOptions, PubSubBackend, Reader, Result, TlsConfig, Topic,
};
use pulsar::producer::SendFuture;
use pulsar::{Authentication, ConnectionRetryOptions, OperationRetryOptions, Pulsar, PulsarBuilder, TokioExecutor};
use tokio::sync::Mutex;

use crate::config::{PulsarBroker, PulsarConfig};
use crate::consumer::PulsarConsumer;
use crate::errors::{convert, NAME};
use crate::http_admin::HttpAdmin;
use crate::naming::{message_id, pulsar_topic};
use crate::replay::PulsarReader;

/// Pulsar as a pub/sub backend. See the crate docs for the mapping.
#[derive(Clone)]
pub struct PulsarBackend {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: PulsarConfig,
    pub client: Pulsar<TokioExecutor>,
    pub caps: Capabilities,
    pub closed: AtomicBool,
    /// Every producer, consumer and reader made: closed with the backend.
    pub handles: pubsub_core::handles::Handles,
    /// The HTTP admin API, when `config.admin_url` is set (Apache Pulsar only).
    pub http_admin: Option<HttpAdmin>,
}

impl Inner {
    pub(crate) fn ensure_open(&self) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "pulsar backend")
    }

    /// Makes `topic`'s tenant and namespace if missing, where the admin API
    /// is known (see `PulsarConfig::admin_url`); otherwise nothing.
    pub(crate) async fn ensure_namespace(&self, topic: &Topic) -> Result<()> {
        match &self.http_admin {
            Some(admin) => admin.ensure_namespace(topic).await,
            None => Ok(()),
        }
    }
}

impl fmt::Debug for PulsarBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PulsarBackend")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl PulsarBackend {
    /// Connects, bounded by `config.timeout`: an unreachable broker is a
    /// retriable [`Error::Connection`] after that long. Over TLS (see
    /// [`PulsarConfig::tls`]) a failed handshake is [`Error::Tls`]; a
    /// refused token or certificate is [`Error::Authentication`].
    pub async fn connect(config: PulsarConfig) -> Result<Self> {
        if let Some(listener) = &config.listener {
            return Err(Error::unsupported(
                NAME,
                format!(
                    "advertised listener {listener:?} (PULSAR_LISTENER): the pulsar crate sends no listener name in \
                     its lookups; unset it and give the listener's address as the URL"
                ),
            ));
        }
        let http_admin = match (&config.admin_url, config.broker) {
            (Some(url), PulsarBroker::Apache) => Some(HttpAdmin::new(url, config.token.clone(), config.timeout)?),
            _ => None,
        };
        let shown = pubsub_core::redact_url(&config.url);
        // Back off up to 1 s between attempts, for `reconnect_for` in all.
        let max_backoff = Duration::from_secs(1);
        let retries = (config.reconnect_for.as_millis() / max_backoff.as_millis()).max(1) as u32;
        let mut builder = Pulsar::builder(config.connect_url(), TokioExecutor)
            .with_connection_retry_options(ConnectionRetryOptions {
                min_backoff: Duration::from_millis(50),
                max_backoff,
                max_retries: retries,
                connection_timeout: config.timeout,
                ..Default::default()
            })
            .with_operation_retry_options(OperationRetryOptions {
                operation_timeout: config.timeout,
                retry_delay: Duration::from_millis(200),
                max_retries: Some(20),
            });
        if config.uses_tls() {
            builder = with_tls(builder, config.tls.as_ref())?;
        }
        if let Some(token) = &config.token {
            builder = builder.with_auth(Authentication {
                name: "token".into(),
                data: token.expose().as_bytes().to_vec(),
            });
        }
        let client = tokio::time::timeout(config.timeout, builder.build())
            .await
            .map_err(|_| Error::Connection {
                backend: NAME,
                message: format!("no answer from {shown} within {:?}", config.timeout),
                source: None,
            })?
            .map_err(|e| convert(format!("connect to {shown}"), e))?;
        let full = config.broker == PulsarBroker::Apache;
        let caps = Capabilities {
            persistence: true,
            earliest: true,
            shared: true,
            exclusive: full,
            failover: true,
            key_shared: true,
            nack: true,
            nack_delay: true,
            ack_timeout: true,
            redelivery_count: true,
            max_redeliveries: true,
            individual_acks: true,
            delayed_delivery: full,
            key_ordering: true,
            topic_ordering: true,
            max_payload: Some(config.max_payload()),
            compression: PULSAR_CODECS,
            properties: true,
            keys: true,
            replay: true,
            admin: admin_capabilities(config.broker, http_admin.is_some()),
            ..Capabilities::none(NAME)
        };
        Ok(PulsarBackend {
            inner: Arc::new(Inner {
                config,
                client,
                caps,
                closed: AtomicBool::new(false),
                handles: Default::default(),
                http_admin,
            }),
        })
    }
}

/// `tls` on the crate's builder: the CA file as extra trusted roots, the
/// client certificate and its PKCS#8 key (mutual TLS), certificate and host
/// name checks on. A server name override is `Error::Unsupported`.
fn with_tls(builder: PulsarBuilder<TokioExecutor>, tls: Option<&TlsConfig>) -> Result<PulsarBuilder<TokioExecutor>> {
    let mut builder = builder
        .with_allow_insecure_connection(false)
        .with_tls_hostname_verification_enabled(true);
    let Some(tls) = tls else {
        return Ok(builder);
    };
    tls.check(NAME)?;
    if let Some(name) = &tls.server_name {
        return Err(Error::unsupported(
            NAME,
            format!(
                "a TLS server name ({name:?}, PULSAR_TLS_SERVER_NAME) other than the host connected to: the pulsar \
                 crate checks the broker's certificate against the host of the URL (and of each broker a lookup \
                 returns); unset it and use a host name the certificate carries in the URL"
            ),
        ));
    }
    if let Some(path) = &tls.ca_file {
        builder = builder.with_certificate_chain(certificates(path, "CA file")?);
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        builder = builder.with_client_identity(certificates(cert, "client certificate file")?, pkcs8_key(key)?);
    }
    Ok(builder)
}

/// The PEM file `path`, which must hold a certificate.
fn certificates(path: &std::path::Path, role: &str) -> Result<Vec<u8>> {
    let pem = TlsConfig::read_pem(NAME, role, path)?;
    if !contains(&pem, b"-----BEGIN CERTIFICATE-----") {
        return Err(Error::InvalidConfiguration(format!(
            "{NAME} TLS: the {role} {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(pem)
}

/// The client's key: PEM PKCS#8, all native-tls takes (from its header on,
/// so that text before it, as `openssl pkcs12` writes, does not matter).
fn pkcs8_key(path: &std::path::Path) -> Result<Vec<u8>> {
    const HEADER: &[u8] = b"-----BEGIN PRIVATE KEY-----";
    let pem = TlsConfig::read_pem(NAME, "client key file", path)?;
    if let Some(at) = pem.windows(HEADER.len()).position(|w| w == HEADER) {
        return Ok(pem[at..].to_vec());
    }
    let shown = path.display();
    let why = if contains(&pem, b"ENCRYPTED PRIVATE KEY") {
        "is encrypted; give an unencrypted PKCS#8 key (`openssl pkcs8 -topk8 -nocrypt`)".to_string()
    } else if contains(&pem, b"PRIVATE KEY-----") {
        format!(
            "is not PKCS#8, which is all the pulsar crate (native-tls) reads; convert it with `openssl pkcs8 -topk8 \
             -nocrypt -in {shown} -out client.pk8.key`"
        )
    } else {
        "holds no PEM private key".to_string()
    };
    Err(Error::InvalidConfiguration(format!(
        "{NAME} TLS: the client key file {shown} {why}"
    )))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What the admin API can do on `broker`, with or without the HTTP admin
/// API (`PulsarConfig::admin_url`, used on Apache Pulsar only).
fn admin_capabilities(broker: PulsarBroker, http_admin: bool) -> pubsub_core::AdminCapabilities {
    match (broker, http_admin) {
        // Everything, through the HTTP admin API.
        (PulsarBroker::Apache, true) => pubsub_core::AdminCapabilities {
            topics: true,
            q0_topics: true,
            delete_topic: true,
            list_topics: true,
            subscriptions: true,
            ..pubsub_core::AdminCapabilities::NONE
        },
        // GetTopicsOfNamespace lists persistent topics only; the binary
        // protocol has no delete or stats command.
        (PulsarBroker::Apache, false) => pubsub_core::AdminCapabilities {
            topics: true,
            list_topics: true,
            ..pubsub_core::AdminCapabilities::NONE
        },
        // pulsar-lite answers no GetTopicsOfNamespace (and has no HTTP API).
        (PulsarBroker::Lite, _) => pubsub_core::AdminCapabilities::NONE,
    }
}

#[async_trait]
impl PubSubBackend for PulsarBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> &Capabilities {
        &self.inner.caps
    }

    fn admin(&self) -> &dyn pubsub_core::Admin {
        self
    }

    async fn create_producer(&self, topic: &Topic, options: ProducerOptions) -> Result<Box<dyn Producer>> {
        self.inner.ensure_open()?;
        self.inner.caps.check_producer(topic, &options)?;
        self.inner.ensure_namespace(topic).await?;
        let mut builder = self.inner.client.producer().with_topic(pulsar_topic(topic));
        if let Some(name) = &options.name {
            builder = builder.with_name(name.clone());
        }
        let compression = match options.compression {
            Compression::None => None,
            other => Some(pulsar_compression(other)?),
        };
        builder = builder.with_options(pulsar::producer::ProducerOptions {
            compression,
            // A full pending queue makes a send wait (within the send
            // timeout) instead of failing with the crate's SlowDown: 1,000
            // concurrent sends, or a send_batch of 500, failed that way.
            block_queue_if_full: true,
            ..Default::default()
        });
        let producer = tokio::time::timeout(self.inner.config.timeout, builder.build())
            .await
            .map_err(|_| Error::Timeout(self.inner.config.timeout))?
            .map_err(|e| convert(format!("create producer for {topic}"), e))?;
        let producer = PulsarProducer {
            inner: self.inner.clone(),
            topic: topic.clone(),
            send_timeout: options.send_timeout.unwrap_or(self.inner.config.timeout * 3),
            producer: Mutex::new(producer),
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
        self.inner.ensure_namespace(topic).await?;
        let max_unacked = options.max_unacked;
        let consumer = PulsarConsumer::start(self.inner.clone(), topic.clone(), subscription, options).await?;
        self.inner
            .handles
            .consumer(UnackedLimit::new(consumer, max_unacked))
            .await
    }

    async fn create_reader(&self, topic: &Topic, start: Position) -> Result<Box<dyn Reader>> {
        self.inner.ensure_open()?;
        self.inner.caps.check_replay(topic)?;
        self.inner.ensure_namespace(topic).await?;
        let reader = PulsarReader::open(self.inner.clone(), topic, &start).await?;
        self.inner.handles.reader(reader).await
    }

    /// Closes every producer, consumer and reader made from it, as their
    /// own `close` would: acks sent, unacked messages given back.
    async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.handles.close_all().await
    }
}

struct PulsarProducer {
    inner: Arc<Inner>,
    topic: Topic,
    send_timeout: Duration,
    /// `pulsar::Producer::send_non_blocking` takes `&mut self`; the lock is
    /// held only to hand the message over, not while waiting for its receipt.
    producer: Mutex<pulsar::Producer<TokioExecutor>>,
    closed: AtomicBool,
}

impl fmt::Debug for PulsarProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PulsarProducer").field("topic", &self.topic).finish()
    }
}

/// The codecs of [`Capabilities::compression`], read and written by the
/// pulsar crate's `compression` feature. Snappy is raw blocks, as Pulsar's
/// other clients write and read it, through a patch of the crate (which
/// used the framed format: see patches/pulsar/PATCHED.md).
const PULSAR_CODECS: &[Compression] = &[
    Compression::Gzip,
    Compression::Lz4,
    Compression::Zstd,
    Compression::Snappy,
];

/// The pulsar crate's setting for a codec of [`PULSAR_CODECS`] (Gzip is
/// Pulsar's ZLIB), with the crate's default level.
fn pulsar_compression(c: Compression) -> Result<pulsar::compression::Compression> {
    use pulsar::compression as pc;
    Ok(match c {
        Compression::None => pc::Compression::None,
        Compression::Gzip => pc::Compression::Zlib(pc::CompressionZlib::default()),
        Compression::Lz4 => pc::Compression::Lz4(pc::CompressionLz4::default()),
        Compression::Zstd => pc::Compression::Zstd(pc::CompressionZstd::default()),
        Compression::Snappy => pc::Compression::Snappy(pc::CompressionSnappy::default()),
        other => return Err(Error::unsupported(NAME, format!("{other} compression"))),
    })
}

/// One of ours as a Pulsar message: properties as properties, the key as
/// the partition key, `deliver_after` as `deliver_at_time`.
fn to_pulsar(m: OutgoingMessage) -> pulsar::producer::Message {
    let deliver_at_time = m.deliver_after.map(|d| {
        let at = SystemTime::now() + d;
        at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64
    });
    pulsar::producer::Message {
        payload: m.payload.to_vec(),
        properties: m.properties.into_iter().collect::<HashMap<_, _>>(),
        partition_key: m.key,
        deliver_at_time,
        ..Default::default()
    }
}

impl PulsarProducer {
    fn ensure_open(&self) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "producer")?;
        self.inner.ensure_open()
    }

    /// Hands the messages to the client in order; the receipts come later.
    async fn hand_over(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<SendFuture>> {
        let mut producer = self.producer.lock().await;
        let mut receipts = Vec::with_capacity(messages.len());
        for m in messages {
            let receipt = producer
                .send_non_blocking(to_pulsar(m))
                .await
                .map_err(|e| convert(format!("send to {}", self.topic), e))?;
            receipts.push(receipt);
        }
        Ok(receipts)
    }

    /// Waits for a receipt: the broker stored the message (q1/q2) or took it (q0).
    async fn confirmed(&self, receipt: SendFuture) -> Result<MessageId> {
        let receipt = tokio::time::timeout(self.send_timeout, receipt)
            .await
            .map_err(|_| Error::Timeout(self.send_timeout))?
            .map_err(|e| convert(format!("send to {}", self.topic), e))?;
        Ok(match &receipt.message_id {
            Some(id) => message_id(id),
            None => MessageId::from_seq(receipt.sequence_id),
        })
    }
}

#[async_trait]
impl Producer for PulsarProducer {
    fn topic(&self) -> &Topic {
        &self.topic
    }

    async fn send(&self, message: OutgoingMessage) -> Result<MessageId> {
        self.ensure_open()?;
        self.inner.caps.check_message(&message)?;
        let receipt = self.hand_over(vec![message]).await?.remove(0);
        self.confirmed(receipt).await
    }

    async fn send_batch(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<MessageId>> {
        self.ensure_open()?;
        for m in &messages {
            self.inner.caps.check_message(m)?;
        }
        // All handed over first, then the receipts awaited together: one
        // round trip of latency for the batch.
        let receipts = self.hand_over(messages).await?;
        let mut ids = Vec::with_capacity(receipts.len());
        for r in receipts {
            ids.push(self.confirmed(r).await?);
        }
        Ok(ids)
    }

    async fn flush(&self) -> Result<()> {
        // `send` returns only with the broker's receipt: nothing is buffered.
        self.ensure_open()
    }

    async fn close(&self) -> Result<()> {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let mut producer = self.producer.lock().await;
            if let Err(e) = producer.close().await {
                // The broker drops the producer with the connection anyway.
                tracing::debug!(topic = %self.topic, error = %e, "closing the pulsar producer");
            }
        }
        Ok(())
    }
}
