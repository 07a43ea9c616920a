//! The conformance suite against a Pulsar-protocol broker (`PULSAR_URL`,
//! default `pulsar://127.0.0.1:6650`; scripts/brokers.sh starts pulsar-lite
//! behind its checksum relay there, hence `?broker=lite`: see `PulsarBroker::Lite`
//! for the two features that broker lacks).

use std::sync::Arc;
use std::time::Duration;

use pubsub_core::{Error, PubSubBackend};
use pubsub_pulsar::{PulsarBackend, PulsarConfig};

async fn backend() -> Result<Arc<dyn PubSubBackend>, Error> {
    let url = std::env::var("PULSAR_URL").unwrap_or_else(|_| "pulsar://127.0.0.1:6650?broker=lite".into());
    Ok(Arc::new(
        PulsarBackend::connect(PulsarConfig::new(url).with_timeout(Duration::from_secs(5))).await?,
    ))
}

pubsub_core::conformance_tests!(backend);
