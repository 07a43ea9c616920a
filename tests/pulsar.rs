//! Pulsar beyond the conformance suite: broker restarts, an unreachable
//! broker, the payload limit, the token kept secret, and interop with the
//! official Python client (`pulsar-client`, in the venv scripts/brokers.sh
//! makes at target/pyenv) both ways. Each test starts its own pulsar-lite
//! behind the checksum relay (`pubsub::testing`).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::broker;
use pubsub::pulsar::{PulsarBackend, PulsarConfig};
use pubsub::{BackendKind, ConsumerOptions, Error, InitialPosition, OutgoingMessage, PubSubBackend, Secret, Topic};

/// `PULSAR_ADMIN_URL` reaches the adapter: on Apache Pulsar (the standalone
/// scripts/brokers.sh starts on 6652, admin on 8082) a topic in a namespace
/// nobody made works, because the namespace is made through the admin API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_url_from_the_environment_makes_namespaces() {
    std::env::set_var("PUBSUB_BACKEND", "pulsar");
    std::env::set_var("PULSAR_HOST", "pulsar://127.0.0.1:6652");
    std::env::set_var("PULSAR_ADMIN_URL", "http://127.0.0.1:8082");
    let args = pubsub::PubSubArgs::from_env().expect("valid variables");
    for k in ["PUBSUB_BACKEND", "PULSAR_HOST", "PULSAR_ADMIN_URL"] {
        std::env::remove_var(k);
    }
    match args.config() {
        pubsub::BackendConfig::Pulsar { admin_url, .. } => {
            assert_eq!(admin_url.as_deref(), Some("http://127.0.0.1:8082"))
        }
        other => panic!("{other:?}"),
    }
    let backend = match args.connect().await {
        Ok(b) => b,
        Err(e) => return pubsub::testkit::broker_unavailable("Apache Pulsar on 6652", &e),
    };
    let ns = format!("ns{}", std::process::id());
    let topic: Topic = format!("q1/envtenant/{ns}/orders").parse().unwrap();
    let c = backend
        .create_consumer(&topic, "s", ConsumerOptions::default())
        .await
        .expect("the namespace is made through PULSAR_ADMIN_URL");
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    p.send(OutgoingMessage::new("hello")).await.unwrap();
    let m = c.receive_timeout(Duration::from_secs(15)).await.unwrap();
    assert_eq!(m.payload().as_ref(), b"hello");
    m.ack().await.unwrap();
    backend.close().await.unwrap();
}

/// q1 no-loss across a crash (SIGKILL) of the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_loses_no_confirmed_message() {
    let Some(b) = broker(BackendKind::Pulsar, &[]).await else {
        return;
    };
    common::no_loss_across_restart(b, common::Outage::Kill, 300, 5).await;
}

/// A consumer and a producer keep working after a graceful restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_resumes_after_graceful_restart() {
    let Some(b) = broker(BackendKind::Pulsar, &[]).await else {
        return;
    };
    common::consumer_resumes_after_restart(b).await;
}

/// A reader resubscribes after a restart and goes on where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_resumes_after_restart() {
    let Some(b) = broker(BackendKind::Pulsar, &[]).await else {
        return;
    };
    common::reader_resumes_after_restart(b).await;
}

/// Nothing listening: a typed, retriable connection error within the timeout.
#[tokio::test]
async fn unreachable_broker_is_a_connection_error() {
    let port = common::unused_port();
    let config = PulsarConfig::new(format!("pulsar://127.0.0.1:{port}"))
        .with_timeout(Duration::from_secs(2))
        .with_token(Secret::new("tok-unreachable-123"));
    let started = std::time::Instant::now();
    let err = PulsarBackend::connect(config).await.unwrap_err();
    assert!(matches!(err, Error::Connection { .. }) && err.is_retriable(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "bounded by the timeout");
    assert!(!format!("{err} {err:?}").contains("tok-unreachable-123"));
}

/// The token is never printed: not by the config, the backend, or the facade's config.
#[test]
fn token_never_printed() {
    let cfg = PulsarConfig::new("pulsar://u:urlpw@127.0.0.1:6650").with_token(Secret::new("tok-s3cret"));
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("tok-s3cret") && !shown.contains("urlpw"), "{shown}");
    let facade = pubsub::BackendConfig::Pulsar {
        url: "pulsar://127.0.0.1:6650".into(),
        api_key: Some(Secret::new("tok-s3cret")),
        listener: None,
        admin_url: Some("http://admin:adminpw@127.0.0.1:8080".into()),
        tls: None,
    };
    let shown = format!("{facade:?}");
    assert!(!shown.contains("adminpw"), "{shown}");
    assert!(!format!("{facade:?}").contains("tok-s3cret"));
}

/// A payload of exactly the limit round-trips; one byte more is refused
/// before anything is sent (the crate does not chunk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_limit_is_exact() {
    let Some(b) = broker(BackendKind::Pulsar, &[]).await else {
        return;
    };
    let backend = b.backend().await.unwrap();
    let max = backend.capabilities().max_payload.expect("a limit");
    let topic: Topic = "q1/limits/big/payloads".parse().unwrap();
    let c = backend
        .create_consumer(&topic, "s", ConsumerOptions::default())
        .await
        .unwrap();
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    let big: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    p.send(OutgoingMessage::new(big.clone()).with_property("size", "max"))
        .await
        .expect("a payload of exactly max_payload");
    assert!(matches!(
        p.send(OutgoingMessage::new(vec![0u8; max + 1])).await,
        Err(Error::PayloadTooLarge { .. })
    ));
    let m = c.receive_timeout(Duration::from_secs(15)).await.unwrap();
    assert_eq!(m.payload().len(), max);
    assert!(m.payload().as_ref() == big.as_slice(), "payload intact");
    m.ack().await.unwrap();
}

