//! `create_consumer` waits for the group as long as a rebalance on Apache
//! Kafka can take without anything being wrong (`KAFKA_BOOTSTRAP_SERVERS`,
//! default 127.0.0.1:9092).
//!
//! A member of another client that is alive but does not poll holds every
//! rebalance of its group until its `max.poll.interval.ms` runs out (the
//! coordinator's rebalance timeout). With 20 s here, a consumer created
//! meanwhile gets its partitions about 20 s later: the fixed wait of
//! `timeout * 3` (15 s with this 5 s timeout) refused it.

use std::time::Duration;

use pubsub_core::{ConsumerOptions, OutgoingMessage, PubSubBackend, Topic};
use pubsub_kafka::{KafkaBackend, KafkaConfig};
use rdkafka::consumer::{BaseConsumer, Consumer as _};

fn servers() -> String {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_a_group_held_up_by_a_member_that_does_not_poll() {
    let servers = servers();
    if servers.ends_with("?broker=tansu") {
        eprintln!("SKIPPED: Apache Kafka only");
        return;
    }
    let backend = KafkaBackend::connect(KafkaConfig::new(servers.clone()).with_timeout(Duration::from_secs(5)))
        .await
        .expect("connect");
    let run = uuid_like();
    let topic: Topic = format!("q1/groupjoin/r{run}/t").parse().expect("topic");
    let subscription = format!("slow-{run}");
    // The subscription's consumer group: `{kafka topic}/{subscription}`.
    let group = format!("groupjoin.r{run}.t/{subscription}");
    let producer = backend
        .create_producer(&topic, Default::default())
        .await
        .expect("producer");
    // A member of another client that joins, then stops polling (the
    // handle stays alive, so its heartbeats go on: it is not dead, just slow).
    let slow: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .set("group.id", &group)
        .set("session.timeout.ms", "10000")
        .set("max.poll.interval.ms", "20000")
        .create()
        .expect("raw consumer");
    slow.subscribe(&[&format!("groupjoin.r{run}.t")]).expect("subscribe");
    let joined = tokio::task::spawn_blocking(move || {
        let start = std::time::Instant::now();
        while slow.assignment().map(|a| a.count()).unwrap_or(0) == 0 && start.elapsed() < Duration::from_secs(30) {
            let _ = slow.poll(Duration::from_millis(100));
        }
        slow
    })
    .await
    .expect("join task");
    assert!(
        joined.assignment().expect("assignment").count() > 0,
        "the slow member joined"
    );

    let c = backend
        .create_consumer(&topic, &subscription, ConsumerOptions::default())
        .await
        .expect("a consumer joins once the slow member's max.poll.interval.ms has run out");
    producer.send(OutgoingMessage::new("after")).await.expect("send");
    let m = c
        .receive_timeout(Duration::from_secs(30))
        .await
        .expect("the message sent after create_consumer");
    assert_eq!(m.payload().as_ref(), b"after");
    m.ack().await.expect("ack");
    c.close().await.expect("close");
    tokio::task::spawn_blocking(move || drop(joined))
        .await
        .expect("drop the raw consumer");
    let _ = backend.admin().delete_topic(&topic).await;
}

fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
}
