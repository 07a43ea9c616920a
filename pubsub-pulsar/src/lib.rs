//! The Apache Pulsar adapter of the `pubsub` SDK, on the [`pulsar`] crate (tokio).
//!
//! | SDK | Pulsar |
//! |---|---|
//! | topic `q0/t/ns/q` | `non-persistent://t/ns/q`: nothing stored, nothing kept for absent consumers |
//! | topic `q1/t/ns/q` | `persistent://t/ns/q`; `send` returns on the broker's receipt |
//! | q2 | not supported: Pulsar de-duplicates by producer name and sequence id, and the `pulsar` crate numbers sequences itself, so a message's dedup id cannot become one. Refused with `Error::Unsupported` (or run as q1 with `allow_degraded_qos`) |
//! | Shared, Exclusive, Failover, KeyShared | the subscription types of the same names |
//! | Failover's active consumer | the first one made in this process that is still open: on Apache Pulsar each Failover consumer gets a priority level in creation order (the broker otherwise picks by hashing the topic name over the consumers' names); pulsar-lite picks by consumer name, which sorts in creation order. When it closes, the broker hands its unacked messages to the next after `activeConsumerFailoverDelayTimeMillis` (1 s); Apache Pulsar 4.0.7 may leave them until the next publish if the active consumer closes within milliseconds of a delivery (a broker race; the crate ignores `ActiveConsumerChange`) |
//! | Earliest / Latest | the subscription's initial position |
//! | readers | non-durable subscriptions started at an id, filtered on the client (from a time: read from the earliest, older messages skipped) |
//! | `seek` | the protocol's `Seek` by id or time, then the consumer subscribes afresh; no log positions (ids are not counts) |
//! | ack / nack | individual ack / negative ack (redelivery); a nack delay waits on the client, as Pulsar clients do |
//! | ack timeout | the client's unacked-message redelivery |
//! | `max_redeliveries` | the client's dead-letter policy; without a `dead_letter_topic`, Pulsar's `<topic>-<subscription>-DLQ` (nothing is dropped); dead letters carry `REAL_TOPIC` and `ORIGIN_MESSAGE_ID` |
//! | `deliver_after` | `deliver_at_time` (Shared and KeyShared subscriptions) |
//! | properties, key | message properties, partition key |
//! | publish time | the broker's publish time |
//! | redelivery count | deliveries of the message to this consumer (the crate does not expose the broker's count) |
//! | max payload | `max_message_size` (5 MiB) minus 64 KiB for metadata; no chunking (the crate has none): larger payloads get `Error::PayloadTooLarge` |
//! | token auth | `PULSAR_API_KEY`, never printed |
//! | TLS | `pulsar+ssl://` or [`PulsarConfig::tls`] (`PULSAR_TLS_*`): the CA file (trusted besides the system's store), certificate and host name checks on, a client certificate with a PKCS#8 key (mutual TLS, through the patched crate); a server name override is `Error::Unsupported`. A failed handshake is `Error::Tls`, a refused token or certificate `Error::Authentication` |
//! | broker implementation | [`PulsarBroker`]: Apache Pulsar (default) or pulsar-lite (`?broker=lite`), which lacks `deliver_after` and a safe Exclusive refusal, so those are refused there |
//! | tenant, namespace | Pulsar's; Apache Pulsar makes neither on first use, so with [`PulsarConfig::admin_url`] set the adapter makes a missing tenant and namespace through the HTTP admin API (pulsar-lite makes them itself) |
//! | admin | with [`PulsarConfig::admin_url`] (Apache Pulsar): the HTTP admin API creates, lists, finds and deletes q0 and q1 topics (a delete is refused while a producer or consumer is attached) and gives subscriptions with their `msgBacklog`. Without it: the binary protocol creates, finds and lists q1 topics only; q0 topics, `delete_topic` and `subscriptions` are `Unsupported`. pulsar-lite: health checks only |
//! | advertised listener | not supported by the crate: `PULSAR_LISTENER` set is `Error::Unsupported` at connect |
//!
//! ```no_run
//! use pubsub_core::PubSubBackend;
//! use pubsub_pulsar::{PulsarBackend, PulsarConfig};
//!
//! # async fn demo() -> pubsub_core::Result<()> {
//! let backend = PulsarBackend::connect(PulsarConfig::new("pulsar://127.0.0.1:6650")).await?;
//! assert_eq!(backend.name(), "pulsar");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod admin;
mod backend;
mod config;
mod consumer;
mod errors;
mod http_admin;
mod naming;
mod replay;

pub use backend::PulsarBackend;
pub use config::{PulsarBroker, PulsarConfig, DEFAULT_MAX_MESSAGE_SIZE, METADATA_RESERVE};
