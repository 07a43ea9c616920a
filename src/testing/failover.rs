//! Traffic for failover tests: producers that retry each send until it is
//! confirmed and consumers that receive and ack, running while a test kills
//! and restarts broker nodes; then a tally of what was confirmed, received,
//! duplicated and lost, and how soon traffic resumed after the kill.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pubsub_core::{Consumer, ConsumerOptions, Error, OutgoingMessage, Producer, PubSubBackend, Result, Topic};
use tokio::task::JoinHandle;

/// When each thing first happened after the kill, as offsets from it.
#[derive(Default)]
struct Recovery {
    kill: Option<Instant>,
    /// A send confirmed after the kill.
    first_confirm: Option<Duration>,
    /// A message sent after the kill received.
    first_receive: Option<Duration>,
}

impl Recovery {
    fn since_kill(&self) -> Option<Duration> {
        self.kill.map(|k| k.elapsed())
    }
}

type Shared<T> = Arc<Mutex<T>>;

/// What one producer did: (messages, send attempts, payloads confirmed).
type Sent = (usize, usize, BTreeSet<String>);

/// Producers and consumers running at q1 through a failover.
///
/// ```no_run
/// # async fn demo(producers: Vec<std::sync::Arc<dyn pubsub::Producer>>, consumers: Vec<std::sync::Arc<dyn pubsub::Consumer>>) {
/// use std::time::Duration;
/// let traffic = pubsub::testing::FailoverTraffic::start(producers, consumers);
/// tokio::time::sleep(Duration::from_secs(3)).await;
/// traffic.killed_now(); // ... kill the leader, wait, restart it ...
/// let tally = traffic.finish(Duration::from_secs(60)).await;
/// tally.assert_recovered();
/// # }
/// ```
pub struct FailoverTraffic {
    stop_sending: Arc<AtomicBool>,
    stop_receiving: Arc<AtomicBool>,
    recovery: Shared<Recovery>,
    received: Shared<Vec<String>>,
    producers: Vec<JoinHandle<Sent>>,
    receivers: Vec<JoinHandle<()>>,
    /// Backends [`connect`](Self::connect) made, closed by [`finish`](Self::finish).
    backends: Vec<Arc<dyn PubSubBackend>>,
}

/// What a [`FailoverTraffic`] run came to.
#[derive(Debug, Clone)]
pub struct FailoverTally {
    /// Distinct messages the producers sent.
    pub sent: usize,
    /// Send attempts (retries after a failed or unconfirmed send included).
    pub attempts: usize,
    /// Messages whose send returned `Ok`.
    pub confirmed: usize,
    /// Distinct messages received.
    pub received: usize,
    /// Receipts beyond the first of a message.
    pub duplicates: usize,
    /// Confirmed messages never received.
    pub lost: Vec<String>,
    /// How long after the kill a send was first confirmed.
    pub first_confirm: Option<Duration>,
    /// How long after the kill a message sent after it was first received.
    pub first_receive: Option<Duration>,
}

impl fmt::Display for FailoverTally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {} ({} attempts), confirmed {}, received {} ({} duplicates), lost {}; first send confirmed {:?} \
             and first new message received {:?} after the kill",
            self.sent,
            self.attempts,
            self.confirmed,
            self.received,
            self.duplicates,
            self.lost.len(),
            self.first_confirm,
            self.first_receive
        )
    }
}

impl FailoverTally {
    /// Asserts that no confirmed message was lost and that traffic resumed:
    /// sends were confirmed, and messages sent, after the kill received.
    pub fn assert_recovered(&self) {
        assert!(
            self.lost.is_empty(),
            "{} confirmed messages lost, e.g. {:?}",
            self.lost.len(),
            self.lost.iter().take(10).collect::<Vec<_>>()
        );
        assert!(self.first_confirm.is_some(), "sends are confirmed again after the kill");
        assert!(
            self.first_receive.is_some(),
            "messages sent after the kill are received"
        );
    }
}

impl FailoverTraffic {
    /// Starts each producer sending `p{i}-{n}` about 200 times a second, a
    /// send retried until confirmed (each try given up after 2 s: while no
    /// node leads, a send may get no answer at all), and each consumer
    /// receiving and acking (an ack that fails is redelivered later).
    pub fn start(producers: Vec<Arc<dyn Producer>>, consumers: Vec<Arc<dyn Consumer>>) -> Self {
        let traffic = FailoverTraffic {
            stop_sending: Arc::default(),
            stop_receiving: Arc::default(),
            recovery: Shared::default(),
            received: Shared::default(),
            producers: Vec::new(),
            receivers: Vec::new(),
            backends: Vec::new(),
        };
        // Message -> whether it was sent after the kill.
        let sent_after_kill: Shared<HashMap<String, bool>> = Shared::default();
        let producers = producers
            .into_iter()
            .enumerate()
            .map(|(p, producer)| {
                let (stop, recovery, after) = (
                    traffic.stop_sending.clone(),
                    traffic.recovery.clone(),
                    sent_after_kill.clone(),
                );
                tokio::spawn(produce(p, producer, stop, recovery, after))
            })
            .collect();
        let receivers = consumers
            .into_iter()
            .map(|consumer| {
                let (stop, received) = (traffic.stop_receiving.clone(), traffic.received.clone());
                let (recovery, after) = (traffic.recovery.clone(), sent_after_kill.clone());
                tokio::spawn(consume(consumer, stop, received, recovery, after))
            })
            .collect();
        FailoverTraffic {
            producers,
            receivers,
            ..traffic
        }
    }

