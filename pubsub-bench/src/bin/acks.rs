//! Ack throughput: 10,000 held messages acked one by one (each `ack`
//! awaited before the next), as 100 concurrent `Message::ack`s at a time,
//! and with `Consumer::ack_all` in batches of 100, every backend in one run.
//!
//! ```sh
//! cargo run --release -p pubsub-bench --bin acks -- --backends embedded,redis,nats,kafka
//! ```

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use pubsub::{ConsumerOptions, Message, OutgoingMessage, PubSubBackend, Qos, Result, Topic};

#[derive(Parser, Debug)]
struct Args {
    /// Messages acked per way of acking.
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Messages per `ack_all` call (and per group of concurrent acks).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Backends, by name (URLs from the usual variables) or URL.
    #[arg(long, value_delimiter = ',', default_value = "embedded,redis,nats,kafka")]
    backends: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
enum Way {
    OneByOne,
    Concurrent,
    AckAll,
}

/// Publishes `n` messages to a fresh topic, receives them all (held), then
/// times acking them `way`.
async fn measure(backend: &dyn PubSubBackend, n: usize, batch: usize, way: Way) -> Result<Duration> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let topic = Topic::new(Qos::AtLeastOnce, "bench", &format!("r{stamp}"), "acks")?;
    let sub = format!("acks-{stamp}");
    let options = ConsumerOptions::default().with_max_unacked(n).with_batch_size(1000);
    let consumer = backend.create_consumer(&topic, &sub, options).await?;
    let producer = backend.create_producer(&topic, Default::default()).await?;
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        producer
            .send_batch(
                chunk
                    .iter()
                    .map(|i| OutgoingMessage::new(format!("{i:0>100}")))
                    .collect(),
            )
            .await?;
    }
    producer.close().await?;
    let mut held: Vec<Message> = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(120);
    while held.len() < n && Instant::now() < deadline {
        held.extend(consumer.receive_batch(1000, Duration::from_millis(500)).await?);
    }
    if held.len() < n {
        return Err(pubsub::Error::broker_msg(
            "bench",
            format!("only {} of {n} arrived", held.len()),
        ));
    }
    let started = Instant::now();
    match way {
        Way::OneByOne => {
            for m in &held {
                m.ack().await?;
            }
        }
        Way::Concurrent => {
            for chunk in held.chunks(batch) {
                futures::future::try_join_all(chunk.iter().map(Message::ack)).await?;
            }
        }
        Way::AckAll => {
            for chunk in held.chunks(batch) {
                consumer.ack_all(chunk).await?;
            }
        }
    }
    let took = started.elapsed();
    consumer.close().await?;
    Ok(took)
}

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    println!(
        "| backend | one by one, msg/s | {b} concurrent `ack`s, msg/s | `ack_all` of {b}, msg/s | ack_all / one by one |",
        b = args.batch
    );
    println!("|---|---|---|---|---|");
    for name in &args.backends {
        let backend = match pubsub::connect(&common::url_of(name)).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{name}: cannot connect, skipped: {e}");
                continue;
            }
        };
        let mut rates = Vec::new();
        for way in [Way::OneByOne, Way::Concurrent, Way::AckAll] {
            match measure(backend.as_ref(), args.messages, args.batch, way).await {
                Ok(took) => rates.push(rate(args.messages, took)),
                Err(e) => {
                    eprintln!("{name} {way:?}: {e}");
                    rates.push(f64::NAN);
                }
            }
        }
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.1} |",
            rates[0],
            rates[1],
            rates[2],
            rates[2] / rates[0]
        );
        let _ = backend.close().await;
    }
}
