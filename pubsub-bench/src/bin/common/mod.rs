//! What the small bench binaries share.

/// A backend's URL by name, from the variables the tests use (loopback
/// defaults as scripts/brokers.sh starts them), or `name` itself as a URL.
pub fn url_of(backend: &str) -> String {
    let env = |k: &str, d: &str| std::env::var(k).ok().filter(|v| !v.is_empty()).unwrap_or(d.into());
    match backend {
        "embedded" => "embedded://memory".into(),
        "redis" => env("REDIS_URL", "redis://127.0.0.1:6379"),
        "nats" => env("NATS_URL", "nats://127.0.0.1:4222"),
        "kafka" => format!("kafka://{}", env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")),
        "mqtt" => "mqtt://127.0.0.1:1883".into(),
        other => other.into(),
    }
}
