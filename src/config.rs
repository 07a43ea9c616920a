//! Choosing and configuring a backend: from a URL, the environment, or CLI flags.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

#[cfg(test)]
use clap::Parser;
use clap::{Args, ValueEnum};
use pubsub_core::{redact_url, Error, PubSubBackend, Result, Secret, TlsConfig};

/// The backends this SDK knows, compiled in or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Default)]
pub enum BackendKind {
    /// The in-process log (cargo feature `embedded`, on by default).
    #[default]
    Embedded,
    /// Kafka through rdkafka (feature `kafka`).
    Kafka,
    /// Pulsar through the `pulsar` crate (feature `pulsar`).
    Pulsar,
    /// MQTT v5 through rumqttc (feature `mqtt`).
    Mqtt,
    /// NATS and JetStream through async-nats (feature `nats`).
    Nats,
    /// Redis Pub/Sub and Streams through redis (feature `redis`).
    Redis,
}

impl BackendKind {
    /// Every backend, in the order the README lists them.
    pub const ALL: [BackendKind; 6] = [
        BackendKind::Embedded,
        BackendKind::Kafka,
        BackendKind::Pulsar,
        BackendKind::Mqtt,
        BackendKind::Nats,
        BackendKind::Redis,
    ];

    /// The backends this build includes.
    pub fn compiled() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|k| k.is_compiled()).collect()
    }

    /// The backend used when `PUBSUB_BACKEND` is unset: `embedded` when it is
    /// compiled in, else the only backend compiled in. A build with several
    /// backends and no `embedded` still answers `embedded`, whose `connect`
    /// then says which values `PUBSUB_BACKEND` can take.
    pub fn default_for_build() -> BackendKind {
        Self::default_among(&Self::compiled())
    }

    fn default_among(compiled: &[BackendKind]) -> BackendKind {
        match compiled {
            [only] => *only,
            _ => BackendKind::Embedded,
        }
    }

    /// The lowercase name, as in `PUBSUB_BACKEND` and the cargo feature.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Embedded => "embedded",
            BackendKind::Kafka => "kafka",
            BackendKind::Pulsar => "pulsar",
            BackendKind::Mqtt => "mqtt",
            BackendKind::Nats => "nats",
            BackendKind::Redis => "redis",
        }
    }

    /// Whether this build includes the backend (its cargo feature is on).
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::Embedded => cfg!(feature = "embedded"),
            BackendKind::Kafka => cfg!(feature = "kafka"),
            BackendKind::Pulsar => cfg!(feature = "pulsar"),
            BackendKind::Mqtt => cfg!(feature = "mqtt"),
            BackendKind::Nats => cfg!(feature = "nats"),
            BackendKind::Redis => cfg!(feature = "redis"),
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = Error;

    /// Parses a lowercase backend name (`PUBSUB_BACKEND`); surrounding
    /// whitespace and case are ignored.
    fn from_str(s: &str) -> Result<Self> {
        let name = s.trim();
        Self::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                Error::InvalidConfiguration(format!(
                    "PUBSUB_BACKEND={s:?} is not a backend; expected one of {} (compiled into this build: {})",
                    names(&Self::ALL),
                    names(&Self::compiled())
                ))
            })
    }
}

/// `a, b, c`, or `none` for an empty list.
fn names(kinds: &[BackendKind]) -> String {
    if kinds.is_empty() {
        return "none".to_string();
    }
    kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything needed to connect to one backend. `Debug` never shows a
/// password, token or the password part of a URL.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendConfig {
    /// The in-process log; `data_dir: None` keeps it in memory.
    Embedded {
        /// Where q1/q2 topics are kept (`PUBSUB_EMBEDDED_DIR`).
        data_dir: Option<PathBuf>,
    },
    /// A Kafka cluster.
    Kafka {
        /// `host:port[,host:port...]` (`KAFKA_BOOTSTRAP_SERVERS`).
        bootstrap_servers: String,
        /// TLS settings (`KAFKA_TLS_*`); with them `security.protocol` is
        /// `SSL`, or `SASL_SSL` with credentials.
        tls: Option<TlsConfig>,
        /// SASL login (`KAFKA_SASL_MECHANISM`, `KAFKA_SASL_USERNAME`,
        /// `KAFKA_SASL_PASSWORD`).
        sasl: Option<KafkaSasl>,
    },
    /// A Pulsar cluster.
    Pulsar {
        /// `pulsar://host:6650` (`PULSAR_HOST`).
        url: String,
        /// Token for token authentication (`PULSAR_API_KEY`).
        api_key: Option<Secret>,
        /// Advertised listener name (`PULSAR_LISTENER`).
        listener: Option<String>,
        /// The HTTP admin API, `http://host:8080` (`PULSAR_ADMIN_URL`):
        /// with it, a topic's missing tenant and namespace are created, and
        /// the admin calls the binary protocol lacks work (see
        /// `PulsarConfig::admin_url`).
        admin_url: Option<String>,
        /// TLS settings (`pulsar+ssl://` in `PULSAR_HOST`, `PULSAR_TLS_*`);
        /// with them TLS is used (see `PulsarConfig::tls`).
        tls: Option<TlsConfig>,
    },
    /// An MQTT v5 broker.
    Mqtt {
        /// Host name (`MQTT_HOST`).
        host: String,
        /// Port (`MQTT_PORT`).
        port: u16,
        /// User name (`MQTT_USERNAME`).
        username: Option<String>,
        /// Password (`MQTT_PASSWORD`).
        password: Option<Secret>,
        /// TLS settings (`mqtts://` in `MQTT_HOST`, `MQTT_TLS_*`); `None`: plain TCP.
        tls: Option<TlsConfig>,
    },
    /// A NATS server (`NATS_URL`).
    Nats {
        /// `nats://[user:password@]host:4222`, `tls://` for TLS; a cluster's
        /// servers separated by commas, optionally followed by `?replicas=N`
        /// for the streams the SDK creates (default: 3, or fewer on a
        /// smaller cluster, 1 on a single server).
        url: String,
        /// TLS settings (`NATS_TLS_*`); with them TLS is required.
        tls: Option<TlsConfig>,
    },
    /// A Redis server (`REDIS_URL`).
    Redis {
        /// `redis://[[user]:password@]host:6379[/db]`, `rediss://` for TLS;
        /// a Redis Cluster as `redis+cluster://[[user]:password@]host1:port1,host2:port2`.
        url: String,
        /// TLS settings (`REDIS_TLS_*`); with them TLS is used.
        tls: Option<TlsConfig>,
    },
}

/// A Kafka SASL login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (`KAFKA_SASL_MECHANISM`, default `PLAIN`).
    pub mechanism: String,
    /// User name (`KAFKA_SASL_USERNAME`).
    pub username: String,
    /// Password (`KAFKA_SASL_PASSWORD`); never printed.
    pub password: Secret,
}

