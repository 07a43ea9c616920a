//! Kafka beyond the conformance suite: an unreachable broker, secrets.
//!
//! No broker-restart test here: Tansu 0.6 (sqlite storage), the Kafka
//! broker we can install, panics serving requests after a restart with
//! existing data ("more or less than one row", tansu-storage lite.rs:503,
//! and service.rs:337), whether it was killed or stopped cleanly. See the
//! README's Kafka notes.

mod common;

use std::time::Duration;

use pubsub::{Error, Secret};

/// Nothing listening: a typed connection error within a bounded time.
#[tokio::test]
async fn unreachable_broker_is_a_connection_error() {
    let port = common::unused_port();
    let config = pubsub::kafka::KafkaConfig::new(format!("127.0.0.1:{port}")).with_timeout(Duration::from_secs(2));
    let result = tokio::time::timeout(Duration::from_secs(30), pubsub::kafka::KafkaBackend::connect(config)).await;
    let err = result.expect("bounded wait").unwrap_err();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
}

/// SASL credentials never show in Debug.
#[test]
fn sasl_password_is_not_printed() {
    let config = pubsub::kafka::KafkaConfig::new("h:9092").with_sasl("svc", Secret::new("kafka-pw-123"));
    let shown = format!("{config:?}");
    assert!(shown.contains("svc") && !shown.contains("kafka-pw-123"), "{shown}");
}

/// `delete_topic` as on Apache Kafka, on a Tansu of its own: deleting a
/// topic on Tansu crashes every running librdkafka consumer of that broker
/// (which is why `?broker=tansu` refuses it), so this runs where no other
/// client is connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_topic_on_a_broker_of_its_own() {
    use pubsub::kafka::{KafkaBackend, KafkaBroker, KafkaConfig};
    use pubsub::{BackendKind, Topic, TopicOptions};

    let Some(broker) = common::broker(BackendKind::Kafka, &[]).await else {
        return;
    };
    let tansu = pubsub::connect(&broker.url())
        .await
        .expect("connect with ?broker=tansu");
    let topic: Topic = "q1/admin/delete/orders".parse().unwrap();
    assert!(matches!(
        tansu.admin().delete_topic(&topic).await,
        Err(Error::Unsupported { .. })
    ));
    tansu.close().await.unwrap();

    let config = KafkaConfig::new(format!("127.0.0.1:{}", broker.port())).with_broker(KafkaBroker::Apache);
    let backend = KafkaBackend::connect(config).await.expect("connect");
    let admin = pubsub::PubSubBackend::admin(&backend);
    assert!(admin
        .create_topic(&topic, TopicOptions::default().with_partitions(2))
        .await
        .unwrap());
    assert!(admin.topic_exists(&topic).await.unwrap());
    admin.delete_topic(&topic).await.expect("delete_topic");
    assert!(!admin.topic_exists(&topic).await.unwrap(), "a deleted topic exists");
    assert!(!admin.list_topics("admin", "delete").await.unwrap().contains(&topic));
    assert!(matches!(admin.delete_topic(&topic).await, Err(Error::NotFound(_))));
}
