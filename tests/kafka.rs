//! Kafka beyond the conformance suite: broker restarts, topic deletion
//! under running consumers, an unreachable broker, secrets. Each broker
//! test starts its own Apache Kafka (`pubsub::testing`, KRaft on Java 17).

mod common;

use std::time::Duration;

use pubsub::{BackendKind, ConsumerOptions, Error, OutgoingMessage, Secret, Topic, TopicOptions};

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

/// q1 no-loss across a SIGKILL of the broker (records acked with acks=all
/// are in the log; the page cache outlives the process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_loses_no_confirmed_message() {
    let Some(b) = common::broker(BackendKind::Kafka, &[]).await else {
        return;
    };
    common::no_loss_across_restart(b, common::Outage::Kill, 300, 10).await;
}

/// Consumers and producers go on after a graceful broker restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_resumes_after_restart() {
    let Some(b) = common::broker(BackendKind::Kafka, &[]).await else {
        return;
    };
    common::consumer_resumes_after_restart(b).await;
}

/// Readers go on after a graceful broker restart where they stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_resumes_after_restart() {
    let Some(b) = common::broker(BackendKind::Kafka, &[]).await else {
        return;
    };
    common::reader_resumes_after_restart(b).await;
}

/// Deleting a topic while consumers of other topics run on the same broker
/// (on Tansu 0.6 this crashed every running librdkafka consumer, which is
/// why `?broker=tansu` refuses it): they keep receiving, and the deleted
/// topic is gone from every listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_topic_under_running_consumers() {
    let Some(broker) = common::broker(BackendKind::Kafka, &[]).await else {
        return;
    };
    let backend = broker.backend().await.expect("connect");
    let admin = backend.admin();
    let doomed: Topic = "q1/admin/delete/orders".parse().unwrap();
    let other: Topic = "q1/admin/delete/survivor".parse().unwrap();
    let consumer = backend
        .create_consumer(&other, "s", ConsumerOptions::default())
        .await
        .unwrap();
    let producer = backend.create_producer(&other, Default::default()).await.unwrap();
    assert!(admin
        .create_topic(&doomed, TopicOptions::default().with_partitions(2))
        .await
        .unwrap());
    assert!(admin.topic_exists(&doomed).await.unwrap());
    admin.delete_topic(&doomed).await.expect("delete_topic");
    assert!(!admin.topic_exists(&doomed).await.unwrap(), "a deleted topic exists");
    assert!(!admin.list_topics("admin", "delete").await.unwrap().contains(&doomed));
    let again = admin.delete_topic(&doomed).await;
    assert!(matches!(again, Err(Error::NotFound(_))), "{again:?}");
    producer.send(OutgoingMessage::new("still here")).await.unwrap();
    let m = consumer
        .receive_timeout(Duration::from_secs(30))
        .await
        .expect("the other topic's consumer still receives");
    assert_eq!(m.payload().as_ref(), b"still here");
    m.ack().await.unwrap();
    backend.close().await.unwrap();
}

/// A consumer dropped without `close` after its broker died must not hang
/// the runtime's shutdown. librdkafka's close (in the client's drop) waits
/// for the group coordinator for ever then; the SDK drops the client on a
/// thread of its own once nothing else holds it. (A clean-clone run hung
/// here for good when an aborted poll task held the client last.)
#[test]
fn dropping_a_consumer_after_its_broker_died_does_not_hang() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let broker = rt.block_on(async {
        let mut b = common::broker(BackendKind::Kafka, &[]).await?;
        let backend = b.backend().await.unwrap();
        let topic: Topic = "q1/reliability/kafka/dropped".parse().unwrap();
        let c = backend
            .create_consumer(&topic, "s", ConsumerOptions::default())
            .await
            .unwrap();
        let p = backend.create_producer(&topic, Default::default()).await.unwrap();
        p.send(OutgoingMessage::new("m")).await.unwrap();
        let m = c.receive_timeout(Duration::from_secs(10)).await.unwrap();
        m.ack().await.unwrap();
        b.kill().await.unwrap();
        drop((m, c, p, backend));
        Some(b)
    });
    let Some(broker) = broker else { return };
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(rt);
        let _ = done.send(());
    });
    assert!(
        finished.recv_timeout(Duration::from_secs(60)).is_ok(),
        "the runtime's shutdown hung on the dropped consumer"
    );
    drop(broker);
}