impl fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendConfig::Embedded { data_dir } => f.debug_struct("Embedded").field("data_dir", data_dir).finish(),
            BackendConfig::Kafka {
                bootstrap_servers,
                tls,
                sasl,
            } => f
                .debug_struct("Kafka")
                .field("bootstrap_servers", bootstrap_servers)
                .field("tls", tls)
                .field("sasl", sasl)
                .finish(),
            BackendConfig::Pulsar {
                url,
                api_key,
                listener,
                admin_url,
                tls,
            } => f
                .debug_struct("Pulsar")
                .field("url", &redact_url(url))
                .field("api_key", api_key)
                .field("listener", listener)
                .field("admin_url", &admin_url.as_deref().map(redact_url))
                .field("tls", tls)
                .finish(),
            BackendConfig::Mqtt {
                host,
                port,
                username,
                password,
                tls,
            } => f
                .debug_struct("Mqtt")
                .field("host", host)
                .field("port", port)
                .field("username", username)
                .field("password", password)
                .field("tls", tls)
                .finish(),
            BackendConfig::Nats { url, tls } => f
                .debug_struct("Nats")
                .field("url", &redact_url(url))
                .field("tls", tls)
                .finish(),
            BackendConfig::Redis { url, tls } => f
                .debug_struct("Redis")
                .field("url", &redact_url(url))
                .field("tls", tls)
                .finish(),
        }
    }
}

impl BackendConfig {
    /// Which backend this configures.
    pub fn kind(&self) -> BackendKind {
        match self {
            BackendConfig::Embedded { .. } => BackendKind::Embedded,
            BackendConfig::Kafka { .. } => BackendKind::Kafka,
            BackendConfig::Pulsar { .. } => BackendKind::Pulsar,
            BackendConfig::Mqtt { .. } => BackendKind::Mqtt,
            BackendConfig::Nats { .. } => BackendKind::Nats,
            BackendConfig::Redis { .. } => BackendKind::Redis,
        }
    }

    /// Parses a backend URL: `embedded://memory`, `embedded:///path/to/dir`,
    /// `kafka://host:9092[,host:9092]`, `pulsar://host:6650`,
    /// `mqtt://[user:password@]host[:1883]` (`mqtts://`, port 8883, for
    /// TLS), `nats://host:4222` (`tls://` for TLS),
    /// `redis://[[user]:password@]host:6379[/db]` (`rediss://` for TLS).
    ///
    /// ```
    /// use pubsub::{BackendConfig, TlsConfig};
    /// let cfg = BackendConfig::from_url("mqtts://broker.internal")?
    ///     .with_tls(TlsConfig::default().with_ca_file("/etc/ssl/ca.pem"))?;
    /// assert!(format!("{cfg:?}").contains("port: 8883"));
    /// # Ok::<(), pubsub::Error>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidConfiguration(format!("backend URL {:?}: {why}", redact_url(url)));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("expected scheme://..."))?;
        match scheme {
            "embedded" => match rest {
                "" | "memory" => Ok(BackendConfig::Embedded { data_dir: None }),
                path if path.starts_with('/') => Ok(BackendConfig::Embedded {
                    data_dir: Some(PathBuf::from(path)),
                }),
                _ => Err(bad("use embedded://memory or embedded:///absolute/path")),
            },
            "kafka" => {
                let servers = rest.trim_end_matches('/');
                if servers.is_empty() {
                    return Err(bad("no bootstrap servers"));
                }
                Ok(BackendConfig::Kafka {
                    bootstrap_servers: servers.to_string(),
                    tls: None,
                    sasl: None,
                })
            }
            "pulsar" | "pulsar+ssl" => Ok(BackendConfig::Pulsar {
                url: url.to_string(),
                api_key: None,
                listener: None,
                admin_url: None,
                tls: None,
            }),
            "mqtt" | "mqtts" => {
                let tls = (scheme == "mqtts").then(TlsConfig::default);
                let authority = rest.trim_end_matches('/');
                let (userinfo, hostport) = match authority.rsplit_once('@') {
                    Some((u, h)) => (Some(u), h),
                    None => (None, authority),
                };
                let (host, port) = match hostport.rsplit_once(':') {
                    Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("the port is not a number"))?),
                    None => (hostport, if tls.is_some() { 8883 } else { 1883 }),
                };
                if host.is_empty() {
                    return Err(bad("no host"));
                }
                let (username, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
                    Some((u, p)) => (Some(u.to_string()), (!p.is_empty()).then(|| Secret::new(p))),
                    None => (None, None),
                };
                Ok(BackendConfig::Mqtt {
                    host: host.to_string(),
                    port,
                    username,
                    password,
                    tls,
                })
            }
            "nats" | "tls" => Ok(BackendConfig::Nats {
                url: url.to_string(),
                tls: None,
            }),
            "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => Ok(BackendConfig::Redis {
                url: url.to_string(),
                tls: None,
            }),
            other => Err(bad(&format!(
                "unknown scheme {other:?}; expected embedded, kafka, pulsar, mqtt, nats or redis"
            ))),
        }
    }

    /// The same configuration, connecting over TLS with `tls` (a CA file,
    /// a client certificate, a server name): every broker backend; the
    /// embedded one answers [`Error::Unsupported`]. Settings a backend
    /// cannot honour (a server name on Kafka, Pulsar and Redis) are refused
    /// by `connect`.
    pub fn with_tls(mut self, tls: TlsConfig) -> Result<Self> {
        match &mut self {
            BackendConfig::Pulsar { tls: t, .. }
            | BackendConfig::Mqtt { tls: t, .. }
            | BackendConfig::Nats { tls: t, .. }
            | BackendConfig::Redis { tls: t, .. }
            | BackendConfig::Kafka { tls: t, .. } => {
                *t = Some(tls);
                Ok(self)
            }
            other => Err(Error::unsupported(other.kind().as_str(), "TLS (it runs in process)")),
        }
    }

    /// The same Kafka configuration, logging in with SASL (`mechanism`:
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`). Other backends take
    /// credentials in their URL and answer [`Error::Unsupported`].
    ///
    /// ```
    /// use pubsub::{BackendConfig, Secret, TlsConfig};
    /// let cfg = BackendConfig::from_url("kafka://kafka.internal:9093")?
    ///     .with_tls(TlsConfig::default().with_ca_file("/etc/ssl/kafka-ca.pem"))?
    ///     .with_sasl("SCRAM-SHA-512", "app", Secret::new("pw"))?;
    /// assert!(!format!("{cfg:?}").contains("\"pw\""));
    /// # Ok::<(), pubsub::Error>(())
    /// ```
    pub fn with_sasl(mut self, mechanism: &str, username: &str, password: Secret) -> Result<Self> {
        match &mut self {
            BackendConfig::Kafka { sasl, .. } => {
                *sasl = Some(KafkaSasl {
                    mechanism: mechanism.to_string(),
                    username: username.to_string(),
                    password,
                });
                Ok(self)
            }
            other => Err(Error::unsupported(
                other.kind().as_str(),
                "SASL settings (put the user and password in the URL)",
            )),
        }
    }

    /// Connects to the configured backend.
    ///
    /// Fails with [`Error::InvalidConfiguration`] naming the cargo feature
    /// when the backend is not compiled in.
    pub async fn connect(&self) -> Result<Arc<dyn PubSubBackend>> {
        let kind = self.kind();
        if !kind.is_compiled() {
            let compiled = BackendKind::compiled();
            let mut msg = format!(
                "backend \"{kind}\" is not compiled in; enable the cargo feature \"{kind}\" of the pubsub \
                 dependency (`features = [\"{kind}\"]` on `pubsub` in Cargo.toml)"
            );
            if !compiled.is_empty() {
                msg.push_str(&format!(
                    ", or set PUBSUB_BACKEND to a backend this build has: {}",
                    names(&compiled)
                ));
            }
            return Err(Error::InvalidConfiguration(msg));
        }
        self.check()?;
        #[cfg(any(feature = "kafka", feature = "pulsar"))]
        probe::refused_fast(self).await?;
        match self {
            #[cfg(feature = "embedded")]
            BackendConfig::Embedded { data_dir } => {
                let config = match data_dir {
                    Some(dir) => pubsub_embedded::EmbeddedConfig::data_dir(dir),
                    None => pubsub_embedded::EmbeddedConfig::memory(),
                };
                Ok(Arc::new(pubsub_embedded::EmbeddedBackend::open(config)?))
            }
            #[cfg(feature = "kafka")]
            BackendConfig::Kafka {
                bootstrap_servers,
                tls,
                sasl,
            } => {
                let mut config = pubsub_kafka::KafkaConfig::new(bootstrap_servers.clone());
                if let Some(tls) = tls {
                    config = config.with_tls(tls.clone());
                }
                if let Some(sasl) = sasl {
                    config = config
                        .with_sasl(sasl.username.clone(), sasl.password.clone())
                        .with_sasl_mechanism(sasl.mechanism.parse()?);
                }
                Ok(Arc::new(pubsub_kafka::KafkaBackend::connect(config).await?))
            }
            #[cfg(feature = "pulsar")]
            BackendConfig::Pulsar {
                url,
                api_key,
                listener,
                admin_url,
                tls,
            } => {
                let mut config = pubsub_pulsar::PulsarConfig::new(url.clone());
                if let Some(tls) = tls {
                    config = config.with_tls(tls.clone());
                }
                if let Some(admin) = admin_url {
                    config = config.with_admin_url(admin.clone());
                }
                if let Some(token) = api_key {
                    config = config.with_token(token.clone());
                }
                if let Some(name) = listener {
                    config = config.with_listener(name.clone());
                }
                Ok(Arc::new(pubsub_pulsar::PulsarBackend::connect(config).await?))
            }
            #[cfg(feature = "mqtt")]
            BackendConfig::Mqtt {
                host,
                port,
                username,
                password,
                tls,
            } => {
                let mut config = pubsub_mqtt::MqttConfig::new(host.clone(), *port);
                if let Some(user) = username {
                    config = config.with_credentials(user.clone(), password.clone().unwrap_or_else(|| Secret::new("")));
                }
                if let Some(tls) = tls {
                    config = config.with_tls(tls.clone());
                }
                Ok(Arc::new(pubsub_mqtt::MqttBackend::connect(config).await?))
            }
            #[cfg(feature = "nats")]
            BackendConfig::Nats { url, tls } => {
                let mut config = pubsub_nats::NatsConfig::new(url.clone());
                if let Some(tls) = tls {
                    config = config.with_tls(tls.clone());
                }
                Ok(Arc::new(pubsub_nats::NatsBackend::connect(config).await?))
            }
            #[cfg(feature = "redis")]
            BackendConfig::Redis { url, tls } => {
                let mut config = pubsub_redis::RedisConfig::new(url.clone());
                if let Some(tls) = tls {
                    config = config.with_tls(tls.clone());
                }
                match pubsub_redis::RedisBackend::connect(config).await {
                    Ok(backend) => Ok(Arc::new(backend)),
                    // The redis crate reports another protocol's greeting
                    // as "Parse error at 1 Unexpected `78`".
                    Err(e) if e.to_string().contains("Parse error") => Err(Error::Connection {
                        backend: "redis",
                        message: format!(
                            "connect to {}: the server there does not speak Redis (its answer is not a Redis reply)",
                            redact_url(url)
                        ),
                        source: Some(Box::new(e)),
                    }),
                    Err(e) => Err(e),
                }
            }
            #[allow(unreachable_patterns)]
            _ => unreachable!("is_compiled() checked above"),
        }
    }
}

