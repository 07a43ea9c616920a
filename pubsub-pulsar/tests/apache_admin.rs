//! Apache Pulsar specifics of the adapter, on the standalone of
//! scripts/brokers.sh (`pulsar://127.0.0.1:6652`, admin HTTP on 8082; or
//! `PULSAR_APACHE_URL` / `PULSAR_APACHE_ADMIN_URL`): which consumer of a
//! Failover subscription is the active one, and what the admin API can do
//! with and without the HTTP admin API (`PulsarConfig::admin_url`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pubsub_core::{
    ConsumerOptions, Error, InitialPosition, OutgoingMessage, PubSubBackend, Qos, SubscriptionType, Topic, TopicOptions,
};
use pubsub_pulsar::{PulsarBackend, PulsarConfig};

fn urls() -> (String, String) {
    (
        std::env::var("PULSAR_APACHE_URL").unwrap_or_else(|_| "pulsar://127.0.0.1:6652".into()),
        std::env::var("PULSAR_APACHE_ADMIN_URL").unwrap_or_else(|_| "http://127.0.0.1:8082".into()),
    )
}

/// Apache Pulsar with (or without) the HTTP admin API; `None` (test
/// skipped) when it is not running and brokers are not required.
async fn apache(with_admin: bool) -> Option<PulsarBackend> {
    let (url, admin) = urls();
    let mut config = PulsarConfig::new(url);
    if with_admin {
        config = config.with_admin_url(admin);
    }
    match PulsarBackend::connect(config).await {
        Ok(b) => Some(b),
        Err(e) if !pubsub_core::testkit::brokers_required() => {
            eprintln!("SKIPPED: Apache Pulsar: {e}");
            None
        }
        Err(e) => panic!("connect to Apache Pulsar: {e}"),
    }
}

/// A namespace no other run uses.
fn fresh_namespace(what: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{what}-{nanos}-{}", std::process::id())
}

/// The first consumer of a Failover subscription is the active one, on
/// every topic. Apache Pulsar picks the active consumer of a
/// non-partitioned topic by hashing the topic name onto a ring of the
/// consumers' names, so with equal priority levels the second consumer was
/// active on about a third of the topics (conformance `failover_takes_over`
/// failed with "only 0 of 6 messages arrived"); the adapter gives each
/// Failover consumer a priority level in creation order.
#[tokio::test]
async fn first_failover_consumer_is_active_on_every_topic() {
    let Some(backend) = apache(true).await else { return };
    let ns = fresh_namespace("failover");
    let opts = ConsumerOptions::default()
        .with_type(SubscriptionType::Failover)
        .with_initial_position(InitialPosition::Earliest);
    for i in 0..8 {
        let topic = Topic::new(Qos::AtLeastOnce, "pulsar-tests", &ns, &format!("t{i}")).unwrap();
        let first = backend.create_consumer(&topic, "s", opts.clone()).await.unwrap();
        let second = backend.create_consumer(&topic, "s", opts.clone()).await.unwrap();
        let producer = backend.create_producer(&topic, Default::default()).await.unwrap();
        producer.send(OutgoingMessage::new(format!("m{i}"))).await.unwrap();
        let m = first
            .receive_timeout(Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("topic {i}: the first consumer got nothing ({e}): the second one is active"));
        assert_eq!(m.payload().as_ref(), format!("m{i}").as_bytes());
        // The standby gets nothing while the active one lives (and the
        // broker has long issued its next read: closing the active consumer
        // within milliseconds of a delivery can leave Apache Pulsar 4.0.7's
        // dispatcher waiting for a new message before it redelivers, a
        // broker race the client cannot see; see the crate docs).
        assert!(matches!(
            second.receive_timeout(Duration::from_millis(500)).await,
            Err(Error::Timeout(_))
        ));
        // Unacked when the active one closes: the standby takes it over.
        first.close().await.unwrap();
        let taken = second
            .receive_timeout(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("topic {i}: the standby did not take over ({e})"));
        assert_eq!(taken.payload().as_ref(), format!("m{i}").as_bytes());
        taken.ack().await.unwrap();
        second.close().await.unwrap();
        producer.close().await.unwrap();
    }
    backend.close().await.unwrap();
}