fn python() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python");
    let ok = Command::new(&p)
        .args(["-c", "import pulsar"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(p)
}

/// A broker and the venv's Python with `pulsar-client`, or `None` (skipped,
/// or a failure under CI).
async fn broker_and_python() -> Option<(pubsub::testing::TestBroker, PathBuf)> {
    let b = broker(BackendKind::Pulsar, &[]).await?;
    let Some(py) = python() else {
        pubsub::testkit::broker_unavailable(
            "pulsar interop",
            &"no target/pyenv with pulsar-client (scripts/brokers.sh makes it)",
        );
        return None;
    };
    Some((b, py))
}

/// The official client's URL for the test broker (without our `?broker=` hint).
fn service_url(b: &pubsub::testing::TestBroker) -> String {
    b.url().split('?').next().unwrap().to_string()
}

const CONSUME: &str = r#"
import json, sys, pulsar
c = pulsar.Client(sys.argv[1])
consumer = c.subscribe(sys.argv[2], "python", initial_position=pulsar.InitialPosition.Earliest)
m = consumer.receive(20000)
consumer.acknowledge(m)
print(json.dumps({"payload": m.data().decode(), "key": m.partition_key(), "properties": m.properties()}))
c.close()
"#;

const PRODUCE: &str = r#"
import sys, pulsar
c = pulsar.Client(sys.argv[1])
p = c.create_producer(sys.argv[2])
p.send(b"from pulsar-client", properties={"trace-id": "py-1"}, partition_key="k-py")
c.close()
"#;

/// What the SDK sends, the official Python client reads (payload, key, properties).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_to_official_python_client() {
    let Some((b, py)) = broker_and_python().await else {
        return;
    };
    let backend = b.backend().await.unwrap();
    let topic: Topic = "q1/interop/sdk/to-python".parse().unwrap();
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    p.send(
        OutgoingMessage::new("from the sdk")
            .with_key("k-sdk")
            .with_property("trace-id", "sdk-1"),
    )
    .await
    .unwrap();
    let out = Command::new(&py)
        .args(["-c", CONSUME, &service_url(&b), "persistent://interop/sdk/to-python"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The client logs to stdout too; the result is the JSON line.
    let line = stdout.lines().find(|l| l.starts_with('{')).expect("one JSON line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["payload"], "from the sdk");
    assert_eq!(v["key"], "k-sdk");
    assert_eq!(v["properties"]["trace-id"], "sdk-1");
}

/// What the official Python client sends, the SDK reads (payload, key, properties).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_client_to_sdk() {
    let Some((b, py)) = broker_and_python().await else {
        return;
    };
    let backend = b.backend().await.unwrap();
    let topic: Topic = "q1/interop/python/to-sdk".parse().unwrap();
    let opts = ConsumerOptions::default().with_initial_position(InitialPosition::Earliest);
    let c = backend.create_consumer(&topic, "sdk", opts).await.unwrap();
    let out = Command::new(&py)
        .args(["-c", PRODUCE, &service_url(&b), "persistent://interop/python/to-sdk"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = c.receive_timeout(Duration::from_secs(15)).await.unwrap();
    assert_eq!(m.payload().as_ref(), b"from pulsar-client");
    assert_eq!(m.key(), Some("k-py"));
    assert_eq!(m.property("trace-id"), Some("py-1"));
    let age = std::time::SystemTime::now()
        .duration_since(m.publish_time())
        .unwrap_or_default();
    assert!(
        age < Duration::from_secs(60),
        "publish time from the broker: {age:?} ago"
    );
    m.ack().await.unwrap();
}

/// Two pulsar-lite brokers side by side, each with its own relay and data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_side_by_side() {
    let (Some(a), Some(b)) = (
        broker(BackendKind::Pulsar, &[]).await,
        broker(BackendKind::Pulsar, &[]).await,
    ) else {
        return;
    };
    assert_ne!(a.port(), b.port());
    let topic: Topic = "q1/side/by/side".parse().unwrap();
    let earliest = ConsumerOptions::default().with_initial_position(InitialPosition::Earliest);
    let (ba, bb): (std::sync::Arc<dyn PubSubBackend>, _) = (a.backend().await.unwrap(), b.backend().await.unwrap());
    ba.create_producer(&topic, Default::default())
        .await
        .unwrap()
        .send(OutgoingMessage::new("only on a"))
        .await
        .unwrap();
    let on_b = bb.create_consumer(&topic, "s", earliest.clone()).await.unwrap();
    assert!(matches!(
        on_b.receive_timeout(Duration::from_secs(2)).await,
        Err(Error::Timeout(_))
    ));
    let on_a = ba.create_consumer(&topic, "s", earliest).await.unwrap();
    let m = on_a.receive_timeout(Duration::from_secs(15)).await.unwrap();
    assert_eq!(m.payload().as_ref(), b"only on a");
}
