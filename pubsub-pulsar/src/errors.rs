//! `pulsar::Error` as `pubsub_core::Error`: connection trouble is
//! retriable `Error::Connection`, a failed TLS handshake `Error::Tls`, a
//! refused token or certificate `Error::Authentication` (neither
//! retriable), a busy exclusive subscription is `Error::ConsumerBusy`, an
//! oversized message `Error::PayloadTooLarge`.

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

/// What a TLS failure of `e` means, if it is one: the crate's TLS error
/// (native-tls: a refused server certificate, an unusable client identity),
/// or an I/O error on a TLS connection whose text is a TLS alert (with TLS
/// 1.3 a refused client certificate arrives as an alert on the first read,
/// after the handshake). Broker answers are never read as TLS failures.
fn tls_error(e: &pulsar::Error) -> Option<String> {
    match connection_error(e)? {
        ConnectionError::Tls(t) => Some(pubsub_core::tls_failure(t).unwrap_or_else(|| t.to_string())),
        ConnectionError::Io(io) => pubsub_core::tls_failure(io).or_else(|| {
            // OpenSSL's text for an alert the broker sent: Apache Pulsar
            // answers a client certificate it does not trust with
            // "internal error" (alert 80), after a TLS 1.3 handshake.
            let text = io.to_string();
            (text.contains("SSL routines") && text.contains("alert")).then(|| {
                format!(
                    "the broker ended the TLS session (does it refuse the client certificate, or require one?): {text}"
                )
            })
        }),
        _ => None,
    }
}

/// Whether the broker (or the crate's auth provider) refused the
/// credentials: the token, or the role of the client certificate.
fn is_auth_refusal(e: &pulsar::Error) -> bool {
    matches!(e, pulsar::Error::Authentication(_))
        || matches!(connection_error(e), Some(ConnectionError::Authentication(_)))
        || matches!(
            server_error(e),
            Some(ServerError::AuthenticationError) | Some(ServerError::AuthorizationError)
        )
}

/// `what` failed with `e`.
pub(crate) fn convert(what: impl std::fmt::Display, e: pulsar::Error) -> Error {
    if let Some(why) = tls_error(&e) {
        return Error::Tls {
            backend: NAME,
            message: format!("{what}: {why}"),
            source: Some(Box::new(e)),
        };
    }
    if is_auth_refusal(&e) {
        // The broker's text names the role or the method, never the token.
        return Error::Authentication {
            backend: NAME,
            message: format!("{what}: not authorized: {e}"),
            source: Some(Box::new(e)),
        };
    }
    if is_connection(&e) {
        return Error::connection(NAME, format!("{what}: {e}"), e);
    }
    match server_error(&e) {
        Some(ServerError::ServiceNotReady) | Some(ServerError::TooManyRequests) => {
            Error::connection(NAME, format!("{what}: {e}"), e)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: ServerError) -> pulsar::Error {
        pulsar::Error::Connection(ConnectionError::PulsarError(
            Some(code),
            Some("Unable to authenticate: role not found".into()),
        ))
    }

    #[test]
    fn refused_credentials_are_authentication_errors() {
        for code in [ServerError::AuthenticationError, ServerError::AuthorizationError] {
            let e = convert("connect to pulsar+ssl://h:6651", refused(code));
            assert!(matches!(e, Error::Authentication { .. }), "{e:?}");
            assert!(!e.is_retriable());
        }
    }

    #[test]
    fn tls_failures_are_tls_errors() {
        let io = std::io::Error::other(
            "error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required:SSL alert number 116",
        );
        let e = convert("connect", pulsar::Error::Connection(ConnectionError::Io(io)));
        assert!(matches!(e, Error::Tls { .. }), "{e:?}");
        assert!(e.to_string().contains("requires a client certificate"), "{e}");
        // An I/O error that is not TLS stays a retriable connection error.
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
        let e = convert("connect", pulsar::Error::Connection(ConnectionError::Io(reset)));
        assert!(matches!(e, Error::Connection { .. }) && e.is_retriable(), "{e:?}");
        // A broker's answer is never read as a TLS failure.
        let answer = ConnectionError::PulsarError(Some(ServerError::UnknownError), Some("token expired".into()));
        let e = convert("connect", pulsar::Error::Connection(answer));
        assert!(!matches!(e, Error::Tls { .. }), "{e:?}");
    }
}
