//! The conformance suite against a Kafka-protocol broker
//! (`KAFKA_BOOTSTRAP_SERVERS`, default 127.0.0.1:9092; scripts/brokers.sh
//! starts Tansu there, and `?broker=tansu` is added unless the variable
//! is set).

use std::sync::Arc;
use std::time::Duration;

use pubsub_core::{Error, PubSubBackend};
use pubsub_kafka::{KafkaBackend, KafkaConfig};

async fn backend() -> Result<Arc<dyn PubSubBackend>, Error> {
    let servers = std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092?broker=tansu".into());
    Ok(Arc::new(
        KafkaBackend::connect(KafkaConfig::new(servers).with_timeout(Duration::from_secs(5))).await?,
    ))
}

pubsub_core::conformance_tests!(backend);
