//! Redis Cluster failover: producers and consumers run at q1 while the
//! master of the topic's slot is SIGKILLed (its replica takes over after
//! `cluster-node-timeout`, 2 s) and started again 3 s after the takeover
//! (it rejoins as a replica of the new master). Each test starts its own 6-node cluster
//! (`pubsub::testing::TestRedisCluster`) and prints sent / confirmed /
//! received / duplicates / lost and how long sends stalled.
//!
//! Redis replicates asynchronously: a write the master confirmed may not
//! have reached its replica when the master dies, and the promoted replica
//! then never had it. With `RedisConfig::with_wait_replicas(1, ..)` a send
//! returns only once a replica has the message, so every confirmed message
//! survives the failover: that is asserted (lost = 0). Without it the loss
//! is measured and printed, not asserted (Redis does not promise it).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pubsub::testing::TestRedisCluster;
use pubsub::{ConsumerOptions, Error, InitialPosition, OutgoingMessage, Producer, PubSubBackend, Topic};
use pubsub_redis::{RedisBackend, RedisConfig};

const PRODUCERS: usize = 4;
const PER_PRODUCER: usize = 300;

struct Outcome {
    sent: usize,
    attempts: usize,
    confirmed: usize,
    received: usize,
    duplicates: usize,
    lost: Vec<String>,
    /// From the kill to the first send confirmed after it.
    first_send_after: Duration,
    /// From the kill to the moment every producer had a send confirmed again.
    all_sending_after: Duration,
    /// From the kill to a replica serving the slot, `cluster_state:ok` on every live node.
    healthy_after: Duration,
}

async fn cluster(test: &str) -> Option<TestRedisCluster> {
    match TestRedisCluster::start().await {
        Ok(c) => Some(c),
        Err(e) => {
            pubsub::testkit::broker_unavailable(test, &e);
            None
        }
    }
}

