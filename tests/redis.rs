//! Redis beyond the conformance suite: broker restarts, the server's own
//! limits, wrong types at a key, an unreachable server, secrets. Each test
//! starts its own redis-server (`pubsub::testing`), so none disturbs another.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pubsub::testing::TestBroker;
use pubsub::{BackendKind, ConsumerOptions, Error, InitialPosition, OutgoingMessage, Topic};

async fn broker(args: &[&str]) -> Option<TestBroker> {
    match TestBroker::start_with_args(BackendKind::Redis, args).await {
        Ok(b) => Some(b),
        Err(e) => {
            pubsub::testkit::broker_unavailable("redis test broker", &e);
            None
        }
    }
}

/// q1 no-loss across a crash: messages are sent while redis-server is
/// SIGKILLed and started again; every send that returned Ok is received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_loses_no_confirmed_message() {
    let Some(mut broker) = broker(&[]).await else { return };
    let backend = broker.backend().await.expect("connect");
    assert!(
        backend.capabilities().persistence,
        "the test broker runs with appendonly yes"
    );
    let topic: Topic = "q1/reliability/redis/restart".parse().unwrap();
    // A short ack timeout: what was in flight when the server died comes back sooner.
    let opts = ConsumerOptions::default()
        .with_initial_position(InitialPosition::Earliest)
        .with_ack_timeout(Some(Duration::from_secs(3)));
    let consumer: Arc<dyn pubsub::Consumer> =
        Arc::from(backend.create_consumer(&topic, "survivor", opts).await.unwrap());
    let producer = backend.create_producer(&topic, Default::default()).await.unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (consumer, done) = (consumer.clone(), done.clone());
        tokio::spawn(async move {
            let mut got = Vec::new();
            let mut quiet = 0;
            while quiet < 5 {
                match consumer.receive_timeout(Duration::from_secs(1)).await {
                    Ok(m) => {
                        quiet = 0;
                        got.push(
                            String::from_utf8(m.payload().to_vec())
                                .unwrap()
                                .parse::<usize>()
                                .unwrap(),
                        );
                        let _ = m.ack().await; // may fail while the server is down: redelivered later
                    }
                    Err(Error::Timeout(_)) if done.load(Ordering::Acquire) => quiet += 1,
                    Err(_) => {}
                }
            }
            got
        })
    };

    let total = 300;
    let mut confirmed = BTreeSet::new();
    let mut attempts = 0;
    for n in 0..total {
        if n == 100 {
            broker.kill().await.unwrap();
        }
        if n == 110 {
            broker.start_again().await.expect("restart redis");
        }
        // Retry each message until the server confirms it (the producer's job
        // in an at-least-once system); while the server is down, sends fail
        // with a typed, retriable error, each within about half a second.
        loop {
            attempts += 1;
            match producer.send(OutgoingMessage::new(n.to_string())).await {
                Ok(_) => {
                    confirmed.insert(n);
                    break;
                }
                Err(e) => {
                    assert!(e.is_retriable(), "send while the broker is down: {e:?}");
                    if (100..110).contains(&n) {
                        break; // not confirmed: it may or may not arrive
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    done.store(true, Ordering::Release);
    let got = receiver.await.unwrap();
    let received: BTreeSet<usize> = got.iter().copied().collect();
    let lost: Vec<_> = confirmed.difference(&received).collect();
    eprintln!(
        "redis restart: sent {total} ({attempts} attempts), confirmed {}, received {} ({} duplicates), lost {}",
        confirmed.len(),
        received.len(),
        got.len() - received.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "confirmed messages lost across the restart: {lost:?}\n{}",
        broker.logs()
    );
    assert!(
        confirmed.len() >= 250,
        "sends before and after the outage are confirmed"
    );
}

/// The server's `proto-max-bulk-len` lowers the payload limit; a larger
/// payload is refused before it is sent, and nothing accepted is lost.
#[tokio::test]
async fn payload_limit_follows_the_server() {
    let Some(broker) = broker(&["--proto-max-bulk-len", "1mb"]).await else {
        return;
    };
    let backend = broker.backend().await.unwrap();
    let max = backend.capabilities().max_payload.expect("a limit");
    assert!(max < 1024 * 1024, "limit {max} is below the server's 1 MiB");
    let topic: Topic = "q1/bad/input/limit".parse().unwrap();
    let c = backend
        .create_consumer(&topic, "s", ConsumerOptions::default())
        .await
        .unwrap();
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    match p.send(OutgoingMessage::new(vec![1u8; max + 1])).await {
        Err(Error::PayloadTooLarge { size, max: m }) => assert_eq!((size, m), (max + 1, max)),
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    p.send(OutgoingMessage::new(vec![2u8; max]))
        .await
        .expect("exactly the limit is accepted");
    let m = c.receive_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(m.payload().len(), max);
}

/// A key holding another type gives a typed broker error, not a panic.
#[tokio::test]
async fn wrong_type_at_the_key_is_a_broker_error() {
    let Some(broker) = broker(&[]).await else { return };
    let status = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &broker.port().to_string(),
            "SET",
            "pubsub:{bad.input.wrongtype}",
            "a string",
        ])
        .output()
        .expect("redis-cli");
    assert!(status.status.success());
    let backend = broker.backend().await.unwrap();
    let topic: Topic = "q1/bad/input/wrongtype".parse().unwrap();
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    let err = p.send(OutgoingMessage::new("x")).await.unwrap_err();
    assert!(
        matches!(&err, Error::Broker { message, .. } if message.contains("WRONGTYPE")),
        "{err:?}"
    );
    let err = backend
        .create_consumer(&topic, "s", ConsumerOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Broker { message, .. } if message.contains("WRONGTYPE")),
        "{err:?}"
    );
}

/// Nothing listening: a typed connection error within a bounded time, and
/// no password in it.
#[tokio::test]
async fn unreachable_server_is_a_connection_error_without_secrets() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}");
    let result = tokio::time::timeout(Duration::from_secs(30), pubsub::connect(&url))
        .await
        .expect("bounded wait");
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert!(err.is_retriable());
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

/// A consumer keeps receiving after the server restarts (its read
/// connection and group come back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_resumes_after_graceful_restart() {
    let Some(mut broker) = broker(&[]).await else { return };
    let backend = broker.backend().await.unwrap();
    let topic: Topic = "q1/reliability/redis/resume".parse().unwrap();
    let c = backend
        .create_consumer(&topic, "s", ConsumerOptions::default())
        .await
        .unwrap();
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    p.send(OutgoingMessage::new("before")).await.unwrap();
    c.receive_timeout(Duration::from_secs(10))
        .await
        .unwrap()
        .ack()
        .await
        .unwrap();
    broker.restart().await.unwrap();
    let mut sent = false;
    for _ in 0..100 {
        if p.send(OutgoingMessage::new("after")).await.is_ok() {
            sent = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent, "the producer reconnects");
    let m = c
        .receive_timeout(Duration::from_secs(20))
        .await
        .expect("the consumer reconnects");
    assert_eq!(m.payload().as_ref(), b"after");
}
