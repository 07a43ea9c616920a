//! Settings of the Kafka backend.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use pubsub_core::{Error, Result, Secret, TlsConfig};

/// Which Kafka-protocol broker is on the other end; some lack what
/// [`KafkaBroker::Apache`] has, and [`Capabilities`](pubsub_core::Capabilities) says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KafkaBroker {
    /// Apache Kafka (or a compatible cluster with its full behaviour): the default.
    #[default]
    Apache,
    /// Tansu 0.6. Deleting a topic there makes every running librdkafka
    /// consumer of the cluster crash (a segfault in librdkafka's metadata
    /// cache on Tansu's next metadata answer), so `delete_topic` is refused.
    /// Tansu also returns commit metadata empty, so acks above an unacked
    /// record are not kept (`individual_acks` is false).
    /// Selected by `?broker=tansu` after the bootstrap servers.
    Tansu,
    /// noida-db 0.2 (PyPI), a test stand-in: it returns commit metadata
    /// empty, as Tansu does, and never completes the rebalance when a
    /// second member joins a group (that member gets no assignment).
    /// Selected by `?broker=noida`.
    Noida,
}

impl KafkaBroker {
    /// Whether the broker keeps the metadata of a commit, where the acks
    /// above a partition's first unacked record are kept.
    pub fn keeps_commit_metadata(self) -> bool {
        self == KafkaBroker::Apache
    }
}

/// The SASL mechanism of [`KafkaConfig::with_sasl_mechanism`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SaslMechanism {
    /// `PLAIN`: the password itself goes to the broker (use it over TLS).
    #[default]
    Plain,
    /// `SCRAM-SHA-256`: a salted challenge; the password never leaves the client.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    /// The name librdkafka and Kafka use.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl std::str::FromStr for SaslMechanism {
    type Err = Error;

    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (any case).
    /// `OAUTHBEARER` is refused as [`Error::Unsupported`]: its OIDC flow
    /// needs a librdkafka built with libcurl, which this one is not.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            "OAUTHBEARER" => Err(Error::unsupported(
                "kafka",
                "SASL OAUTHBEARER (its OIDC token flow needs librdkafka built with libcurl)",
            )),
            other => Err(Error::InvalidConfiguration(format!(
                "SASL mechanism {other:?}: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
            ))),
        }
    }
}

