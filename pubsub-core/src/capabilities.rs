//! What a backend can and cannot do, stated honestly.

use crate::error::{Error, Result};
use crate::message::OutgoingMessage;
use crate::options::{Compression, ConsumerOptions, InitialPosition, ProducerOptions, SubscriptionType};
use crate::topic::{Qos, Topic};

/// What one backend supports. Each adapter fills this in once; the
/// conformance suite reads it and reports every case a backend cannot run
/// as *unsupported*, by name, after checking that the backend refuses the
/// operation with [`Error::Unsupported`] instead of silently misbehaving.
///
/// Adapters build it as `Capabilities { shared: true, ..Capabilities::none("name") }`
/// so that fields added later default to "not supported".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Backend name (same as [`crate::PubSubBackend::name`]).
    pub backend: &'static str,
    /// q1/q2 messages survive a restart of the broker (or of the process, for embedded).
    pub persistence: bool,
    /// A new subscription can start at [`InitialPosition::Earliest`].
    pub earliest: bool,
    /// Competing consumers on one subscription.
    pub shared: bool,
    /// A second consumer on an exclusive subscription is refused.
    pub exclusive: bool,
    /// One active consumer; another takes over when it leaves.
    pub failover: bool,
    /// Same key, same consumer.
    pub key_shared: bool,
    /// `nack` redelivers the message.
    pub nack: bool,
    /// `nack_after(delay)` and `nack_redelivery_delay` are honoured.
    pub nack_delay: bool,
    /// Unacked messages come back after the ack timeout.
    pub ack_timeout: bool,
    /// [`Message::in_progress`](crate::Message::in_progress) restarts a
    /// held message's ack timeout, so a long task is not redelivered while
    /// it runs. Without it, give long work an ack timeout above its run time.
    pub extend_ack_timeout: bool,
    /// The redelivery count of a message is tracked.
    pub redelivery_count: bool,
    /// The redelivery count survives a consumer restart: a message that
    /// comes back to a new consumer after its consumer closed (or crashed)
    /// without acking it has `redelivery_count() >= 1`. Without it the
    /// count covers only redeliveries to the same consumer (nack, ack
    /// timeout) and starts again at 0 in a new consumer, so a message that
    /// crashes every consumer is never counted as poison.
    pub redelivery_count_across_restarts: bool,
    /// The consumer options `max_redeliveries` and `dead_letter_topic` are
    /// honoured (past the limit a message goes to the dead-letter topic).
    pub max_redeliveries: bool,
    /// An ack holds on its own across consumer restarts and rebalances, even
    /// while earlier messages are unacked. Without it (Kafka on a broker
    /// that drops commit metadata) the position is the contiguous acked
    /// prefix: nothing unacked is ever lost, but acked messages above an
    /// unacked one may be delivered again.
    pub individual_acks: bool,
    /// `deliver_after` is honoured.
    pub delayed_delivery: bool,
    /// q2: broker-side de-duplication by message id and confirmed acks.
    pub exactly_once: bool,
    /// Messages with the same key arrive in the order they were sent
    /// (single consumer, no redelivery in between).
    pub key_ordering: bool,
    /// All messages of a topic arrive in order (single consumer, no redelivery).
    pub topic_ordering: bool,
    /// Largest payload accepted, if there is a limit.
    pub max_payload: Option<usize>,
    /// Properties travel with the message.
    pub properties: bool,
    /// Message keys travel with the message.
    pub keys: bool,
    /// The codec typed messages use unless told otherwise (Avro on Kafka,
    /// as the seed design asks; JSON elsewhere). It is a [`Codec`] for any
    /// type that is both serde and Avro: `producer.send_encoded(&caps.default_codec, &v)`.
    ///
    /// [`Codec`]: crate::codec::Codec
    pub default_codec: crate::codec::CodecKind,
    /// What the [`Admin`](crate::Admin) interface can do here.
    pub admin: crate::admin::AdminCapabilities,
    /// Readers ([`crate::PubSubBackend::create_reader`]) and
    /// [`crate::Consumer::seek`] from every [`crate::Position`], on q1/q2 topics.
    pub replay: bool,
    /// [`crate::LogPosition`]s: `earliest_position`, `latest_position` and
    /// `subscription_position` of [`crate::Admin`].
    pub positions: bool,
    /// The broker may drop q1/q2 messages waiting for a consumer once a
    /// limit of its own configuration is reached, confirmed sends included,
    /// without the client being told. True on MQTT: Mosquitto keeps at most
    /// `max_queued_messages` (1,000 by default) per session above what is in
    /// flight (at most [`ConsumerOptions::max_unacked`]), for a connected
    /// consumer as for a parked session, and drops the rest. The broker's
    /// setting cannot be read by a client; the README says what a
    /// production broker needs.
    pub broker_may_drop_backlog: bool,
    /// The codecs a producer can compress with
    /// ([`ProducerOptions::with_compression`]), which are also every codec
    /// this backend's consumers and readers decompress, whichever client
    /// wrote the message. Empty where the backend has no compression
    /// (MQTT, NATS, Redis, embedded): a producer asking for one is refused
    /// with [`Error::Unsupported`] at `create_producer`.
    pub compression: &'static [Compression],
}

