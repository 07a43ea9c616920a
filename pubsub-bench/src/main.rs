//! `pubsub-bench`: the SDK against the raw client library on the same
//! broker, side by side in one run, and the embedded backend against tokio
//! channels. Prints a Markdown table.
//!
//! ```text
//! scripts/brokers.sh
//! cargo run --release -p pubsub-bench -- [--messages 20000] [--backends embedded,redis,nats,...]
//! ```
//!
//! Brokers are found as the tests find them (`REDIS_URL`, `NATS_URL`,
//! `MQTT_HOST`, `KAFKA_BOOTSTRAP_SERVERS`, `PULSAR_HOST` with
//! `PULSAR_ADMIN_URL` for Apache Pulsar, defaulting to the loopback ports
//! scripts/brokers.sh uses). Two second brokers can be named too:
//! `mqtt-stock`, a Mosquitto with its stock settings (`MQTT_STOCK_URL`,
//! default `mqtt://127.0.0.1:1884`: `mosquitto -d -p 1884`), and
//! `pulsar-lite` (`PULSAR_LITE_URL`, default the relay on 6650). Figures from a shared 2-core
//! machine are noisy: compare the ratios within one run, not runs.
//!
//! Some workloads have a second baseline row: Redis's raw client with
//! `TCP_NODELAY` (the first keeps redis-rs's default, off, as a user writes
//! it), and for Pulsar the Python `pulsar-client` running
//! scripts/pulsar_client.py (`PULSAR_PYTHON`, default target/pyenv/bin/python;
//! its cell is empty, with the reason on stderr, when it cannot run).

mod raw;
mod sdk;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use pubsub::{PubSubBackend, Qos};
use sdk::Split;
use stats::{print_table, quantile_us, rate, Row};

