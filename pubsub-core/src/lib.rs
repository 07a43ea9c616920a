//! The core of the `pubsub` SDK: one API for Kafka, Pulsar, MQTT, NATS,
//! Redis and the in-process embedded log.
//!
//! - [`Topic`]: the generic `{qos}/{tenant}/{namespace}/{queue}` scheme.
//! - [`PubSubBackend`], [`Producer`], [`Consumer`]: the traits every backend
//!   implements; [`Message`] and [`OutgoingMessage`] travel through them.
//! - [`Capabilities`]: what a backend can do, stated honestly.
//! - [`codec`]: JSON that omits `None` fields, and Avro.
//! - [`Error`]: one error type with [`Error::is_retriable`].
//! - `testkit` (feature `testkit`): the conformance suite every backend runs.
//!
//! Most users depend on the `pubsub` facade crate, which re-exports all of
//! this and picks a backend from the environment.
//!
//! ```
//! use pubsub_core::{ConsumerOptions, OutgoingMessage, Topic};
//!
//! let topic: Topic = "q1/tg/flow/text-completion-requests".parse()?;
//! let msg = OutgoingMessage::new(r#"{"prompt":"hi"}"#).with_key("user-1");
//! msg.validate(None)?;
//! let opts = ConsumerOptions::default();
//! assert!(opts.ack_timeout.is_some());
//! # Ok::<(), pubsub_core::Error>(())
//! ```
#![warn(missing_docs)]

mod admin;
mod backend;
mod capabilities;
pub mod codec;
pub mod envelope;
mod error;
mod ext;
pub mod handles;
mod ident;
pub mod inbox;
mod message;
mod options;
pub mod processor;
mod replay;
mod secret;
mod tls;
mod topic;
mod unacked;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use admin::{
    check_namespace, parse_joined, topics_in_namespace, Admin, AdminCapabilities, SubscriptionInfo, TopicOptions,
};
pub use backend::{ack_all_with, receive_within, Consumer, Producer, PubSubBackend};
pub use capabilities::Capabilities;
pub use error::{BoxError, Error, Result};
pub use ext::{ConsumerExt, MessageStream, ProducerExt};
pub use ident::stable_hash;
pub use message::{
    ensure_open, validate_key, validate_property, AckTarget, Message, MessageId, MessageParts, NoAck, OutgoingMessage,
    Properties, CONTENT_TYPE_PROPERTY, MAX_PROPERTY_NAME_LEN, RESERVED_PROPERTY_PREFIX,
};
pub use options::{
    validate_subscription_name, Compression, ConsumerOptions, InitialPosition, ProducerOptions, SubscriptionType,
    DEFAULT_MAX_UNACKED, MAX_SUBSCRIPTION_LEN,
};
pub use replay::{LogPosition, Position, Reader, ReaderExt, ReaderStream};
pub use secret::{redact_url, Secret};
#[cfg(feature = "tls")]
pub use tls::{crypto_provider, install_default_provider};
pub use tls::{tls_failure, TlsConfig};
pub use topic::{Qos, Topic, TopicBuilder, MAX_SEGMENT_LEN};
pub use unacked::UnackedLimit;

// Re-exported so adapters and users implement the traits with the same versions.
pub use async_trait::async_trait;
pub use bytes::Bytes;