impl Capabilities {
    /// Everything off: a starting point for an adapter to switch on what it has.
    pub const fn none(backend: &'static str) -> Self {
        Capabilities {
            backend,
            persistence: false,
            earliest: false,
            shared: false,
            exclusive: false,
            failover: false,
            key_shared: false,
            nack: false,
            nack_delay: false,
            ack_timeout: false,
            extend_ack_timeout: false,
            redelivery_count: false,
            redelivery_count_across_restarts: false,
            max_redeliveries: false,
            individual_acks: false,
            delayed_delivery: false,
            exactly_once: false,
            key_ordering: false,
            topic_ordering: false,
            max_payload: None,
            properties: false,
            keys: false,
            default_codec: crate::codec::CodecKind::Json,
            admin: crate::admin::AdminCapabilities::NONE,
            replay: false,
            positions: false,
            broker_may_drop_backlog: false,
            compression: &[],
        }
    }

    /// Whether consumers of this subscription type can be created.
    pub fn supports_subscription(&self, kind: SubscriptionType) -> bool {
        match kind {
            SubscriptionType::Shared => self.shared,
            SubscriptionType::Exclusive => self.exclusive,
            SubscriptionType::Failover => self.failover,
            SubscriptionType::KeyShared => self.key_shared,
        }
    }

    /// The checks every adapter makes before creating a producer: a q2 topic
    /// without exactly-once support fails unless degrading was allowed, and
    /// a compression codec not in [`compression`](Self::compression) is
    /// [`Error::Unsupported`].
    pub fn check_producer(&self, topic: &Topic, opts: &ProducerOptions) -> Result<()> {
        self.check_qos(topic, opts.allow_degraded_qos)?;
        if opts.compression != Compression::None && !self.compression.contains(&opts.compression) {
            let offered = match self.compression {
                [] => "none".to_string(),
                codecs => codecs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            };
            return Err(Error::unsupported(
                self.backend,
                format!("{} compression (codecs here: {offered})", opts.compression),
            ));
        }
        Ok(())
    }

    /// The checks every adapter makes before creating a consumer: valid
    /// options, and every option this backend cannot honour refused with
    /// [`Error::Unsupported`] (q2 without degrading, the subscription type,
    /// `Earliest`, a chosen ack timeout, a nack redelivery delay,
    /// `max_redeliveries`).
    pub fn check_consumer(&self, topic: &Topic, opts: &ConsumerOptions) -> Result<()> {
        opts.validate()?;
        self.check_qos(topic, opts.allow_degraded_qos)?;
        if !self.supports_subscription(opts.subscription_type) {
            return Err(Error::unsupported(
                self.backend,
                format!("{:?} subscriptions", opts.subscription_type),
            ));
        }
        if opts.initial_position == InitialPosition::Earliest && !self.earliest && topic.qos() != Qos::AtMostOnce {
            return Err(Error::unsupported(
                self.backend,
                "InitialPosition::Earliest (the broker keeps no history)",
            ));
        }
        if let Some(t) = opts.requested_ack_timeout() {
            if !self.ack_timeout {
                return Err(Error::unsupported(
                    self.backend,
                    format!("ack_timeout {t:?} (no ack timeout here; set it to None)"),
                ));
            }
        }
        if !opts.nack_redelivery_delay.is_zero() && !self.nack_delay {
            return Err(Error::unsupported(
                self.backend,
                format!("nack_redelivery_delay {:?}", opts.nack_redelivery_delay),
            ));
        }
        if opts.max_redeliveries.is_some() && !self.max_redeliveries {
            return Err(Error::unsupported(
                self.backend,
                "max_redeliveries (dead-lettering by the backend; the processor's max_attempts works everywhere)",
            ));
        }
        Ok(())
    }

    /// The checks every producer makes on a message before sending it:
    /// property rules, the payload limit, and `deliver_after` only where
    /// [`delayed_delivery`](Self::delayed_delivery) is claimed.
    pub fn check_message(&self, message: &OutgoingMessage) -> Result<()> {
        message.validate(self.max_payload)?;
        if message.deliver_after.is_some() && !self.delayed_delivery {
            return Err(Error::unsupported(self.backend, "deliver_after (delayed delivery)"));
        }
        Ok(())
    }

    /// The checks every adapter makes before creating a reader or seeking:
    /// replay is claimed, and the topic keeps history (not q0).
    pub fn check_replay(&self, topic: &Topic) -> Result<()> {
        if !self.replay {
            return Err(Error::unsupported(self.backend, "replay (readers and seek)"));
        }
        if topic.qos() == Qos::AtMostOnce {
            return Err(Error::unsupported(
                self.backend,
                format!("replay of q0 topic {topic} (q0 keeps no history)"),
            ));
        }
        Ok(())
    }

