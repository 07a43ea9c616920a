//! Properties travel as real NATS headers: a plain async-nats client reads
//! what the SDK sent, and the SDK reads what a plain client sent, including
//! header names the SDK itself would not accept as property names.

use std::time::Duration;

use async_nats::jetstream::stream;
use async_nats::HeaderMap;
use futures::StreamExt;
use pubsub_core::{testkit, ConsumerOptions, Error, InitialPosition, OutgoingMessage, Position, PubSubBackend, Topic};
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

/// A plain client publishing to a subject no stream holds gets
/// `NoStreamResponse`: on NATS someone must create the stream first. Once the
/// SDK made a producer (or `create_topic`), the same publish is stored.
#[tokio::test]
async fn foreign_publisher_needs_the_stream_first() {
    let Some((backend, raw)) = connect().await else { return };
    let topic = unique("no-stream-yet");
    let js = async_nats::jetstream::new(raw);
    let early = js.publish(topic.joined("."), "too early".into()).await.unwrap().await;
    let kind = early.expect_err("no stream holds the subject yet").kind();
    assert_eq!(kind, async_nats::jetstream::context::PublishErrorKind::StreamNotFound);
    assert!(backend.admin().create_topic(&topic, Default::default()).await.unwrap());
    js.publish(topic.joined("."), "after create_topic".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let c = backend
        .create_consumer(
            &topic,
            "s",
            ConsumerOptions::default().with_initial_position(InitialPosition::Earliest),
        )
        .await
        .unwrap();
    let m = c.receive_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(m.payload().as_ref(), b"after create_topic");
    m.ack().await.unwrap();
    backend.admin().delete_topic(&topic).await.unwrap();
    backend.close().await.unwrap();
}

/// A stream made outside the SDK (here with async-nats, as `nats stream add`
/// would) holding exactly the topic's subject with limits retention is
/// adopted: producers, consumers, readers and the admin API use it, and the
/// SDK does not try to make a second stream (which the server refuses with
/// "subjects overlap").
#[tokio::test]
async fn sdk_adopts_a_compatible_stream_made_elsewhere() {
    let Some((backend, raw)) = connect().await else { return };
    let topic = unique("adopted");
    let name = format!("FOREIGN_{}", topic.joined("_"));
    let js = async_nats::jetstream::new(raw);
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![topic.joined(".")],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("pubsub.key", "k-1");
    headers.insert("trace-id", "t-1");
    js.publish_with_headers(topic.joined("."), headers, "before the sdk".into())
        .await
        .unwrap()
        .await
        .unwrap();

    assert!(backend.admin().topic_exists(&topic).await.unwrap());
    assert!(!backend.admin().create_topic(&topic, Default::default()).await.unwrap());
    let c = backend
        .create_consumer(
            &topic,
            "s",
            ConsumerOptions::default().with_initial_position(InitialPosition::Earliest),
        )
        .await
        .expect("the SDK adopts the existing stream");
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    p.send(OutgoingMessage::new("from the sdk").with_key("k-2"))
        .await
        .unwrap();
    let first = c.receive_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(first.payload().as_ref(), b"before the sdk");
    assert_eq!(first.key(), Some("k-1"));
    assert_eq!(first.property("trace-id"), Some("t-1"));
    let second = c.receive_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(second.payload().as_ref(), b"from the sdk");
    first.ack().await.unwrap();
    second.ack().await.unwrap();
    let subs = backend.admin().subscriptions(&topic).await.unwrap();
    assert_eq!(subs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["s"]);
    let r = backend.create_reader(&topic, Position::Earliest).await.unwrap();
    assert_eq!(
        r.next_timeout(Duration::from_secs(10))
            .await
            .unwrap()
            .payload()
            .as_ref(),
        b"before the sdk"
    );
    let listed = backend
        .admin()
        .list_topics(topic.tenant(), topic.namespace())
        .await
        .unwrap();
    assert_eq!(listed, std::slice::from_ref(&topic));
    assert_eq!(
        js.get_stream(&name).await.unwrap().info().await.unwrap().state.messages,
        2
    );
    // No PUBSUB_ stream was made next to it.
    let info = js.get_stream(&name).await.unwrap().cached_info().clone();
    assert_eq!(info.config.subjects, [topic.joined(".")]);
    c.close().await.unwrap();
    r.close().await.unwrap();
    backend.admin().delete_topic(&topic).await.unwrap();
    assert!(
        js.get_stream(&name).await.is_err(),
        "delete_topic deletes the adopted stream"
    );
    backend.close().await.unwrap();
}

/// A stream made elsewhere that the SDK cannot use safely (work-queue
/// retention; more subjects than the topic's) is refused with a typed error
/// naming the stream and what to do, never a raw "subjects overlap".
#[tokio::test]
async fn sdk_refuses_an_incompatible_stream_with_a_clear_error() {
    let Some((backend, raw)) = connect().await else { return };
    let js = async_nats::jetstream::new(raw);
    let work = unique("work-queue");
    let wide = unique("wide");
    let cases = [
        (
            &work,
            stream::Config {
                name: format!("FOREIGN_WQ_{}", work.joined("_")),
                subjects: vec![work.joined(".")],
                retention: stream::RetentionPolicy::WorkQueue,
                ..Default::default()
            },
            "retention",
        ),
        (
            &wide,
            stream::Config {
                name: format!("FOREIGN_WIDE_{}", wide.joined("_")),
                subjects: vec![format!("{}.{}.*", wide.tenant(), wide.namespace())],
                ..Default::default()
            },
            "subjects",
        ),
    ];
    for (topic, config, what) in cases {
        let name = config.name.clone();
        js.create_stream(config).await.unwrap();
        let err = backend
            .create_consumer(topic, "s", ConsumerOptions::default())
            .await
            .expect_err("an incompatible stream is refused");
        let text = err.to_string();
        assert!(matches!(err, Error::InvalidConfiguration(_)), "{err:?}");
        assert!(text.contains(&name) && text.contains(what), "{text}");
        assert!(!text.contains("overlap"), "{text}");
        let err = backend.create_producer(topic, Default::default()).await.unwrap_err();
        assert!(matches!(err, Error::InvalidConfiguration(_)), "{err:?}");
        js.delete_stream(&name).await.unwrap();
    }
    backend.close().await.unwrap();
}
