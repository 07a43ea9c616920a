//! `pulsar::Error` as `pubsub_core::Error`: connection trouble is
//! retriable `Error::Connection`, a busy exclusive subscription is
//! `Error::ConsumerBusy`, an oversized message `Error::PayloadTooLarge`.

use pubsub_core::Error;
use pulsar::error::{ConnectionError, ConsumerError, ProducerError, ServiceDiscoveryError};
use pulsar::proto::ServerError;

pub(crate) const NAME: &str = "pulsar";

/// The connection error a pulsar error wraps, if it wraps one.
fn connection_error(e: &pulsar::Error) -> Option<&ConnectionError> {
    match e {
        pulsar::Error::Connection(c)
        | pulsar::Error::Consumer(ConsumerError::Connection(c))
        | pulsar::Error::Producer(ProducerError::Connection(c))
        | pulsar::Error::ServiceDiscovery(ServiceDiscoveryError::Connection(c)) => Some(c),
        _ => None,
    }
}

/// The server error code inside a pulsar error, if there is one.
fn server_error(e: &pulsar::Error) -> Option<ServerError> {
    if let pulsar::Error::ServiceDiscovery(ServiceDiscoveryError::Query(code, _)) = e {
        return *code;
    }
    match connection_error(e)? {
        ConnectionError::PulsarError(code, _) => *code,
        _ => None,
    }
}

/// Whether the error means the broker could not be reached or the
/// connection broke (as opposed to the broker refusing the request).
fn is_connection(e: &pulsar::Error) -> bool {
    match e {
        pulsar::Error::ServiceDiscovery(ServiceDiscoveryError::DnsLookupError)
        | pulsar::Error::Consumer(ConsumerError::Io(_))
        | pulsar::Error::Producer(ProducerError::Io(_)) => true,
        _ => connection_error(e).is_some_and(|c| !matches!(c, ConnectionError::PulsarError(..))),
    }
}

/// `what` failed with `e`.
pub(crate) fn convert(what: impl std::fmt::Display, e: pulsar::Error) -> Error {
    if is_connection(&e) {
        return Error::connection(NAME, format!("{what}: {e}"), e);
    }
    match server_error(&e) {
        Some(ServerError::ServiceNotReady) | Some(ServerError::TooManyRequests) => {
            Error::connection(NAME, format!("{what}: {e}"), e)
        }
        Some(ServerError::AuthenticationError) | Some(ServerError::AuthorizationError) => {
            Error::connection(NAME, format!("{what}: not authorized: {e}"), e)
        }
        _ => Error::broker(NAME, format!("{what}: {e}"), e),
    }
}

/// Whether subscribing failed because an exclusive or failover-exclusive
/// subscription already has its consumer.
pub(crate) fn is_consumer_busy(e: &pulsar::Error) -> bool {
    server_error(e) == Some(ServerError::ConsumerBusy)
}

/// Whether the broker answered that the topic has no messages
/// (pulsar-lite's answer to `GetLastMessageId` on an empty topic).
pub(crate) fn is_no_messages(e: &pulsar::Error) -> bool {
    matches!(connection_error(e), Some(ConnectionError::PulsarError(_, Some(text))) if text.contains("no messages"))
}

/// Whether the broker answered that the namespace does not exist (Apache
/// Pulsar, to a lookup or a topic listing in a namespace nobody made).
pub(crate) fn is_namespace_not_found(e: &pulsar::Error) -> bool {
    e.to_string().contains("Namespace not found")
}
