//! The conformance suite against a real nats-server with JetStream
//! (`NATS_URL`, default `nats://127.0.0.1:4222`; scripts/brokers.sh starts one).

use std::sync::Arc;
use std::time::Duration;

use pubsub_core::{Error, PubSubBackend};
use pubsub_nats::{NatsBackend, NatsConfig};

async fn backend() -> Result<Arc<dyn PubSubBackend>, Error> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    Ok(Arc::new(
        NatsBackend::connect(NatsConfig::new(url).with_timeout(Duration::from_secs(3))).await?,
    ))
}

pubsub_core::conformance_tests!(backend);