/// Without `admin_url` only what the binary protocol can do is claimed,
/// and the rest is refused with `Unsupported`: q1 topics are created,
/// found and listed; q0 topics (which `GetTopicsOfNamespace` leaves out),
/// deleting and backlogs are not. With it, all of them work.
#[tokio::test]
async fn admin_with_and_without_the_http_api() {
    let Some(http) = apache(true).await else { return };
    let Some(binary) = apache(false).await else { return };
    let ns = fresh_namespace("admin");
    let q1 = Topic::new(Qos::AtLeastOnce, "pulsar-tests", &ns, "q1").unwrap();
    let q0 = Topic::new(Qos::AtMostOnce, "pulsar-tests", &ns, "q0").unwrap();

    let caps = http.capabilities().admin;
    assert!(caps.topics && caps.q0_topics && caps.list_topics && caps.delete_topic && caps.subscriptions);
    let caps = binary.capabilities().admin;
    assert!(caps.topics && caps.list_topics);
    assert!(!caps.q0_topics && !caps.delete_topic && !caps.subscriptions);

    // The HTTP API makes the namespace and both topics.
    let admin = http.admin();
    assert!(admin.create_topic(&q1, TopicOptions::default()).await.unwrap());
    assert!(admin.create_topic(&q0, TopicOptions::default()).await.unwrap());
    assert!(!admin.create_topic(&q0, TopicOptions::default()).await.unwrap());
    assert!(admin.topic_exists(&q0).await.unwrap());
    assert_eq!(
        admin.list_topics("pulsar-tests", &ns).await.unwrap(),
        vec![q0.clone(), q1.clone()]
    );

    // The binary protocol sees the q1 topic only, as its capabilities say.
    let plain = binary.admin();
    assert!(plain.topic_exists(&q1).await.unwrap());
    assert_eq!(plain.list_topics("pulsar-tests", &ns).await.unwrap(), vec![q1.clone()]);
    for r in [
        plain.topic_exists(&q0).await.map(|_| ()),
        plain.create_topic(&q0, TopicOptions::default()).await.map(|_| ()),
        plain.delete_topic(&q1).await,
        plain.subscriptions(&q1).await.map(|_| ()),
    ] {
        assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
    }

    // Deleting is refused while a consumer is attached, then done.
    let c = http
        .create_consumer(&q1, "s", ConsumerOptions::default())
        .await
        .unwrap();
    let subs = admin.subscriptions(&q1).await.unwrap();
    assert_eq!(subs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["s"]);
    assert_eq!(subs[0].backlog, Some(0));
    assert!(matches!(admin.delete_topic(&q1).await, Err(Error::Broker { .. })));
    c.close().await.unwrap();
    admin.delete_topic(&q1).await.unwrap();
    admin.delete_topic(&q0).await.unwrap();
    assert!(!admin.topic_exists(&q1).await.unwrap());
    assert!(!admin.topic_exists(&q0).await.unwrap());
    assert!(matches!(admin.delete_topic(&q0).await, Err(Error::NotFound(_))));
    assert!(matches!(admin.subscriptions(&q1).await, Err(Error::NotFound(_))));
    assert!(admin.list_topics("pulsar-tests", &ns).await.unwrap().is_empty());
    http.close().await.unwrap();
    binary.close().await.unwrap();
}

/// Clients making the first topics of a new tenant side by side all
/// succeed. Apache Pulsar answers the loser of a race to create one tenant
/// with HTTP 500 ("BadVersion"), not 409: two tests of a fresh CI machine
/// failed on it with "create tenant ...: HTTP 500" until the adapter
/// checked whether the tenant was there after all.
#[tokio::test]
async fn clients_racing_to_make_one_tenant_all_succeed() {
    const CLIENTS: usize = 8;
    const ROUNDS: usize = 5; // the race is lost about one round in three
    let mut backends = Vec::new();
    for _ in 0..CLIENTS {
        let Some(b) = apache(true).await else { return };
        backends.push(b);
    }
    for round in 0..ROUNDS {
        let tenant = fresh_namespace("race");
        let made = futures::future::join_all(backends.iter().enumerate().map(|(i, b)| {
            let topic = Topic::new(Qos::AtLeastOnce, &tenant, &format!("ns{}", i % 2), &format!("t{i}")).unwrap();
            async move { b.admin().create_topic(&topic, TopicOptions::default()).await }
        }))
        .await;
        for (i, r) in made.into_iter().enumerate() {
            assert!(
                r.unwrap_or_else(|e| panic!("round {round}, client {i}: {e}")),
                "round {round}: client {i} made its topic"
            );
        }
    }
    for b in backends {
        b.close().await.unwrap();
    }
}
