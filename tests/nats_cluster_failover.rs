//! No confirmed message lost when the node leading a topic's JetStream
//! stream dies: a 3-node [`TestNatsCluster`], streams with 3 replicas, two
//! producers and two consumers (a shared durable subscription, each on its
//! own connection) running at q1 while the stream leader is SIGKILLed and,
//! later, started again. Prints sent / confirmed / received / duplicates /
//! lost and the time to recover; asserts that every message whose send
//! returned Ok is received. Run twice: clients given every node, and
//! clients given only the leader's (their connections die with it).

use std::time::{Duration, Instant};

use pubsub::testing::{FailoverTraffic, TestNatsCluster};
use pubsub::{ConsumerOptions, InitialPosition, Topic, TopicOptions};

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
    // Each consumer on its own connection; a short ack timeout, so what was
    // delivered but not acked when a node died comes back soon.
    let options = ConsumerOptions::default()
        .with_initial_position(InitialPosition::Earliest)
        .with_ack_timeout(Some(Duration::from_secs(5)));
    let traffic = FailoverTraffic::connect(&url, &topic, options)
        .await
        .expect("connect to the cluster");

    // Steady traffic, then the leader dies.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(traffic.received() > 0, "messages flow before the kill");
    traffic.killed_now();
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
    let tally = traffic.finish(Duration::from_secs(60)).await;
    eprintln!(
        "nats cluster failover, clients given {clients:?} (stream leader {} killed, {} took over): {tally}; new leader after {election:?}, killed node back {:?} after the kill",
        cluster.node_name(leader),
        cluster.node_name(new_leader),
        restarted_at - killed_at,
    );
    tally.assert_recovered();
    // The restarted node is a member again: it answers, and the stream keeps a leader.
    assert!(cluster.is_running(leader));
    assert!(cluster.stream_leader(&topic).await.unwrap().is_some());
}
