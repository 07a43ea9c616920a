//! Choosing and configuring a backend: from a URL, the environment, or CLI flags.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, ValueEnum};
use pubsub_core::{redact_url, Error, PubSubBackend, Result, Secret};

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
    },
    /// A Pulsar cluster.
    Pulsar {
        /// `pulsar://host:6650` (`PULSAR_HOST`).
        url: String,
        /// Token for token authentication (`PULSAR_API_KEY`).
        api_key: Option<Secret>,
        /// Advertised listener name (`PULSAR_LISTENER`).
        listener: Option<String>,
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
    },
    /// A NATS server (`NATS_URL`).
    Nats {
        /// `nats://host:4222`.
        url: String,
    },
    /// A Redis server (`REDIS_URL`).
    Redis {
        /// `redis://[:password@]host:6379[/db]`.
        url: String,
    },
}

impl fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendConfig::Embedded { data_dir } => f.debug_struct("Embedded").field("data_dir", data_dir).finish(),
            BackendConfig::Kafka { bootstrap_servers } => f
                .debug_struct("Kafka")
                .field("bootstrap_servers", bootstrap_servers)
                .finish(),
            BackendConfig::Pulsar { url, api_key, listener } => f
                .debug_struct("Pulsar")
                .field("url", &redact_url(url))
                .field("api_key", api_key)
                .field("listener", listener)
                .finish(),
            BackendConfig::Mqtt {
                host,
                port,
                username,
                password,
            } => f
                .debug_struct("Mqtt")
                .field("host", host)
                .field("port", port)
                .field("username", username)
                .field("password", password)
                .finish(),
            BackendConfig::Nats { url } => f.debug_struct("Nats").field("url", &redact_url(url)).finish(),
            BackendConfig::Redis { url } => f.debug_struct("Redis").field("url", &redact_url(url)).finish(),
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
    /// `mqtt://[user:password@]host[:1883]`, `nats://host:4222`,
    /// `redis://[:password@]host:6379[/db]`.
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
                })
            }
            "pulsar" | "pulsar+ssl" => Ok(BackendConfig::Pulsar {
                url: url.to_string(),
                api_key: None,
                listener: None,
            }),
            "mqtt" => {
                let authority = rest.trim_end_matches('/');
                let (userinfo, hostport) = match authority.rsplit_once('@') {
                    Some((u, h)) => (Some(u), h),
                    None => (None, authority),
                };
                let (host, port) = match hostport.rsplit_once(':') {
                    Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("the port is not a number"))?),
                    None => (hostport, 1883),
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
                })
            }
            "nats" | "tls" => Ok(BackendConfig::Nats { url: url.to_string() }),
            "redis" | "rediss" => Ok(BackendConfig::Redis { url: url.to_string() }),
            other => Err(bad(&format!(
                "unknown scheme {other:?}; expected embedded, kafka, pulsar, mqtt, nats or redis"
            ))),
        }
    }

    /// Connects to the configured backend.
    ///
    /// Fails with [`Error::InvalidConfiguration`] naming the cargo feature
    /// when the backend is not compiled in.
    pub async fn connect(&self) -> Result<Arc<dyn PubSubBackend>> {
        let kind = self.kind();
        if !kind.is_compiled() {
            return Err(Error::InvalidConfiguration(format!(
                "backend {kind:?} is not compiled in; enable the cargo feature \"{kind}\" of the pubsub crate \
                 (e.g. `pubsub = {{ version = \"0.1\", features = [\"{kind}\"] }}`)",
                kind = kind.as_str()
            )));
        }
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
            BackendConfig::Kafka { bootstrap_servers } => Ok(Arc::new(
                pubsub_kafka::KafkaBackend::connect(pubsub_kafka::KafkaConfig::new(bootstrap_servers.clone())).await?,
            )),
            #[cfg(feature = "pulsar")]
            BackendConfig::Pulsar { url, api_key, listener } => {
                let mut config = pubsub_pulsar::PulsarConfig::new(url.clone());
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
            } => {
                let mut config = pubsub_mqtt::MqttConfig::new(host.clone(), *port);
                if let Some(user) = username {
                    config = config.with_credentials(user.clone(), password.clone().unwrap_or_else(|| Secret::new("")));
                }
                Ok(Arc::new(pubsub_mqtt::MqttBackend::connect(config).await?))
            }
            #[cfg(feature = "nats")]
            BackendConfig::Nats { url } => Ok(Arc::new(
                pubsub_nats::NatsBackend::connect(pubsub_nats::NatsConfig::new(url.clone())).await?,
            )),
            #[cfg(feature = "redis")]
            BackendConfig::Redis { url } => Ok(Arc::new(
                pubsub_redis::RedisBackend::connect(pubsub_redis::RedisConfig::new(url.clone())).await?,
            )),
            #[allow(unreachable_patterns)]
            _ => unreachable!("is_compiled() checked above"),
        }
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
#[derive(Args, Clone, PartialEq, Eq)]
pub struct PubSubArgs {
    /// Which backend to use.
    #[arg(long, env = "PUBSUB_BACKEND", value_enum, default_value_t = BackendKind::Embedded)]
    pub pubsub_backend: BackendKind,
    /// Embedded backend: keep q1/q2 topics in this directory (default: memory only).
    #[arg(long, env = "PUBSUB_EMBEDDED_DIR")]
    pub embedded_dir: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "localhost:9092")]
    pub kafka_bootstrap_servers: String,
    /// Pulsar service URL.
    #[arg(long, env = "PULSAR_HOST", default_value = "pulsar://localhost:6650")]
    pub pulsar_host: String,
    /// Pulsar token (never printed).
    #[arg(long, env = "PULSAR_API_KEY", hide_env_values = true)]
    pub pulsar_api_key: Option<Secret>,
    /// Pulsar listener name.
    #[arg(long, env = "PULSAR_LISTENER")]
    pub pulsar_listener: Option<String>,
    /// MQTT broker host.
    #[arg(long, env = "MQTT_HOST", default_value = "localhost")]
    pub mqtt_host: String,
    /// MQTT broker port.
    #[arg(long, env = "MQTT_PORT", default_value_t = 1883)]
    pub mqtt_port: u16,
    /// MQTT user name.
    #[arg(long, env = "MQTT_USERNAME")]
    pub mqtt_username: Option<String>,
    /// MQTT password (never printed).
    #[arg(long, env = "MQTT_PASSWORD", hide_env_values = true)]
    pub mqtt_password: Option<Secret>,
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "nats://localhost:4222")]
    pub nats_url: String,
    /// Redis URL (a password in it is never printed).
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://localhost:6379",
        hide_env_values = true
    )]
    pub redis_url: String,
}

