//! The Kafka adapter of the `pubsub` SDK, on rdkafka (bundled librdkafka).
//!
//! | SDK | Kafka |
//! |---|---|
//! | topic `q1/t/ns/q` | topic `t.ns.q`, created on demand through the admin API (4 partitions by default) |
//! | q0 | producer `acks=0`; consumer with auto commit |
//! | q1 | producer `acks=all`, idempotent; manual commits of the contiguous acked prefix per partition, acks above it in the commit metadata |
//! | q2 | not claimed (an idempotent producer only de-duplicates its own retries, and a commit cannot confirm an out-of-order ack): refused unless `allow_degraded_qos`, then run as q1 |
//! | subscription | consumer group `{kafka topic}/{subscription}` (one per topic: see `groups`); Shared = group members sharing partitions (parallelism bounded by partitions; order per partition, so per key) |
//! | Earliest / Latest | `auto.offset.reset`, and the start committed when the group first gets a partition |
//! | nack (delay) | after the delay, seek back to the lowest nacked offset whose delay is over: later records of that partition are fetched again but skipped if acked or still out |
//! | properties, key, publish time | headers, key, timestamp |
//! | Exclusive, Failover, KeyShared, ack timeout, `deliver_after` | not supported |
//! | typed messages | Avro by default (`Capabilities::default_codec`) |
//!
//! ```no_run
//! use pubsub_core::PubSubBackend;
//! use pubsub_kafka::{KafkaBackend, KafkaConfig};
//!
//! # async fn demo() -> pubsub_core::Result<()> {
//! let backend = KafkaBackend::connect(KafkaConfig::new("127.0.0.1:9092")).await?;
//! assert_eq!(backend.name(), "kafka");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod admin;
mod backend;
mod config;
mod consumer;
mod groups;
mod headers;
mod offsets;
mod replay;

pub use backend::KafkaBackend;
pub use config::{KafkaBroker, KafkaConfig, SaslMechanism};
