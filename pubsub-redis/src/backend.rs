//! The Redis [`PubSubBackend`] and its producer.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pubsub_core::handles::Handles;
use pubsub_core::UnackedLimit;
use pubsub_core::{
    ensure_open, envelope, validate_subscription_name, Admin, AdminCapabilities, Capabilities, Consumer,
    ConsumerOptions, Error, MessageId, OutgoingMessage, Position, Producer, ProducerOptions, PubSubBackend, Qos,
    Reader, Result, Topic,
};
use redis::{Client, IntoConnectionInfo, RedisError};

use crate::config::RedisConfig;
use crate::conn::{Clients, Conn};
use crate::consumer::{PubSubConsumer, StreamConsumer};
use crate::fields::to_fields;
use crate::keys::TopicKeys;
use crate::replay::RedisReader;
use crate::scripts;

pub(crate) const NAME: &str = "redis";

/// Maps a client error: I/O, timeouts and dropped connections are
/// [`Error::Connection`], replies like `WRONGTYPE` are [`Error::Broker`].
pub(crate) fn map_err(what: &str, e: RedisError) -> Error {
    let message = format!("{what}: {e}");
    if e.kind() == redis::ErrorKind::AuthenticationFailed || e.code().is_some_and(|c| c == "WRONGPASS" || c == "NOAUTH")
    {
        return Error::Authentication {
            backend: NAME,
            message,
            source: Some(Box::new(e)),
        };
    }
    if e.kind() == redis::ErrorKind::InvalidClientConfig {
        // Bad TLS material or URL settings: the same every time.
        return Error::InvalidConfiguration(message);
    }
    if let Some(why) = pubsub_core::tls_failure(&e) {
        return Error::Tls {
            backend: NAME,
            message: format!("{what}: {why}"),
            source: Some(Box::new(e)),
        };
    }
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        Error::connection(NAME, message, e)
    } else {
        Error::broker(NAME, message, e)
    }
}

/// Redis as a pub/sub backend: q0 on Pub/Sub, q1/q2 on Streams with one
/// consumer group per subscription. See the crate docs for the mapping.
#[derive(Clone)]
pub struct RedisBackend {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: RedisConfig,
    /// Opens connections of their own (blocking reads, Pub/Sub).
    pub clients: Clients,
    /// The shared connection for everything that does not block.
    pub conn: Conn,
    pub caps: Capabilities,
    pub closed: AtomicBool,
    /// Every producer, consumer and reader made: closed with the backend.
    pub handles: Handles,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl RedisBackend {
    /// Connects (bounded by `config.timeout`) and reads the server limits
    /// that shape [`Capabilities`]: `proto-max-bulk-len` and whether it
    /// persists (`appendonly` or `save`).
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let shown = pubsub_core::redact_url(&config.url);
        let invalid = |e: RedisError| Error::InvalidConfiguration(format!("redis URL {shown}: {e}"));
        let no_answer = || Error::Connection {
            backend: NAME,
            message: format!("no answer from {shown} within {:?}", config.timeout),
            source: None,
        };
        let (clients, mut conn) = match config.cluster_nodes()? {
            None => {
                // TCP_NODELAY on every connection made from this client (the shared
                // one, blocking reads, Pub/Sub): redis-rs 1.x leaves it off, and
                // pipelined commands and acks then wait on Nagle (pubsub-bench
                // figures before and after in the README's benchmark section).
                let info = with_tls_scheme(&config, &config.url)
                    .into_connection_info()
                    .map_err(invalid)?;
                let tcp = info.tcp_settings().clone().set_nodelay(true);
                let client = client_for(&config, info.set_tcp_settings(tcp)).map_err(|e| match e {
                    ClientError::Config(e) => e,
                    ClientError::Redis(e) => invalid(e),
                })?;
                let cm_config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.timeout))
                    .set_response_timeout(Some(config.timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(std::time::Duration::from_secs(2));
                let conn = tokio::time::timeout(config.timeout, client.get_connection_manager_with_config(cm_config))
                    .await
                    .map_err(|_| no_answer())?
                    .map_err(|e| map_err(&format!("connect to {shown}"), e))?;
                (Clients::Single(client), Conn::Manager(conn))
            }
            Some(nodes) => {
                let clients = cluster_clients(&config, &nodes).map_err(|e| match e {
                    ClientError::Config(e) => e,
                    ClientError::Redis(e) => invalid(e),
                })?;
                let conn = tokio::time::timeout(config.timeout, clients.shared_cluster(config.timeout))
                    .await
                    .map_err(|_| no_answer())?
                    .map_err(|e| map_err(&format!("connect to {shown}"), e))?;
                (clients, conn)
            }
        };
        // A login the server refuses fails here, not at the first command.
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| map_err(&format!("connect to {shown}"), e))?;
        let server_max = config_get(&mut conn, "proto-max-bulk-len")
            .await
            .and_then(|v| v.parse::<usize>().ok());
        let appendonly = config_get(&mut conn, "appendonly").await.is_some_and(|v| v == "yes");
        let save = config_get(&mut conn, "save")
            .await
            .is_some_and(|v| !v.trim().is_empty());
        // Room for the field names next to the payload in one bulk.
        let max_payload = server_max.map_or(config.max_payload, |m| config.max_payload.min(m.saturating_sub(1024)));
        let caps = Capabilities {
            persistence: appendonly || save,
            earliest: true,
            shared: true,
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
            max_payload: Some(max_payload),
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
        Ok(RedisBackend {
            inner: Arc::new(Inner {
                config,
                clients,
                conn,
                caps,
                closed: AtomicBool::new(false),
                handles: Handles::new(),
            }),
        })
    }
}