/// How to reach Kafka, and how to create topics on demand.
///
/// ```
/// use pubsub_kafka::{KafkaBroker, KafkaConfig};
///
/// let cfg = KafkaConfig::new("127.0.0.1:9092").with_partitions(8);
/// assert_eq!((cfg.partitions, cfg.broker), (8, KafkaBroker::Apache));
/// let tansu = KafkaConfig::new("127.0.0.1:9092?broker=tansu");
/// assert_eq!((tansu.bootstrap_servers.as_str(), tansu.broker), ("127.0.0.1:9092", KafkaBroker::Tansu));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct KafkaConfig {
    /// `host:port[,host:port]` (`KAFKA_BOOTSTRAP_SERVERS`).
    pub bootstrap_servers: String,
    /// The broker implementation (`?broker=tansu` selects [`KafkaBroker::Tansu`],
    /// `?broker=noida` [`KafkaBroker::Noida`]).
    pub broker: KafkaBroker,
    /// Partitions of topics this backend creates (default 4). Consumers of
    /// one subscription share a topic's partitions, so this bounds their
    /// parallelism.
    pub partitions: i32,
    /// Replication factor of topics this backend creates (default 1).
    pub replication: i32,
    /// Bound on connecting, admin requests and delivery reports.
    pub timeout: Duration,
    /// SASL user name, if the cluster wants one.
    pub sasl_username: Option<String>,
    /// SASL password; never printed.
    pub sasl_password: Option<Secret>,
    /// SASL mechanism (default PLAIN).
    pub sasl_mechanism: SaslMechanism,
    /// TLS settings: with them `security.protocol` is `SSL` (`SASL_SSL`
    /// with credentials). A server name override is not supported
    /// (librdkafka checks the broker's advertised host name).
    pub tls: Option<TlsConfig>,
    /// Extra librdkafka settings for every client (e.g. `security.protocol`);
    /// they override the SDK's tuning defaults (`linger.ms` 0,
    /// `fetch.wait.max.ms` 100), not what an option asks for explicitly.
    pub extra: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// Defaults for the cluster at `bootstrap_servers`, which may end in
    /// `?replication=N` (the replication factor of topics this backend
    /// creates, say 3 on a cluster) and `?broker=<name>`, joined by `&`:
    /// `h1:9092,h2:9092,h3:9092?replication=3`.
    ///
    /// ```
    /// let cfg = pubsub_kafka::KafkaConfig::new("h1:9092,h2:9092,h3:9092?replication=3");
    /// assert_eq!((cfg.bootstrap_servers.as_str(), cfg.replication), ("h1:9092,h2:9092,h3:9092", 3));
    /// ```
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        let (servers, replication) = take_replication(bootstrap_servers.into());
        let flavours = [
            ("?broker=tansu", KafkaBroker::Tansu),
            ("?broker=noida", KafkaBroker::Noida),
        ];
        let (bootstrap_servers, broker) = flavours
            .iter()
            .find_map(|(suffix, broker)| Some((servers.strip_suffix(suffix)?.to_string(), *broker)))
            .unwrap_or((servers, KafkaBroker::Apache));
        KafkaConfig {
            bootstrap_servers,
            broker,
            partitions: 4,
            replication: replication.unwrap_or(1),
            timeout: Duration::from_secs(10),
            sasl_username: None,
            sasl_password: None,
            sasl_mechanism: SaslMechanism::Plain,
            tls: None,
            extra: BTreeMap::new(),
        }
    }

    /// Sets the partitions of created topics.
    pub fn with_partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions;
        self
    }

    /// Sets the broker implementation.
    pub fn with_broker(mut self, broker: KafkaBroker) -> Self {
        self.broker = broker;
        self
    }

    /// Sets the timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets SASL credentials (mechanism PLAIN unless
    /// [`with_sasl_mechanism`](Self::with_sasl_mechanism) says otherwise).
    pub fn with_sasl(mut self, username: impl Into<String>, password: Secret) -> Self {
        self.sasl_username = Some(username.into());
        self.sasl_password = Some(password);
        self
    }

    /// Sets the SASL mechanism.
    pub fn with_sasl_mechanism(mut self, mechanism: SaslMechanism) -> Self {
        self.sasl_mechanism = mechanism;
        self
    }

    /// Connects over TLS with these settings.
    ///
    /// ```
    /// use pubsub_core::{Secret, TlsConfig};
    /// use pubsub_kafka::{KafkaConfig, SaslMechanism};
    ///
    /// let cfg = KafkaConfig::new("kafka.internal:9093")
    ///     .with_tls(TlsConfig::default().with_ca_file("/etc/ssl/kafka-ca.pem"))
    ///     .with_sasl("app", Secret::new("pw"))
    ///     .with_sasl_mechanism(SaslMechanism::ScramSha512);
    /// assert!(!format!("{cfg:?}").contains("\"pw\""));
    /// ```
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Refuses TLS settings librdkafka cannot honour, before any client is made.
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(tls) = &self.tls {
            if tls.server_name.is_some() {
                return Err(Error::unsupported(
                    "kafka",
                    "a TLS server name override (librdkafka checks each broker's advertised host name)",
                ));
            }
            tls.check_files("kafka")?;
        }
        if self.sasl_username.is_some() && self.sasl_password.is_none() {
            return Err(Error::InvalidConfiguration(
                "kafka SASL: a user name is set but no password".into(),
            ));
        }
        Ok(())
    }

    /// The librdkafka settings shared by every client.
    pub(crate) fn client_config(&self) -> rdkafka::ClientConfig {
        self.client_config_with(&[])
    }

    /// The shared settings and one kind of client's `defaults`, all of
    /// which [`extra`](Self::extra) may override.
    pub(crate) fn client_config_with(&self, defaults: &[(&str, &str)]) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("socket.timeout.ms", self.timeout.as_millis().to_string())
            // Tansu drops the connection on snappy-compressed fetches: keep compression off.
            .set("compression.type", "none")
            // Topics are created by the SDK, explicitly. A broker with
            // auto.create.topics.enable (Apache Kafka's default) would
            // otherwise re-create a deleted topic on the next metadata
            // request that names it, even from `topic_exists`.
            .set("allow.auto.create.topics", "false")
            .set("log_level", "3");
        let sasl = self
            .sasl_username
            .as_ref()
            .map(|user| (user, self.sasl_password.as_ref()));
        let protocol = match (sasl.is_some(), self.tls.is_some()) {
            (false, false) => "PLAINTEXT",
            (false, true) => "SSL",
            (true, false) => "SASL_PLAINTEXT",
            (true, true) => "SASL_SSL",
        };
        c.set("security.protocol", protocol);
        if let Some((user, pass)) = sasl {
            c.set("sasl.mechanisms", self.sasl_mechanism.as_str())
                .set("sasl.username", user)
                .set("sasl.password", pass.map_or("", Secret::expose));
        }
        if let Some(tls) = &self.tls {
            // librdkafka's default: check the broker's host name too.
            c.set("ssl.endpoint.identification.algorithm", "https");
            for (key, path) in [
                ("ssl.ca.location", &tls.ca_file),
                ("ssl.certificate.location", &tls.cert_file),
                ("ssl.key.location", &tls.key_file),
            ] {
                if let Some(path) = path {
                    c.set(key, path.display().to_string());
                }
            }
        }
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}

