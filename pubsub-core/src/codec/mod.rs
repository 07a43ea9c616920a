//! Payload codecs: JSON that omits `None` fields, and Avro single object encoding.
//!
//! A codec writes its content type into the [`CONTENT_TYPE_PROPERTY`]
//! property, so a reader using another codec gets a clear [`Error::Codec`]
//! instead of garbage.
//!
//! ```
//! use pubsub_core::codec::{Codec, Json};
//!
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! struct Greeting { text: String, lang: Option<String> }
//!
//! let bytes = Json.encode(&Greeting { text: "hi".into(), lang: None })?;
//! assert_eq!(bytes, br#"{"text":"hi"}"#);
//! let back: Greeting = Json.decode(&bytes)?;
//! assert_eq!(back.lang, None);
//! # Ok::<(), pubsub_core::Error>(())
//! ```

mod avro;
mod json;

pub use avro::{Avro, AVRO_CONTENT_TYPE, AVRO_MAX_ALLOCATION};
pub(crate) use json::to_json_bytes;
pub use json::{Json, JSON_CONTENT_TYPE};

use crate::error::{Error, Result};
use crate::message::{Message, OutgoingMessage, CONTENT_TYPE_PROPERTY};

/// Turns values of `T` into payload bytes and back.
pub trait Codec<T>: Send + Sync {
    /// The content type written into the `content-type` property.
    fn content_type(&self) -> &str;
    /// Encodes a value.
    fn encode(&self, value: &T) -> Result<Vec<u8>>;
    /// Decodes a payload.
    fn decode(&self, payload: &[u8]) -> Result<T>;
}

/// Which codec a service uses, for configuration (`--codec json|avro`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CodecKind {
    /// [`Json`], the default on every backend except Kafka.
    #[default]
    Json,
    /// [`Avro`], the default on Kafka (as the seed design asks).
    Avro,
}

impl<T> Codec<T> for CodecKind
where
    T: serde::Serialize + serde::de::DeserializeOwned + apache_avro::AvroSchema,
{
    fn content_type(&self) -> &str {
        match self {
            CodecKind::Json => JSON_CONTENT_TYPE,
            CodecKind::Avro => AVRO_CONTENT_TYPE,
        }
    }

    fn encode(&self, value: &T) -> Result<Vec<u8>> {
        match self {
            CodecKind::Json => Json.encode(value),
            CodecKind::Avro => Avro::<T>::new()?.encode(value),
        }
    }

    fn decode(&self, payload: &[u8]) -> Result<T> {
        match self {
            CodecKind::Json => Json.decode(payload),
            CodecKind::Avro => Avro::<T>::new()?.decode(payload),
        }
    }
}

/// An outgoing message whose payload is `value` encoded with `codec`, with
/// the `content-type` property set.
pub fn encode_message<T, C: Codec<T> + ?Sized>(codec: &C, value: &T) -> Result<OutgoingMessage> {
    let payload = codec.encode(value)?;
    Ok(OutgoingMessage::new(payload).with_property(CONTENT_TYPE_PROPERTY, codec.content_type()))
}

/// Decodes a received message with `codec`, first checking that its
/// `content-type` (when present) is the codec's.
pub fn decode_message<T, C: Codec<T> + ?Sized>(codec: &C, message: &Message) -> Result<T> {
    check_content_type(message, codec.content_type())?;
    codec.decode(message.payload())
}

fn check_content_type(message: &Message, expected: &str) -> Result<()> {
    match message.content_type() {
        Some(ct) if ct != expected => Err(Error::Codec {
            message: format!(
                "message {} has content type {ct:?} but is being decoded as {expected:?}",
                message.id()
            ),
            source: None,
        }),
        _ => Ok(()),
    }
}

impl Message {
    /// Decodes the payload as JSON (the default codec).
    ///
    /// Fails with [`Error::Codec`] if the message says it holds another
    /// content type or the payload does not decode; the message can still
    /// be acked, nacked or dead-lettered.
    pub fn value<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        check_content_type(self, JSON_CONTENT_TYPE)?;
        json::from_json_bytes(self.payload())
    }

    /// Decodes the payload with `codec`.
    pub fn decode<T, C: Codec<T> + ?Sized>(&self, codec: &C) -> Result<T> {
        decode_message(codec, self)
    }
}
