//! The MQTT v5 adapter of the `pubsub` SDK, on `rumqttc`.
//!
//! | SDK | MQTT v5 |
//! |---|---|
//! | topic `q1/t/ns/q` | topic `t/ns/q` |
//! | q0 / q1 | QoS 0 / QoS 1; q2 (only with `allow_degraded_qos`) is QoS 2 |
//! | subscription | shared subscription `$share/{subscription}/t/ns/q`: consumers of one subscription compete |
//! | client id | `pubsub-{subscription}-{topic hash}-{slot}` (the lowest slot this process is not using for the subscription of the topic), or `pubsub-{subscription}-{topic hash}-{name}` with `ConsumerOptions::name`: stable, so a returning consumer resumes its session; distinct, so the broker never kicks a live consumer |
//! | q1 consumer | persistent session (clean start off, session expiry 1 day): messages published while it is away are queued by the broker; manual acks (the PUBACK goes out when the application acks) |
//! | send | returns once the broker's PUBACK (q1) or PUBCOMP (q2) arrived |
//! | nack (delay) | the message comes back to this consumer after the delay, redelivery count + 1 (MQTT has no nack); the broker also redelivers unacked messages when the session reconnects, with the DUP flag: redelivery count 1 (MQTT sends no count) |
//! | properties, key, content type | v5 user properties, user property `pubsub.key`, v5 content type |
//! | Earliest | not supported (MQTT keeps no history): refused with `Error::Unsupported` |
//! | Exclusive, Failover, KeyShared, ack timeout, `deliver_after`, q2 dedup | not supported |
//!
//! Several processes consuming one subscription should each set a distinct
//! `ConsumerOptions::name`: without it, two processes would both use slot 0,
//! and the broker would disconnect the older one.
//!
//! ```no_run
//! use pubsub_core::PubSubBackend;
//! use pubsub_mqtt::{MqttBackend, MqttConfig};
//!
//! # async fn demo() -> pubsub_core::Result<()> {
//! let backend = MqttBackend::connect(MqttConfig::new("127.0.0.1", 1883)).await?;
//! assert_eq!(backend.name(), "mqtt");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod admin;
mod backend;
mod config;
mod connection;
mod consumer;
mod mapping;
mod publisher;

pub use backend::MqttBackend;
pub use config::MqttConfig;
