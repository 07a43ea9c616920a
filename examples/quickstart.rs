//! Send three messages and receive them, on whatever backend the
//! environment names (the in-memory embedded log when nothing is set).
//!
//! ```sh
//! cargo run --example quickstart
//! PUBSUB_BACKEND=embedded PUBSUB_EMBEDDED_DIR=/tmp/pubsub cargo run --example quickstart
//! ```

use std::time::Duration;

use pubsub::{ConsumerOptions, OutgoingMessage, ProducerExt, Topic};

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct TextCompletionRequest {
    system: String,
    prompt: String,
    streaming: bool,
    metadata: Option<std::collections::HashMap<String, String>>,
}

#[tokio::main]
async fn main() -> pubsub::Result<()> {
    let backend = pubsub::from_env().await?;
    println!("backend: {}", backend.name());

    let topic: Topic = "q1/tg/flow/quickstart".parse()?;
    // Subscribe first: a new subscription starts at the latest message.
    let consumer = backend
        .create_consumer(&topic, "quickstart", ConsumerOptions::default())
        .await?;
    let producer = backend.create_producer(&topic, Default::default()).await?;

    for i in 0..2 {
        let id = producer
            .send(OutgoingMessage::new(format!("hello {i}")).with_property("n", i.to_string()))
            .await?;
        println!("sent     {id}: hello {i}");
    }
    let request = TextCompletionRequest {
        system: "You are helpful".into(),
        prompt: "Hello world".into(),
        streaming: false,
        metadata: None, // omitted from the JSON, not sent as null
    };
    let id = producer.send_value(&request).await?;
    println!("sent     {id}: {request:?}");

    for _ in 0..3 {
        let msg = consumer.receive_timeout(Duration::from_secs(10)).await?;
        match msg.content_type() {
            Some("application/json") => {
                let value: TextCompletionRequest = msg.value()?;
                println!(
                    "received {}: {value:?} as {}",
                    msg.id(),
                    String::from_utf8_lossy(msg.payload())
                );
            }
            _ => println!("received {}: {}", msg.id(), String::from_utf8_lossy(msg.payload())),
        }
        msg.ack().await?;
    }

    producer.close().await?;
    consumer.close().await?;
    backend.close().await?;
    println!("done");
    Ok(())
}
