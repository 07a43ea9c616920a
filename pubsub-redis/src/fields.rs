//! A message as stream fields, and back.
//!
//! Payload and key go into the reserved fields `pubsub.payload` and
//! `pubsub.key`; every property is a field of its own name (property names
//! cannot start with `pubsub.`, so they never collide).

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use pubsub_core::{MessageParts, OutgoingMessage, Properties, RESERVED_PROPERTY_PREFIX};
use redis::Value;

pub(crate) const PAYLOAD: &str = "pubsub.payload";
pub(crate) const KEY: &str = "pubsub.key";

/// Field/value pairs for XADD.
pub(crate) fn to_fields(m: &OutgoingMessage) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(4 + 2 * m.properties.len());
    out.push(PAYLOAD.as_bytes().to_vec());
    out.push(m.payload.to_vec());
    if let Some(k) = &m.key {
        out.push(KEY.as_bytes().to_vec());
        out.push(k.as_bytes().to_vec());
    }
    for (k, v) in &m.properties {
        out.push(k.as_bytes().to_vec());
        out.push(v.as_bytes().to_vec());
    }
    out
}

/// Bytes of a bulk/simple string value.
pub(crate) fn bytes_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// The elements of an array (or map, flattened) value.
pub(crate) fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => &[],
    }
}

/// A stream entry id as text.
pub(crate) fn text_of(v: &Value) -> Option<String> {
    bytes_of(v).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// Fills payload, key, properties and publish time from a stream entry.
pub(crate) fn fill_parts(parts: &mut MessageParts, id: &str, fields: &Value) {
    let fields = items(fields);
    let mut properties = Properties::new();
    for pair in fields.chunks(2) {
        let [name, value] = pair else { break };
        let (Some(name), Some(value)) = (bytes_of(name), bytes_of(value)) else {
            continue;
        };
        match name {
            n if n == PAYLOAD.as_bytes() => parts.payload = Bytes::copy_from_slice(value),
            n if n == KEY.as_bytes() => parts.key = Some(String::from_utf8_lossy(value).into_owned()),
            n if n.starts_with(RESERVED_PROPERTY_PREFIX.as_bytes()) => {}
            n => {
                properties.insert(
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                );
            }
        }
    }
    parts.properties = properties;
    if let Some(ms) = id.split('-').next().and_then(|ms| ms.parse::<u64>().ok()) {
        parts.publish_time = UNIX_EPOCH + Duration::from_millis(ms);
    }
}

/// The (id, fields) entries of an `XREAD`/`XREADGROUP` reply.
pub(crate) fn read_reply_entries(reply: &Value) -> Vec<(String, &Value)> {
    // RESP2: [[key, [[id, fields], ...]]]; RESP3 may give a map {key: entries}.
    let streams: Vec<&Value> = match reply {
        Value::Map(pairs) => pairs.iter().map(|(_, v)| v).collect(),
        other => items(other).iter().filter_map(|s| items(s).get(1)).collect(),
    };
    streams.into_iter().flat_map(|entries| range_entries(entries)).collect()
}

/// The (id, fields) entries of an `XRANGE` reply (or of one stream of an `XREAD`).
pub(crate) fn range_entries(entries: &Value) -> Vec<(String, &Value)> {
    items(entries)
        .iter()
        .filter_map(|entry| {
            let e = items(entry);
            Some((e.first().and_then(text_of)?, e.get(1)?))
        })
        .collect()
}