/// `CONFIG GET name`, or `None` where CONFIG is disabled or unknown.
/// The URL to connect to: `rediss://` when TLS settings are given for a
/// `redis://` URL.
fn with_tls_scheme(config: &RedisConfig, url: &str) -> String {
    match (&config.tls, url.strip_prefix("redis://")) {
        (Some(_), Some(rest)) => format!("rediss://{rest}"),
        _ => url.to_string(),
    }
}

/// The cluster client for the seed `nodes`, and a client per node for
/// Pub/Sub, with `config.tls` and TCP_NODELAY.
fn cluster_clients(config: &RedisConfig, nodes: &[String]) -> std::result::Result<Clients, ClientError> {
    let mut infos = Vec::new();
    for node in nodes {
        let info = with_tls_scheme(config, node)
            .into_connection_info()
            .map_err(ClientError::Redis)?;
        let tcp = info.tcp_settings().clone().set_nodelay(true);
        infos.push(info.set_tcp_settings(tcp));
    }
    let node_clients = infos
        .iter()
        .map(|i| client_for(config, i.clone()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
    let mut builder = redis::cluster::ClusterClientBuilder::new(infos)
        .connection_timeout(config.timeout)
        .response_timeout(config.timeout)
        .tcp_settings(tcp);
    if let Some(certs) = tls_certificates(config)? {
        builder = builder.certs(certs);
    }
    let client = builder.build().map_err(ClientError::Redis)?;
    Ok(Clients::Cluster {
        client,
        nodes: node_clients,
    })
}

enum ClientError {
    Config(Error),
    Redis(RedisError),
}

/// A client for `info`, with the CA and client certificate of `config.tls`.
fn client_for(config: &RedisConfig, info: redis::ConnectionInfo) -> std::result::Result<Client, ClientError> {
    if config.tls.is_none() {
        if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
            pubsub_core::install_default_provider();
        }
        return Client::open(info).map_err(ClientError::Redis);
    }
    let certs = tls_certificates(config)?.expect("TLS settings are given");
    Client::build_with_tls(info, certs).map_err(ClientError::Redis)
}

/// The CA and client certificate of `config.tls`, read from their files.
fn tls_certificates(config: &RedisConfig) -> std::result::Result<Option<redis::TlsCertificates>, ClientError> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    tls.check_files(NAME).map_err(ClientError::Config)?;
    if tls.server_name.is_some() {
        return Err(ClientError::Config(Error::unsupported(
            NAME,
            "a TLS server name override (redis-rs checks the certificate against the URL's host)",
        )));
    }
    let read = |role: &str, path: &std::path::Path| pubsub_core::TlsConfig::read_pem(NAME, role, path);
    let root_cert = match &tls.ca_file {
        Some(path) => Some(read("CA file", path).map_err(ClientError::Config)?),
        None => None,
    };
    let client_tls = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("client certificate file", cert).map_err(ClientError::Config)?,
            client_key: read("client key file", key).map_err(ClientError::Config)?,
        }),
        _ => None,
    };
    pubsub_core::install_default_provider();
    Ok(Some(redis::TlsCertificates { client_tls, root_cert }))
}

