//! The NATS adapter of the `pubsub` SDK, on `async-nats`: core NATS for q0,
//! JetStream for q1/q2.
//!
//! | SDK | NATS |
//! |---|---|
//! | topic `q1/t/ns/q` | subject `t.ns.q`; stream `PUBSUB_t_ns_q_{hash}` (one per topic, file storage, `max_age` 7 days, created on demand) |
//! | a stream made elsewhere | adopted when its only subject is `t.ns.q`, with limits retention, acks on and not sealed (its own limits then apply); any other stream holding the subject is refused with `Error::InvalidConfiguration` naming it and what to change |
//! | q0 | core publish; consumers are a queue group named after the subscription (Shared); nothing retained |
//! | q1 | JetStream publish (returns on the PubAck); durable pull consumer named after the subscription, explicit ack, `ack_wait` = ack timeout |
//! | q2 | q1 + `Nats-Msg-Id` = dedup id (the stream's `duplicate_window`, default 2 min) + double ack (the ack returns once the server confirmed it) |
//! | Earliest / Latest | `DeliverPolicy::All` / `New` |
//! | nack (delay) | `Nak(delay)` |
//! | redelivery count | `delivered - 1` from the message's JetStream info |
//! | properties, key | headers (`pubsub.key` for the key); values with line breaks are refused before sending |
//! | max payload | the server's `max_payload` minus 4 KiB kept for headers; payload + headers is checked too |
//! | a cluster | `nats://h1:4222,nats://h2:4222,...` (a server without a scheme takes the first one's): the client connects to one and reconnects to another when it fails |
//! | replicas | streams created with [`NatsConfig::replicas`], `?replicas=N` in the URL, else 3 or as many servers as the cluster has (1 on a single server); durable consumers inherit the stream's |
//! | Exclusive, Failover, KeyShared, `deliver_after` | not supported by this server version: refused with `Error::Unsupported` |
//!
//! q0 and q1/q2 topics of the same tenant/namespace/queue share the subject:
//! a q0 publish to it is stored by the q1 stream, and q0 consumers see q1
//! publishes. Use distinct queues for the two.
//!
//! ```no_run
//! use pubsub_core::PubSubBackend;
//! use pubsub_nats::{NatsBackend, NatsConfig};
//!
//! # async fn demo() -> pubsub_core::Result<()> {
//! let backend = NatsBackend::connect(NatsConfig::new("nats://127.0.0.1:4222")).await?;
//! assert_eq!(backend.name(), "nats");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod admin;
mod backend;
mod config;
mod consumer;
mod headers;
mod naming;
mod replay;

pub use backend::NatsBackend;
pub use config::{default_stream_replicas, NatsConfig};
