//! A compact binary envelope carrying key, properties and payload in one
//! byte string, for transports without native headers (Redis Pub/Sub).
//! Shared here so every adapter that needs one writes the same format.
//!
//! ```text
//! "PSE1"  nprops:u32le  (len:u32le name  len:u32le value)*  key_len:u32le (u32::MAX = none) key  payload...
//! ```

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::message::Properties;

const MAGIC: &[u8; 4] = b"PSE1";
const NONE: u32 = u32::MAX;

/// What an envelope holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// Message key.
    pub key: Option<String>,
    /// Properties.
    pub properties: Properties,
    /// Payload.
    pub payload: Bytes,
}

/// Encodes an envelope.
///
/// ```
/// use pubsub_core::envelope::{decode, encode, Envelope};
/// let e = Envelope { key: Some("k".into()), payload: "hi".into(), ..Default::default() };
/// assert_eq!(decode(&encode(&e))?, e);
/// # Ok::<(), pubsub_core::Error>(())
/// ```
pub fn encode(e: &Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + e.payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(e.properties.len() as u32).to_le_bytes());
    for (k, v) in &e.properties {
        for s in [k, v] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    match &e.key {
        Some(k) => {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k.as_bytes());
        }
        None => out.extend_from_slice(&NONE.to_le_bytes()),
    }
    out.extend_from_slice(&e.payload);
    out
}

/// Decodes an envelope; anything malformed is [`Error::Codec`], never a panic.
pub fn decode(bytes: &[u8]) -> Result<Envelope> {
    let bad = |why: &str| Error::Codec {
        message: format!("malformed message envelope: {why}"),
        source: None,
    };
    let mut rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| bad("missing PSE1 magic"))?;
    let u32_field = |rest: &mut &[u8]| -> Result<u32> {
        let (head, tail) = rest.split_first_chunk::<4>().ok_or_else(|| bad("truncated length"))?;
        *rest = tail;
        Ok(u32::from_le_bytes(*head))
    };
    let string = |rest: &mut &[u8], len: u32| -> Result<String> {
        let len = len as usize;
        if rest.len() < len {
            return Err(bad("truncated string"));
        }
        let (head, tail) = rest.split_at(len);
        *rest = tail;
        String::from_utf8(head.to_vec()).map_err(|_| bad("a string is not UTF-8"))
    };
    let n = u32_field(&mut rest)?;
    let mut properties = Properties::new();
    for _ in 0..n {
        let kl = u32_field(&mut rest)?;
        let k = string(&mut rest, kl)?;
        let vl = u32_field(&mut rest)?;
        let v = string(&mut rest, vl)?;
        properties.insert(k, v);
    }
    let key = match u32_field(&mut rest)? {
        NONE => None,
        len => Some(string(&mut rest, len)?),
    };
    Ok(Envelope {
        key,
        properties,
        payload: Bytes::copy_from_slice(rest),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_truncation_fails_cleanly() {
        let mut properties = Properties::new();
        properties.insert("a".into(), "1".into());
        let e = Envelope {
            key: None,
            properties,
            payload: Bytes::from_static(b"\x00\xffpayload"),
        };
        let bytes = encode(&e);
        assert_eq!(decode(&bytes).unwrap(), e);
        // Cuts inside the header fail; cuts inside the payload just shorten it.
        let header = bytes.len() - e.payload.len();
        for cut in 0..header {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(b"garbage").is_err());
    }
}
