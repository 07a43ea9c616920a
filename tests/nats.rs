//! NATS beyond the conformance suite: server restarts, an unreachable
//! server, payload plus headers over the server's limit. Each test starts
//! its own nats-server with JetStream (`pubsub::testing`).

mod common;

use std::time::Duration;

use common::broker;
use pubsub::{BackendKind, ConsumerOptions, Error, OutgoingMessage, Topic};

/// q1 no-loss across a crash of nats-server (JetStream file storage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_loses_no_confirmed_message() {
    let Some(b) = broker(BackendKind::Nats, &[]).await else {
        return;
    };
    common::no_loss_across_restart(b, common::Outage::Kill, 300, 5).await;
}

/// A consumer keeps receiving after a graceful restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_resumes_after_graceful_restart() {
    let Some(b) = broker(BackendKind::Nats, &[]).await else {
        return;
    };
    common::consumer_resumes_after_restart(b).await;
}

/// A reader goes on where it was after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_resumes_after_restart() {
    let Some(b) = broker(BackendKind::Nats, &[]).await else {
        return;
    };
    common::reader_resumes_after_restart(b).await;
}

/// Nothing listening: a typed connection error within a bounded time.
#[tokio::test]
async fn unreachable_server_is_a_connection_error() {
    let url = format!("nats://tok-nats-s3cret@127.0.0.1:{}", common::unused_port());
    common::unreachable_is_a_connection_error(&url, "tok-nats-s3cret").await;
}

/// The payload limit leaves room for headers; payload plus headers beyond
/// the server's `max_payload` is refused before sending.
#[tokio::test]
async fn payload_and_headers_respect_the_server_limit() {
    let Some(broker) = broker(BackendKind::Nats, &[]).await else {
        return;
    };
    let backend = broker.backend().await.unwrap();
    let max = backend.capabilities().max_payload.unwrap();
    let topic: Topic = "q1/bad/input/nats-limit".parse().unwrap();
    let c = backend
        .create_consumer(&topic, "s", ConsumerOptions::default())
        .await
        .unwrap();
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    // A full payload with modest properties fits.
    p.send(OutgoingMessage::new(vec![7u8; max]).with_property("a", "b"))
        .await
        .expect("fits");
    // The same payload with 8 KiB of properties does not.
    let big = OutgoingMessage::new(vec![7u8; max]).with_property("big", "x".repeat(8192));
    assert!(matches!(p.send(big).await, Err(Error::PayloadTooLarge { .. })));
    let m = c.receive_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!((m.payload().len(), m.property("a")), (max, Some("b")));
    m.ack().await.unwrap();
    assert!(matches!(
        c.receive_timeout(Duration::from_millis(500)).await,
        Err(Error::Timeout(_))
    ));
}
