//! The one error type every backend returns.

use std::fmt;
use std::time::Duration;

/// A boxed error from a client library, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Shorthand for `Result<T, pubsub_core::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, on any backend.
///
/// Names follow the seed design's Pulsar exceptions (`Timeout`, `Interrupted`,
/// `AlreadyClosed`, `InvalidConfiguration`) so code ported from it reads the
/// same. Backend errors keep their source ([`std::error::Error::source`]).
/// Messages never contain secrets: adapters build them from redacted config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing arrived (or the broker did not answer) within the time asked for.
    #[error("timed out after {0:?}")]
    Timeout(Duration),

    /// The operation was cancelled by a shutdown before it completed.
    #[error("interrupted by shutdown")]
    Interrupted,

    /// The handle (backend, producer, consumer or message's consumer) is closed.
    #[error("{0} is closed")]
    Closed(&'static str),

    /// An option or environment variable has a value the backend cannot use.
    #[error("invalid configuration: {0}")]
    InvalidConfiguration(String),

    /// A topic string is not of the form `{qos}/{tenant}/{namespace}/{queue}`.
    #[error("invalid topic {topic:?}: {reason}")]
    InvalidTopic {
        /// The topic as given.
        topic: String,
        /// What is wrong, naming the segment and character.
        reason: String,
    },

    /// A subscription name is empty, too long, or has a character outside `[A-Za-z0-9_.-]`.
    #[error("invalid subscription name {name:?}: {reason}")]
    InvalidSubscription {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A message property name or value is not allowed.
    #[error("invalid property {name:?}: {reason}")]
    InvalidProperty {
        /// The property name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A payload is larger than the backend (or its broker) accepts.
    #[error("payload of {size} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// Size of the rejected payload.
        size: usize,
        /// The limit in force.
        max: usize,
    },

    /// The backend cannot do what was asked; [`crate::Capabilities`] says so too.
    #[error("{backend} does not support {feature}")]
    Unsupported {
        /// Backend name, as in [`crate::PubSubBackend::name`].
        backend: &'static str,
        /// What it cannot do.
        feature: String,
    },

    /// An exclusive subscription already has its consumer.
    #[error("subscription {subscription:?} is exclusive and already has a consumer")]
    ConsumerBusy {
        /// The subscription that refused the consumer.
        subscription: String,
    },

    /// The broker could not be reached or the connection broke.
    #[error("{backend}: connection failed: {message}")]
    Connection {
        /// Backend name.
        backend: &'static str,
        /// What happened (never includes credentials).
        message: String,
        /// The client library's error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The TLS handshake failed: the server's certificate was not trusted,
    /// had expired or named another host, or the server refused the client's
    /// certificate. Trying again fails the same way until the configuration
    /// or the certificates change.
    #[error("{backend}: TLS failed: {message}")]
    Tls {
        /// Backend name.
        backend: &'static str,
        /// What was refused and what to check.
        message: String,
        /// The client library's error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The broker refused the credentials (user and password, token, key or
    /// client certificate). Never contains the secret.
    #[error("{backend}: authentication failed: {message}")]
    Authentication {
        /// Backend name.
        backend: &'static str,
        /// What was refused (the user name, the method), never the secret.
        message: String,
        /// The client library's error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The broker (or the embedded log) answered with an error.
    #[error("{backend}: {message}")]
    Broker {
        /// Backend name.
        backend: &'static str,
        /// What happened.
        message: String,
        /// The client library's error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// A payload could not be encoded or decoded with the codec asked for.
    #[error("codec error: {message}")]
    Codec {
        /// What went wrong, naming the codec and content type.
        message: String,
        /// The codec library's error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// A topic, subscription or message does not exist.
    #[error("not found: {0}")]
    NotFound(String),

    /// Some acks of a [`Consumer::ack_all`](crate::Consumer::ack_all) failed;
    /// the messages not named here are acked.
    #[error("{} of {total} acks failed, first {:?}: {source}", failed.len(), failed.first())]
    AcksFailed {
        /// The messages whose ack failed, in the order given.
        failed: Vec<crate::MessageId>,
        /// How many messages were given.
        total: usize,
        /// The first failure.
        #[source]
        source: Box<Error>,
    },

    /// A message given to a consumer's [`ack_all`](crate::Consumer::ack_all)
    /// was received by another consumer; nothing of the call was acked.
    #[error("message {id} was not received from this consumer")]
    ForeignMessage {
        /// The first such message.
        id: crate::MessageId,
    },
}

impl Error {
    /// Whether trying the same operation again later may succeed.
    ///
    /// True for timeouts, lost connections and broker-side failures; false
    /// for bad input, closed handles and unsupported features, which fail the
    /// same way every time.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::AcksFailed { source, .. } => source.is_retriable(),
            other => matches!(
                other,
                Error::Timeout(_) | Error::Connection { .. } | Error::Broker { .. } | Error::ConsumerBusy { .. }
            ),
        }
    }

    /// A [`Error::Connection`] with a source.
    pub fn connection(backend: &'static str, message: impl fmt::Display, source: impl Into<BoxError>) -> Self {
        Error::Connection {
            backend,
            message: message.to_string(),
            source: Some(source.into()),
        }
    }

    /// A [`Error::Broker`] with a source.
    pub fn broker(backend: &'static str, message: impl fmt::Display, source: impl Into<BoxError>) -> Self {
        Error::Broker {
            backend,
            message: message.to_string(),
            source: Some(source.into()),
        }
    }

    /// A [`Error::Broker`] without a source.
    pub fn broker_msg(backend: &'static str, message: impl fmt::Display) -> Self {
        Error::Broker {
            backend,
            message: message.to_string(),
            source: None,
        }
    }

    /// A [`Error::Unsupported`].
    pub fn unsupported(backend: &'static str, feature: impl fmt::Display) -> Self {
        Error::Unsupported {
            backend,
            feature: feature.to_string(),
        }
    }

    /// A [`Error::Codec`] with a source.
    pub fn codec(message: impl fmt::Display, source: impl Into<BoxError>) -> Self {
        Error::Codec {
            message: message.to_string(),
            source: Some(source.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_errors_are_transient_ones() {
        assert!(Error::Timeout(Duration::from_secs(1)).is_retriable());
        assert!(Error::broker_msg("x", "busy").is_retriable());
        assert!(!Error::Closed("consumer").is_retriable());
        assert!(!Error::PayloadTooLarge { size: 2, max: 1 }.is_retriable());
        assert!(!Error::unsupported("x", "y").is_retriable());
        let tls = Error::Tls {
            backend: "nats",
            message: "untrusted".into(),
            source: None,
        };
        assert!(!tls.is_retriable());
        let auth = Error::Authentication {
            backend: "redis",
            message: "user \"app\"".into(),
            source: None,
        };
        assert!(!auth.is_retriable());
    }

    #[test]
    fn sources_are_kept() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::connection("redis", "connect to 127.0.0.1:1", io);
        let src = std::error::Error::source(&e).expect("source");
        assert!(src.to_string().contains("refused"));
        assert_eq!(e.to_string(), "redis: connection failed: connect to 127.0.0.1:1");
    }
}
