//! The processor's metrics, through the `metrics` facade. Its own test
//! binary, because it installs the process-wide recorder.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use pubsub::embedded::EmbeddedBackend;
use pubsub::processor::{HandlerError, Processor, ProcessorOptions, Shutdown};
use pubsub::{ConsumerOptions, Message, OutgoingMessage, PubSubBackend, Topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_histogram_are_recorded_with_labels() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder of this binary");

    let backend = std::sync::Arc::new(EmbeddedBackend::memory());
    let topic: Topic = "q1/proc/metrics/jobs".parse().unwrap();
    backend
        .create_consumer(&topic, "w", ConsumerOptions::default())
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    p.send(OutgoingMessage::new("ok")).await.unwrap();
    p.send(OutgoingMessage::new("bad")).await.unwrap();
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let processor = Processor::new(backend.clone(), topic, "w", move |m: Message| {
        let stop = stop.clone();
        async move {
            if m.payload().as_ref() == b"bad" {
                stop.trigger();
                return Err(HandlerError::fatal("bad input"));
            }
            Ok(())
        }
    })
    .with_options(ProcessorOptions::default().with_concurrency(1));
    let report = tokio::time::timeout(Duration::from_secs(30), processor.run(shutdown))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.acked, report.dead_lettered), (1, 1));

    let mut counters = std::collections::HashMap::new();
    let mut histogram_samples = 0;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        assert!(labels.contains(&"topic=q1/proc/metrics/jobs".to_string()), "{labels:?}");
        assert!(labels.contains(&"subscription=w".to_string()), "{labels:?}");
        match value {
            DebugValue::Counter(n) => {
                counters.insert(key.key().name().to_string(), n);
            }
            DebugValue::Histogram(samples) => histogram_samples += samples.len(),
            DebugValue::Gauge(_) => {}
        }
    }
    assert_eq!(
        counters.get("pubsub_processor_received_total"),
        Some(&2),
        "{counters:?}"
    );
    assert_eq!(counters.get("pubsub_processor_acked_total"), Some(&1), "{counters:?}");
    assert_eq!(
        counters.get("pubsub_processor_dead_lettered_total"),
        Some(&1),
        "{counters:?}"
    );
    assert_eq!(histogram_samples, 2, "one handling-latency sample per message");
}
