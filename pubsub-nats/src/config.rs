//! Settings of the NATS backend.

use std::fmt;
use std::time::Duration;

use pubsub_core::{redact_url, Secret};

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
            .field("timeout", &self.timeout)
            .field("stream_max_age", &self.stream_max_age)
            .field("dedup_window", &self.dedup_window)
            .finish()
    }
}
