//! The processor runtime's options, on the embedded backend (and one broker
//! restart on Redis): per-key ordering, handler timeout, rate limit, the
//! Publisher, and surviving a broker restart.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pubsub::embedded::EmbeddedBackend;
use pubsub::processor::{Backoff, HandlerError, Processor, ProcessorOptions, Publisher, Shutdown, DEAD_LETTER_REASON};
use pubsub::{ConsumerOptions, Error, Message, OutgoingMessage, PubSubBackend, Topic};

fn backend() -> Arc<dyn PubSubBackend> {
    Arc::new(EmbeddedBackend::memory())
}

fn number(m: &Message) -> usize {
    std::str::from_utf8(m.payload()).unwrap().parse().unwrap()
}

/// Runs `processor` until `done` returns true (checked as messages are handled), then shuts it down.
async fn run_until(processor: Processor, shutdown: Shutdown) -> pubsub::processor::ProcessorReport {
    tokio::time::timeout(Duration::from_secs(60), processor.run(shutdown))
        .await
        .expect("processor stops")
        .expect("run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_by_key_serialises_each_key_in_arrival_order() {
    let backend = backend();
    let topic: Topic = "q1/proc/order/keys".parse().unwrap();
    backend
        .create_consumer(&topic, "w", ConsumerOptions::default())
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    for i in 0..90 {
        p.send(OutgoingMessage::new(i.to_string()).with_key(format!("k{}", i % 3)))
            .await
            .unwrap();
    }
    let active: Arc<Mutex<BTreeSet<String>>> = Default::default();
    let order: Arc<Mutex<HashMap<String, Vec<usize>>>> = Default::default();
    let shutdown = Shutdown::new();
    let (a, o, stop) = (active.clone(), order.clone(), shutdown.clone());
    let processor = Processor::new(backend.clone(), topic, "w", move |m: Message| {
        let (a, o, stop) = (a.clone(), o.clone(), stop.clone());
        async move {
            let key = m.key().unwrap().to_string();
            assert!(
                a.lock().unwrap().insert(key.clone()),
                "two handlers of key {key} at once"
            );
            o.lock().unwrap().entry(key.clone()).or_default().push(number(&m));
            tokio::time::sleep(Duration::from_millis((number(&m) % 4) as u64)).await;
            a.lock().unwrap().remove(&key);
            if o.lock().unwrap().values().map(Vec::len).sum::<usize>() == 90 {
                stop.trigger();
            }
            Ok(())
        }
    })
    .with_options(ProcessorOptions::default().with_concurrency(8).ordered_by_key());
    let report = run_until(processor, shutdown).await;
    assert_eq!(report.acked, 90);
    for (key, seen) in order.lock().unwrap().iter() {
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "key {key} out of order: {seen:?}");
        assert_eq!(seen.len(), 30);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_past_its_timeout_is_retried_then_dead_lettered() {
    let backend = backend();
    let topic: Topic = "q1/proc/timeout/jobs".parse().unwrap();
    let dlq: Topic = "q1/proc/timeout/jobs-dlq".parse().unwrap();
    let dead = backend
        .create_consumer(&dlq, "d", ConsumerOptions::default())
        .await
        .unwrap();
    backend
        .create_consumer(&topic, "w", ConsumerOptions::default())
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    backend
        .create_producer(&topic, Default::default())
        .await
        .unwrap()
        .send(OutgoingMessage::new("7"))
        .await
        .unwrap();
    let processor = Processor::new(backend.clone(), topic, "w", |_m: Message| async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    })
    .with_options(
        ProcessorOptions::default()
            .with_handler_timeout(Duration::from_millis(100))
            .with_max_attempts(2)
            .with_backoff(Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(10),
                factor: 1.0,
            }),
    );
    let shutdown = Shutdown::new();
    let running = tokio::spawn(processor.run(shutdown.clone()));
    let letter = dead
        .receive_timeout(Duration::from_secs(20))
        .await
        .expect("dead-lettered");
    assert!(letter.property(DEAD_LETTER_REASON).unwrap().contains("timed out"));
    shutdown.trigger();
    let report = running.await.unwrap().unwrap();
    assert_eq!(
        (report.retried, report.dead_lettered, report.abandoned),
        (1, 1, 0),
        "{report:?}"
    );
}

