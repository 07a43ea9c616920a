//! The conformance suite against the Pulsar-protocol broker that
//! `PULSAR_URL` names; run it once per broker:
//!
//! - Apache Pulsar (the primary, and the default when `PULSAR_URL` is
//!   unset): `pulsar://127.0.0.1:6652` with `PULSAR_ADMIN_URL`
//!   `http://127.0.0.1:8082`, the standalone that scripts/brokers.sh starts. Every case runs in a namespace of its own,
//!   which Apache Pulsar does not make by itself: the adapter makes it through
//!   the HTTP admin API at `PULSAR_ADMIN_URL` (see `PulsarConfig::admin_url`).
//! - pulsar-lite (the second): `PULSAR_URL=pulsar://127.0.0.1:6650?broker=lite`,
//!   pulsar-lite behind its checksum
//!   relay; `?broker=lite` selects `PulsarBroker::Lite`, which refuses the
//!   two features that broker lacks.

use std::sync::Arc;

use pubsub_core::{Error, PubSubBackend};
use pubsub_pulsar::{PulsarBackend, PulsarConfig};

async fn backend() -> Result<Arc<dyn PubSubBackend>, Error> {
    let (url, admin) = match std::env::var("PULSAR_URL") {
        Ok(url) => (url, std::env::var("PULSAR_ADMIN_URL").ok()),
        Err(_) => ("pulsar://127.0.0.1:6652".into(), Some("http://127.0.0.1:8082".into())),
    };
    let mut config = PulsarConfig::new(url);
    if let Some(admin) = admin {
        config = config.with_admin_url(admin);
    }
    Ok(Arc::new(PulsarBackend::connect(config).await?))
}

pubsub_core::conformance_tests!(backend);