impl BackendConfig {
    /// Refuses settings that cannot work before anything is connected,
    /// naming the setting, its value (without a password) and what is allowed.
    fn check(&self) -> Result<()> {
        match self {
            BackendConfig::Embedded { .. } => Ok(()),
            BackendConfig::Kafka {
                bootstrap_servers,
                sasl,
                ..
            } => {
                // An unknown or unsupported mechanism is refused before
                // anything is connected.
                #[cfg(feature = "kafka")]
                if let Some(sasl) = sasl {
                    sasl.mechanism.parse::<pubsub_kafka::SaslMechanism>()?;
                }
                #[cfg(not(feature = "kafka"))]
                let _ = sasl;
                check_kafka("Kafka bootstrap servers", bootstrap_servers)
            }
            BackendConfig::Pulsar { url, .. } => check_pulsar("Pulsar URL", url),
            BackendConfig::Mqtt { host, port, .. } => {
                check_mqtt_host("MQTT host", host)?;
                check_port("MQTT port", &port.to_string())
            }
            BackendConfig::Nats { url, .. } => check_nats("NATS URL", url),
            BackendConfig::Redis { url, .. } => check_redis("Redis URL", url),
        }
    }
}

/// `NAME="value"` for an environment variable, `setting "value"` otherwise.
fn show(label: &str, value: &str) -> String {
    let value = redact_url(value);
    if label.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
        format!("{label}={value:?}")
    } else {
        format!("{label} {value:?}")
    }
}

fn invalid(label: &str, value: &str, why: impl fmt::Display) -> Error {
    Error::InvalidConfiguration(format!("{}: {why}", show(label, value)))
}

/// A port: a number from 1 to 65535.
fn check_port(label: &str, value: &str) -> Result<()> {
    match value.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(invalid(label, value, "not a port; expected a number from 1 to 65535")),
    }
}

/// Splits `scheme://rest` into the scheme and the authority (`[user@]host[:port]`,
/// up to the first `/` or `?`); no scheme gives `None` and the whole value.
fn split_url(value: &str) -> (Option<&str>, &str) {
    let (scheme, rest) = match value.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, value),
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    (scheme, &rest[..end])
}

