//! No confirmed message lost when the node leading a topic's JetStream
//! stream dies: a 3-node [`TestNatsCluster`], streams with 3 replicas, two
//! producers and two consumers (a shared durable subscription, each on its
//! own connection) running at q1 while the stream leader is SIGKILLed and,
//! later, started again. Prints sent / confirmed / received / duplicates /
//! lost and the time to recover; asserts that every message whose send
//! returned Ok is received. Run twice: clients given every node, and
//! clients given only the leader's (their connections die with it).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pubsub::testing::TestNatsCluster;
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

/// Which servers the producers' and consumers' backends are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clients {
    /// All three: each connects to one of them, the leader or not.
    AllNodes,
    /// The stream leader's alone: every connection dies with it, and the
    /// clients must reconnect to a node they learnt of from the cluster.
    LeaderOnly,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_leader_killed_loses_no_confirmed_message() {
    failover(Clients::AllNodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_the_killed_leader_reconnect_and_lose_nothing() {
    failover(Clients::LeaderOnly).await;
}

async fn failover(clients: Clients) {
    let mut cluster = match TestNatsCluster::start().await {
        Ok(c) => c,
        Err(e) => return pubsub::testkit::broker_unavailable("nats cluster failover", &e),
    };
    let topic: Topic = "q1/failover/nats/orders".parse().unwrap();
    // The stream first, to know its leader before the clients connect.
    let setup = cluster.backend().await.expect("connect to the cluster");
    assert!(setup
        .admin()
        .create_topic(&topic, TopicOptions::default())
        .await
        .unwrap());
    setup.close().await.unwrap();
    let leader = cluster
        .stream_leader(&topic)
        .await
        .unwrap()
        .expect("the stream has a leader");
    let url = match clients {
        Clients::AllNodes => cluster.url(),
        Clients::LeaderOnly => cluster.node_url(leader),
    };
    let connect = || async { BackendConfig::from_url(&url).unwrap().connect().await };
    // Each consumer on its own connection; a short ack timeout, so what was
    // delivered but not acked when a node died comes back soon.
    let options = ConsumerOptions::default()
        .with_initial_position(InitialPosition::Earliest)
        .with_ack_timeout(Some(Duration::from_secs(5)));
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
                    // Given up after 2 s (and sent again): while no node
                    // leads the stream, a publish gets no PubAck at all.
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
    // A new leader among the other two.
    let new_leader = loop {
        match cluster.stream_leader(&topic).await.unwrap() {
            Some(l) if l != leader => break l,
            _ => {}
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "no new stream leader within 60 s; logs:\n{}",
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
        "nats cluster failover, clients given {clients:?} (stream leader {} killed, {} took over): sent {sent} ({attempts} attempts), \
         confirmed {}, received {} ({} duplicates), lost {}; new leader after {election:?}, first send \
         confirmed {:?} and first new message received {:?} after the kill; killed node back {:?} after the kill",
        cluster.node_name(leader),
        cluster.node_name(new_leader),
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
    // The restarted node is a member again: it answers, and the stream keeps a leader.
    assert!(cluster.is_running(leader));
    assert!(cluster.stream_leader(&topic).await.unwrap().is_some());
    for backend in backends {
        backend.close().await.unwrap();
    }
    producer_backend.close().await.unwrap();
}