async fn config_get(conn: &mut Conn, name: &str) -> Option<String> {
    let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG").arg("GET").arg(name).query_async(conn).await;
    reply.ok().and_then(|v| v.into_iter().nth(1))
}

impl Inner {
    pub(crate) fn ensure_open(&self) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "redis backend")
    }
}

#[async_trait]
impl PubSubBackend for RedisBackend {
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
        let producer = RedisProducer {
            inner: self.inner.clone(),
            topic: topic.clone(),
            keys: TopicKeys::new(topic),
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
            let consumer = PubSubConsumer::start(self.inner.clone(), topic.clone(), subscription, options).await?;
            return self.inner.handles.consumer(consumer).await;
        }
        let max_unacked = options.max_unacked;
        let consumer = StreamConsumer::start(self.inner.clone(), topic.clone(), subscription, options).await?;
        // Registered bounded, so the backend's close also ends a receive
        // waiting for a place.
        self.inner
            .handles
            .consumer(UnackedLimit::new(consumer, max_unacked))
            .await
    }

    async fn create_reader(&self, topic: &Topic, start: Position) -> Result<Box<dyn Reader>> {
        self.inner.ensure_open()?;
        self.inner.caps.check_replay(topic)?;
        let reader = RedisReader::open(self.inner.clone(), topic, &start).await?;
        self.inner.handles.reader(reader).await
    }

    /// Closes every producer, consumer and reader made from it first, as
    /// their own `close` would: acks written, unacked entries given back.
    async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.handles.close_all().await
    }
}

struct RedisProducer {
    inner: Arc<Inner>,
    topic: Topic,
    keys: TopicKeys,
    closed: AtomicBool,
}

impl fmt::Debug for RedisProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisProducer").field("topic", &self.topic).finish()
    }
}

impl RedisProducer {
    fn ensure_open(&self) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "producer")?;
        self.inner.ensure_open()
    }

    fn check(&self, m: &OutgoingMessage) -> Result<()> {
        self.inner.caps.check_message(m)?;
        if self.topic.qos() == Qos::AtMostOnce && m.deliver_after.is_some() {
            return Err(Error::unsupported(
                NAME,
                "deliver_after on q0 (Pub/Sub keeps nothing to delay)",
            ));
        }
        Ok(())
    }

    /// One message as a command: PUBLISH (q0), the publish script (q2 dedup
    /// or a delay), or a plain XADD.
    fn command(&self, m: OutgoingMessage) -> Command {
        if self.topic.qos() == Qos::AtMostOnce {
            let env = envelope::Envelope {
                key: m.key,
                properties: m.properties,
                payload: m.payload,
            };
            let mut c = redis::cmd("PUBLISH");
            c.arg(&self.keys.channel).arg(envelope::encode(&env));
            return Command::Plain(c);
        }
        let dedup = m.dedup_id.as_ref().filter(|_| self.topic.qos() == Qos::ExactlyOnce);
        let maxlen = self.inner.config.max_len.unwrap_or(0);
        if dedup.is_some() || m.deliver_after.is_some() {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let due = m.deliver_after.map_or(0, |d| now_ms + d.as_millis().max(1) as u64);
            let mut inv = scripts::PUBLISH.prepare_invoke();
            // Without a dedup id the dedup key is the bare prefix, never
            // read or written (ARGV[4] says so): every key the script names
            // shares the topic's hash tag, so it runs on one cluster slot.
            let dedup_key = match dedup {
                Some(id) => format!("{}{id}", self.keys.dedup_prefix),
                None => self.keys.dedup_prefix.clone(),
            };
            inv.key(&self.keys.stream)
                .key(dedup_key)
                .key(&self.keys.delayed)
                .arg(maxlen)
                .arg(due)
                .arg(self.inner.config.dedup_window.as_millis() as u64)
                .arg(u8::from(dedup.is_some()));
            for f in to_fields(&m) {
                inv.arg(f);
            }
            return Command::Script(inv);
        }
        let mut c = redis::cmd("XADD");
        c.arg(&self.keys.stream);
        if maxlen > 0 {
            c.arg("MAXLEN").arg("~").arg(maxlen);
        }
        c.arg("*");
        for f in to_fields(&m) {
            c.arg(f);
        }
        Command::Plain(c)
    }

    async fn run(&self, command: Command) -> Result<MessageId> {
        let mut conn = self.inner.conn.clone();
        let reply: redis::Value = match command {
            Command::Plain(c) => c.query_async(&mut conn).await,
            Command::Script(inv) => inv.invoke_async(&mut conn).await,
        }
        .map_err(|e| map_err(&format!("send to {}", self.topic), e))?;
        self.wait_replicas(&mut conn).await?;
        Ok(match reply {
            redis::Value::Int(receivers) => MessageId::from_text(format!("q0-{receivers}")),
            other => MessageId::from_text(crate::fields::text_of(&other).unwrap_or_default()),
        })
    }
}

