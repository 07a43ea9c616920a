//! Processor throughput: `--messages` q1 messages published first, then
//! handled by a `Processor` with a handler that does nothing, timed from
//! start to the last ack, every backend in one run. What it shows is the
//! runtime's own cost per message: receive, spawn, handle, ack (batched
//! through `Consumer::ack_all`).
//!
//! ```sh
//! cargo run --release -p pubsub-bench --bin processor -- --backends embedded,redis,nats,kafka
//! ```

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use pubsub::processor::{HandlerError, Processor, ProcessorOptions, Shutdown};
use pubsub::{ConsumerOptions, Message, OutgoingMessage, Qos, Result, Topic};

#[derive(Parser, Debug)]
struct Args {
    /// Messages handled per backend.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Handlers running at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Backends, by name (URLs from the usual variables) or URL.
    #[arg(long, value_delimiter = ',', default_value = "embedded,redis,nats,kafka")]
    backends: Vec<String>,
}

/// Publishes `n` messages, then times a processor handling them all.
async fn measure(url: &str, n: usize, concurrency: usize) -> Result<(Duration, u64)> {
    let backend = pubsub::connect(url).await?;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let topic = Topic::new(Qos::AtLeastOnce, "bench", &format!("p{stamp}"), "processor")?;
    let sub = format!("proc-{stamp}");
    // The subscription exists before the messages, so it gets them all.
    backend
        .create_consumer(&topic, &sub, ConsumerOptions::default())
        .await?
        .close()
        .await?;
    let producer = backend.create_producer(&topic, Default::default()).await?;
    let payload = bytes::Bytes::from(vec![b'x'; 100]);
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        producer
            .send_batch(chunk.iter().map(|_| OutgoingMessage::new(payload.clone())).collect())
            .await?;
    }
    producer.close().await?;
    let handled = Arc::new(AtomicUsize::new(0));
    let shutdown = Shutdown::new();
    let handler = {
        let (handled, shutdown) = (handled.clone(), shutdown.clone());
        move |_m: Message| {
            let (handled, shutdown) = (handled.clone(), shutdown.clone());
            async move {
                if handled.fetch_add(1, Ordering::AcqRel) + 1 >= n {
                    shutdown.trigger();
                }
                Ok::<(), HandlerError>(())
            }
        }
    };
    let options = ProcessorOptions::default()
        .with_concurrency(concurrency)
        .with_consumer(ConsumerOptions::default().with_batch_size(1000));
    let started = Instant::now();
    let report = Processor::new(backend.clone(), topic, sub, handler)
        .with_options(options)
        .run(shutdown)
        .await?;
    let took = started.elapsed();
    backend.close().await?;
    Ok((took, report.acked))
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    println!("| backend | messages | concurrency | msg/s (acked) |");
    println!("|---|---|---|---|");
    for name in &args.backends {
        match measure(&common::url_of(name), args.messages, args.concurrency).await {
            Ok((took, acked)) => println!(
                "| {name} | {} | {} | {:.0} ({acked}) |",
                args.messages,
                args.concurrency,
                acked as f64 / took.as_secs_f64()
            ),
            Err(e) => println!("| {name} | {} | {} | failed: {e} |", args.messages, args.concurrency),
        }
    }
}
