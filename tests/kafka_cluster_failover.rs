//! No confirmed message lost when the broker leading a partition of the
//! topic dies: a 3-broker Apache Kafka cluster in KRaft mode
//! ([`TestKafkaCluster`]), topics with 3 replicas and `min.insync.replicas`
//! 2, two producers and two consumers of one subscription (a consumer
//! group, each on its own connection) running at q1 while the leader of
//! partition 0 is SIGKILLed and, later, started again. Prints sent /
//! confirmed / received / duplicates / lost and the time to recover;
//! asserts that every message whose send returned Ok is received.

use std::time::{Duration, Instant};

use pubsub::testing::{FailoverTraffic, TestKafkaCluster};
use pubsub::{BackendConfig, ConsumerOptions, InitialPosition, Topic, TopicOptions};

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
    let traffic = FailoverTraffic::connect(&url, &topic, options)
        .await
        .expect("connect to the cluster");

    // Steady traffic, then the leader dies.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(traffic.received() > 0, "messages flow before the kill");
    traffic.killed_now();
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
    let tally = traffic.finish(Duration::from_secs(60)).await;
    eprintln!(
        "kafka cluster failover (broker {} leading partition 0 killed, {} took over): {tally}; new leader after {election:?}, killed node back {:?} after the kill",
        cluster.broker_id(leader),
        cluster.broker_id(new_leader),
        restarted_at - killed_at,
    );
    tally.assert_recovered();
    // The restarted broker is running again, and every partition has a leader.
    assert!(cluster.is_running(leader));
    assert!(cluster
        .partition_leaders(KAFKA_TOPIC)
        .await
        .unwrap()
        .iter()
        .all(Option::is_some));
}
