//! **pubsub**: one pub/sub API for Kafka, Pulsar, MQTT, NATS, Redis and an
//! in-process embedded log.
//!
//! Write producers and consumers against [`PubSubBackend`], pick the backend
//! with a cargo feature and `PUBSUB_BACKEND`, and run the same code on the
//! embedded log in unit tests and on a real broker in production.
//!
//! ```
//! use pubsub::{ConsumerOptions, OutgoingMessage, Topic};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> pubsub::Result<()> {
//! // PUBSUB_BACKEND unset: the embedded backend, in memory.
//! let backend = pubsub::connect("embedded://memory").await?;
//! let topic: Topic = "q1/tg/flow/text-completion-requests".parse()?;
//!
//! let consumer = backend.create_consumer(&topic, "workers", ConsumerOptions::default()).await?;
//! let producer = backend.create_producer(&topic, Default::default()).await?;
//! producer.send(OutgoingMessage::new("hello").with_property("trace-id", "t1")).await?;
//!
//! let msg = consumer.receive().await?;
//! assert_eq!(msg.payload().as_ref(), b"hello");
//! msg.ack().await?;
//! # Ok(()) }
//! ```
//!
//! # Choosing a backend
//!
//! | `PUBSUB_BACKEND` | cargo feature | settings |
//! |---|---|---|
//! | `embedded` (default) | `embedded` (default) | `PUBSUB_EMBEDDED_DIR` |
//! | `kafka` | `kafka` | `KAFKA_BOOTSTRAP_SERVERS` |
//! | `pulsar` | `pulsar` | `PULSAR_HOST`, `PULSAR_API_KEY`, `PULSAR_LISTENER` |
//! | `mqtt` | `mqtt` | `MQTT_HOST`, `MQTT_PORT`, `MQTT_USERNAME`, `MQTT_PASSWORD` |
//! | `nats` | `nats` | `NATS_URL` |
//! | `redis` | `redis` | `REDIS_URL` |
//!
//! [`from_env`] reads these; [`PubSubArgs`] adds them as flags to a clap
//! CLI; [`connect`] takes one URL. A backend whose feature is off gives
//! [`Error::InvalidConfiguration`] naming the feature.
//!
//! # Beyond producing and consuming
//!
//! - [`PubSubBackend::admin`]: topics (create, delete, list, exists),
//!   subscription backlog, health checks, log positions ([`Admin`]).
//! - Replay: [`PubSubBackend::create_reader`] reads from any [`Position`]
//!   without a subscription; [`Consumer::seek`] moves a subscription.
//! - The `pubsub` command-line tool (feature `cli`) does all of this from a
//!   terminal.
//!
//! [`Capabilities`] says what each backend supports; the rest is
//! [`Error::Unsupported`].
#![warn(missing_docs)]

mod config;
/// The README's Rust snippets, compiled (and run unless `no_run`) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub mod readme {}
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

pub use config::{
    BackendConfig, BackendKind, KafkaSasl, KafkaTlsArgs, MqttTlsArgs, NatsTlsArgs, PubSubArgs, PulsarTlsArgs,
    RedisTlsArgs,
};
pub use pubsub_core::*;

/// The embedded backend crate (feature `embedded`).
#[cfg(feature = "embedded")]
pub use pubsub_embedded as embedded;
/// The Kafka adapter crate (feature `kafka`), for its own settings (`KafkaConfig`).
#[cfg(feature = "kafka")]
pub use pubsub_kafka as kafka;
/// The MQTT adapter crate (feature `mqtt`).
#[cfg(feature = "mqtt")]
pub use pubsub_mqtt as mqtt;
/// The NATS adapter crate (feature `nats`).
#[cfg(feature = "nats")]
pub use pubsub_nats as nats;
/// The Pulsar adapter crate (feature `pulsar`), for its own settings (`PulsarConfig`).
#[cfg(feature = "pulsar")]
pub use pubsub_pulsar as pulsar;
/// The Redis adapter crate (feature `redis`).
#[cfg(feature = "redis")]
pub use pubsub_redis as redis;
/// Celery-class tasks (feature `tasks`): see the README's "Tasks".
#[cfg(feature = "tasks")]
pub use pubsub_tasks as tasks;

/// Connects to the backend a URL names; see [`BackendConfig::from_url`].
pub async fn connect(url: &str) -> Result<Arc<dyn PubSubBackend>> {
    BackendConfig::from_url(url)?.connect().await
}

/// Connects to the backend the environment names (`PUBSUB_BACKEND` and the
/// backend's variables; see the table above).
pub async fn from_env() -> Result<Arc<dyn PubSubBackend>> {
    PubSubArgs::from_env()?.connect().await
}