enum Command {
    Plain(redis::Cmd),
    Script(redis::ScriptInvocation<'static>),
}

#[async_trait]
impl Producer for RedisProducer {
    fn topic(&self) -> &Topic {
        &self.topic
    }

    async fn send(&self, message: OutgoingMessage) -> Result<MessageId> {
        self.ensure_open()?;
        self.check(&message)?;
        self.run(self.command(message)).await
    }

    async fn send_batch(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<MessageId>> {
        self.ensure_open()?;
        for m in &messages {
            self.check(m)?;
        }
        // Plain adds go out as one pipeline; scripted ones one by one, in order.
        let mut ids = Vec::with_capacity(messages.len());
        let mut pipe = redis::pipe();
        let mut pending = 0;
        for m in messages {
            match self.command(m) {
                Command::Plain(c) => {
                    pipe.add_command(c);
                    pending += 1;
                }
                script => {
                    ids.extend(self.flush_pipe(&mut pipe, &mut pending).await?);
                    ids.push(self.run(script).await?);
                }
            }
        }
        ids.extend(self.flush_pipe(&mut pipe, &mut pending).await?);
        Ok(ids)
    }

    async fn flush(&self) -> Result<()> {
        // Every send has its reply before it returns; nothing is buffered.
        self.ensure_open()
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}

impl RedisProducer {
    /// With [`RedisConfig::wait_replicas`], waits until that many replicas
    /// have the writes just made (q1/q2; q0 writes nothing).
    async fn wait_replicas(&self, conn: &mut Conn) -> Result<()> {
        let Some((replicas, timeout)) = self.inner.config.wait_replicas else {
            return Ok(());
        };
        if self.topic.qos() == Qos::AtMostOnce || replicas == 0 {
            return Ok(());
        }
        let acked = conn
            .wait_replicas(&self.keys.stream, replicas, timeout)
            .await
            .map_err(|e| map_err(&format!("wait for replicas of {}", self.topic), e))?;
        if (acked as usize) < replicas {
            return Err(Error::Broker {
                backend: NAME,
                message: format!(
                    "send to {}: written, but only {acked} of {replicas} replicas had it within {timeout:?}; \
                     it may be lost if its master fails now (resend: at worst a duplicate)",
                    self.topic
                ),
                source: None,
            });
        }
        Ok(())
    }

    async fn flush_pipe(&self, pipe: &mut redis::Pipeline, pending: &mut usize) -> Result<Vec<MessageId>> {
        if *pending == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.inner.conn.clone();
        let replies: Vec<redis::Value> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| map_err(&format!("send batch to {}", self.topic), e))?;
        self.wait_replicas(&mut conn).await?;
        *pipe = redis::pipe();
        *pending = 0;
        Ok(replies
            .iter()
            .map(|v| match v {
                redis::Value::Int(n) => MessageId::from_text(format!("q0-{n}")),
                other => MessageId::from_text(crate::fields::text_of(other).unwrap_or_default()),
            })
            .collect())
    }
}