/// The rate limit is a floor on elapsed time (never a speed assertion):
/// 11 messages at 20 per second cannot all start in under half a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_spaces_message_starts() {
    let backend = backend();
    let topic: Topic = "q1/proc/rate/jobs".parse().unwrap();
    backend
        .create_consumer(&topic, "w", ConsumerOptions::default())
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    for i in 0..11 {
        p.send(OutgoingMessage::new(i.to_string())).await.unwrap();
    }
    let starts: Arc<Mutex<Vec<Instant>>> = Default::default();
    let shutdown = Shutdown::new();
    let (s, stop) = (starts.clone(), shutdown.clone());
    let processor = Processor::new(backend.clone(), topic, "w", move |_m: Message| {
        let (s, stop) = (s.clone(), stop.clone());
        async move {
            let mut s = s.lock().unwrap();
            s.push(Instant::now());
            if s.len() == 11 {
                stop.trigger();
            }
            Ok(())
        }
    })
    .with_options(ProcessorOptions::default().with_concurrency(8).with_rate_limit(20.0));
    run_until(processor, shutdown).await;
    let starts = starts.lock().unwrap();
    let span = *starts.last().unwrap() - starts[0];
    assert!(
        span >= Duration::from_millis(490),
        "11 starts at 20/s took only {span:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_applies_back_pressure_and_flushes_everything_on_close() {
    let backend = backend();
    let topic: Topic = "q1/proc/publisher/out".parse().unwrap();
    let c = backend
        .create_consumer(&topic, "s", ConsumerOptions::default())
        .await
        .unwrap();
    let publisher = Publisher::new(backend.create_producer(&topic, Default::default()).await.unwrap(), 8);
    for i in 0..500 {
        publisher.publish(OutgoingMessage::new(i.to_string())).await.unwrap();
    }
    publisher.close().await.expect("close flushes");
    let mut got = Vec::new();
    while got.len() < 500 {
        let batch = c.receive_batch(500, Duration::from_secs(10)).await.unwrap();
        assert!(!batch.is_empty(), "only {} of 500 arrived", got.len());
        got.extend(batch.iter().map(number));
    }
    assert_eq!(got, (0..500).collect::<Vec<_>>(), "all, in order");

    // A failed send is reported by the next flush, not lost silently.
    let producer = backend.create_producer(&topic, Default::default()).await.unwrap();
    producer.close().await.unwrap();
    let broken = Publisher::new(producer, 8);
    broken.publish(OutgoingMessage::new("x")).await.unwrap();
    assert!(matches!(broken.flush().await, Err(Error::Closed(_))));
}

/// A processor keeps handling across a SIGKILL and restart of its broker.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_survives_a_broker_restart() {
    use pubsub::testing::TestBroker;
    let mut broker = match TestBroker::start(pubsub::BackendKind::Redis).await {
        Ok(b) => b,
        Err(e) => return pubsub::testkit::broker_unavailable("redis test broker", &e),
    };
    let backend = broker.backend().await.unwrap();
    let topic: Topic = "q1/proc/restart/jobs".parse().unwrap();
    let opts = ConsumerOptions::default().with_ack_timeout(Some(Duration::from_secs(2)));
    backend
        .create_consumer(&topic, "w", opts.clone())
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    let handled: Arc<Mutex<BTreeSet<usize>>> = Default::default();
    let shutdown = Shutdown::new();
    let (h, stop) = (handled.clone(), shutdown.clone());
    let processor = Processor::new(backend.clone(), topic.clone(), "w", move |m: Message| {
        let (h, stop) = (h.clone(), stop.clone());
        async move {
            let mut h = h.lock().unwrap();
            h.insert(number(&m));
            if h.len() == 40 {
                stop.trigger();
            }
            Ok::<(), HandlerError>(())
        }
    })
    .with_options(ProcessorOptions::default().with_consumer(opts));
    let running = tokio::spawn(processor.run(shutdown.clone()));
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    let send = |n: usize| {
        let p = &p;
        async move {
            for _ in 0..100 {
                if p.send(OutgoingMessage::new(n.to_string())).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("could not send {n}");
        }
    };
    for n in 0..20 {
        send(n).await;
    }
    broker.kill().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.start_again().await.unwrap();
    for n in 20..40 {
        send(n).await;
    }
    let report = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("all 40 handled")
        .unwrap()
        .unwrap();
    assert_eq!(handled.lock().unwrap().len(), 40, "{report:?}");
}
