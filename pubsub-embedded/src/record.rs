//! One log record and its on-disk frame.
//!
//! ```text
//! frame  = len:u32le  crc32(body):u32le  body[len]
//! body   = version:u8(=1)  offset:u64  publish_ms:u64  deliver_at_ms:u64 (0 = none)
//!          key:opt_str  dedup_id:opt_str  nprops:u32 (name:str value:str)*  payload:bytes
//! str    = len:u32 utf8[len]      opt_str = len:u32 (u32::MAX = none) utf8[len]
//! bytes  = len:u32 raw[len]       (all integers little endian)
//! ```
//!
//! [`decode_frame`] checks every length and the CRC before trusting a byte,
//! so a torn or corrupted file is reported, never a panic or garbage.

use bytes::Bytes;
use pubsub_core::{MessageId, MessageParts, Properties, Topic};

/// Bytes before the body: length and CRC.
pub const FRAME_HEADER: usize = 8;
const VERSION: u8 = 1;
const NONE: u32 = u32::MAX;
/// Largest body a frame may announce; anything bigger is corruption.
pub const MAX_BODY: usize = 1 << 30;

/// A message as stored in a topic's log.
///
/// What most messages lack (a key, properties, a delay, a dedup id) sits in
/// one box, so a plain message costs its payload plus about 80 bytes while
/// it waits to be acked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the topic, from 0.
    pub offset: u64,
    /// Milliseconds since the Unix epoch when appended.
    pub publish_ms: u64,
    /// Payload.
    pub payload: Bytes,
    meta: Option<Box<RecordMeta>>,
}

/// The optional parts of a [`Record`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordMeta {
    /// Not to be delivered before this (ms since the epoch).
    pub deliver_at_ms: Option<u64>,
    /// Routing / ordering key.
    pub key: Option<String>,
    /// q2 de-duplication id.
    pub dedup_id: Option<String>,
    /// Properties.
    pub properties: Properties,
}

/// The properties of a record that has none.
static NO_PROPERTIES: Properties = Properties::new();

impl Record {
    /// A record; `meta` is stored only if it holds something.
    pub fn new(offset: u64, publish_ms: u64, payload: Bytes, meta: RecordMeta) -> Self {
        Record {
            offset,
            publish_ms,
            payload,
            meta: (meta != RecordMeta::default()).then(|| Box::new(meta)),
        }
    }

    /// Not to be delivered before this (ms since the epoch).
    pub fn deliver_at_ms(&self) -> Option<u64> {
        self.meta.as_ref().and_then(|m| m.deliver_at_ms)
    }

    /// Routing / ordering key.
    pub fn key(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.key.as_deref())
    }

    /// q2 de-duplication id.
    pub fn dedup_id(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.dedup_id.as_deref())
    }

    /// Properties.
    pub fn properties(&self) -> &Properties {
        self.meta.as_ref().map_or(&NO_PROPERTIES, |m| &m.properties)
    }

    /// The message parts of this record on `topic` (redelivery count 0).
    pub(crate) fn parts(&self, topic: &Topic) -> MessageParts {
        MessageParts {
            payload: self.payload.clone(),
            properties: self.properties().clone(),
            key: self.key().map(str::to_string),
            publish_time: std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.publish_ms),
            ..MessageParts::new(MessageId::from_seq(self.offset), topic.clone())
        }
    }

    /// Bytes this record takes in memory, roughly (for accounting).
    pub fn size_hint(&self) -> usize {
        self.payload.len()
            + self.key().map_or(0, str::len)
            + self
                .properties()
                .iter()
                .map(|(k, v)| k.len() + v.len() + 32)
                .sum::<usize>()
            + 96
    }
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ends inside the frame (a torn write at the end of a file).
    Truncated,
    /// The frame is complete but wrong: bad CRC, length or field.
    Corrupt(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("record is truncated"),
            DecodeError::Corrupt(why) => write!(f, "record is corrupt: {why}"),
        }
    }
}

