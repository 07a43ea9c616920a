//! The workloads through the SDK, the same for every backend.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pubsub::{ConsumerOptions, OutgoingMessage, PubSubBackend, Qos, Result, Topic};

/// Messages per `send_batch` call.
pub const BATCH: usize = 100;

/// A topic no earlier run used.
pub fn fresh_topic(qos: Qos, workload: &str) -> Topic {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    Topic::new(qos, "bench", &format!("r{n}"), workload).expect("valid bench topic")
}

/// Sends `n` messages of `size` bytes with `send_batch` (batches of
/// [`BATCH`]); returns the time until the last batch was confirmed.
pub async fn publish(backend: &dyn PubSubBackend, topic: &Topic, n: usize, size: usize) -> Result<Duration> {
    let producer = backend.create_producer(topic, Default::default()).await?;
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let started = Instant::now();
    let mut left = n;
    while left > 0 {
        let k = left.min(BATCH);
        let batch = (0..k).map(|_| OutgoingMessage::new(payload.clone())).collect();
        producer.send_batch(batch).await?;
        left -= k;
    }
    let took = started.elapsed();
    producer.close().await?;
    Ok(took)
}

/// How consumers share the messages in [`end_to_end`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// All on one Shared subscription: each message to one of them.
    Shared,
    /// One subscription each: every message to all of them.
    FanOut,
}

/// `consumers` consumers receive (in batches) and ack while `n` messages
/// are published; returns the time from the first send to the last
/// message received, and how many arrived (q0 may drop: the consumers stop
/// after 1 s without a message once publishing is done).
pub async fn end_to_end(
    backend: Arc<dyn PubSubBackend>,
    topic: &Topic,
    n: usize,
    size: usize,
    consumers: usize,
    split: Split,
) -> Result<(Duration, usize)> {
    let received = Arc::new(AtomicUsize::new(0));
    let published = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let expected = match split {
        Split::Shared => n,
        Split::FanOut => n * consumers,
    };
    let mut tasks = Vec::new();
    for i in 0..consumers {
        // Names unique to the workload: on Kafka a subscription is a
        // consumer group, and one group across topics rebalances them all.
        let sub = match split {
            Split::Shared => format!("bench-{}", topic.namespace()),
            Split::FanOut => format!("bench-{}-{i}", topic.namespace()),
        };
        let c = backend
            .create_consumer(topic, &sub, ConsumerOptions::default().with_batch_size(1000))
            .await?;
        let (received, published) = (received.clone(), published.clone());
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut last = Instant::now();
            let mut idle = 0;
            while received.load(Ordering::Acquire) < expected && Instant::now() < deadline && idle < 5 {
                let batch = c.receive_batch(BATCH, Duration::from_millis(200)).await?;
                if batch.is_empty() {
                    if published.load(Ordering::Acquire) {
                        idle += 1;
                    }
                    continue;
                }
                idle = 0;
                last = Instant::now();
                // Acks of a batch go out together (each backend pipelines or
                // coalesces them), as an application handling a batch would.
                futures::future::try_join_all(batch.iter().map(|m| m.ack())).await?;
                received.fetch_add(batch.len(), Ordering::AcqRel);
            }
            c.close().await?;
            Ok::<Instant, pubsub::Error>(last)
        }));
    }
    let started = Instant::now();
    publish(backend.as_ref(), topic, n, size).await?;
    published.store(true, Ordering::Release);
    let mut last = started;
    for t in tasks {
        let finished = t.await.map_err(|e| pubsub::Error::broker_msg("bench", e))??;
        last = last.max(finished);
    }
    let got = received.load(Ordering::Acquire);
    if got < expected && topic.qos() != Qos::AtMostOnce {
        return Err(pubsub::Error::broker_msg(
            "bench",
            format!("only {got} of {expected} messages arrived"),
        ));
    }
    Ok((last - started, got))
}

/// Sends `rate` messages per second for `seconds`, each carrying its send
/// time; one consumer measures send-to-receive latency. Sorted samples.
pub async fn latency(backend: Arc<dyn PubSubBackend>, topic: &Topic, rate: u32, seconds: u32) -> Result<Vec<Duration>> {
    let c = backend
        .create_consumer(
            topic,
            &format!("latency-{}", topic.namespace()),
            ConsumerOptions::default(),
        )
        .await?;
    let p = backend.create_producer(topic, Default::default()).await?;
    let total = (rate * seconds) as usize;
    let origin = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut samples = Vec::with_capacity(total);
        while samples.len() < total {
            let m = match c.receive_timeout(Duration::from_secs(10)).await {
                Ok(m) => m,
                Err(_) => break,
            };
            samples.push(crate::stats::since_stamp(origin, m.payload()));
            let _ = m.ack().await;
        }
        let _ = c.close().await;
        samples
    });
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    for _ in 0..total {
        tick.tick().await;
        p.send(OutgoingMessage::new(crate::stats::stamped_payload(origin)))
            .await?;
    }
    let mut samples = receiver.await.map_err(|e| pubsub::Error::broker_msg("bench", e))?;
    samples.sort();
    Ok(samples)
}
