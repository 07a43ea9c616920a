//! Properties as Kafka headers, and back. The key is the Kafka key.

use pubsub_core::{OutgoingMessage, Properties};
use rdkafka::message::{Header, Headers, OwnedHeaders};

pub(crate) fn to_headers(m: &OutgoingMessage) -> OwnedHeaders {
    let mut h = OwnedHeaders::new_with_capacity(m.properties.len());
    for (k, v) in &m.properties {
        h = h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    h
}

pub(crate) fn from_headers<H: Headers>(h: Option<&H>) -> Properties {
    let mut out = Properties::new();
    if let Some(h) = h {
        for header in h.iter() {
            let value = header
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            out.insert(header.key.to_string(), value);
        }
    }
    out
}
