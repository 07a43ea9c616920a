//! Scaling an MQTT shared subscription down by *dropping* consumers (no
//! `close`): like `close` (the conformance case `shared_scale_down`), a
//! dropped consumer stops taking shares and hands back what it held, so the
//! consumer left gets everything. Against `MQTT_HOST`/`MQTT_PORT` (default
//! 127.0.0.1:1883).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use pubsub_core::testkit::broker_unavailable;
use pubsub_core::{ConsumerOptions, Error, OutgoingMessage, PubSubBackend, Topic};
use pubsub_mqtt::{MqttBackend, MqttConfig};

async fn backend() -> Result<MqttBackend, Error> {
    let host = std::env::var("MQTT_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("MQTT_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1883);
    let config = MqttConfig::new(host, port)
        .with_timeout(Duration::from_secs(3))
        .with_session_expiry(Duration::from_secs(300));
    MqttBackend::connect(config).await
}

fn number(m: &pubsub_core::Message) -> usize {
    m.property("n").unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_consumers_stop_taking_shares_and_hand_back_what_they_held() {
    let backend = match backend().await {
        Ok(b) => b,
        Err(e) => return broker_unavailable("dropped_consumers_stop_taking_shares", &e),
    };
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let topic: Topic = format!("q1/scale/r{run}/q").parse().unwrap();
    let sub = format!("s-{run}");
    let mut consumers = Vec::new();
    for _ in 0..4 {
        consumers.push(
            backend
                .create_consumer(&topic, &sub, ConsumerOptions::default())
                .await
                .unwrap(),
        );
    }
    let producer = backend.create_producer(&topic, Default::default()).await.unwrap();
    let send = |range: std::ops::Range<usize>| {
        let batch: Vec<_> = range
            .map(|i| OutgoingMessage::new(i.to_string()).with_property("n", i.to_string()))
            .collect();
        producer.send_batch(batch)
    };
    send(0..20).await.unwrap();
    // Every consumer takes what it gets; odd numbers stay unacked.
    let mut held = BTreeSet::new();
    let mut kept = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut got = 0;
    while got < 20 && Instant::now() < deadline {
        for c in &consumers {
            for m in c.receive_batch(20, Duration::from_millis(20)).await.unwrap() {
                got += 1;
                if number(&m) % 2 == 0 {
                    m.ack().await.unwrap();
                } else {
                    held.insert(number(&m));
                    kept.push(m);
                }
            }
        }
    }
    assert_eq!(got, 20, "all 20 arrived");
    drop(kept);
    let last = consumers.remove(0);
    drop(consumers);
    // The drops hand back in tasks; give them a moment before sending more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    send(20..40).await.unwrap();
    let mut expected: BTreeSet<usize> = (20..40).collect();
    expected.extend(held.iter().copied());
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !expected.is_subset(&seen) && Instant::now() < deadline {
        if let Ok(m) = last.receive_timeout(Duration::from_millis(500)).await {
            seen.insert(number(&m));
            m.ack().await.unwrap();
        }
    }
    let missing: Vec<_> = expected.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "after 3 of 4 consumers were dropped, the one left is missing {missing:?}"
    );
    last.close().await.unwrap();
    backend.close().await.unwrap();
}
