//! Settings of the MQTT backend.

use std::fmt;
use std::time::Duration;

use pubsub_core::{Secret, TlsConfig};

/// How to reach the MQTT broker.
///
/// ```
/// use pubsub_core::Secret;
/// let cfg = pubsub_mqtt::MqttConfig::new("localhost", 1883).with_credentials("bob", Secret::new("pw"));
/// assert!(!format!("{cfg:?}").contains("\"pw\""));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct MqttConfig {
    /// Broker host (`MQTT_HOST`).
    pub host: String,
    /// Broker port (`MQTT_PORT`).
    pub port: u16,
    /// User name (`MQTT_USERNAME`).
    pub username: Option<String>,
    /// Password (`MQTT_PASSWORD`); never printed.
    pub password: Option<Secret>,
    /// TLS settings (`mqtts://` in `MQTT_HOST`, the `MQTT_TLS_*` variables):
    /// a CA file, a client certificate for brokers with
    /// `require_certificate true`, a server name to check.
    pub tls: Option<TlsConfig>,
    /// Bound on connecting and on waiting for a PUBACK.
    pub timeout: Duration,
    /// How long the broker keeps a q1/q2 consumer's session (and queues
    /// messages for it) while it is disconnected.
    pub session_expiry: Duration,
    /// Prefix of every client id this backend makes.
    pub client_id_prefix: String,
    /// Largest payload sent (lowered to the broker's maximum packet size when it announces one).
    pub max_payload: usize,
}

impl MqttConfig {
    /// Defaults for the broker at `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        MqttConfig {
            host: host.into(),
            port,
            username: None,
            password: None,
            tls: None,
            timeout: Duration::from_secs(5),
            session_expiry: Duration::from_secs(24 * 3600),
            client_id_prefix: "pubsub".into(),
            max_payload: 16 * 1024 * 1024,
        }
    }

    /// Sets user name and password.
    pub fn with_credentials(mut self, username: impl Into<String>, password: Secret) -> Self {
        self.username = Some(username.into());
        self.password = Some(password);
        self
    }

    /// Connects over TLS with these settings.
    ///
    /// ```
    /// use pubsub_core::TlsConfig;
    /// let cfg = pubsub_mqtt::MqttConfig::new("mqtt.internal", 8883)
    ///     .with_tls(TlsConfig::default().with_ca_file("/etc/ssl/mqtt-ca.pem"));
    /// assert!(cfg.tls.is_some());
    /// ```
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets how long the broker keeps a disconnected consumer's session.
    pub fn with_session_expiry(mut self, expiry: Duration) -> Self {
        self.session_expiry = expiry;
        self
    }

    /// Sets the timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("timeout", &self.timeout)
            .field("session_expiry", &self.session_expiry)
            .field("client_id_prefix", &self.client_id_prefix)
            .finish()
    }
}