/// `[user[:password]@]host[:port]` with a host and, if there is one, a valid port.
/// Gives whether a port was there.
fn check_authority(label: &str, value: &str, authority: &str, expected: &str) -> Result<bool> {
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) if p.starts_with(':') => (h, Some(&p[1..])),
            _ => {
                return Err(invalid(
                    label,
                    value,
                    format!("a bracketed IPv6 host is not closed; {expected}"),
                ))
            }
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.trim().is_empty() {
        return Err(invalid(label, value, format!("no host; {expected}")));
    }
    if host.contains(char::is_whitespace) || host.contains(':') && !hostport.starts_with('[') {
        return Err(invalid(
            label,
            value,
            format!("{host:?} is not a host name; {expected}"),
        ));
    }
    match port {
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(true),
            _ => Err(invalid(
                label,
                value,
                format!("the port {p:?} is not a number from 1 to 65535; {expected}"),
            )),
        },
        None => Ok(false),
    }
}

/// The value without its `?broker=<name>` suffix (which the adapter reads).
fn without_broker(value: &str) -> &str {
    value.rsplit_once("?broker=").map_or(value, |(base, _)| base)
}

fn check_kafka(label: &str, value: &str) -> Result<()> {
    const EXPECTED: &str = "expected host:port[,host:port...] (no scheme), optionally followed by \
                            ?replication=N (topics' replication factor) and ?broker=<name>, joined by &";
    let (servers, query) = value.split_once('?').unwrap_or((value, ""));
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("broker", _)) => {}
            Some(("replication", n)) if n.parse::<i32>().is_ok_and(|n| n >= 1) => {}
            _ => return Err(invalid(label, value, format!("bad parameter {pair:?}; {EXPECTED}"))),
        }
    }
    if servers.contains("://") {
        return Err(invalid(label, value, format!("a URL is not a server list; {EXPECTED}")));
    }
    for server in servers.split(',') {
        check_authority(label, value, server.trim(), EXPECTED)?;
    }
    Ok(())
}

fn check_pulsar(label: &str, value: &str) -> Result<()> {
    const EXPECTED: &str =
        "expected pulsar://host:6650, pulsar+ssl://host:6651 or host:port, optionally followed by ?broker=<name>";
    let url = without_broker(value);
    match split_url(url) {
        (Some("pulsar" | "pulsar+ssl") | None, authority) => {
            check_authority(label, value, authority, EXPECTED).map(drop)
        }
        (Some(other), _) => Err(invalid(
            label,
            value,
            format!("the scheme {other}:// is not Pulsar's; {EXPECTED}"),
        )),
    }
}

fn check_mqtt_host(label: &str, value: &str) -> Result<()> {
    const EXPECTED: &str = "expected a host name or address (the port goes in MQTT_PORT), or mqtt://host:port";
    if value.contains("://")
        || value.contains('/')
        || value.contains('@')
        || value.contains(':') && !value.starts_with('[')
    {
        return Err(invalid(label, value, format!("not a host name; {EXPECTED}")));
    }
    check_authority(label, value, value, EXPECTED).map(drop)
}

fn check_nats(label: &str, value: &str) -> Result<()> {
    const EXPECTED: &str = "expected nats://host:4222 (tls://, ws:// and wss:// too; several separated by commas)";
    for url in value.split(',') {
        match split_url(url.trim()) {
            (Some("nats" | "tls" | "ws" | "wss") | None, authority) => {
                check_authority(label, value, authority, EXPECTED)?;
            }
            (Some(other), _) => {
                return Err(invalid(
                    label,
                    value,
                    format!("the scheme {other}:// is not NATS's; {EXPECTED}"),
                ))
            }
        }
    }
    Ok(())
}

fn check_redis(label: &str, value: &str) -> Result<()> {
    const EXPECTED: &str = "expected redis://[:password@]host[:6379][/db] or rediss:// (TLS), or a Redis Cluster's \
                            redis+cluster://[:password@]host1:port1,host2:port2 (rediss+cluster:// for TLS)";
    match split_url(value) {
        // A node list: a Redis Cluster's seed nodes, the credentials before them.
        (Some("redis" | "rediss" | "redis+cluster" | "rediss+cluster"), authority) => {
            let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            for host in hosts.split(',') {
                check_authority(label, value, host.trim(), EXPECTED)?;
            }
            Ok(())
        }
        (Some("redis+unix" | "unix"), _) => Ok(()),
        (Some(other), _) => Err(invalid(
            label,
            value,
            format!("the scheme {other}:// is not Redis's; {EXPECTED}"),
        )),
        (None, _) => Err(invalid(label, value, format!("no scheme; {EXPECTED}"))),
    }
}

