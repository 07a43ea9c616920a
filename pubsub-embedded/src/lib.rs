//! The in-process log backend of the `pubsub` SDK: the default backend, for
//! tests and small deployments. Not a mock: it runs the same conformance
//! suite as every broker adapter.
//!
//! # Model
//!
//! - Each topic is an append-only log. A subscription has a cursor and
//!   per-message acks (acks may arrive in any order, from any task).
//! - `Shared`: competing consumers; each message goes to one consumer,
//!   whichever asks first (consumers pull, so a slow consumer never sits on
//!   messages another could handle). `Exclusive`: a second consumer gets
//!   [`pubsub_core::Error::ConsumerBusy`]. `Failover`: the first consumer is
//!   active, the next takes over (with everything unacked) when it leaves.
//!   `KeyShared`: a key's messages go to one consumer (`hash(key) mod n`).
//! - `nack` and the ack timeout redeliver with a higher redelivery count,
//!   optionally after a delay; `deliver_after` delays a message; past
//!   `max_redeliveries` a message goes to the dead-letter topic.
//! - q0 topics keep no log: a message reaches only subscriptions with a
//!   consumer at that moment, each buffering at most
//!   [`EmbeddedConfig::q0_buffer`] (oldest dropped first).
//! - q2 topics drop a send whose dedup id was seen among the last
//!   [`EmbeddedConfig::dedup_window`] ids, returning the first send's id;
//!   their acks are fsynced before `ack` returns (data-dir mode).
//!
//! # Back-pressure and memory
//!
//! Consumers pull; nothing is buffered per consumer, so a slow consumer
//! costs no memory beyond the log itself. The log keeps every record some
//! subscription has not acknowledged, plus up to
//! [`EmbeddedConfig::retained_messages`] acknowledged ones for new
//! `Earliest` subscriptions. A consumer that never acks therefore grows the
//! log: watch the backlog (or set `max_redeliveries` with a dead-letter topic).
//!
//! # Data directory
//!
//! With [`EmbeddedConfig::data_dir`] (or `PUBSUB_EMBEDDED_DIR`), q1/q2
//! records go to segment files with an index, and subscription positions to
//! small state files; see the `storage` module docs for the layout. With
//! [`FsyncPolicy::Always`] (the default) a `send` that returned survives a
//! crash of the process or machine; records a crash tore are cut on the
//! next open, and every message not acknowledged is delivered again. The
//! data directory gives durability, not a larger-than-memory log: retained
//! records are also held in memory.
//!
//! # Acking a batch
//!
//! [`Consumer::ack_all`](pubsub_core::Consumer::ack_all) acks many messages
//! in one call, here under one lock of the topic (and, for q2 in a data
//! directory, one fsync of the subscription state):
//!
//! ```
//! use std::time::Duration;
//! use pubsub_core::{ConsumerOptions, OutgoingMessage, PubSubBackend};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> pubsub_core::Result<()> {
//! let backend = pubsub_embedded::EmbeddedBackend::memory();
//! let topic = "q1/docs/acks/jobs".parse()?;
//! let consumer = backend.create_consumer(&topic, "workers", ConsumerOptions::default()).await?;
//! let producer = backend.create_producer(&topic, Default::default()).await?;
//! producer.send_batch((0..10).map(|i| OutgoingMessage::new(format!("job {i}"))).collect()).await?;
//!
//! let batch = consumer.receive_batch(10, Duration::from_secs(1)).await?;
//! assert_eq!(batch.len(), 10);
//! consumer.ack_all(&batch).await?; // one call for all ten
//! consumer.ack_all(&batch).await?; // acking again is harmless
//! consumer.ack_all(&[]).await?; // so is nothing
//!
//! consumer.close().await?;
//! assert!(matches!(consumer.ack_all(&batch).await, Err(pubsub_core::Error::Closed(_))));
//! backend.close().await
//! # }
//! ```
#![warn(missing_docs)]

mod admin;
mod backend;
mod config;
mod log;
mod reader;
pub mod record;
mod storage;
mod subscription;
mod topic;

pub use backend::{EmbeddedBackend, DEAD_LETTER_ORIGIN_PROPERTY, DEAD_LETTER_REDELIVERIES_PROPERTY};
pub use config::{EmbeddedConfig, FsyncPolicy};
