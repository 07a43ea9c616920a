//! Settings of the Redis backend.

use std::fmt;
use std::time::Duration;

use pubsub_core::{redact_url, TlsConfig};

/// How to reach Redis and how to use it.
///
/// ```
/// let cfg = pubsub_redis::RedisConfig::new("redis://:pw@127.0.0.1:6379");
/// assert!(!format!("{cfg:?}").contains("pw@"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[[user]:password@]host:port[/db]`, or `rediss://` for TLS
    /// (a password is never printed). A user name selects a Redis 6 ACL user.
    pub url: String,
    /// TLS settings: a CA file instead of the system's trust store, and a
    /// client certificate for servers with `tls-auth-clients yes`. Setting
    /// them turns TLS on for a `redis://` URL too. `server_name` is not
    /// supported (redis-rs checks the URL's host).
    pub tls: Option<TlsConfig>,
    /// Largest payload sent; the server's `proto-max-bulk-len` lowers it further.
    pub max_payload: usize,
    /// How long a q2 dedup id is remembered.
    pub dedup_window: Duration,
    /// Trim streams to about this many entries on every add (`XADD MAXLEN ~`).
    /// Trimming drops the oldest entries even if unacknowledged: off by default.
    pub max_len: Option<usize>,
    /// How long one blocking read waits; also how often a waiting consumer
    /// looks for redeliveries and due delayed messages.
    pub poll_interval: Duration,
    /// Bound on connecting and on each command.
    pub timeout: Duration,
}

impl RedisConfig {
    /// Defaults for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            tls: None,
            max_payload: 16 * 1024 * 1024,
            dedup_window: Duration::from_secs(600),
            max_len: None,
            poll_interval: Duration::from_millis(250),
            timeout: Duration::from_secs(5),
        }
    }

    /// Sets the stream trimming length.
    pub fn with_max_len(mut self, n: usize) -> Self {
        self.max_len = Some(n);
        self
    }

    /// Connects over TLS with these settings.
    ///
    /// ```
    /// use pubsub_core::TlsConfig;
    /// let cfg = pubsub_redis::RedisConfig::new("rediss://app:pw@redis.internal:6380")
    ///     .with_tls(TlsConfig::default().with_ca_file("/etc/ssl/redis-ca.pem"));
    /// assert!(cfg.tls.is_some());
    /// ```
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the connect/command timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("tls", &self.tls)
            .field("max_payload", &self.max_payload)
            .field("dedup_window", &self.dedup_window)
            .field("max_len", &self.max_len)
            .field("poll_interval", &self.poll_interval)
            .field("timeout", &self.timeout)
            .finish()
    }
}
