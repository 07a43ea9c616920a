//! Subscription kinds, initial positions and producer/consumer options.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::ident::{allowed_list, check_ident, IdentError};
use crate::topic::Topic;

/// How the consumers sharing one subscription split its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SubscriptionType {
    /// Competing consumers: each message goes to exactly one of them.
    #[default]
    Shared,
    /// One consumer only; a second is refused with [`Error::ConsumerBusy`].
    Exclusive,
    /// One active consumer; the next takes over when it goes away.
    Failover,
    /// Messages with the same key always go to the same consumer.
    KeyShared,
}

impl SubscriptionType {
    /// Every subscription type, in declaration order.
    pub const ALL: [SubscriptionType; 4] = [
        SubscriptionType::Shared,
        SubscriptionType::Exclusive,
        SubscriptionType::Failover,
        SubscriptionType::KeyShared,
    ];
}

/// Where a *new* subscription starts. An existing subscription always
/// resumes from its acknowledged position and ignores this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum InitialPosition {
    /// The oldest message the backend still retains.
    Earliest,
    /// Only messages published after the subscription was created.
    #[default]
    Latest,
}

/// The default of [`ConsumerOptions::max_unacked`].
pub const DEFAULT_MAX_UNACKED: usize = 1_000;

/// Longest subscription name accepted.
pub const MAX_SUBSCRIPTION_LEN: usize = 128;

/// Checks a subscription name: 1 to [`MAX_SUBSCRIPTION_LEN`] characters of
/// `[A-Za-z0-9_.-]`, not starting with `.` (so it is safe as a file name, a
/// Kafka group id, a NATS durable name and an MQTT client id prefix).
///
/// ```
/// assert!(pubsub_core::validate_subscription_name("workers.v2").is_ok());
/// assert!(pubsub_core::validate_subscription_name("a b").is_err());
/// ```
pub fn validate_subscription_name(name: &str) -> Result<()> {
    let err = |reason: String| Error::InvalidSubscription {
        name: name.to_string(),
        reason,
    };
    const EXTRA: &[char] = &['-', '_', '.'];
    match check_ident(name, MAX_SUBSCRIPTION_LEN, EXTRA) {
        Ok(()) if name.starts_with('.') => Err(err("it starts with '.'".into())),
        Ok(()) => Ok(()),
        Err(IdentError::Empty) => Err(err("it is empty".into())),
        Err(IdentError::TooLong) => Err(err(format!("it is longer than {MAX_SUBSCRIPTION_LEN} bytes"))),
        Err(IdentError::BadChar(bad)) => Err(err(format!(
            "it contains {bad:?}; only {} are allowed",
            allowed_list(EXTRA)
        ))),
    }
}

/// Options for [`crate::PubSubBackend::create_producer`].
///
/// ```
/// let opts = pubsub_core::ProducerOptions::default().with_name("ingest-1");
/// assert_eq!(opts.name.as_deref(), Some("ingest-1"));
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ProducerOptions {
    /// A producer name, used by backends that de-duplicate per producer
    /// (Pulsar) and in logs. Generated when absent.
    pub name: Option<String>,
    /// Allow a `q2` topic on a backend without exactly-once support, which
    /// then behaves as `q1`. Without it such a producer fails with
    /// [`Error::Unsupported`].
    pub allow_degraded_qos: bool,
    /// How long `send` may wait for the broker before [`Error::Timeout`].
    /// `None` uses the backend's default (30 s on every backend).
    pub send_timeout: Option<Duration>,
    /// The codec this producer compresses payloads with (default
    /// [`Compression::None`]). Consumers need no setting: they read every
    /// codec the backend lists in [`Capabilities::compression`], whoever
    /// wrote the message. A codec the backend does not list is refused at
    /// `create_producer` with [`Error::Unsupported`].
    ///
    /// [`Capabilities::compression`]: crate::Capabilities::compression
    pub compression: Compression,
}

/// A compression codec for [`ProducerOptions::with_compression`]: the
/// broker stores the compressed batch and every client of that broker
/// (the SDK's consumers and other teams' clients alike) decompresses it.
///
/// Only Kafka and Pulsar compress; [`Capabilities::compression`] lists the
/// codecs of each backend.
///
/// [`Capabilities::compression`]: crate::Capabilities::compression
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Payloads as they are (the default).
    #[default]
    None,
    /// Deflate: Kafka's `gzip`, Pulsar's `ZLIB`.
    Gzip,
    /// Snappy: Kafka's `snappy`, Pulsar's `SNAPPY`.
    Snappy,
    /// LZ4: Kafka's `lz4`, Pulsar's `LZ4`.
    Lz4,
    /// Zstandard: Kafka's `zstd`, Pulsar's `ZSTD`.
    Zstd,
}

