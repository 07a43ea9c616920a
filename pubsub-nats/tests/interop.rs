//! Properties travel as real NATS headers: a plain async-nats client reads
//! what the SDK sent, and the SDK reads what a plain client sent, including
//! header names the SDK itself would not accept as property names.

use std::time::Duration;

use async_nats::HeaderMap;
use futures::StreamExt;
use pubsub_core::{testkit, ConsumerOptions, Error, OutgoingMessage, PubSubBackend, Topic};
use pubsub_nats::{NatsBackend, NatsConfig};

fn url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

async fn connect() -> Option<(NatsBackend, async_nats::Client)> {
    let backend = NatsBackend::connect(NatsConfig::new(url()).with_timeout(Duration::from_secs(3))).await;
    let raw = async_nats::connect(url()).await;
    match (backend, raw) {
        (Ok(b), Ok(r)) => Some((b, r)),
        (Err(e), _) => {
            testkit::broker_unavailable("nats interop", &e);
            None
        }
        (_, Err(e)) => {
            testkit::broker_unavailable("nats interop", &e);
            None
        }
    }
}

fn unique(queue: &str) -> Topic {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("q1/interop/n{n}/{queue}").parse().unwrap()
}

#[tokio::test]
async fn sdk_to_plain_client_with_headers() {
    let Some((backend, raw)) = connect().await else { return };
    let topic = unique("to-raw");
    let subject = topic.joined(".");
    let mut sub = raw.subscribe(subject).await.unwrap();
    raw.flush().await.unwrap();
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    let msg = OutgoingMessage::new("from the sdk")
        .with_property("trace-id", "abc\tdef")
        .with_key("user-7");
    p.send(msg.clone()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.payload.as_ref(), b"from the sdk");
    let h = got.headers.expect("headers");
    assert_eq!(h.get("trace-id").map(|v| v.as_str()), Some("abc\tdef"));
    assert_eq!(h.get("pubsub.key").map(|v| v.as_str()), Some("user-7"));
    // A value NATS cannot carry is refused before it is sent.
    let bad = OutgoingMessage::new("x").with_property("trace-id", "line\nbreak");
    assert!(matches!(p.send(bad).await, Err(Error::InvalidProperty { .. })));
}

#[tokio::test]
async fn plain_client_to_sdk_with_headers() {
    let Some((backend, raw)) = connect().await else { return };
    let topic = unique("from-raw");
    let c = backend
        .create_consumer(&topic, "s", ConsumerOptions::default())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(raw);
    let mut headers = HeaderMap::new();
    headers.insert("Weird/Name", "v1");
    headers.insert("trace-id", "t-9");
    headers.insert("pubsub.key", "k-9");
    js.publish_with_headers(topic.joined("."), headers, "from a plain client".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let m = c.receive_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(m.payload().as_ref(), b"from a plain client");
    assert_eq!(
        m.property("Weird/Name"),
        Some("v1"),
        "foreign header names come through"
    );
    assert_eq!(m.property("trace-id"), Some("t-9"));
    assert_eq!(m.key(), Some("k-9"));
    assert!(m.property("pubsub.key").is_none(), "the key is not also a property");
    m.ack().await.unwrap();
    backend.close().await.unwrap();
}