/// Command-line flags (each also read from its environment variable) that
/// choose and configure the backend. Flatten it into your own clap parser:
///
/// ```
/// use clap::Parser;
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     pubsub: pubsub::PubSubArgs,
///     /// The topic this service reads.
///     #[arg(long, env = "INPUT_TOPIC", default_value = "q1/tg/flow/input")]
///     input_topic: String,
/// }
///
/// let cli = Cli::parse_from(["svc", "--pubsub-backend", "embedded"]);
/// assert_eq!(cli.pubsub.pubsub_backend, pubsub::BackendKind::Embedded);
/// ```
// `about`/`long_about` are cleared so that a program flattening this struct
// shows its own description in `--help`, not this doc comment.
#[derive(Args, Clone, PartialEq, Eq)]
#[command(about = None, long_about = None)]
pub struct PubSubArgs {
    /// Which backend to use: embedded, kafka, pulsar, mqtt, nats or redis (default: embedded, or
    /// the only backend compiled in).
    #[arg(
        long,
        env = "PUBSUB_BACKEND",
        value_parser = parse_backend,
        default_value_t = BackendKind::default_for_build(),
        global = true,
        help_heading = HEADING
    )]
    pub pubsub_backend: BackendKind,
    /// Embedded backend: keep q1/q2 topics in this directory (default: memory only).
    #[arg(
        long = "pubsub-embedded-dir",
        alias = "embedded-dir",
        value_name = "PUBSUB_EMBEDDED_DIR",
        value_parser = parse_dir,
        env = "PUBSUB_EMBEDDED_DIR",
        global = true,
        help_heading = HEADING
    )]
    pub embedded_dir: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "localhost:9092",
        global = true,
        help_heading = HEADING
    )]
    pub kafka_bootstrap_servers: String,
    /// Kafka SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (default PLAIN).
    #[arg(long, env = "KAFKA_SASL_MECHANISM", global = true, help_heading = HEADING)]
    pub kafka_sasl_mechanism: Option<String>,
    /// Kafka SASL user name (turns SASL on).
    #[arg(long, env = "KAFKA_SASL_USERNAME", global = true, help_heading = HEADING)]
    pub kafka_sasl_username: Option<String>,
    /// Kafka SASL password (never printed).
    #[arg(long, env = "KAFKA_SASL_PASSWORD", hide_env_values = true, global = true, help_heading = HEADING)]
    pub kafka_sasl_password: Option<Secret>,
    /// Pulsar service URL.
    #[arg(long, env = "PULSAR_HOST", default_value = "pulsar://localhost:6650", global = true, help_heading = HEADING)]
    pub pulsar_host: String,
    /// Pulsar token (never printed).
    #[arg(long, env = "PULSAR_API_KEY", hide_env_values = true, global = true, help_heading = HEADING)]
    pub pulsar_api_key: Option<Secret>,
    /// Pulsar listener name.
    #[arg(long, env = "PULSAR_LISTENER", global = true, help_heading = HEADING)]
    pub pulsar_listener: Option<String>,
    /// Pulsar HTTP admin API (http://host:8080): creates missing tenants and namespaces.
    #[arg(long, env = "PULSAR_ADMIN_URL", global = true, help_heading = HEADING)]
    pub pulsar_admin_url: Option<String>,
    /// MQTT broker host (or mqtt://host:port).
    #[arg(long, env = "MQTT_HOST", default_value = "localhost", global = true, help_heading = HEADING)]
    pub mqtt_host: String,
    /// MQTT broker port.
    #[arg(
        long,
        env = "MQTT_PORT",
        default_value_t = 1883,
        value_parser = parse_mqtt_port,
        global = true,
        help_heading = HEADING
    )]
    pub mqtt_port: u16,
    /// MQTT user name.
    #[arg(long, env = "MQTT_USERNAME", global = true, help_heading = HEADING)]
    pub mqtt_username: Option<String>,
    /// MQTT password (never printed).
    #[arg(long, env = "MQTT_PASSWORD", hide_env_values = true, global = true, help_heading = HEADING)]
    pub mqtt_password: Option<Secret>,
    /// NATS server URL; a cluster's servers separated by commas, optionally
    /// followed by `?replicas=N` for the streams the SDK creates.
    #[arg(long, env = "NATS_URL", default_value = "nats://localhost:4222", global = true, help_heading = HEADING)]
    pub nats_url: String,
    /// Redis URL (a password in it is never printed).
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://localhost:6379",
        hide_env_values = true,
        global = true,
        help_heading = HEADING
    )]
    pub redis_url: String,
    /// Kafka TLS settings (`KAFKA_TLS_*`, as for MQTT; no server name).
    #[command(flatten)]
    pub kafka_tls: KafkaTlsArgs,
    /// MQTT TLS settings (`MQTT_TLS_CA_FILE`, `MQTT_TLS_CERT_FILE`,
    /// `MQTT_TLS_KEY_FILE`, `MQTT_TLS_SERVER_NAME`).
    #[command(flatten)]
    pub mqtt_tls: MqttTlsArgs,
    /// NATS TLS settings (`NATS_TLS_*`, as for MQTT).
    #[command(flatten)]
    pub nats_tls: NatsTlsArgs,
    /// Redis TLS settings (`REDIS_TLS_*`, as for MQTT; no server name).
    #[command(flatten)]
    pub redis_tls: RedisTlsArgs,
    /// Pulsar TLS settings (`PULSAR_TLS_*`, as for MQTT; no server name).
    #[command(flatten)]
    pub pulsar_tls: PulsarTlsArgs,
}

/// The TLS flags and variables of one backend: `--{backend}-tls-ca-file`
/// (`{BACKEND}_TLS_CA_FILE`), `-cert-file`, `-key-file`, `-server-name`.
/// Any of them set turns TLS on for that backend.
macro_rules! tls_args {
    ($name:ident, $doc:literal, $flag:literal, $ca:literal, $cert:literal, $key:literal, $sni:literal) => {
        #[doc = $doc]
        #[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
        pub struct $name {
            /// PEM file of the CA certificates to trust (default: the system's).
            #[arg(id = concat!($flag, "-tls-ca-file"), long = concat!($flag, "-tls-ca-file"), env = $ca, global = true, help_heading = HEADING)]
            pub ca_file: Option<PathBuf>,
            /// PEM file of the client certificate (mutual TLS).
            #[arg(id = concat!($flag, "-tls-cert-file"), long = concat!($flag, "-tls-cert-file"), env = $cert, global = true, help_heading = HEADING)]
            pub cert_file: Option<PathBuf>,
            /// PEM file of the client certificate's private key.
            #[arg(id = concat!($flag, "-tls-key-file"), long = concat!($flag, "-tls-key-file"), env = $key, global = true, help_heading = HEADING)]
            pub key_file: Option<PathBuf>,
            /// The name the server's certificate must carry, if not the host's.
            #[arg(id = concat!($flag, "-tls-server-name"), long = concat!($flag, "-tls-server-name"), env = $sni, global = true, help_heading = HEADING)]
            pub server_name: Option<String>,
        }

        impl $name {
            /// The TLS settings, or `None` when no flag or variable is set.
            pub fn config(&self) -> Option<TlsConfig> {
                let path = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
                let mut tls = TlsConfig::default();
                tls.ca_file = path(&self.ca_file);
                tls.cert_file = path(&self.cert_file);
                tls.key_file = path(&self.key_file);
                tls.server_name = self.server_name.clone().filter(|n| !n.trim().is_empty());
                (tls != TlsConfig::default()).then_some(tls)
            }

            fn from_env(var: impl Fn(&str) -> Result<Option<String>>) -> Result<Self> {
                Ok($name {
                    ca_file: var($ca)?.map(PathBuf::from),
                    cert_file: var($cert)?.map(PathBuf::from),
                    key_file: var($key)?.map(PathBuf::from),
                    server_name: var($sni)?,
                })
            }
        }
    };
}

tls_args!(
    KafkaTlsArgs,
    "Kafka's TLS flags: `--kafka-tls-ca-file` (`KAFKA_TLS_CA_FILE`) and the like.",
    "kafka",
    "KAFKA_TLS_CA_FILE",
    "KAFKA_TLS_CERT_FILE",
    "KAFKA_TLS_KEY_FILE",
    "KAFKA_TLS_SERVER_NAME"
);
tls_args!(
    MqttTlsArgs,
    "MQTT's TLS flags: `--mqtt-tls-ca-file` (`MQTT_TLS_CA_FILE`) and the like.",
    "mqtt",
    "MQTT_TLS_CA_FILE",
    "MQTT_TLS_CERT_FILE",
    "MQTT_TLS_KEY_FILE",
    "MQTT_TLS_SERVER_NAME"
);
tls_args!(
    NatsTlsArgs,
    "NATS's TLS flags: `--nats-tls-ca-file` (`NATS_TLS_CA_FILE`) and the like.",
    "nats",
    "NATS_TLS_CA_FILE",
    "NATS_TLS_CERT_FILE",
    "NATS_TLS_KEY_FILE",
    "NATS_TLS_SERVER_NAME"
);
tls_args!(
    RedisTlsArgs,
    "Redis's TLS flags: `--redis-tls-ca-file` (`REDIS_TLS_CA_FILE`) and the like.",
    "redis",
    "REDIS_TLS_CA_FILE",
    "REDIS_TLS_CERT_FILE",
    "REDIS_TLS_KEY_FILE",
    "REDIS_TLS_SERVER_NAME"
);
tls_args!(
    PulsarTlsArgs,
    "Pulsar's TLS flags: `--pulsar-tls-ca-file` (`PULSAR_TLS_CA_FILE`) and the like.",
    "pulsar",
    "PULSAR_TLS_CA_FILE",
    "PULSAR_TLS_CERT_FILE",
    "PULSAR_TLS_KEY_FILE",
    "PULSAR_TLS_SERVER_NAME"
);