/// One failover run: producers send numbered messages (each retried until
/// confirmed), two consumers of one subscription ack what they get; the
/// topic's master is killed a third of the way in and restarted at two thirds.
async fn failover_run(mut cluster: TestRedisCluster, wait_replicas: bool) -> Outcome {
    let mut config = RedisConfig::new(cluster.url()).with_timeout(Duration::from_secs(2));
    if wait_replicas {
        config = config.with_wait_replicas(1, Duration::from_millis(500));
    }
    let backend: Arc<dyn PubSubBackend> = Arc::new(RedisBackend::connect(config).await.expect("connect"));
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let topic: Topic = format!("q1/failover/cluster/n{n}").parse().unwrap();
    let key = format!("pubsub:{{failover.cluster.n{n}}}");

    // Consumers first, from Latest; a short ack timeout brings back what
    // was delivered and not acked when the master died.
    let opts = ConsumerOptions::default()
        .with_initial_position(InitialPosition::Latest)
        .with_ack_timeout(Some(Duration::from_secs(3)));
    let done = Arc::new(AtomicBool::new(false));
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut receivers = Vec::new();
    for _ in 0..2 {
        let consumer = backend.create_consumer(&topic, "survivor", opts.clone()).await.unwrap();
        let (done, got) = (done.clone(), got.clone());
        receivers.push(tokio::spawn(async move {
            let mut quiet = 0;
            while quiet < 8 {
                match consumer.receive_timeout(Duration::from_secs(1)).await {
                    Ok(m) => {
                        quiet = 0;
                        got.lock()
                            .unwrap()
                            .push(String::from_utf8(m.payload().to_vec()).unwrap());
                        let _ = m.ack().await; // may fail mid-failover: redelivered later
                    }
                    Err(Error::Timeout(_)) if done.load(Ordering::Acquire) => quiet += 1,
                    Err(_) => {}
                }
            }
            let _ = consumer.close().await;
        }));
    }

    let confirmed_count = Arc::new(AtomicUsize::new(0));
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let producer: Box<dyn Producer> = backend.create_producer(&topic, Default::default()).await.unwrap();
        let (count, killed_at) = (confirmed_count.clone(), killed_at.clone());
        producers.push(tokio::spawn(async move {
            let mut confirmed = Vec::new();
            let mut attempts = 0;
            let mut first_after_kill: Option<Instant> = None;
            for i in 0..PER_PRODUCER {
                let payload = format!("{p}-{i}");
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    assert!(Instant::now() < deadline, "{payload} not confirmed within 60 s");
                    attempts += 1;
                    let sent = tokio::time::timeout(
                        Duration::from_secs(3),
                        producer.send(OutgoingMessage::new(payload.clone())),
                    )
                    .await;
                    match sent {
                        Ok(Ok(_)) => {
                            let now = Instant::now();
                            if first_after_kill.is_none() && killed_at.lock().unwrap().is_some_and(|k| k < now) {
                                first_after_kill = Some(now);
                            }
                            confirmed.push(payload);
                            count.fetch_add(1, Ordering::AcqRel);
                            break;
                        }
                        Ok(Err(e)) => assert!(e.is_retriable(), "send during the failover: {e:?}"),
                        Err(_elapsed) => {}
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await; // about 150 sends/s in all
            }
            (confirmed, attempts, first_after_kill)
        }));
    }

    let total = PRODUCERS * PER_PRODUCER;
    while confirmed_count.load(Ordering::Acquire) < total / 3 && !producers.iter().all(|p| p.is_finished()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed = cluster.kill_master_of(&key).await.expect("kill the topic's master");
    let kill_time = Instant::now();
    *killed_at.lock().unwrap() = Some(kill_time);
    cluster.wait_failover(&key, killed).await.expect("a replica takes over");
    let healthy_after = kill_time.elapsed();
    // Back 3 s after the takeover, as a replica of the new master. Until
    // then the new master has no replica: with wait_replicas(1) sends fail
    // (retriable) for that time, which the test measures.
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.restart(killed).await.expect("restart the killed node");

    let mut confirmed = BTreeSet::new();
    let mut attempts = 0;
    let mut firsts = Vec::new();
    for p in producers {
        let (c, a, first) = p.await.unwrap();
        confirmed.extend(c);
        attempts += a;
        firsts.push(first.map(|f| f - kill_time));
    }
    done.store(true, Ordering::Release);
    for r in receivers {
        r.await.unwrap();
    }
    cluster.wait_healthy().await.expect("the restarted node rejoins");
    let got = got.lock().unwrap().clone();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for g in &got {
        *seen.entry(g.as_str()).or_default() += 1;
    }
    let lost: Vec<String> = confirmed
        .iter()
        .filter(|c| !seen.contains_key(c.as_str()))
        .cloned()
        .collect();
    let never_sent = seen.keys().filter(|g| !confirmed.contains(**g)).count();
    assert_eq!(never_sent, 0, "a message nobody sent was received");
    let _ = backend.close().await;
    Outcome {
        sent: total,
        attempts,
        confirmed: confirmed.len(),
        received: seen.len(),
        duplicates: got.len() - seen.len(),
        lost,
        first_send_after: firsts.iter().flatten().min().copied().unwrap_or_default(),
        all_sending_after: firsts.iter().flatten().max().copied().unwrap_or_default(),
        healthy_after,
    }
}

fn report(what: &str, o: &Outcome) {
    eprintln!(
        "redis cluster failover ({what}): sent {} ({} attempts), confirmed {}, received {}, duplicates {}, lost {}; \
         cluster_state ok again {:.1?} after the kill, first send confirmed after {:.1?}, every producer after {:.1?}",
        o.sent,
        o.attempts,
        o.confirmed,
        o.received,
        o.duplicates,
        o.lost.len(),
        o.healthy_after,
        o.first_send_after,
        o.all_sending_after
    );
}

/// With `wait_replicas(1, 500 ms)`: no confirmed message is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_killed_loses_no_confirmed_message_with_wait_replicas() {
    let Some(cluster) = cluster("master_killed_loses_no_confirmed_message_with_wait_replicas").await else {
        return;
    };
    let o = failover_run(cluster, true).await;
    report("WAIT 1 replica", &o);
    assert_eq!(o.confirmed, o.sent, "every send is confirmed once a replica took over");
    assert!(o.lost.is_empty(), "confirmed messages lost: {:?}", o.lost);
    assert!(o.first_send_after > Duration::ZERO, "sends went on after the kill");
}

/// Without waiting for replicas: the same run, the loss measured (Redis's
/// asynchronous replication may drop what the dead master confirmed last).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_killed_without_wait_replicas_is_measured() {
    let Some(cluster) = cluster("master_killed_without_wait_replicas_is_measured").await else {
        return;
    };
    let o = failover_run(cluster, false).await;
    report("no WAIT", &o);
    assert_eq!(o.confirmed, o.sent, "every send is confirmed once a replica took over");
    assert!(
        o.lost.len() <= PRODUCERS,
        "at most the sends in flight at the kill can be lost, lost {:?}",
        o.lost
    );
}
