//! An env-configured processor: reads JSON records from INPUT_TOPIC,
//! transforms them, publishes results to OUTPUT_TOPIC. The backend comes
//! from PUBSUB_BACKEND and its variables (see `--help`).
//!
//! ```sh
//! cargo run --example processor -- --demo 5 --max-messages 5                       # embedded
//! PUBSUB_BACKEND=redis cargo run --features redis --example processor -- --demo 5 --max-messages 5
//! ```
//!
//! Without `--max-messages` it runs until SIGTERM or ctrl-c, then drains
//! in-flight messages and exits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use clap::Parser;
use pubsub::processor::{HandlerError, Processor, ProcessorOptions, Publisher, Shutdown};
use pubsub::{ConsumerOptions, Message, OutgoingMessage, ProducerExt, Topic};
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(about = "Transforms JSON records from one topic into results on another")]
struct Cli {
    #[command(flatten)]
    pubsub: pubsub::PubSubArgs,
    /// Topic to read records from.
    #[arg(long, env = "INPUT_TOPIC", default_value = "q1/tg/flow/records")]
    input_topic: Topic,
    /// Topic to publish results to.
    #[arg(long, env = "OUTPUT_TOPIC", default_value = "q1/tg/flow/results")]
    output_topic: Topic,
    /// Subscription shared by every instance of this processor.
    #[arg(long, env = "SUBSCRIPTION", default_value = "record-processor")]
    subscription: String,
    /// Handlers running at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 8)]
    concurrency: usize,
    /// Publish this many sample records first (to see it work).
    #[arg(long, default_value_t = 0)]
    demo: usize,
    /// Stop after handling this many records.
    #[arg(long)]
    max_messages: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    id: u64,
    text: String,
    note: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Transformed {
    id: u64,
    upper: String,
    length: usize,
    note: Option<String>,
}

#[tokio::main]
async fn main() -> pubsub::Result<()> {
    let cli = Cli::parse();
    let backend = cli.pubsub.connect().await?;
    println!(
        "backend: {} ({} -> {})",
        backend.name(),
        cli.input_topic,
        cli.output_topic
    );

    // The subscription must exist before demo records are sent (Latest).
    backend
        .create_consumer(&cli.input_topic, &cli.subscription, ConsumerOptions::default())
        .await?
        .close()
        .await?;
    if cli.demo > 0 {
        let p = backend.create_producer(&cli.input_topic, Default::default()).await?;
        for id in 0..cli.demo as u64 {
            p.send_value(&Record {
                id,
                text: format!("record number {id}"),
                note: None,
            })
            .await?;
        }
        p.close().await?;
        println!("sent {} demo records", cli.demo);
    }

    let publisher = Arc::new(Publisher::new(
        backend.create_producer(&cli.output_topic, Default::default()).await?,
        1000,
    ));
    let shutdown = Shutdown::on_signals();
    let handled = Arc::new(AtomicU64::new(0));
    let (out, stop, count, max) = (publisher.clone(), shutdown.clone(), handled.clone(), cli.max_messages);
    let processor = Processor::new(
        backend.clone(),
        cli.input_topic.clone(),
        cli.subscription.clone(),
        move |m: Message| {
            let (out, stop, count) = (out.clone(), stop.clone(), count.clone());
            async move {
                let record: Record = m.value()?; // undecodable: dead-lettered at once
                let result = Transformed {
                    id: record.id,
                    length: record.text.len(),
                    upper: record.text.to_uppercase(),
                    note: record.note,
                };
                let payload = serde_json::to_vec(&result).map_err(HandlerError::fatal)?;
                out.publish(OutgoingMessage::new(payload).with_property("content-type", "application/json"))
                    .await?;
                println!("handled record {} -> {}", result.id, result.upper);
                if max.is_some_and(|max| count.fetch_add(1, Ordering::SeqCst) + 1 >= max) {
                    stop.trigger();
                }
                Ok(())
            }
        },
    )
    .with_options(ProcessorOptions::default().with_concurrency(cli.concurrency));
    let report = processor.run(shutdown).await?;
    match Arc::try_unwrap(publisher) {
        Ok(p) => p.close().await?,
        Err(p) => p.flush().await?,
    }
    backend.close().await?;
    println!("done: {report:?}");
    Ok(())
}
