//! Settings of the NATS backend.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use pubsub_core::{redact_url, Secret, TlsConfig};

/// How to reach NATS and how to size the JetStream streams it creates.
///
/// ```
/// use pubsub_core::Secret;
/// let cfg = pubsub_nats::NatsConfig::new("nats://127.0.0.1:4222").with_token(Secret::new("t0ken"));
/// assert!(!format!("{cfg:?}").contains("t0ken"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct NatsConfig {
    /// `nats://host:4222` (a password or token in it is never printed).
    pub url: String,
    /// Token authentication (`NATS_TOKEN`); never printed.
    pub token: Option<Secret>,
    /// User and password authentication (`NATS_USER`, `NATS_PASSWORD`).
    pub user: Option<(String, Secret)>,
    /// NKey authentication: the user's seed (`NATS_NKEY_SEED`, `SU...`).
    pub nkey_seed: Option<Secret>,
    /// A `.creds` file (JWT and NKey seed) for decentralized auth (`NATS_CREDS_FILE`).
    pub credentials_file: Option<PathBuf>,
    /// TLS settings; setting them requires TLS, whatever the URL's scheme.
    /// A `tls://` URL with none uses the system's trust store.
    pub tls: Option<TlsConfig>,
    /// Bound on connecting and on each request to the server.
    pub timeout: Duration,
    /// `max_age` of the streams this backend creates.
    pub stream_max_age: Duration,
    /// JetStream `duplicate_window`: how long a q2 `Nats-Msg-Id` is remembered.
    pub dedup_window: Duration,
    /// Bytes of each message kept free for headers (properties, key): the
    /// payload limit is the server's `max_payload` minus this.
    pub header_reserve: usize,
}

impl NatsConfig {
    /// Defaults for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        NatsConfig {
            url: url.into(),
            token: None,
            user: None,
            nkey_seed: None,
            credentials_file: None,
            tls: None,
            timeout: Duration::from_secs(5),
            stream_max_age: Duration::from_secs(7 * 24 * 3600),
            dedup_window: Duration::from_secs(120),
            header_reserve: 4096,
        }
    }

    /// Sets the token.
    pub fn with_token(mut self, token: Secret) -> Self {
        self.token = Some(token);
        self
    }

    /// Authenticates as `user` with `password`.
    pub fn with_user_password(mut self, user: impl Into<String>, password: Secret) -> Self {
        self.user = Some((user.into(), password));
        self
    }

    /// Authenticates with the NKey whose seed is `seed`.
    pub fn with_nkey(mut self, seed: Secret) -> Self {
        self.nkey_seed = Some(seed);
        self
    }

    /// Authenticates with the JWT and seed of a `.creds` file.
    pub fn with_credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.credentials_file = Some(path.into());
        self
    }

    /// Connects over TLS with these settings.
    ///
    /// ```
    /// use pubsub_core::TlsConfig;
    /// let cfg = pubsub_nats::NatsConfig::new("tls://nats.internal:4222")
    ///     .with_tls(TlsConfig::default().with_ca_file("/etc/ssl/nats-ca.pem"));
    /// assert!(cfg.tls.is_some());
    /// ```
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &redact_url(&self.url))
            .field("token", &self.token)
            .field("user", &self.user)
            .field("nkey_seed", &self.nkey_seed)
            .field("credentials_file", &self.credentials_file)
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .field("stream_max_age", &self.stream_max_age)
            .field("dedup_window", &self.dedup_window)
            .finish()
    }
}