/// The `--help` section of the backend flags.
const HEADING: &str = "Backend (each flag also read from its variable)";

// An empty variable counts as unset, in flags read from the environment too.
fn parse_backend(s: &str) -> std::result::Result<BackendKind, String> {
    if s.trim().is_empty() {
        return Ok(BackendKind::default_for_build());
    }
    s.parse().map_err(|e: Error| match e {
        Error::InvalidConfiguration(m) => m,
        other => other.to_string(),
    })
}

fn parse_dir(s: &str) -> std::result::Result<PathBuf, String> {
    // Empty: unset (`raw_config` drops an empty path).
    Ok(PathBuf::from(s))
}

fn parse_mqtt_port(s: &str) -> std::result::Result<u16, String> {
    if s.trim().is_empty() {
        return Ok(1883);
    }
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err("MQTT_PORT / --mqtt-port is a number from 1 to 65535".to_string()),
    }
}

impl fmt::Debug for PubSubArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PubSubArgs")
            .field("backend", &self.pubsub_backend)
            .field("config", &self.config())
            .finish()
    }
}

#[cfg(test)]
#[derive(Parser)]
struct EnvOnly {
    #[command(flatten)]
    args: PubSubArgs,
}

impl PubSubArgs {
    /// Reads every setting from the environment (defaults where unset; an
    /// empty variable counts as unset). A value that cannot be used is
    /// [`Error::InvalidConfiguration`] naming the variable, the value and
    /// what is allowed.
    pub fn from_env() -> Result<Self> {
        fn var(name: &str) -> Result<Option<String>> {
            match std::env::var(name) {
                Ok(v) if v.trim().is_empty() => Ok(None),
                Ok(v) => Ok(Some(v)),
                Err(std::env::VarError::NotPresent) => Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(Error::InvalidConfiguration(format!("{name} is not valid UTF-8")))
                }
            }
        }
        // Surrounding whitespace is a copy-paste accident except in secrets.
        let text = |name: &str| -> Result<Option<String>> { Ok(var(name)?.map(|v| v.trim().to_string())) };
        let pubsub_backend = match text("PUBSUB_BACKEND")? {
            Some(v) => v.parse()?,
            None => BackendKind::default_for_build(),
        };
        let mqtt_port = match text("MQTT_PORT")? {
            Some(v) => {
                check_port("MQTT_PORT", &v)?;
                v.parse().expect("checked")
            }
            None => 1883,
        };
        Ok(PubSubArgs {
            pubsub_backend,
            embedded_dir: text("PUBSUB_EMBEDDED_DIR")?.map(PathBuf::from),
            kafka_bootstrap_servers: text("KAFKA_BOOTSTRAP_SERVERS")?.unwrap_or_else(|| "localhost:9092".into()),
            pulsar_host: text("PULSAR_HOST")?.unwrap_or_else(|| "pulsar://localhost:6650".into()),
            pulsar_api_key: var("PULSAR_API_KEY")?.map(Secret::new),
            pulsar_listener: text("PULSAR_LISTENER")?,
            pulsar_admin_url: text("PULSAR_ADMIN_URL")?,
            mqtt_host: text("MQTT_HOST")?.unwrap_or_else(|| "localhost".into()),
            mqtt_port,
            mqtt_username: text("MQTT_USERNAME")?,
            mqtt_password: var("MQTT_PASSWORD")?.map(Secret::new),
            nats_url: text("NATS_URL")?.unwrap_or_else(|| "nats://localhost:4222".into()),
            redis_url: text("REDIS_URL")?.unwrap_or_else(|| "redis://localhost:6379".into()),
            kafka_sasl_mechanism: text("KAFKA_SASL_MECHANISM")?,
            kafka_sasl_username: text("KAFKA_SASL_USERNAME")?,
            kafka_sasl_password: var("KAFKA_SASL_PASSWORD")?.map(Secret::new),
            kafka_tls: KafkaTlsArgs::from_env(text)?,
            mqtt_tls: MqttTlsArgs::from_env(text)?,
            nats_tls: NatsTlsArgs::from_env(text)?,
            redis_tls: RedisTlsArgs::from_env(text)?,
            pulsar_tls: PulsarTlsArgs::from_env(text)?,
        })
    }

    /// The configuration of the chosen backend, checked: a value that
    /// cannot work is [`Error::InvalidConfiguration`] naming its variable.
    /// `MQTT_HOST` may be a URL (`mqtt://[user:password@]host[:port]`) or
    /// `host:port`; its port then takes the place of `MQTT_PORT`.
    pub fn checked_config(&self) -> Result<BackendConfig> {
        let config = self.raw_config();
        match &config {
            BackendConfig::Kafka { bootstrap_servers, .. } => {
                check_kafka("KAFKA_BOOTSTRAP_SERVERS", bootstrap_servers)?;
                self.check_kafka_sasl()?;
            }
            BackendConfig::Pulsar { url, .. } => check_pulsar("PULSAR_HOST", url)?,
            BackendConfig::Mqtt { host, .. } => return self.mqtt_config(host, config.clone()),
            BackendConfig::Nats { url, .. } => check_nats("NATS_URL", url)?,
            BackendConfig::Redis { url, .. } => check_redis("REDIS_URL", url)?,
            BackendConfig::Embedded { .. } => {}
        }
        Ok(config)
    }

    /// The `KAFKA_SASL_*` variables: all three make sense only together
    /// with a user name, a user name needs a password, and the mechanism
    /// must be one librdkafka does here.
    fn check_kafka_sasl(&self) -> Result<()> {
        let set = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
        let user = set(&self.kafka_sasl_username);
        let password = self
            .kafka_sasl_password
            .as_ref()
            .is_some_and(|p| !p.expose().is_empty());
        if !user && password {
            return Err(Error::InvalidConfiguration(
                "KAFKA_SASL_PASSWORD is set but KAFKA_SASL_USERNAME is not; set both for a SASL login".into(),
            ));
        }
        if !user && set(&self.kafka_sasl_mechanism) {
            return Err(Error::InvalidConfiguration(
                "KAFKA_SASL_MECHANISM is set but KAFKA_SASL_USERNAME is not; set it and KAFKA_SASL_PASSWORD".into(),
            ));
        }
        if user && !password {
            return Err(Error::InvalidConfiguration(
                "KAFKA_SASL_USERNAME is set but KAFKA_SASL_PASSWORD is not".into(),
            ));
        }
        #[cfg(feature = "kafka")]
        if let Some(mechanism) = self.kafka_sasl_mechanism.as_deref().filter(|m| !m.trim().is_empty()) {
            mechanism.parse::<pubsub_kafka::SaslMechanism>().map_err(|e| match e {
                Error::InvalidConfiguration(why) => invalid("KAFKA_SASL_MECHANISM", mechanism, why),
                other => other,
            })?;
        }
        Ok(())
    }

    /// `MQTT_HOST` as a host, `host:port` or `mqtt://` URL, with `MQTT_PORT`.
    fn mqtt_config(&self, value: &str, plain: BackendConfig) -> Result<BackendConfig> {
        const EXPECTED: &str =
            "expected a host name (with MQTT_PORT), host:port or mqtt://[user:password@]host[:port] (mqtts:// for TLS)";
        let (scheme, authority) = split_url(value);
        let is_host_port = scheme.is_none() && value.matches(':').count() == 1;
        if scheme.is_none() && !is_host_port {
            check_mqtt_host("MQTT_HOST", value)?;
            return Ok(plain);
        }
        let BackendConfig::Mqtt {
            username: plain_user,
            password: plain_password,
            tls: plain_tls,
            ..
        } = plain
        else {
            unreachable!("an MQTT configuration")
        };
        let url_scheme = match scheme {
            Some("mqtts" | "ssl") => "mqtts",
            _ => "mqtt",
        };
        match scheme {
            Some("mqtt" | "tcp" | "mqtts" | "ssl") | None => {}
            Some(other) => {
                return Err(invalid(
                    "MQTT_HOST",
                    value,
                    format!("the scheme {other}:// is not supported; {EXPECTED}"),
                ))
            }
        }
        let has_port = check_authority("MQTT_HOST", value, authority, EXPECTED)?;
        let Ok(BackendConfig::Mqtt {
            host,
            port,
            username,
            password,
            tls,
        }) = BackendConfig::from_url(&format!("{url_scheme}://{authority}"))
        else {
            return Err(invalid("MQTT_HOST", value, EXPECTED));
        };
        if has_port && self.mqtt_port != 1883 && self.mqtt_port != port {
            return Err(invalid(
                "MQTT_HOST",
                value,
                format!(
                    "its port {port} and MQTT_PORT={} differ; set the port in one place",
                    self.mqtt_port
                ),
            ));
        }
        // mqtts:// without a port: 8883, unless MQTT_PORT says otherwise.
        let port = match (has_port, url_scheme, self.mqtt_port) {
            (true, _, _) => port,
            (false, "mqtts", 1883) => 8883,
            (false, _, configured) => configured,
        };
        Ok(BackendConfig::Mqtt {
            host,
            port,
            username: plain_user.or(username),
            password: plain_password.or(password),
            tls: plain_tls.or(tls),
        })
    }

    /// The configuration of the chosen backend (see
    /// [`checked_config`](Self::checked_config); values it refuses are
    /// passed on as they are here).
    pub fn config(&self) -> BackendConfig {
        self.checked_config().unwrap_or_else(|_| self.raw_config())
    }

    fn raw_config(&self) -> BackendConfig {
        // An empty value (a variable set to "") counts as unset.
        let or = |v: &str, default: &str| {
            if v.trim().is_empty() {
                default.to_string()
            } else {
                v.trim().to_string()
            }
        };
        let some = |v: &Option<String>| v.as_ref().filter(|v| !v.trim().is_empty()).cloned();
        match self.pubsub_backend {
            BackendKind::Embedded => BackendConfig::Embedded {
                data_dir: self.embedded_dir.clone().filter(|d| !d.as_os_str().is_empty()),
            },
            BackendKind::Kafka => BackendConfig::Kafka {
                bootstrap_servers: or(&self.kafka_bootstrap_servers, "localhost:9092"),
                tls: self.kafka_tls.config(),
                sasl: some(&self.kafka_sasl_username).map(|username| KafkaSasl {
                    mechanism: some(&self.kafka_sasl_mechanism).unwrap_or_else(|| "PLAIN".into()),
                    username,
                    password: self.kafka_sasl_password.clone().unwrap_or_else(|| Secret::new("")),
                }),
            },
            BackendKind::Pulsar => BackendConfig::Pulsar {
                url: or(&self.pulsar_host, "pulsar://localhost:6650"),
                api_key: self.pulsar_api_key.clone().filter(|k| !k.expose().is_empty()),
                listener: some(&self.pulsar_listener),
                admin_url: some(&self.pulsar_admin_url),
                tls: self.pulsar_tls.config(),
            },
            BackendKind::Mqtt => BackendConfig::Mqtt {
                host: or(&self.mqtt_host, "localhost"),
                port: self.mqtt_port,
                username: some(&self.mqtt_username),
                password: self.mqtt_password.clone().filter(|p| !p.expose().is_empty()),
                tls: self.mqtt_tls.config(),
            },
            BackendKind::Nats => BackendConfig::Nats {
                url: or(&self.nats_url, "nats://localhost:4222"),
                tls: self.nats_tls.config(),
            },
            BackendKind::Redis => BackendConfig::Redis {
                url: or(&self.redis_url, "redis://localhost:6379"),
                tls: self.redis_tls.config(),
            },
        }
    }

    /// Connects to the chosen backend.
    pub async fn connect(&self) -> Result<Arc<dyn PubSubBackend>> {
        self.checked_config()?.connect().await
    }
}

