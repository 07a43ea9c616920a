//! `pubsub::testing::TestBroker`: brokers side by side, restart, and the
//! error for a missing binary. One test, because it changes PATH.

use std::time::Duration;

use pubsub::testing::TestBroker;
use pubsub::{BackendKind, ConsumerOptions, Error, OutgoingMessage, Topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_side_by_side_restart_and_missing_binary() {
    let a = TestBroker::start(BackendKind::Redis).await;
    let b = TestBroker::start(BackendKind::Redis).await;
    let (mut a, b) = match (a, b) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return pubsub::testkit::broker_unavailable("TestBroker(redis)", &e),
    };
    assert_ne!(a.port(), b.port());
    let topic: Topic = "q1/testing/side/by-side".parse().unwrap();
    // What goes to one broker does not appear on the other.
    let ba = a.backend().await.unwrap();
    let bb = b.backend().await.unwrap();
    let ca = ba
        .create_consumer(&topic, "s", ConsumerOptions::default())
        .await
        .unwrap();
    let cb = bb
        .create_consumer(&topic, "s", ConsumerOptions::default())
        .await
        .unwrap();
    ba.create_producer(&topic, Default::default())
        .await
        .unwrap()
        .send(OutgoingMessage::new("to a"))
        .await
        .unwrap();
    assert_eq!(
        ca.receive_timeout(Duration::from_secs(10))
            .await
            .unwrap()
            .payload()
            .as_ref(),
        b"to a"
    );
    assert!(matches!(
        cb.receive_timeout(Duration::from_millis(500)).await,
        Err(Error::Timeout(_))
    ));

    // restart keeps the data: a new Earliest subscription still finds it.
    ba.create_producer(&topic, Default::default())
        .await
        .unwrap()
        .send(OutgoingMessage::new("kept"))
        .await
        .unwrap();
    assert!(a.is_running());
    a.restart().await.unwrap();
    assert!(a.is_running());
    let fresh = a.backend().await.unwrap();
    let earliest = ConsumerOptions::default().with_initial_position(pubsub::InitialPosition::Earliest);
    let c = fresh.create_consumer(&topic, "after-restart", earliest).await.unwrap();
    let mut payloads = Vec::new();
    for _ in 0..2 {
        let m = c
            .receive_timeout(Duration::from_secs(15))
            .await
            .expect("data survives restart");
        payloads.push(String::from_utf8(m.payload().to_vec()).unwrap());
    }
    assert_eq!(payloads, ["to a", "kept"]);
    a.stop().await.unwrap();
    assert!(!a.is_running());

    // A kind with nothing to start, and a missing binary, are clear errors.
    let err = TestBroker::start(BackendKind::Embedded).await.unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    let (path, home) = (std::env::var_os("PATH"), std::env::var_os("HOME"));
    std::env::set_var("PATH", "/nonexistent");
    std::env::set_var("HOME", "/nonexistent");
    let err = TestBroker::start(BackendKind::Redis).await.unwrap_err();
    if let Some(p) = path {
        std::env::set_var("PATH", p);
    }
    if let Some(h) = home {
        std::env::set_var("HOME", h);
    }
    assert!(
        matches!(&err, Error::NotFound(m) if m.contains("redis-server") && m.contains("apt-get install")),
        "{err:?}"
    );
}
