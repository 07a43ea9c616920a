//! Measures how fast a consumer with default options drains a backlog:
//! sends N messages (default 10,000) to a fresh topic, then receives and
//! acks them one at a time and prints the rate. Not a test: numbers only.
//!
//! ```text
//! KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 cargo run -p pubsub-kafka --example drain -- 10000
//! ```

use std::time::{Duration, Instant};

use pubsub_core::{ConsumerOptions, InitialPosition, OutgoingMessage, PubSubBackend, Topic};
use pubsub_kafka::{KafkaBackend, KafkaConfig};

#[tokio::main]
async fn main() -> pubsub_core::Result<()> {
    let servers = std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let batch: Option<usize> = std::env::args().nth(2).and_then(|a| a.parse().ok());
    let backend = KafkaBackend::connect(KafkaConfig::new(servers)).await?;
    let run = std::process::id();
    let topic: Topic = format!("q1/bench/drain/t{run}").parse()?;
    let p = backend.create_producer(&topic, Default::default()).await?;
    let mut options = ConsumerOptions::default().with_initial_position(InitialPosition::Earliest);
    if let Some(b) = batch {
        options = options.with_batch_size(b);
    }
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let msgs = chunk.iter().map(|i| OutgoingMessage::new(format!("m{i}"))).collect();
        p.send_batch(msgs).await?;
    }
    let c = backend.create_consumer(&topic, "drain", options).await?;
    let start = Instant::now();
    let mut got = 0;
    while got < n {
        match c.receive_timeout(Duration::from_secs(30)).await {
            Ok(m) => {
                m.ack().await?;
                got += 1;
            }
            Err(e) => {
                println!("stopped after {got}: {e}");
                break;
            }
        }
    }
    let took = start.elapsed();
    println!(
        "batch_size {:?}: received {got} in {:.2} s = {:.0} msg/s",
        batch,
        took.as_secs_f64(),
        got as f64 / took.as_secs_f64()
    );
    c.close().await?;
    let _ = backend.admin().delete_topic(&topic).await;
    backend.close().await
}