/// Takes a valid `replication=N` (N ≥ 1) out of the servers' `?` query,
/// leaving the rest (`?broker=<name>`) as it was. An invalid one stays in
/// place, so the servers do not parse (the facade names it first).
fn take_replication(servers: String) -> (String, Option<i32>) {
    let Some((base, query)) = servers.split_once('?') else {
        return (servers, None);
    };
    let mut replication = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair
            .strip_prefix("replication=")
            .and_then(|n| n.parse::<i32>().ok())
            .filter(|n| *n >= 1)
        {
            Some(n) => replication = Some(n),
            None => rest.push(pair),
        }
    }
    let servers = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (servers, replication)
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("broker", &self.broker)
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("timeout", &self.timeout)
            .field("sasl_username", &self.sasl_username)
            .field("sasl_password", &self.sasl_password)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("tls", &self.tls)
            .field("extra", &self.extra.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_from_the_server_list() {
        let cfg = KafkaConfig::new("a:9092,b:9092?broker=noida&replication=3");
        assert_eq!(
            (cfg.bootstrap_servers.as_str(), cfg.broker, cfg.replication),
            ("a:9092,b:9092", KafkaBroker::Noida, 3)
        );
        let cfg = KafkaConfig::new("a:9092?replication=2&broker=tansu");
        assert_eq!(
            (cfg.bootstrap_servers.as_str(), cfg.broker, cfg.replication),
            ("a:9092", KafkaBroker::Tansu, 2)
        );
        assert_eq!(KafkaConfig::new("a:9092").replication, 1);
        // Not a count: left where it was.
        assert_eq!(
            KafkaConfig::new("a:9092?replication=0").bootstrap_servers,
            "a:9092?replication=0"
        );
    }

    #[test]
    fn extra_settings_override_the_tuning_defaults() {
        let mut config = KafkaConfig::new("127.0.0.1:9092");
        let c = config.client_config_with(&[("linger.ms", "0")]);
        assert_eq!(c.get("linger.ms"), Some("0"));
        config.extra.insert("linger.ms".into(), "20".into());
        let c = config.client_config_with(&[("linger.ms", "0")]);
        assert_eq!(
            c.get("linger.ms"),
            Some("20"),
            "a user's setting wins over the SDK's default"
        );
    }
}