/// Appends the frame of `record` to `out`.
pub fn encode_frame(record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    out.push(VERSION);
    out.extend_from_slice(&record.offset.to_le_bytes());
    out.extend_from_slice(&record.publish_ms.to_le_bytes());
    out.extend_from_slice(&record.deliver_at_ms().unwrap_or(0).to_le_bytes());
    put_opt_str(out, record.key());
    put_opt_str(out, record.dedup_id());
    out.extend_from_slice(&(record.properties().len() as u32).to_le_bytes());
    for (k, v) in record.properties() {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v.as_bytes());
    }
    put_bytes(out, &record.payload);
    let body_len = (out.len() - start - FRAME_HEADER) as u32;
    let crc = crc32fast::hash(&out[start + FRAME_HEADER..]);
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_bytes(out, s.as_bytes()),
        None => out.extend_from_slice(&NONE.to_le_bytes()),
    }
}

/// Decodes the frame at the start of `input`; returns the record and the
/// frame's total length.
pub fn decode_frame(input: &[u8]) -> Result<(Record, usize), DecodeError> {
    if input.len() < FRAME_HEADER {
        return Err(DecodeError::Truncated);
    }
    let len = u32::from_le_bytes(input[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(input[4..8].try_into().expect("4 bytes"));
    if len > MAX_BODY {
        return Err(DecodeError::Corrupt(format!(
            "announced body length {len} is implausible"
        )));
    }
    let Some(body) = input.get(FRAME_HEADER..FRAME_HEADER + len) else {
        return Err(DecodeError::Truncated);
    };
    if crc32fast::hash(body) != crc {
        return Err(DecodeError::Corrupt("CRC mismatch".into()));
    }
    let record = decode_body(body).map_err(DecodeError::Corrupt)?;
    Ok((record, FRAME_HEADER + len))
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("field of {n} bytes runs past the end of the body"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
    }
    fn opt_string(&mut self) -> Result<Option<String>, String> {
        let n = self.u32()?;
        if n == NONE {
            return Ok(None);
        }
        let b = self.take(n as usize)?;
        String::from_utf8(b.to_vec())
            .map(Some)
            .map_err(|_| "a string field is not UTF-8".to_string())
    }
}

fn decode_body(body: &[u8]) -> Result<Record, String> {
    let mut c = Cursor(body);
    let version = c.u8()?;
    if version != VERSION {
        return Err(format!("unknown record version {version}"));
    }
    let offset = c.u64()?;
    let publish_ms = c.u64()?;
    let deliver_at_ms = Some(c.u64()?).filter(|&t| t != 0);
    let key = c.opt_string()?;
    let dedup_id = c.opt_string()?;
    let nprops = c.u32()?;
    let mut properties = Properties::new();
    for _ in 0..nprops {
        let k = c.string()?;
        let v = c.string()?;
        properties.insert(k, v);
    }
    let payload = Bytes::copy_from_slice(c.bytes()?);
    if !c.0.is_empty() {
        return Err(format!("{} unexpected bytes after the payload", c.0.len()));
    }
    let meta = RecordMeta {
        deliver_at_ms,
        key,
        dedup_id,
        properties,
    };
    Ok(Record::new(offset, publish_ms, payload, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        let mut properties = Properties::new();
        properties.insert("a".into(), "1".into());
        properties.insert("content-type".into(), "application/json".into());
        let meta = RecordMeta {
            deliver_at_ms: Some(1_700_000_005_000),
            key: Some("k".into()),
            dedup_id: None,
            properties,
        };
        Record::new(7, 1_700_000_000_000, Bytes::from_static(b"\x00\x01binary\xff"), meta)
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode_frame(&sample(), &mut buf);
        let (r, n) = decode_frame(&buf).unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(r, sample());
    }

    #[test]
    fn every_truncation_is_detected() {
        let mut buf = Vec::new();
        encode_frame(&sample(), &mut buf);
        for cut in 0..buf.len() {
            assert_eq!(
                decode_frame(&buf[..cut]).unwrap_err(),
                DecodeError::Truncated,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_frame(&sample(), &mut buf);
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[i] ^= 1 << bit;
                if let Ok((r, _)) = decode_frame(&bad) {
                    panic!("flip at byte {i} bit {bit} decoded as {r:?}");
                }
            }
        }
    }
}
