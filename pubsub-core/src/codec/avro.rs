use std::marker::PhantomData;

use apache_avro::headers::{HeaderBuilder, RabinFingerprintHeader};
use apache_avro::{AvroSchema, GenericSingleObjectReader, Schema};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Codec;
use crate::error::{Error, Result};

/// Content type written by [`Avro`].
pub const AVRO_CONTENT_TYPE: &str = "application/avro";

/// Avro in single object encoding (`C3 01`, the 8-byte Rabin fingerprint of
/// the writer schema, then the datum), with the schema derived from the Rust
/// type (`#[derive(apache_avro::AvroSchema)]`). A reader whose schema has
/// another fingerprint gets [`Error::Codec`], not garbage.
///
/// ```
/// use pubsub_core::codec::{Avro, Codec};
///
/// #[derive(serde::Serialize, serde::Deserialize, apache_avro::AvroSchema, Debug, PartialEq)]
/// struct Reading { sensor: String, value: f64 }
///
/// let codec = Avro::<Reading>::new()?;
/// let bytes = codec.encode(&Reading { sensor: "t1".into(), value: 21.5 })?;
/// assert_eq!(&bytes[..2], &[0xC3, 0x01]);
/// assert_eq!(codec.decode(&bytes)?, Reading { sensor: "t1".into(), value: 21.5 });
/// # Ok::<(), pubsub_core::Error>(())
/// ```
pub struct Avro<T> {
    schema: Schema,
    header: Vec<u8>,
    reader: GenericSingleObjectReader,
    _type: PhantomData<fn() -> T>,
}

/// The most apache-avro may allocate for one string, bytes or array block
/// while decoding (its process-wide `max_allocation_bytes`, set by the first
/// `Avro::new` unless the application set it before). apache-avro reserves
/// an array's memory from the item count written in the payload, so with its
/// 512 MiB default a 90-byte payload made it reserve 7.5 GB (found by the
/// `codecs` fuzz target; the input is in `fuzz/seeds/codecs/`). 16 MiB is
/// the largest payload any backend accepts.
pub const AVRO_MAX_ALLOCATION: usize = 16 * 1024 * 1024;

impl<T: AvroSchema> Avro<T> {
    /// A codec for `T`, with the schema derived from the type.
    pub fn new() -> Result<Self> {
        apache_avro::util::max_allocation_bytes(AVRO_MAX_ALLOCATION);
        let schema = T::get_schema();
        let header = RabinFingerprintHeader::from_schema(&schema).build_header();
        let reader =
            GenericSingleObjectReader::new(schema.clone()).map_err(|e| Error::codec("invalid Avro schema", e))?;
        Ok(Avro {
            schema,
            header,
            reader,
            _type: PhantomData,
        })
    }

    /// The writer schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }
}

impl<T> std::fmt::Debug for Avro<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Avro")
            .field("schema", &self.schema.canonical_form())
            .finish()
    }
}

impl<T: AvroSchema + Serialize + DeserializeOwned> Codec<T> for Avro<T> {
    fn content_type(&self) -> &str {
        AVRO_CONTENT_TYPE
    }

    fn encode(&self, value: &T) -> Result<Vec<u8>> {
        let mut out = self.header.clone();
        apache_avro::write_avro_datum_ref(&self.schema, value, &mut out)
            .map_err(|e| Error::codec(format!("Avro encode failed: {e}"), e))?;
        Ok(out)
    }

    fn decode(&self, payload: &[u8]) -> Result<T> {
        if payload.len() < self.header.len() || payload[..self.header.len()] != self.header[..] {
            return Err(Error::Codec {
                message: "payload is not Avro single object encoding with this type's schema fingerprint".into(),
                source: None,
            });
        }
        let mut input = payload;
        let value = self
            .reader
            .read_value(&mut input)
            .map_err(|e| Error::codec(format!("Avro decode failed: {e}"), e))?;
        if !input.is_empty() {
            return Err(Error::Codec {
                message: format!("{} trailing bytes after the Avro datum", input.len()),
                source: None,
            });
        }
        apache_avro::from_value(&value).map_err(|e| Error::codec(format!("Avro decode failed: {e}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, apache_avro::AvroSchema)]
    struct TextCompletionRequest {
        system: String,
        prompt: String,
        streaming: bool,
        metadata: Option<std::collections::HashMap<String, String>>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, apache_avro::AvroSchema)]
    struct Other {
        x: i64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, apache_avro::AvroSchema)]
    struct Batch {
        items: Vec<i64>,
    }

    /// An array announcing 400 million items in a few bytes is refused by
    /// the allocation limit, not reserved (the fuzz finding).
    #[test]
    fn huge_array_counts_are_refused_before_allocating() {
        let codec = Avro::<Batch>::new().unwrap();
        let mut payload = codec.header.clone();
        let mut n: u64 = 400_000_000 << 1; // zig-zag encoded block count
        while n >= 0x80 {
            payload.push((n as u8) | 0x80);
            n >>= 7;
        }
        payload.push(n as u8);
        let err = codec.decode(&payload).unwrap_err().to_string();
        assert!(err.contains(&AVRO_MAX_ALLOCATION.to_string()), "{err}");
    }

    #[test]
    fn round_trips_with_single_object_header() {
        let codec = Avro::<TextCompletionRequest>::new().unwrap();
        let v = TextCompletionRequest {
            system: "s".into(),
            prompt: "p".into(),
            streaming: true,
            metadata: None,
        };
        let bytes = codec.encode(&v).unwrap();
        assert_eq!(&bytes[..2], &[0xC3, 0x01]);
        let fp = codec.schema().fingerprint::<apache_avro::rabin::Rabin>();
        assert_eq!(&bytes[2..10], &fp.bytes[..]);
        assert_eq!(codec.decode(&bytes).unwrap(), v);
    }

    #[test]
    fn wrong_schema_or_garbage_is_a_codec_error() {
        let a = Avro::<TextCompletionRequest>::new().unwrap();
        let b = Avro::<Other>::new().unwrap();
        let bytes = b.encode(&Other { x: 7 }).unwrap();
        assert!(matches!(a.decode(&bytes), Err(Error::Codec { .. })));
        assert!(matches!(a.decode(b"{}"), Err(Error::Codec { .. })));
        let mut truncated = a
            .encode(&TextCompletionRequest {
                system: "s".into(),
                prompt: "p".into(),
                streaming: false,
                metadata: None,
            })
            .unwrap();
        truncated.truncate(truncated.len() - 2);
        assert!(matches!(a.decode(&truncated), Err(Error::Codec { .. })));
    }
}