impl fmt::Debug for PubSubArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PubSubArgs")
            .field("backend", &self.pubsub_backend)
            .field("config", &self.config())
            .finish()
    }
}

#[derive(Parser)]
struct EnvOnly {
    #[command(flatten)]
    args: PubSubArgs,
}

impl PubSubArgs {
    /// Reads every setting from the environment (defaults where unset).
    pub fn from_env() -> Result<Self> {
        EnvOnly::try_parse_from(["pubsub"])
            .map(|e| e.args)
            .map_err(|e| Error::InvalidConfiguration(e.to_string().trim().to_string()))
    }

    /// The configuration of the chosen backend.
    pub fn config(&self) -> BackendConfig {
        match self.pubsub_backend {
            BackendKind::Embedded => BackendConfig::Embedded {
                data_dir: self.embedded_dir.clone(),
            },
            BackendKind::Kafka => BackendConfig::Kafka {
                bootstrap_servers: self.kafka_bootstrap_servers.clone(),
            },
            BackendKind::Pulsar => BackendConfig::Pulsar {
                url: self.pulsar_host.clone(),
                api_key: self.pulsar_api_key.clone(),
                listener: self.pulsar_listener.clone(),
            },
            BackendKind::Mqtt => BackendConfig::Mqtt {
                host: self.mqtt_host.clone(),
                port: self.mqtt_port,
                username: self.mqtt_username.clone(),
                password: self.mqtt_password.clone(),
            },
            BackendKind::Nats => BackendConfig::Nats {
                url: self.nats_url.clone(),
            },
            BackendKind::Redis => BackendConfig::Redis {
                url: self.redis_url.clone(),
            },
        }
    }

    /// Connects to the chosen backend.
    pub async fn connect(&self) -> Result<Arc<dyn PubSubBackend>> {
        self.config().connect().await
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
                bootstrap_servers: "a:9092,b:9092".into()
            }
        );
        assert_eq!(
            BackendConfig::from_url("mqtt://bob:pw@broker:1884").unwrap(),
            BackendConfig::Mqtt {
                host: "broker".into(),
                port: 1884,
                username: Some("bob".into()),
                password: Some(Secret::new("pw"))
            }
        );
        assert_eq!(
            BackendConfig::from_url("mqtt://broker").unwrap().kind(),
            BackendKind::Mqtt
        );
        for bad in ["nope", "ftp://x", "embedded://relative", "mqtt://h:port", "kafka://"] {
            assert!(
                matches!(BackendConfig::from_url(bad), Err(Error::InvalidConfiguration(_))),
                "{bad}"
            );
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
