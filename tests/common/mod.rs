// Each test binary uses some of these helpers, not all.
#![allow(dead_code)]

//! Shared by the per-backend fault tests.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pubsub::testing::TestBroker;
use pubsub::{BackendKind, ConsumerOptions, Error, InitialPosition, OutgoingMessage, Position, Producer, Topic};

/// A broker of `kind` for this test, or `None` (reported as skipped, or a
/// failure under CI) when it cannot be started.
pub async fn broker(kind: BackendKind, args: &[&str]) -> Option<TestBroker> {
    match TestBroker::start_with_args(kind, args).await {
        Ok(b) => Some(b),
        Err(e) => {
            pubsub::testkit::broker_unavailable(&format!("{kind} test broker"), &e);
            None
        }
    }
}

/// How the broker goes down in [`no_loss_across_restart`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]

pub enum Outage {
    /// SIGKILL, as a crash.
    Kill,
    /// SIGTERM and a clean shutdown (for brokers that persist on shutdown).
    Stop,
}

/// `PUBSUB_SOAK_MESSAGES`: how many messages the no-loss tests send instead
/// of their modest default (`scripts/soak.sh` sets it).
pub fn soak_messages() -> Option<usize> {
    let v = std::env::var("PUBSUB_SOAK_MESSAGES").ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("PUBSUB_SOAK_MESSAGES={v:?} is not a number")),
    )
}