impl Compression {
    /// Every codec other than [`Compression::None`].
    pub const ALL: &'static [Compression] = &[
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        })
    }
}

impl ProducerOptions {
    /// Sets the producer name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Lets a `q2` topic degrade to `q1` where the backend has no exactly-once.
    pub fn allow_degraded_qos(mut self) -> Self {
        self.allow_degraded_qos = true;
        self
    }

    /// Sets the send timeout.
    pub fn with_send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = Some(timeout);
        self
    }

    /// Compresses what this producer sends with `compression`.
    ///
    /// ```
    /// use pubsub_core::{Compression, ProducerOptions};
    ///
    /// let opts = ProducerOptions::default().with_compression(Compression::Zstd);
    /// assert_eq!(opts.compression, Compression::Zstd);
    /// assert_eq!(ProducerOptions::default().compression, Compression::None);
    /// ```
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }
}

/// Options for [`crate::PubSubBackend::create_consumer`].
///
/// The defaults: a `Shared` subscription starting at `Latest`, unacknowledged
/// messages redelivered after 30 s, nacked ones redelivered at once, no limit
/// on redeliveries, batches of up to 100, at most 1,000 messages received and
/// not yet acked ([`max_unacked`](Self::max_unacked)).
///
/// ```
/// use std::time::Duration;
/// use pubsub_core::{ConsumerOptions, InitialPosition, SubscriptionType};
///
/// let opts = ConsumerOptions::default()
///     .with_type(SubscriptionType::Failover)
///     .with_initial_position(InitialPosition::Earliest)
///     .with_ack_timeout(Some(Duration::from_secs(5)));
/// assert_eq!(opts.subscription_type, SubscriptionType::Failover);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumerOptions {
    /// How consumers of the subscription split messages.
    pub subscription_type: SubscriptionType,
    /// Where a new subscription starts.
    pub initial_position: InitialPosition,
    /// A message delivered but neither acked nor nacked within this time is
    /// redelivered (to any consumer). `None` disables the timeout: such a
    /// message is redelivered only when its consumer closes. A backend
    /// without [`Capabilities::ack_timeout`](crate::Capabilities::ack_timeout)
    /// ignores the default but refuses a timeout that was set (with
    /// [`with_ack_timeout`](Self::with_ack_timeout), or any value other than
    /// the default) with [`Error::Unsupported`].
    pub ack_timeout: Option<Duration>,
    /// Delay before a nacked message is redelivered.
    pub nack_redelivery_delay: Duration,
    /// After this many redeliveries a message is moved to
    /// [`dead_letter_topic`](Self::dead_letter_topic) (or, without one,
    /// dropped with a warning). `None` redelivers without limit.
    pub max_redeliveries: Option<u32>,
    /// Where messages go after `max_redeliveries`.
    pub dead_letter_topic: Option<Topic>,
    /// Default `max` of [`crate::Consumer::receive_batch`] and the backend's
    /// prefetch size where it has one.
    pub batch_size: usize,
    /// The most messages this consumer holds received but neither acked nor
    /// nacked (q1/q2; q0 has no acks). At the bound, `receive` waits until an
    /// ack or nack (or dropping every clone of a held message) frees a place;
    /// a message stays held after an ack that failed. Default
    /// [`DEFAULT_MAX_UNACKED`] (1,000); independent of `batch_size`.
    ///
    /// Each backend maps it to its own flow control, and its ceiling is that
    /// of the broker: NATS sets the JetStream consumer's `max_ack_pending`
    /// to unlimited (the server's or account's limit, if one is configured,
    /// still applies); MQTT sends it as the v5 *receive maximum*, so at most
    /// 65,535; Pulsar bounds its receiver queue by it (an Apache Pulsar
    /// broker stops delivering at `maxUnackedMessagesPerConsumer`, 50,000 by
    /// default); Kafka, Redis and the embedded log have no broker-side bound
    /// and the SDK stops handing out messages at it.
    pub max_unacked: usize,
    /// A consumer name for logs and backends that show one. Generated when absent.
    pub name: Option<String>,
    /// Allow a `q2` topic on a backend without exactly-once (behaves as `q1`).
    pub allow_degraded_qos: bool,
    /// Whether `ack_timeout` was chosen with `with_ack_timeout`, not left at the default.
    ack_timeout_chosen: bool,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            subscription_type: SubscriptionType::Shared,
            initial_position: InitialPosition::Latest,
            ack_timeout: Some(Duration::from_secs(30)),
            nack_redelivery_delay: Duration::ZERO,
            max_redeliveries: None,
            dead_letter_topic: None,
            batch_size: 100,
            max_unacked: DEFAULT_MAX_UNACKED,
            name: None,
            allow_degraded_qos: false,
            ack_timeout_chosen: false,
        }
    }
}