    /// [`Error::Unsupported`] unless [`positions`](Self::positions) is claimed.
    pub fn check_positions(&self) -> Result<()> {
        if self.positions {
            Ok(())
        } else {
            Err(Error::unsupported(self.backend, "log positions"))
        }
    }

    fn check_qos(&self, topic: &Topic, allow_degraded_qos: bool) -> Result<()> {
        if topic.qos() == Qos::ExactlyOnce && !self.exactly_once && !allow_degraded_qos {
            return Err(Error::unsupported(
                self.backend,
                "q2 (exactly-once); with allow_degraded_qos() in the producer and consumer options \
                 (CLI: --allow-degraded-qos) it runs with q1's guarantee, at least once",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_refuse_what_is_not_claimed() {
        let caps = Capabilities {
            shared: true,
            ..Capabilities::none("test")
        };
        let q2: Topic = "q2/a/b/c".parse().unwrap();
        let q1: Topic = "q1/a/b/c".parse().unwrap();
        assert!(matches!(
            caps.check_producer(&q2, &ProducerOptions::default()),
            Err(Error::Unsupported { .. })
        ));
        caps.check_producer(&q2, &ProducerOptions::default().allow_degraded_qos())
            .unwrap();
        caps.check_consumer(&q1, &ConsumerOptions::default()).unwrap();
        let excl = ConsumerOptions::default().with_type(SubscriptionType::Exclusive);
        assert!(matches!(
            caps.check_consumer(&q1, &excl),
            Err(Error::Unsupported { .. })
        ));
        let earliest = ConsumerOptions::default().with_initial_position(InitialPosition::Earliest);
        assert!(matches!(
            caps.check_consumer(&q1, &earliest),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn options_a_backend_cannot_honour_are_refused() {
        use std::time::Duration;
        let none = Capabilities {
            shared: true,
            nack: true,
            ..Capabilities::none("test")
        };
        let all = Capabilities {
            ack_timeout: true,
            nack_delay: true,
            max_redeliveries: true,
            ..none.clone()
        };
        let q1: Topic = "q1/a/b/c".parse().unwrap();
        let unsupported = |caps: &Capabilities, o: &ConsumerOptions| {
            matches!(caps.check_consumer(&q1, o), Err(Error::Unsupported { .. }))
        };
        let default = ConsumerOptions::default();
        let no_timeout = ConsumerOptions::default().with_ack_timeout(None);
        for ok in [&default, &no_timeout] {
            none.check_consumer(&q1, ok).unwrap();
        }
        let refused = [
            ConsumerOptions::default().with_ack_timeout(Some(Duration::from_secs(5))),
            // The default value, but chosen: still refused.
            ConsumerOptions::default().with_ack_timeout(default.ack_timeout),
            ConsumerOptions::default().with_nack_redelivery_delay(Duration::from_secs(1)),
            ConsumerOptions::default().with_max_redeliveries(3, None),
        ];
        for o in &refused {
            assert!(unsupported(&none, o), "{o:?}");
            all.check_consumer(&q1, o).unwrap();
        }
        let mut assigned = ConsumerOptions::default();
        assigned.ack_timeout = Some(Duration::from_secs(7));
        assert!(unsupported(&none, &assigned));
    }

    #[test]
    fn compression_is_refused_unless_listed() {
        let q1: Topic = "q1/a/b/c".parse().unwrap();
        let none = Capabilities::none("test");
        let some = Capabilities {
            compression: &[Compression::Lz4, Compression::Zstd],
            ..Capabilities::none("test")
        };
        let with = |c| ProducerOptions::default().with_compression(c);
        for caps in [&none, &some] {
            caps.check_producer(&q1, &with(Compression::None)).unwrap();
            let err = caps.check_producer(&q1, &with(Compression::Gzip)).unwrap_err();
            assert!(matches!(err, Error::Unsupported { .. }), "{err}");
            assert!(err.to_string().contains("gzip"), "{err}");
        }
        some.check_producer(&q1, &with(Compression::Lz4)).unwrap();
        some.check_producer(&q1, &with(Compression::Zstd)).unwrap();
        assert!(none.check_producer(&q1, &with(Compression::Zstd)).is_err());
    }

    #[test]
    fn message_checks_follow_the_claims() {
        let mut caps = Capabilities {
            max_payload: Some(4),
            ..Capabilities::none("test")
        };
        let later = OutgoingMessage::new("x").with_deliver_after(std::time::Duration::from_secs(1));
        assert!(matches!(caps.check_message(&later), Err(Error::Unsupported { .. })));
        caps.delayed_delivery = true;
        caps.check_message(&later).unwrap();
        assert!(matches!(
            caps.check_message(&OutgoingMessage::new("12345")),
            Err(Error::PayloadTooLarge { .. })
        ));
        assert!(matches!(
            caps.check_message(&OutgoingMessage::new("x").with_property("bad name", "v")),
            Err(Error::InvalidProperty { .. })
        ));
    }
}
