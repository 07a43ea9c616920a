//! The conformance suite against a 3-node NATS cluster with replicated
//! JetStream (`NATS_CLUSTER_URL`, default the three nodes scripts/brokers.sh
//! starts on 127.0.0.1:4231-4233): every case, with the client given all
//! three servers and streams made with 3 replicas. Plus a check that the
//! streams and durable consumers the SDK makes really are replicated.

use std::sync::Arc;
use std::time::Duration;

use pubsub_core::{testkit, ConsumerOptions, Error, OutgoingMessage, PubSubBackend, Topic};
use pubsub_nats::{NatsBackend, NatsConfig};

/// The test cluster of scripts/brokers.sh.
const DEFAULT_CLUSTER_URL: &str = "nats://127.0.0.1:4231,nats://127.0.0.1:4232,nats://127.0.0.1:4233";

fn url() -> String {
    std::env::var("NATS_CLUSTER_URL").unwrap_or_else(|_| DEFAULT_CLUSTER_URL.into())
}

async fn connect() -> Result<NatsBackend, Error> {
    let backend = NatsBackend::connect(NatsConfig::new(url()).with_timeout(Duration::from_secs(5))).await?;
    // A single server here would run the suite on one node, unnoticed.
    if backend.stream_replicas() < 3 {
        return Err(Error::InvalidConfiguration(format!(
            "{} is not a cluster of 3 or more servers (new streams would get {} replica(s))",
            url(),
            backend.stream_replicas()
        )));
    }
    Ok(backend)
}

async fn backend() -> Result<Arc<dyn PubSubBackend>, Error> {
    Ok(Arc::new(connect().await?))
}

pubsub_core::conformance_tests!(backend);

/// A topic's stream has 3 replicas (the leader and two followers, all
/// current) and its durable consumer inherits them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_durable_consumers_are_replicated() {
    let backend = match connect().await {
        Ok(b) => b,
        Err(e) => return testkit::broker_unavailable("nats cluster replicas", &e),
    };
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let topic: Topic = format!("q1/cluster/n{n}/replicated").parse().unwrap();
    let consumer = backend
        .create_consumer(&topic, "workers", ConsumerOptions::default())
        .await
        .unwrap();
    let producer = backend.create_producer(&topic, Default::default()).await.unwrap();
    producer.send(OutgoingMessage::new("one")).await.unwrap();
    let m = consumer.receive_timeout(Duration::from_secs(10)).await.unwrap();
    m.ack().await.unwrap();

    let raw = async_nats::ConnectOptions::new()
        .connect(url().split(',').map(str::trim).collect::<Vec<_>>().as_slice())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(raw);
    let stream_name = js.stream_by_subject(topic.joined(".")).await.unwrap();
    let mut stream = js.get_stream(&stream_name).await.unwrap();
    let info = stream.info().await.unwrap().clone();
    assert_eq!(info.config.num_replicas, 3, "{info:?}");
    let cluster = info.cluster.expect("a clustered stream");
    assert!(cluster.leader.is_some(), "{cluster:?}");
    assert_eq!(cluster.replicas.len(), 2, "two followers: {cluster:?}");
    assert!(cluster.replicas.iter().all(|p| !p.offline), "{cluster:?}");

    let mut durable: async_nats::jetstream::consumer::PullConsumer = stream.get_consumer("workers").await.unwrap();
    let info = durable.info().await.unwrap().clone();
    // 0: the stream's replicas.
    assert_eq!(info.config.num_replicas, 0, "{:?}", info.config);
    let cluster = info.cluster.expect("a clustered consumer");
    assert!(cluster.leader.is_some(), "{cluster:?}");
    assert_eq!(cluster.replicas.len(), 2, "the consumer is replicated too: {cluster:?}");
    backend.close().await.unwrap();
}

/// Asking for more replicas than JetStream allows is refused before
/// connecting; an explicit count overrides the cluster's default.
#[tokio::test]
async fn replicas_option_is_checked_and_wins() {
    let e = NatsBackend::connect(NatsConfig::new(url()).with_replicas(6))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidConfiguration(_)), "{e:?}");
    let e = NatsBackend::connect(NatsConfig::new(format!("{}?replicas=0", url())))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidConfiguration(_)), "{e:?}");
    let backend = match NatsBackend::connect(NatsConfig::new(format!("{}?replicas=2", url()))).await {
        Ok(b) => b,
        Err(e) => return testkit::broker_unavailable("nats cluster replicas option", &e),
    };
    assert_eq!(backend.stream_replicas(), 2);
    let backend = NatsBackend::connect(NatsConfig::new(format!("{}?replicas=2", url())).with_replicas(1))
        .await
        .unwrap();
    assert_eq!(backend.stream_replicas(), 1);
}

/// A single server (`NATS_URL`) keeps 1 replica by default; 3 asked of it
/// is refused as a setting to change, naming the replicas.
#[tokio::test]
async fn single_server_keeps_one_replica() {
    let single = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let backend = match NatsBackend::connect(NatsConfig::new(single.clone())).await {
        Ok(b) => b,
        Err(e) => return testkit::broker_unavailable("nats single server replicas", &e),
    };
    assert_eq!(backend.stream_replicas(), 1);
    let backend = NatsBackend::connect(NatsConfig::new(single).with_replicas(3))
        .await
        .unwrap();
    let topic: Topic = "q1/cluster/single/three-replicas".parse().unwrap();
    let e = backend.create_producer(&topic, Default::default()).await.unwrap_err();
    assert!(matches!(e, Error::InvalidConfiguration(_)), "{e:?}");
    assert!(e.to_string().contains("3 replicas"), "{e}");
}