impl ConsumerOptions {
    /// Sets the subscription type.
    pub fn with_type(mut self, kind: SubscriptionType) -> Self {
        self.subscription_type = kind;
        self
    }

    /// Sets where a new subscription starts.
    pub fn with_initial_position(mut self, position: InitialPosition) -> Self {
        self.initial_position = position;
        self
    }

    /// Sets (or with `None` disables) the ack timeout. A timeout set here is
    /// refused with [`Error::Unsupported`] where the backend has none.
    pub fn with_ack_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.ack_timeout = timeout;
        self.ack_timeout_chosen = true;
        self
    }

    /// The ack timeout the caller asked for: `None` when it is disabled or
    /// left at the default (which a backend without ack timeouts ignores).
    pub(crate) fn requested_ack_timeout(&self) -> Option<Duration> {
        let default = ConsumerOptions::default().ack_timeout;
        self.ack_timeout
            .filter(|t| self.ack_timeout_chosen || Some(*t) != default)
    }

    /// Sets the delay before a nacked message comes back.
    pub fn with_nack_redelivery_delay(mut self, delay: Duration) -> Self {
        self.nack_redelivery_delay = delay;
        self
    }

    /// Limits redeliveries; past the limit a message goes to `dead_letter_topic`.
    pub fn with_max_redeliveries(mut self, max: u32, dead_letter_topic: Option<Topic>) -> Self {
        self.max_redeliveries = Some(max);
        self.dead_letter_topic = dead_letter_topic;
        self
    }

    /// Sets the batch size.
    pub fn with_batch_size(mut self, size: usize) -> Self {
        self.batch_size = size;
        self
    }

    /// Sets [`max_unacked`](Self::max_unacked), the most messages held
    /// received and not yet acked or nacked.
    pub fn with_max_unacked(mut self, max: usize) -> Self {
        self.max_unacked = max;
        self
    }

    /// Sets the consumer name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Lets a `q2` topic degrade to `q1` where the backend has no exactly-once.
    pub fn allow_degraded_qos(mut self) -> Self {
        self.allow_degraded_qos = true;
        self
    }

    /// Checks values that no backend can use.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::InvalidConfiguration("batch_size must be at least 1".into()));
        }
        if self.max_unacked == 0 {
            return Err(Error::InvalidConfiguration("max_unacked must be at least 1".into()));
        }
        if self.ack_timeout == Some(Duration::ZERO) {
            return Err(Error::InvalidConfiguration(
                "ack_timeout must be positive (or None)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_names() {
        for ok in ["a", "workers", "resp.client-1_x", &"x".repeat(128)] {
            validate_subscription_name(ok).unwrap();
        }
        for bad in ["", ".hidden", "a b", "a/b", "ü", &"x".repeat(129)] {
            assert!(
                matches!(validate_subscription_name(bad), Err(Error::InvalidSubscription { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn consumer_defaults_are_sane() {
        let o = ConsumerOptions::default();
        assert_eq!(o.subscription_type, SubscriptionType::Shared);
        assert_eq!(o.initial_position, InitialPosition::Latest);
        assert_eq!(o.ack_timeout, Some(Duration::from_secs(30)));
        o.validate().unwrap();
        assert!(ConsumerOptions::default().with_batch_size(0).validate().is_err());
        assert_eq!(o.max_unacked, DEFAULT_MAX_UNACKED);
        assert!(ConsumerOptions::default().with_max_unacked(0).validate().is_err());
        assert!(ConsumerOptions::default()
            .with_ack_timeout(Some(Duration::ZERO))
            .validate()
            .is_err());
    }
}
