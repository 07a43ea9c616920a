//! The conformance suite against the Kafka-protocol broker that
//! `KAFKA_BOOTSTRAP_SERVERS` names (default `127.0.0.1:9092`, the Apache
//! Kafka 4.4 that scripts/brokers.sh starts). scripts/test.sh runs it again
//! against the second implementation, noida-db on `127.0.0.1:9094`
//! (and Tansu, `127.0.0.1:9095?broker=tansu`, with `PUBSUB_TANSU=1`).

use std::sync::Arc;
use std::time::Duration;

use pubsub_core::{Error, PubSubBackend};
use pubsub_kafka::{KafkaBackend, KafkaConfig};

async fn backend() -> Result<Arc<dyn PubSubBackend>, Error> {
    let servers = std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    Ok(Arc::new(
        KafkaBackend::connect(KafkaConfig::new(servers).with_timeout(Duration::from_secs(5))).await?,
    ))
}

pubsub_core::conformance_tests!(backend);