    /// Connects to `url` three times, each consumer on its own connection
    /// (so a dead node takes one of them, not all): two consumers of the
    /// subscription `workers` of `topic` with `options`, and two producers
    /// on the third; then [`start`](Self::start)s them.
    pub async fn connect(url: &str, topic: &Topic, options: ConsumerOptions) -> Result<Self> {
        let mut backends = Vec::new();
        let mut consumers: Vec<Arc<dyn Consumer>> = Vec::new();
        for _ in 0..2 {
            let backend = crate::BackendConfig::from_url(url)?.connect().await?;
            consumers.push(Arc::from(
                backend.create_consumer(topic, "workers", options.clone()).await?,
            ));
            backends.push(backend);
        }
        let backend = crate::BackendConfig::from_url(url)?.connect().await?;
        let mut producers: Vec<Arc<dyn Producer>> = Vec::new();
        for _ in 0..2 {
            producers.push(Arc::from(backend.create_producer(topic, Default::default()).await?));
        }
        backends.push(backend);
        let mut traffic = Self::start(producers, consumers);
        traffic.backends = backends;
        Ok(traffic)
    }

    /// Messages received so far (duplicates included).
    pub fn received(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Marks the kill: recovery times count from now.
    pub fn killed_now(&self) {
        self.recovery.lock().unwrap().kill = Some(Instant::now());
    }

    /// Stops sending, waits up to `deadline` for every confirmed message to
    /// arrive and a second more for late duplicates, stops receiving.
    pub async fn finish(self, deadline: Duration) -> FailoverTally {
        self.stop_sending.store(true, Ordering::Release);
        let (mut sent, mut attempts, mut confirmed) = (0, 0, BTreeSet::new());
        for p in self.producers {
            let (s, a, c) = p.await.expect("a producer task");
            sent += s;
            attempts += a;
            confirmed.extend(c);
        }
        let until = Instant::now() + deadline;
        loop {
            let got: BTreeSet<String> = self.received.lock().unwrap().iter().cloned().collect();
            if confirmed.is_subset(&got) || Instant::now() > until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.stop_receiving.store(true, Ordering::Release);
        for r in self.receivers {
            r.await.expect("a consumer task");
        }
        for backend in &self.backends {
            if let Err(e) = backend.close().await {
                eprintln!("closing a failover test's backend: {e}");
            }
        }
        let got = self.received.lock().unwrap().clone();
        let unique: BTreeSet<String> = got.iter().cloned().collect();
        let recovery = self.recovery.lock().unwrap();
        FailoverTally {
            sent,
            attempts,
            confirmed: confirmed.len(),
            received: unique.len(),
            duplicates: got.len() - unique.len(),
            lost: confirmed.difference(&unique).cloned().collect(),
            first_confirm: recovery.first_confirm,
            first_receive: recovery.first_receive,
        }
    }
}

async fn produce(
    p: usize,
    producer: Arc<dyn Producer>,
    stop: Arc<AtomicBool>,
    recovery: Shared<Recovery>,
    after: Shared<HashMap<String, bool>>,
) -> Sent {
    let (mut confirmed, mut attempts, mut sent) = (BTreeSet::new(), 0usize, 0usize);
    let mut n = 0usize;
    while !stop.load(Ordering::Acquire) {
        let payload = format!("p{p}-{n}");
        let killed = recovery.lock().unwrap().kill.is_some();
        after.lock().unwrap().insert(payload.clone(), killed);
        sent += 1;
        // Retried until confirmed (the producer's job at q1): a retry after
        // a lost confirmation may store it twice, a duplicate.
        loop {
            attempts += 1;
            let send = producer.send(OutgoingMessage::new(payload.clone()));
            match tokio::time::timeout(Duration::from_secs(2), send).await {
                Ok(Ok(_)) => {
                    confirmed.insert(payload.clone());
                    let mut r = recovery.lock().unwrap();
                    if killed && r.first_confirm.is_none() {
                        r.first_confirm = r.since_kill();
                    }
                    break;
                }
                Ok(Err(e)) => assert!(e.is_retriable(), "send during the failover: {e:?}"),
                Err(_elapsed) => {}
            }
            if stop.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (sent, attempts, confirmed)
}

async fn consume(
    consumer: Arc<dyn Consumer>,
    stop: Arc<AtomicBool>,
    received: Shared<Vec<String>>,
    recovery: Shared<Recovery>,
    after: Shared<HashMap<String, bool>>,
) {
    while !stop.load(Ordering::Acquire) {
        match consumer.receive_timeout(Duration::from_millis(500)).await {
            Ok(m) => {
                let payload = String::from_utf8_lossy(m.payload()).into_owned();
                if after.lock().unwrap().get(&payload) == Some(&true) {
                    let mut r = recovery.lock().unwrap();
                    if r.first_receive.is_none() {
                        r.first_receive = r.since_kill();
                    }
                }
                received.lock().unwrap().push(payload);
                // May fail while the consumer's node is gone: redelivered later.
                let _ = m.ack().await;
            }
            Err(Error::Timeout(_)) => {}
            Err(e) => {
                eprintln!("receive during the failover: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