/// Kafka and Pulsar clients retry a refused connection until their own
/// timeout (10 s); Redis, NATS and MQTT report it at once. A TCP connect to
/// each address first makes a refused port fail as fast on every backend.
#[cfg(any(feature = "kafka", feature = "pulsar"))]
mod probe {
    use std::io::ErrorKind;
    use std::time::Duration;

    use super::{split_url, without_broker, BackendConfig};
    use pubsub_core::{redact_url, Error, Result};

    /// `Error::Connection` when every address of the configured servers
    /// refuses a TCP connection; anything else (an answer, a timeout, a
    /// name that does not resolve) is left to the client library.
    pub(super) async fn refused_fast(config: &BackendConfig) -> Result<()> {
        let (backend, shown, addrs): (&'static str, String, Vec<String>) = match config {
            #[cfg(feature = "kafka")]
            BackendConfig::Kafka { bootstrap_servers, .. } => {
                // Without the `?broker=`/`?replication=` query.
                let servers = without_broker(bootstrap_servers).split('?').next().unwrap_or_default();
                let addrs = servers.split(',').map(|s| with_port(s.trim(), 9092)).collect();
                ("kafka", bootstrap_servers.clone(), addrs)
            }
            #[cfg(feature = "pulsar")]
            BackendConfig::Pulsar { url, .. } => {
                let base = without_broker(url);
                let (scheme, authority) = split_url(base);
                let port = if scheme == Some("pulsar+ssl") { 6651 } else { 6650 };
                ("pulsar", redact_url(url), vec![with_port(authority, port)])
            }
            _ => return Ok(()),
        };
        let mut refused = Vec::new();
        for addr in &addrs {
            let attempt = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr.as_str()));
            match attempt.await {
                Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => refused.push(addr.as_str()),
                _ => return Ok(()),
            }
        }
        Err(Error::Connection {
            backend,
            message: format!("connect to {shown}: connection refused by {}", refused.join(", ")),
            source: None,
        })
    }

    /// `host:port`, the default port added when there is none.
    fn with_port(authority: &str, default: u16) -> String {
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let has_port = match hostport.rsplit_once(':') {
            Some((h, p)) => {
                !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']'))
            }
            None => false,
        };
        if has_port {
            hostport.to_string()
        } else {
            format!("{hostport}:{default}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_configs() {
        assert_eq!(
            BackendConfig::from_url("embedded://memory").unwrap(),
            BackendConfig::Embedded { data_dir: None }
        );
        assert_eq!(
            BackendConfig::from_url("embedded:///var/lib/x").unwrap(),
            BackendConfig::Embedded {
                data_dir: Some("/var/lib/x".into())
            }
        );
        assert_eq!(
            BackendConfig::from_url("kafka://a:9092,b:9092").unwrap(),
            BackendConfig::Kafka {
                bootstrap_servers: "a:9092,b:9092".into(),
                tls: None,
                sasl: None,
            }
        );
        assert_eq!(
            BackendConfig::from_url("mqtt://bob:pw@broker:1884").unwrap(),
            BackendConfig::Mqtt {
                host: "broker".into(),
                port: 1884,
                username: Some("bob".into()),
                password: Some(Secret::new("pw")),
                tls: None,
            }
        );
        assert_eq!(
            BackendConfig::from_url("mqtt://broker").unwrap().kind(),
            BackendKind::Mqtt
        );
        assert_eq!(
            BackendConfig::from_url("mqtts://broker").unwrap(),
            BackendConfig::Mqtt {
                host: "broker".into(),
                port: 8883,
                username: None,
                password: None,
                tls: Some(TlsConfig::default()),
            }
        );
        for bad in ["nope", "ftp://x", "embedded://relative", "mqtt://h:port", "kafka://"] {
            assert!(
                matches!(BackendConfig::from_url(bad), Err(Error::InvalidConfiguration(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_default_backend_is_the_only_one_compiled_in() {
        use BackendKind::*;
        assert_eq!(BackendKind::default_among(&[Nats]), Nats);
        assert_eq!(BackendKind::default_among(&[Embedded, Nats]), Embedded);
        // Several and no embedded: embedded, whose connect lists what to set.
        assert_eq!(BackendKind::default_among(&[Nats, Redis]), Embedded);
        assert_eq!(
            BackendKind::default_for_build(),
            BackendKind::default_among(&BackendKind::compiled())
        );
    }

    #[test]
    fn url_checks_name_the_setting_and_what_is_allowed() {
        for (check, value, expect) in [
            (check_redis as fn(&str, &str) -> Result<()>, "http://h:6379", "redis://"),
            (check_redis, "localhost:6379", "no scheme"),
            (check_redis, "redis://:pw@h:abc", "\"abc\""),
            (check_nats, "http://h:4222", "nats://"),
            (check_nats, "nats://a:4222,nats://b:x", "\"x\""),
            (check_pulsar, "http://h:6650", "pulsar://"),
            (check_pulsar, "pulsar://:6650", "no host"),
            (check_kafka, "kafka://h:9092", "no scheme"),
            (check_kafka, "a:9092,b:0", "1 to 65535"),
            (check_kafka, "a:9092?replication=0", "\"replication=0\""),
            (check_mqtt_host, "h/x", "host name"),
        ] {
            let err = check("SOME_VAR", value).unwrap_err().to_string();
            assert!(err.contains("SOME_VAR=") && err.contains(expect), "{value}: {err}");
            assert!(!err.contains(":pw@"), "{err}");
        }
        for (check, value) in [
            (
                check_redis as fn(&str, &str) -> Result<()>,
                "redis://:pw@localhost:6379/0",
            ),
            (check_redis, "rediss://h"),
            (check_redis, "redis+cluster://:pw@h1:7000,h2:7001"),
            (check_redis, "rediss://h1:7000, h2"),
            (check_redis, "redis+unix:///tmp/r.sock"),
            (check_nats, "nats://a:4222,tls://b"),
            (check_nats, "localhost:4222"),
            (
                check_nats,
                "nats://127.0.0.1:4231,127.0.0.1:4232,nats://127.0.0.1:4233?replicas=3",
            ),
            (check_pulsar, "pulsar://127.0.0.1:6650?broker=lite"),
            (check_pulsar, "127.0.0.1:6650"),
            (check_pulsar, "pulsar+ssl://[::1]:6651"),
            (check_kafka, "a:9092, b:9092?broker=tansu"),
            (check_kafka, "a:9092?broker=noida"),
            (check_kafka, "a:9092,b:9092,c:9092?replication=3"),
            (check_kafka, "a:9092?broker=noida&replication=2"),
            (check_kafka, "localhost"),
            (check_mqtt_host, "broker.local"),
            (check_mqtt_host, "[::1]"),
        ] {
            check("SOME_VAR", value).unwrap_or_else(|e| panic!("{value}: {e}"));
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let args = PubSubArgs::try_parse_from_for_test(&[
            "--pubsub-backend",
            "redis",
            "--redis-url",
            "redis://:hunter2@h:6379",
            "--mqtt-password",
            "mqttpw",
            "--pulsar-api-key",
            "tok",
        ]);
        let shown = format!("{args:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("redis://:***@h:6379"),
            "{shown}"
        );
        for backend in [BackendKind::Mqtt, BackendKind::Pulsar] {
            let cfg = PubSubArgs {
                pubsub_backend: backend,
                ..args.clone()
            }
            .config();
            let shown = format!("{cfg:?}");
            assert!(!shown.contains("mqttpw") && !shown.contains("tok\""), "{shown}");
        }
        let err = BackendConfig::from_url("mqtt://u:secretpw@h:x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secretpw"), "{err}");
    }

    impl PubSubArgs {
        fn try_parse_from_for_test(flags: &[&str]) -> Self {
            let argv = std::iter::once("test").chain(flags.iter().copied());
            EnvOnly::try_parse_from(argv).unwrap().args
        }
    }
}
