//! Settings of the Pulsar backend.

use std::fmt;
use std::time::Duration;

use pubsub_core::{redact_url, Secret, TlsConfig};

/// Pulsar's default `maxMessageSize` (5 MiB), which pulsar-lite shares.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 5 * 1024 * 1024;

/// Bytes of each message kept free for its metadata (properties, key, ids):
/// the payload limit is `max_message_size` minus this.
pub const METADATA_RESERVE: usize = 64 * 1024;

/// Which implementation of the Pulsar protocol the broker is. It decides
/// what the backend claims in its `Capabilities` and refuses up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PulsarBroker {
    /// Apache Pulsar (or a compatible broker with its features).
    #[default]
    Apache,
    /// [pulsar-lite](https://pypi.org/project/pulsar-lite/) 0.2, the broker our
    /// tests run on. It delivers `deliver_after` messages at once, and it
    /// answers a second consumer on an Exclusive subscription by closing the
    /// whole connection (every producer and consumer on it) instead of
    /// refusing the subscribe. So on it `deliver_after` and Exclusive
    /// subscriptions are refused with `Error::Unsupported`. Selected with
    /// [`PulsarConfig::with_broker`] or `?broker=lite` on the URL.
    Lite,
}

/// How to reach Pulsar.
///
/// ```
/// use pubsub_core::Secret;
/// let cfg = pubsub_pulsar::PulsarConfig::new("127.0.0.1:6650").with_token(Secret::new("eyJhbGciOi"));
/// assert_eq!(cfg.url, "pulsar://127.0.0.1:6650");
/// let lite = pubsub_pulsar::PulsarConfig::new("pulsar://127.0.0.1:6650?broker=lite");
/// assert_eq!((lite.url.as_str(), lite.broker), ("pulsar://127.0.0.1:6650", pubsub_pulsar::PulsarBroker::Lite));
/// assert!(!format!("{cfg:?}").contains("eyJhbGciOi"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct PulsarConfig {
    /// `pulsar://host:6650` (`PULSAR_HOST`; a bare `host:port` gets `pulsar://`).
    pub url: String,
    /// The broker implementation (`?broker=lite` on the URL selects [`PulsarBroker::Lite`]).
    pub broker: PulsarBroker,
    /// Token authentication (`PULSAR_API_KEY`); never printed.
    pub token: Option<Secret>,
    /// Advertised listener name (`PULSAR_LISTENER`). The `pulsar` crate
    /// cannot send one in its lookups, so a set listener makes `connect`
    /// fail with `Error::Unsupported` rather than silently use the default.
    pub listener: Option<String>,
    /// Bound on connecting and on each operation (lookup, subscribe, send receipt).
    pub timeout: Duration,
    /// The broker's `maxMessageSize`. Payloads over it minus
    /// [`METADATA_RESERVE`] are refused with `Error::PayloadTooLarge`
    /// (the `pulsar` crate does not chunk).
    pub max_message_size: usize,
    /// How long the client keeps trying to reconnect after the broker went
    /// away before operations fail with `Error::Connection`.
    pub reconnect_for: Duration,
    /// Pulsar's HTTP admin API, `http://host:8080` (`PULSAR_ADMIN_URL`;
    /// plain HTTP only). Apache Pulsar makes topics on first use but not
    /// tenants or namespaces: with this set, the first producer, consumer,
    /// reader or `create_topic` of a namespace makes its tenant (allowed on
    /// every cluster) and namespace if missing, with the token, if any, as
    /// the bearer token. Unset, a topic in a namespace that does not exist is
    /// refused by the broker ("Namespace not found"). The admin interface
    /// goes through it too: with it, q0 topics, `delete_topic` and
    /// `subscriptions` (with backlogs) work; without it they are
    /// `Unsupported` (see `Capabilities::admin`). Not used with
    /// [`PulsarBroker::Lite`], which makes namespaces itself.
    pub admin_url: Option<String>,
    /// TLS (`PULSAR_TLS_*`): a `pulsar+ssl://` URL or these settings turn
    /// it on (a `pulsar://` URL is then connected to as `pulsar+ssl://`, so
    /// give the broker's TLS port, `brokerServicePortTls`). The server's
    /// certificate and host name are always checked. Through the `pulsar`
    /// crate (native-tls, OpenSSL on Linux):
    /// - the CA file is trusted *besides* the system's store, not instead
    ///   of it (native-tls adds roots; it cannot drop the system's);
    /// - a client certificate (mutual TLS) needs a PKCS#8 key (`-----BEGIN
    ///   PRIVATE KEY-----`; convert others with `openssl pkcs8 -topk8
    ///   -nocrypt`), presented through this workspace's patch of the crate
    ///   (patches/pulsar/PATCHED.md);
    /// - a server name other than the URL's host is refused with
    ///   `Error::Unsupported`: the crate checks the certificate against
    ///   the host of the URL (and of each broker a lookup returns).
    pub tls: Option<TlsConfig>,
}