/// The q1 no-loss proof: `total` numbered messages (or
/// `PUBSUB_SOAK_MESSAGES`) are sent while the broker goes down (at message
/// `total / 3`) and is started again `outage` messages later; a consumer
/// acks what it gets. Every send that returned Ok must be received. Prints
/// sent/confirmed/received/duplicates.
pub async fn no_loss_across_restart(mut broker: TestBroker, how: Outage, total: usize, outage: usize) {
    let total = soak_messages().unwrap_or(total);
    let kind = broker.kind();
    let backend = broker.backend().await.expect("connect");
    assert!(backend.capabilities().persistence, "the test broker persists");
    let topic: Topic = format!("q1/reliability/{kind}/restart").parse().unwrap();
    // The subscription exists before the first send, so Latest misses
    // nothing (and works on MQTT, which has no Earliest). A short ack
    // timeout: what was in flight when the broker died comes back sooner.
    let mut opts = ConsumerOptions::default().with_initial_position(InitialPosition::Latest);
    if backend.capabilities().ack_timeout {
        opts = opts.with_ack_timeout(Some(Duration::from_secs(3)));
    }
    let consumer: Arc<dyn pubsub::Consumer> =
        Arc::from(backend.create_consumer(&topic, "survivor", opts).await.unwrap());
    let producer = backend.create_producer(&topic, Default::default()).await.unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (consumer, done) = (consumer.clone(), done.clone());
        tokio::spawn(async move {
            let mut got = Vec::new();
            let mut quiet = 0;
            // Quiet for 15 s once everything is sent: a Kafka consumer
            // rejoins its group after an outage, which takes seconds.
            while quiet < 15 {
                match consumer.receive_timeout(Duration::from_secs(1)).await {
                    Ok(m) => {
                        quiet = 0;
                        got.push(
                            String::from_utf8(m.payload().to_vec())
                                .unwrap()
                                .parse::<usize>()
                                .unwrap(),
                        );
                        let _ = m.ack().await; // may fail while the broker is down: redelivered later
                    }
                    Err(Error::Timeout(_)) if done.load(Ordering::Acquire) => quiet += 1,
                    Err(_) => {}
                }
            }
            got
        })
    };

    let (kill_at, back_at) = (total / 3, total / 3 + outage);
    let mut confirmed = BTreeSet::new();
    let mut attempts = 0;
    for n in 0..total {
        if n == kill_at {
            match how {
                Outage::Kill => broker.kill().await.unwrap(),
                Outage::Stop => broker.stop().await.unwrap(),
            }
        }
        if n == back_at {
            broker.start_again().await.expect("start the broker again");
        }
        // Retry each message until the broker confirms it (the producer's
        // job in an at-least-once system), except during the outage, where a
        // send fails with a typed, retriable error (or is given up on).
        for tries in 0.. {
            // Bounded: a broker that never comes back fails the test, never hangs it.
            assert!(
                tries < 100,
                "message {n} not confirmed after 100 tries; last broker log:\n{}",
                broker.logs()
            );
            attempts += 1;
            let sent = tokio::time::timeout(
                Duration::from_secs(3),
                producer.send(OutgoingMessage::new(n.to_string())),
            );
            match sent.await {
                Ok(Ok(_)) => {
                    confirmed.insert(n);
                    break;
                }
                Ok(Err(e)) => assert!(e.is_retriable(), "send while the broker is down: {e:?}"),
                Err(_elapsed) => {}
            }
            if (kill_at..back_at).contains(&n) {
                break; // not confirmed: it may or may not arrive
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    done.store(true, Ordering::Release);
    let got = receiver.await.unwrap();
    let received: BTreeSet<usize> = got.iter().copied().collect();
    let lost: Vec<_> = confirmed.difference(&received).collect();
    eprintln!(
        "{kind} restart ({how:?}): sent {total} ({attempts} attempts), confirmed {}, received {} ({} duplicates), lost {}",
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
        confirmed.len() >= total - outage,
        "sends before and after the outage are confirmed"
    );
}

/// A consumer keeps receiving after its broker restarts gracefully (its
/// connection and subscription come back), and so does the producer.
pub async fn consumer_resumes_after_restart(mut broker: TestBroker) {
    let backend = broker.backend().await.unwrap();
    let topic: Topic = format!("q1/reliability/{}/resume", broker.kind()).parse().unwrap();
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
    send_once_reconnected(p.as_ref(), "after").await;
    // "before" may come back once: an ack the broker had not stored when it
    // stopped is redelivered (at-least-once). What matters is that "after"
    // arrives on the same consumer.
    for redeliveries in 0.. {
        assert!(redeliveries < 5, "\"before\" keeps coming back");
        let m = c
            .receive_timeout(Duration::from_secs(30))
            .await
            .expect("the consumer reconnects");
        m.ack().await.unwrap();
        match m.payload().as_ref() {
            b"after" => break,
            b"before" => eprintln!(
                "{}: the ack of \"before\" was redelivered after the restart",
                broker.kind()
            ),
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// A reader from the earliest message goes on after a broker restart
/// where it stopped: nothing read twice, nothing skipped.
pub async fn reader_resumes_after_restart(mut broker: TestBroker) {
    let backend = broker.backend().await.unwrap();
    let topic: Topic = format!("q1/reliability/{}/reader", broker.kind()).parse().unwrap();
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    // One key: on Kafka, order holds within a partition only.
    for m in ["m0", "m1"] {
        p.send(OutgoingMessage::new(m).with_key("k")).await.unwrap();
    }
    let reader = backend.create_reader(&topic, Position::Earliest).await.unwrap();
    for expected in ["m0", "m1"] {
        let m = reader.next_timeout(Duration::from_secs(10)).await.unwrap();
        assert_eq!(m.payload().as_ref(), expected.as_bytes());
    }
    broker.restart().await.unwrap();
    send_once_reconnected(p.as_ref(), "m2").await;
    let m = reader
        .next_timeout(Duration::from_secs(30))
        .await
        .expect("the reader reconnects");
    assert_eq!(
        String::from_utf8_lossy(m.payload()),
        "m2",
        "the reader goes on after the last message it read"
    );
    assert!(!reader.has_next().await.unwrap(), "at the end after m2");
    reader.close().await.unwrap();
}

/// Sends `payload` once the producer is through to the broker again
/// (after a restart), trying for up to about 30 s.
pub async fn send_once_reconnected(p: &dyn Producer, payload: &str) {
    for _ in 0..100 {
        if let Ok(Ok(_)) = tokio::time::timeout(
            Duration::from_secs(2),
            p.send(OutgoingMessage::new(payload.to_string())),
        )
        .await
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the producer did not reconnect");
}

/// A loopback port nothing listens on.
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connecting to `url` where nothing listens fails with a retriable
/// `Error::Connection` within 30 s, and the error shows no secret of the URL.
pub async fn unreachable_is_a_connection_error(url: &str, secret: &str) {
    let result = tokio::time::timeout(Duration::from_secs(30), pubsub::connect(url))
        .await
        .unwrap_or_else(|_| panic!("connect to {} did not give up within 30 s", pubsub::redact_url(url)));
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Connection { .. }) && err.is_retriable(), "{err:?}");
    assert!(
        !format!("{err} {err:?}").contains(secret),
        "the error shows the secret: {err:?}"
    );
}
