//! No confirmed message lost when the broker leading a partition of the
//! topic dies: a 3-broker Apache Kafka cluster in KRaft mode
//! ([`TestKafkaCluster`]), topics with 3 replicas and `min.insync.replicas`
//! 2, two producers and two consumers of one subscription (a consumer
//! group, each on its own connection) running at q1 while the leader of
//! partition 0 is SIGKILLed and, later, started again. Prints sent /
//! confirmed / received / duplicates / lost and the time to recover;
//! asserts that every message whose send returned Ok is received.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pubsub::testing::TestKafkaCluster;
use pubsub::{
    BackendConfig, Consumer, ConsumerOptions, Error, InitialPosition, OutgoingMessage, Producer, Topic, TopicOptions,
};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_leader_killed_loses_no_confirmed_message() {
    let mut cluster = match TestKafkaCluster::start().await {
        Ok(c) => c,
        Err(e) => return pubsub::testkit::broker_unavailable("kafka cluster failover", &e),
    };
    let topic: Topic = "q1/failover/kafka/orders".parse().unwrap();
    const KAFKA_TOPIC: &str = "failover.kafka.orders";
    let servers = cluster.bootstrap_servers();
    // Topics of 3 replicas (as an application sets it: in the URL); a send
    // returns once 2 of them have it (acks=all, min.insync.replicas 2).
    let url = format!("kafka://{servers}?replication=3");
    let connect = || async { BackendConfig::from_url(&url).unwrap().connect().await };
    let setup = connect().await.expect("connect to the cluster");
    assert!(setup
        .admin()
        .create_topic(&topic, TopicOptions::default())
        .await
        .unwrap());
    setup.close().await.unwrap();
    let mut tries = 0;
    let leader = loop {
        if let Some(Some(l)) = cluster.partition_leaders(KAFKA_TOPIC).await.unwrap().first() {
            break *l;
        }
        tries += 1;
        assert!(tries < 20, "no leader for {KAFKA_TOPIC}; logs:\n{}", cluster.logs());
    };
    // Kafka has no ack timeout to set: what a dead broker's consumer held
    // comes back with the rebalance.
    let options = ConsumerOptions::default().with_initial_position(InitialPosition::Earliest);
    let mut consumers: Vec<Arc<dyn Consumer>> = Vec::new();
    let mut backends = Vec::new();
    for _ in 0..2 {
        let backend = connect().await.expect("connect to the cluster");
        consumers.push(Arc::from(
            backend
                .create_consumer(&topic, "workers", options.clone())
                .await
                .unwrap(),
        ));
        backends.push(backend);
    }
    let producer_backend = connect().await.unwrap();

    let stop_sending = Arc::new(AtomicBool::new(false));
    let stop_receiving = Arc::new(AtomicBool::new(false));
    let recovery: Shared<Recovery> = Default::default();
    // Message -> when it was sent, relative to the kill (true: after).
    let sent_after_kill: Shared<HashMap<String, bool>> = Default::default();

    let mut producers = Vec::new();
    for p in 0..2 {
        let producer: Arc<dyn Producer> = Arc::from(
            producer_backend
                .create_producer(&topic, Default::default())
                .await
                .unwrap(),
        );
        let (stop, recovery, after) = (stop_sending.clone(), recovery.clone(), sent_after_kill.clone());
        producers.push(tokio::spawn(async move {
            let (mut confirmed, mut attempts, mut sent) = (BTreeSet::new(), 0usize, 0usize);
            let mut n = 0usize;
            while !stop.load(Ordering::Acquire) {
                let payload = format!("p{p}-{n}");
                let killed = recovery.lock().unwrap().kill.is_some();
                after.lock().unwrap().insert(payload.clone(), killed);
                sent += 1;
                // Retried until confirmed (the producer's job at q1): a retry
                // after a lost PubAck may store it twice, a duplicate.
                loop {
                    attempts += 1;
                    let send = producer.send(OutgoingMessage::new(payload.clone()));
                    // Given up after 2 s (and sent again): while the
                    // partition has no leader, librdkafka holds the send.
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
                // About 200 messages a second per producer.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (sent, attempts, confirmed)
        }));
    }

    let received: Shared<Vec<String>> = Default::default();
    let mut receivers = Vec::new();
    for consumer in &consumers {
        let (consumer, stop) = (consumer.clone(), stop_receiving.clone());
        let (received, recovery, after) = (received.clone(), recovery.clone(), sent_after_kill.clone());
        receivers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                match consumer.receive_timeout(Duration::from_millis(500)).await {
                    Ok(m) => {
                        let payload = String::from_utf8(m.payload().to_vec()).unwrap();
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
        }));
    }

    // Steady traffic, then the leader dies.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_kill = received.lock().unwrap().len();
    assert!(before_kill > 0, "messages flow before the kill");
    recovery.lock().unwrap().kill = Some(Instant::now());
    cluster.kill(leader).await.unwrap();
    let killed_at = Instant::now();
    // A new leader of partition 0 among the other two.
    let new_leader = loop {
        if let Some(Some(l)) = cluster.partition_leaders(KAFKA_TOPIC).await.unwrap().first() {
            if *l != leader {
                break *l;
            }
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "no new partition leader within 60 s; logs:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let election = killed_at.elapsed();
    // Traffic on two nodes for a while, then the dead one comes back.
    tokio::time::sleep(Duration::from_secs(8)).await;
    cluster.restart(leader).await.expect("start the killed node again");
    let restarted_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop_sending.store(true, Ordering::Release);
    let (mut sent, mut attempts, mut confirmed) = (0, 0, BTreeSet::new());
    for p in producers {
        let (s, a, c) = p.await.unwrap();
        sent += s;
        attempts += a;
        confirmed.extend(c);
    }
    // Everything confirmed arrives: wait for it (bounded).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: BTreeSet<String> = received.lock().unwrap().iter().cloned().collect();
        if confirmed.is_subset(&got) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A little longer, for late redeliveries to show as duplicates.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_receiving.store(true, Ordering::Release);
    for r in receivers {
        r.await.unwrap();
    }
    let got = received.lock().unwrap().clone();
    let unique: BTreeSet<String> = got.iter().cloned().collect();
    let lost: Vec<&String> = confirmed.difference(&unique).collect();
    let (first_confirm, first_receive) = {
        let r = recovery.lock().unwrap();
        (r.first_confirm, r.first_receive)
    };
    eprintln!(
        "kafka cluster failover (broker {} leading partition 0 killed, {} took over): sent {sent} ({attempts} attempts), \
         confirmed {}, received {} ({} duplicates), lost {}; new leader after {election:?}, first send \
         confirmed {:?} and first new message received {:?} after the kill; killed node back {:?} after the kill",
        cluster.broker_id(leader),
        cluster.broker_id(new_leader),
        confirmed.len(),
        unique.len(),
        got.len() - unique.len(),
        lost.len(),
        first_confirm,
        first_receive,
        restarted_at - killed_at,
    );
    assert!(
        lost.is_empty(),
        "{} confirmed messages lost, e.g. {:?}",
        lost.len(),
        lost.iter().take(10).collect::<Vec<_>>()
    );
    assert!(first_confirm.is_some(), "sends are confirmed again after the kill");
    assert!(first_receive.is_some(), "messages sent after the kill are received");
    // The restarted broker is running again, and every partition has a leader.
    assert!(cluster.is_running(leader));
    assert!(cluster
        .partition_leaders(KAFKA_TOPIC)
        .await
        .unwrap()
        .iter()
        .all(Option::is_some));
    for backend in backends {
        backend.close().await.unwrap();
    }
    producer_backend.close().await.unwrap();
}