#[derive(Parser)]
struct Args {
    /// Messages per throughput workload.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "embedded,redis,nats,mqtt,kafka,pulsar")]
    backends: Vec<String>,
    /// Messages per second of the latency workload.
    #[arg(long, default_value_t = 200)]
    latency_rate: u32,
    /// Seconds of the latency workload.
    #[arg(long, default_value_t = 3)]
    latency_seconds: u32,
    /// Unacked messages held by the embedded backend for the memory figure (0: skip).
    #[arg(long, default_value_t = 1_000_000)]
    rss_messages: usize,
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// One broker to measure: its backend (which decides the raw baselines),
/// the label its rows get, and where it is.
struct Target {
    kind: String,
    label: String,
    url: String,
}

impl Target {
    /// A backend name (`embedded`, `redis`, `nats`, `mqtt`, `kafka`,
    /// `pulsar`) at the address the tests use, or one of the second
    /// brokers: `mqtt-stock` (a stock-config Mosquitto, `MQTT_STOCK_URL`,
    /// default port 1884) and `pulsar-lite` (`PULSAR_LITE_URL`, default the
    /// relay on 6650).
    fn parse(spec: &str) -> Target {
        let (kind, url) = match spec {
            "embedded" => ("embedded", "embedded://memory".into()),
            "redis" => ("redis", env("REDIS_URL", "redis://127.0.0.1:6379")),
            "nats" => ("nats", env("NATS_URL", "nats://127.0.0.1:4222")),
            "mqtt" => (
                "mqtt",
                format!("mqtt://{}:{}", env("MQTT_HOST", "127.0.0.1"), env("MQTT_PORT", "1883")),
            ),
            "mqtt-stock" => ("mqtt", env("MQTT_STOCK_URL", "mqtt://127.0.0.1:1884")),
            "kafka" => (
                "kafka",
                format!("kafka://{}", env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")),
            ),
            "pulsar" => ("pulsar", env("PULSAR_HOST", "pulsar://127.0.0.1:6650?broker=lite")),
            "pulsar-lite" => ("pulsar", env("PULSAR_LITE_URL", "pulsar://127.0.0.1:6650?broker=lite")),
            other => (other.split(':').next().unwrap_or(other), other.to_string()),
        };
        Target {
            kind: kind.to_string(),
            label: spec.to_string(),
            url,
        }
    }

    /// The URL without the SDK's `?broker=` hint (what a raw client takes).
    fn plain_url(&self) -> &str {
        self.url.split('?').next().unwrap_or_default()
    }

    /// `host:port` of the URL.
    fn address(&self) -> &str {
        let plain = self.plain_url();
        plain.split_once("://").map_or(plain, |(_, rest)| rest)
    }

    /// MQTT host and port.
    fn host_port(&self) -> (String, u16) {
        let (host, port) = self.address().rsplit_once(':').unwrap_or((self.address(), "1883"));
        (host.to_string(), port.parse().unwrap_or(1883))
    }
}

/// The backend at `target`; Pulsar with the HTTP admin API at
/// `PULSAR_ADMIN_URL` when set (Apache Pulsar makes no tenant or namespace
/// by itself: see `PulsarConfig::admin_url`), except for `pulsar-lite`.
async fn connect(target: &Target) -> pubsub::Result<Arc<dyn PubSubBackend>> {
    let mut config = pubsub::BackendConfig::from_url(&target.url)?;
    if let pubsub::BackendConfig::Pulsar { admin_url, .. } = &mut config {
        *admin_url = std::env::var("PULSAR_ADMIN_URL")
            .ok()
            .filter(|u| !u.is_empty() && target.label == "pulsar");
    }
    config.connect().await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let mut rows = Vec::new();
    let mut rss = String::new();
    if args.rss_messages > 0 && args.backends.iter().any(|b| b == "embedded") {
        // First, before anything else: memory other runs freed would hide the growth.
        rss = match embedded_rss(args.rss_messages).await {
            Ok((before, after)) => format!(
                "\nembedded, {} unacked 100-byte messages: RSS {before:.0} MiB before, {after:.0} MiB after (+{:.0} MiB, {:.0} bytes per message)",
                args.rss_messages,
                after - before,
                (after - before) * 1024.0 * 1024.0 / args.rss_messages as f64
            ),
            Err(e) => format!("\nembedded RSS: {e}"),
        };
    }
    for target in args.backends.iter().map(|b| Target::parse(b)) {
        match connect(&target).await {
            Ok(backend) => {
                if let Err(e) = measure(&target, backend, &args, &mut rows).await {
                    eprintln!("{}: {e}", target.label);
                }
            }
            Err(e) => eprintln!("{}: cannot connect, skipped: {e}", target.label),
        }
    }
    print_table(&rows);
    println!("{rss}");
}

async fn measure(t: &Target, backend: Arc<dyn PubSubBackend>, args: &Args, rows: &mut Vec<Row>) -> pubsub::Result<()> {
    let n = args.messages;
    let name = t.label.as_str();
    // Every topic this run wrote, deleted at the end: a run writes about
    // 1 GB to each of Kafka and Pulsar, which keep it for days.
    let mut topics = Vec::new();
    let caps = backend.capabilities().clone();
    if t.kind == "pulsar" && caps.admin.topics {
        // The raw client's topics are in bench/raw, which Apache Pulsar does
        // not make by itself: the SDK's admin makes it with a first topic.
        let probe = pubsub::Topic::new(Qos::AtLeastOnce, "bench", "raw", "namespace")?;
        backend.admin().create_topic(&probe, Default::default()).await?;
    }
    for (qos, size) in [
        (Qos::AtMostOnce, 100),
        (Qos::AtLeastOnce, 100),
        (Qos::AtLeastOnce, 10 * 1024),
    ] {
        if caps.max_payload.is_some_and(|m| m < size) {
            continue;
        }
        let label = format!("{} {}B", qos.as_str(), size);
        // Publish throughput (q1 only: a q0 publish measures only the socket).
        if qos == Qos::AtLeastOnce {
            let topic = made(&mut topics, sdk::fresh_topic(qos, "publish"));
            let took = sdk::publish(backend.as_ref(), &topic, n, size).await?;
            let mut row = Row::new(name, format!("publish {label}"), "msg/s");
            row.sdk = Some(rate(n, took));
            row.raw = raw_publish(t, n, size).await;
            let sdk = row.sdk;
            rows.push(row);
            if let Some((baseline, raw)) = second_publish(t, n, size).await {
                let mut row = Row::new(name, format!("publish {label} (raw: {baseline})"), "msg/s");
                (row.sdk, row.raw) = (sdk, raw);
                rows.push(row);
            }
        }
        // q0 with one consumer only: on some brokers (Redis Pub/Sub) every
        // q0 consumer gets every message, so "4 consumers" is not comparable.
        let consumer_counts: &[usize] = if qos == Qos::AtMostOnce { &[1] } else { &[1, 4] };
        for &consumers in consumer_counts {
            let topic = made(&mut topics, sdk::fresh_topic(qos, "e2e"));
            let (took, got) = sdk::end_to_end(backend.clone(), &topic, n, size, consumers, Split::Shared).await?;
            let delivered = if got < n {
                format!(" ({:.0}% delivered)", got as f64 * 100.0 / n as f64)
            } else {
                String::new()
            };
            let mut row = Row::new(
                name,
                format!("end-to-end {label}, {consumers} consumer(s){delivered}"),
                "msg/s",
            );
            row.sdk = Some(rate(got, took));
            row.raw = raw_end_to_end(t, qos, n, size, consumers).await;
            let sdk = row.sdk;
            rows.push(row);
            if let Some((baseline, raw)) = second_end_to_end(t, qos, n, size, consumers).await {
                let workload = format!("end-to-end {label}, {consumers} consumer(s) (raw: {baseline})");
                let mut row = Row::new(name, workload, "msg/s");
                (row.sdk, row.raw) = (sdk, raw);
                rows.push(row);
            }
        }
    }
    if t.kind == "embedded" {
        let topic = made(&mut topics, sdk::fresh_topic(Qos::AtLeastOnce, "fan-out"));
        let (took, _) = sdk::end_to_end(backend.clone(), &topic, n, 100, 4, Split::FanOut).await?;
        let mut row = Row::new(
            name,
            "fan-out q1 100B to 4 subscriptions (raw: tokio broadcast)".into(),
            "msg/s",
        );
        row.sdk = Some(rate(n, took));
        row.raw = Some(rate(n, raw::broadcast_fan_out(n, 100, 4).await));
        rows.push(row);
    }
    let samples = sdk::latency(
        backend.clone(),
        &made(&mut topics, sdk::fresh_topic(Qos::AtLeastOnce, "latency")),
        args.latency_rate,
        args.latency_seconds,
    )
    .await?;
    // A raw latency baseline where one is written (Pulsar: the broker's
    // dispatch delay shows in both).
    let raw_samples = match t.kind.as_str() {
        "pulsar" => raw::pulsar_latency(t.plain_url(), args.latency_rate, args.latency_seconds)
            .await
            .map_err(|e| eprintln!("{name} raw latency: {e}"))
            .ok(),
        _ => None,
    };
    for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
        let mut row = Row::new(
            name,
            format!("latency q1 100B at {} msg/s, {label}", args.latency_rate),
            "µs",
        );
        row.sdk = Some(quantile_us(&samples, q));
        row.raw = raw_samples.as_deref().map(|s| quantile_us(s, q));
        rows.push(row);
    }
    delete_topics(t, backend.as_ref(), &topics).await;
    let _ = backend.close().await;
    Ok(())
}

/// Notes `topic` for [`delete_topics`] and gives it back.
fn made(topics: &mut Vec<pubsub::Topic>, topic: pubsub::Topic) -> pubsub::Topic {
    topics.push(topic.clone());
    topic
}

/// Deletes the SDK's topics of this run and the raw clients' (Kafka
/// `raw-*`, Pulsar `bench/raw/*`), where the broker can delete topics.
async fn delete_topics(t: &Target, backend: &dyn PubSubBackend, topics: &[pubsub::Topic]) {
    let admin = &backend.capabilities().admin;
    if !admin.delete_topic {
        return;
    }
    let mut doomed: Vec<_> = topics
        .iter()
        .filter(|t| t.qos() != Qos::AtMostOnce || admin.q0_topics)
        .cloned()
        .collect();
    if t.kind == "pulsar" && admin.list_topics {
        match backend.admin().list_topics("bench", "raw").await {
            Ok(raw) => doomed.extend(raw),
            Err(e) => eprintln!("{}: listing the raw topics: {e}", t.label),
        }
    }
    for topic in &doomed {
        if let Err(e) = backend.admin().delete_topic(topic).await {
            eprintln!("{}: deleting {topic}: {e}", t.label);
        }
    }
    if t.kind == "kafka" {
        if let Err(e) = raw::kafka_delete_raw_topics(t.address()).await {
            eprintln!("{}: deleting the raw topics: {e}", t.label);
        }
    }
}

/// The raw client's publish figure, where one is written.
async fn raw_publish(t: &Target, n: usize, size: usize) -> Option<f64> {
    let name = &t.label;
    let took = match t.kind.as_str() {
        "nats" => raw::nats_publish(&t.url, n, size).await,
        "redis" => raw::redis_publish(&t.url, n, size, false).await,
        "pulsar" => raw::pulsar_publish(t.plain_url(), n, size).await,
        "kafka" => raw::kafka_publish(t.address(), n, size).await,
        "mqtt" => raw::mqtt_publish(&t.host_port().0, t.host_port().1, n, size).await,
        _ => return None,
    };
    match took {
        Ok(d) => Some(rate(n, d)),
        Err(e) => {
            eprintln!("{name} raw publish: {e}");
            None
        }
    }
}

/// The raw client's (or, for embedded, tokio mpsc's) end-to-end figure:
/// messages received per second.
async fn raw_end_to_end(t: &Target, qos: Qos, n: usize, size: usize, consumers: usize) -> Option<f64> {
    let q0 = qos == Qos::AtMostOnce;
    let name = &t.label;
    let (host, port) = t.host_port();
    let outcome: Result<(Duration, usize), Box<dyn std::error::Error + Send + Sync>> = match (t.kind.as_str(), q0) {
        ("embedded", _) => Ok((raw::mpsc_end_to_end(n, size, consumers).await, n)),
        ("nats", true) => raw::nats_core_end_to_end(&t.url, n, size).await,
        ("nats", false) => raw::nats_end_to_end(&t.url, n, size, consumers).await,
        ("redis", true) => raw::redis_pubsub_end_to_end(&t.url, n, size).await,
        ("redis", false) => raw::redis_end_to_end(&t.url, n, size, consumers, false).await,
        ("pulsar", _) => raw::pulsar_end_to_end(t.plain_url(), n, size, consumers, q0).await,
        ("kafka", _) => raw::kafka_end_to_end(t.address(), n, size, consumers, q0).await,
        ("mqtt", _) => raw::mqtt_end_to_end(&host, port, n, size, consumers, q0).await,
        _ => return None,
    };
    match outcome {
        Ok((took, got)) => Some(rate(got, took)),
        Err(e) => {
            eprintln!("{name} raw end-to-end: {e}");
            None
        }
    }
}

/// A second baseline of the publish workload, where one is written: its
/// name and figure. Redis: the raw client with `TCP_NODELAY` (the first
/// keeps redis-rs's default, as a user writes it). Pulsar: the Python
/// `pulsar-client`.
async fn second_publish(t: &Target, n: usize, size: usize) -> Option<(&'static str, Option<f64>)> {
    let name = &t.label;
    let (baseline, took) = match t.kind.as_str() {
        "redis" => ("nodelay", raw::redis_publish(&t.url, n, size, true).await),
        "pulsar" => (
            "Python pulsar-client",
            raw::pulsar_python("publish", t.plain_url(), n, size, 0)
                .await
                .map(|(d, _)| d),
        ),
        _ => return None,
    };
    match took {
        Ok(d) => Some((baseline, Some(rate(n, d)))),
        Err(e) => {
            eprintln!("{name} {baseline} publish: {e}");
            Some((baseline, None))
        }
    }
}

/// A second baseline of the q1 end-to-end workload (see [`second_publish`]).
async fn second_end_to_end(
    t: &Target,
    qos: Qos,
    n: usize,
    size: usize,
    consumers: usize,
) -> Option<(&'static str, Option<f64>)> {
    if qos == Qos::AtMostOnce {
        return None;
    }
    let name = &t.label;
    let (baseline, outcome) = match t.kind.as_str() {
        "redis" => ("nodelay", raw::redis_end_to_end(&t.url, n, size, consumers, true).await),
        "pulsar" => (
            "Python pulsar-client",
            raw::pulsar_python("e2e", t.plain_url(), n, size, consumers).await,
        ),
        _ => return None,
    };
    match outcome {
        Ok((took, got)) => Some((baseline, Some(rate(got, took)))),
        Err(e) => {
            eprintln!("{name} {baseline} end-to-end: {e}");
            Some((baseline, None))
        }
    }
}

/// RSS before and after the embedded backend holds `n` unacked messages.
async fn embedded_rss(n: usize) -> pubsub::Result<(f64, f64)> {
    let backend = pubsub::connect("embedded://memory").await?;
    let topic = sdk::fresh_topic(Qos::AtLeastOnce, "rss");
    // The subscription exists, so every message is kept until acked.
    let _consumer = backend.create_consumer(&topic, "holder", Default::default()).await?;
    let before = stats::rss_mib().unwrap_or(f64::NAN);
    sdk::publish(backend.as_ref(), &topic, n, 100).await?;
    let after = stats::rss_mib().unwrap_or(f64::NAN);
    Ok((before, after))
}