impl PulsarConfig {
    /// Defaults for the broker at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        let url = if url.contains("://") {
            url
        } else {
            format!("pulsar://{url}")
        };
        let (url, broker) = match url.strip_suffix("?broker=lite") {
            Some(base) => (base.to_string(), PulsarBroker::Lite),
            None => (url, PulsarBroker::Apache),
        };
        PulsarConfig {
            url,
            broker,
            token: None,
            listener: None,
            timeout: Duration::from_secs(10),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            reconnect_for: Duration::from_secs(60),
            admin_url: None,
            tls: None,
        }
    }

    /// Connects over TLS with `tls` (see [`PulsarConfig::tls`]).
    ///
    /// ```
    /// use pubsub_core::TlsConfig;
    /// let cfg = pubsub_pulsar::PulsarConfig::new("pulsar+ssl://broker.internal:6651").with_tls(
    ///     TlsConfig::default()
    ///         .with_ca_file("/etc/pubsub/ca.pem")
    ///         .with_client_auth("/etc/pubsub/client.pem", "/etc/pubsub/client.key"),
    /// );
    /// assert!(cfg.uses_tls());
    /// assert!(format!("{cfg:?}").contains("ca.pem"));
    /// // TLS settings alone turn TLS on too.
    /// assert!(pubsub_pulsar::PulsarConfig::new("127.0.0.1:6651").with_tls(TlsConfig::default()).uses_tls());
    /// ```
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Whether connections use TLS: a `pulsar+ssl://` URL or TLS settings.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some() || self.url.starts_with("pulsar+ssl://")
    }

    /// The URL connected to: `pulsar+ssl://` when TLS is on.
    pub(crate) fn connect_url(&self) -> String {
        match (self.uses_tls(), self.url.strip_prefix("pulsar://")) {
            (true, Some(rest)) => format!("pulsar+ssl://{rest}"),
            _ => self.url.clone(),
        }
    }

    /// Sets the HTTP admin API URL (see [`PulsarConfig::admin_url`]).
    pub fn with_admin_url(mut self, url: impl Into<String>) -> Self {
        self.admin_url = Some(url.into());
        self
    }

    /// Sets the broker implementation.
    pub fn with_broker(mut self, broker: PulsarBroker) -> Self {
        self.broker = broker;
        self
    }

    /// Sets the token.
    pub fn with_token(mut self, token: Secret) -> Self {
        self.token = Some(token);
        self
    }

    /// Sets the advertised listener name (see [`PulsarConfig::listener`]).
    pub fn with_listener(mut self, listener: impl Into<String>) -> Self {
        self.listener = Some(listener.into());
        self
    }

    /// Sets the timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest payload accepted.
    pub fn max_payload(&self) -> usize {
        self.max_message_size.saturating_sub(METADATA_RESERVE)
    }
}

impl fmt::Debug for PulsarConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PulsarConfig")
            .field("url", &redact_url(&self.url))
            .field("broker", &self.broker)
            .field("token", &self.token)
            .field("listener", &self.listener)
            .field("timeout", &self.timeout)
            .field("max_message_size", &self.max_message_size)
            .field("reconnect_for", &self.reconnect_for)
            .field("admin_url", &self.admin_url.as_deref().map(redact_url))
            .field("tls", &self.tls)
            .finish()
    }
}
