//! The Redis adapter of the `pubsub` SDK, on the `redis` crate (tokio,
//! connection manager).
//!
//! | SDK | Redis |
//! |---|---|
//! | topic `q1/t/ns/q` | stream `pubsub:{t.ns.q}` |
//! | q0 | Pub/Sub channel `pubsub:{t.ns.q}:q0`: nothing retained; every consumer of the topic gets every message (Pub/Sub has no groups) |
//! | q1 | `XADD`; subscription = consumer group (`XGROUP CREATE … MKSTREAM`, at `0` for Earliest, `$` for Latest); `XREADGROUP`; `XACK` (acks given together share one) |
//! | readers, `seek` | `XREAD` from a bound id (reconnecting after a restart); `XGROUP SETID` between two fetches, dropping what was fetched for the old position |
//! | q2 | q1 + an atomic Lua publish that drops a dedup id seen within `dedup_window` (default 10 min) and returns the first id |
//! | ack timeout, crashed consumers | `XAUTOCLAIM` of entries idle past the ack timeout, with Redis's delivery counter as the redelivery count |
//! | `Message::in_progress` | `XCLAIM … IDLE 0` of the entry, in a script that first checks this consumer still holds it |
//! | nack (delay) | `XCLAIM … IDLE` so the next reclaim takes it after the delay; a delay longer than the ack timeout is cut to it |
//! | `deliver_after` | sorted set `pubsub:{t.ns.q}:delayed`, moved into the stream by consumers when due |
//! | properties, key | stream fields (`pubsub.payload`, `pubsub.key`, one field per property) |
//! | Exclusive, Failover, KeyShared | not supported (no native equivalent): refused with `Error::Unsupported` |
//!
//! All consumers of one subscription should use the same ack timeout:
//! reclaiming and nack delays are computed from it.
//!
//! ```no_run
//! use pubsub_core::PubSubBackend;
//! use pubsub_redis::{RedisBackend, RedisConfig};
//!
//! # async fn demo() -> pubsub_core::Result<()> {
//! let backend = RedisBackend::connect(RedisConfig::new("redis://127.0.0.1:6379")).await?;
//! assert_eq!(backend.name(), "redis");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod acks;
mod admin;
mod backend;
mod config;
mod conn;
mod consumer;
mod fields;
mod info;
mod keys;
mod replay;
mod scripts;

pub use backend::RedisBackend;
pub use config::RedisConfig;
