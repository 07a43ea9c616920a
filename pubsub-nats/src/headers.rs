//! Properties and key as NATS headers, and back.
//!
//! Every property is a header of its name; the key is `pubsub.key`. Values
//! with line breaks cannot travel in a NATS header: the SDK refuses them
//! with `Error::InvalidProperty` before sending (the core rule). Headers set
//! by NATS itself (`Nats-*`) are not properties.

use async_nats::HeaderMap;
use pubsub_core::{OutgoingMessage, Properties};

pub(crate) const KEY_HEADER: &str = "pubsub.key";
pub(crate) const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// The headers of an outgoing message, and their encoded size.
pub(crate) fn to_headers(m: &OutgoingMessage, dedup_id: Option<&str>) -> (HeaderMap, usize) {
    let mut h = HeaderMap::new();
    let mut size = 12; // "NATS/1.0\r\n" + final "\r\n"
    let mut put = |h: &mut HeaderMap, k: &str, v: &str| {
        size += k.len() + v.len() + 4;
        h.insert(k, v);
    };
    for (k, v) in &m.properties {
        put(&mut h, k, v);
    }
    if let Some(k) = &m.key {
        put(&mut h, KEY_HEADER, k);
    }
    if let Some(id) = dedup_id {
        put(&mut h, MSG_ID_HEADER, id);
    }
    (h, size)
}

/// Properties and key from received headers (first value of each).
pub(crate) fn from_headers(h: Option<&HeaderMap>) -> (Properties, Option<String>) {
    let mut properties = Properties::new();
    let mut key = None;
    let Some(h) = h else { return (properties, key) };
    for (name, values) in h.iter() {
        let name = name.to_string();
        let Some(value) = values.first().map(|v| v.to_string()) else {
            continue;
        };
        if name == KEY_HEADER {
            key = Some(value);
        } else if !name.starts_with("Nats-") {
            properties.insert(name, value);
        }
    }
    (properties, key)
}
