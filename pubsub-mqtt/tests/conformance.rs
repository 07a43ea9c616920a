//! The conformance suite against a real Mosquitto (`MQTT_HOST`, `MQTT_PORT`,
//! default 127.0.0.1:1883; scripts/brokers.sh starts one).

use std::sync::Arc;
use std::time::Duration;

use pubsub_core::{Error, PubSubBackend};
use pubsub_mqtt::{MqttBackend, MqttConfig};

async fn backend() -> Result<Arc<dyn PubSubBackend>, Error> {
    let host = std::env::var("MQTT_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("MQTT_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1883);
    // Short-lived sessions: every case makes fresh subscriptions on the shared broker.
    let config = MqttConfig::new(host, port)
        .with_timeout(Duration::from_secs(3))
        .with_session_expiry(Duration::from_secs(300));
    Ok(Arc::new(MqttBackend::connect(config).await?))
}

pubsub_core::conformance_tests!(backend);
