//! Conformance cases of the admin API, run on every backend.

use std::time::Instant;

use super::{receive_n, Ctx, Outcome, ARRIVAL_TIMEOUT};
use crate::{Admin, AdminCapabilities, ConsumerOptions, Error, Qos, SubscriptionInfo, Topic, TopicOptions};

fn expect_unsupported<T: std::fmt::Debug>(what: &str, r: crate::Result<T>) {
    match r {
        Err(Error::Unsupported { .. }) => {}
        other => panic!("{what} is not claimed; expected Error::Unsupported, got {other:?}"),
    }
}

async fn listed(admin: &dyn Admin, topic: &Topic) -> bool {
    let all = admin
        .list_topics(topic.tenant(), topic.namespace())
        .await
        .unwrap_or_else(|e| panic!("list_topics: {e}"));
    all.iter().any(|t| t.joined("/") == topic.joined("/"))
}

/// Topics are created (idempotently), found, listed and deleted as the
/// backend claims; what it does not claim is refused with `Unsupported`;
/// health checks pass while open and give `Closed` after closing.
pub async fn admin_topic_lifecycle(ctx: &Ctx) -> Outcome {
    let admin = ctx.backend.admin();
    let caps: AdminCapabilities = ctx.caps.admin;
    admin.health_check().await.expect("health_check on an open backend");
    let topic = ctx.topic(Qos::AtLeastOnce, "admin-life");
    let mut unsupported = Vec::new();
    if caps.topics {
        assert!(
            !admin.topic_exists(&topic).await.expect("topic_exists"),
            "a fresh topic exists"
        );
        assert!(
            admin
                .create_topic(&topic, TopicOptions::default())
                .await
                .expect("create_topic"),
            "the first create_topic reports it created the topic"
        );
        assert!(
            admin.topic_exists(&topic).await.expect("topic_exists"),
            "a created topic does not exist"
        );
        assert!(
            !admin
                .create_topic(&topic, TopicOptions::default())
                .await
                .expect("create_topic again"),
            "creating an existing topic reports it existed"
        );
        assert!(matches!(
            admin
                .create_topic(&topic, TopicOptions::default().with_partitions(0))
                .await,
            Err(Error::InvalidConfiguration(_))
        ));
        let partitioned = ctx.topic(Qos::AtLeastOnce, "admin-partitioned");
        let three = admin
            .create_topic(&partitioned, TopicOptions::default().with_partitions(3))
            .await;
        if caps.partitions {
            assert!(three.expect("create_topic with 3 partitions"));
        } else {
            expect_unsupported("create_topic with 3 partitions", three);
            unsupported.push("partitions");
        }
        // The topic is usable after being created by hand.
        let c = ctx.consumer(&topic, &ctx.sub("s"), ConsumerOptions::default()).await;
        let p = ctx.producer(&topic).await;
        p.send(crate::OutgoingMessage::new("after create")).await.expect("send");
        receive_n(c.as_ref(), 1, true).await;
        c.close().await.expect("close consumer");
        p.close().await.expect("close producer");
    } else {
        expect_unsupported(
            "create_topic",
            admin.create_topic(&topic, TopicOptions::default()).await,
        );
        expect_unsupported("topic_exists", admin.topic_exists(&topic).await);
        unsupported.push("topics");
    }
    let q0 = ctx.topic(Qos::AtMostOnce, "admin-q0");
    if caps.q0_topics {
        admin
            .create_topic(&q0, TopicOptions::default())
            .await
            .expect("create q0 topic");
        assert!(admin.topic_exists(&q0).await.expect("q0 topic_exists"));
    } else {
        expect_unsupported(
            "creating a q0 topic",
            admin.create_topic(&q0, TopicOptions::default()).await,
        );
        unsupported.push("q0 topics");
    }
    if caps.list_topics {
        assert!(
            matches!(
                admin.list_topics("conformance", "bad/ns").await,
                Err(Error::InvalidTopic { .. })
            ),
            "a malformed namespace is an InvalidTopic error"
        );
        if caps.topics {
            assert!(listed(admin, &topic).await, "list_topics lacks a created topic");
        }
        let other = admin
            .list_topics("conformance", "no-such-namespace-here")
            .await
            .expect("list_topics");
        assert!(other.is_empty(), "an unused namespace lists {other:?}");
    } else {
        expect_unsupported(
            "list_topics",
            admin.list_topics(topic.tenant(), topic.namespace()).await,
        );
        unsupported.push("list_topics");
    }
    if caps.delete_topic && caps.topics {
        admin.delete_topic(&topic).await.expect("delete_topic");
        assert!(
            !admin.topic_exists(&topic).await.expect("topic_exists"),
            "a deleted topic exists"
        );
        if caps.list_topics {
            assert!(!listed(admin, &topic).await, "list_topics shows a deleted topic");
        }
        assert!(
            matches!(admin.delete_topic(&topic).await, Err(Error::NotFound(_))),
            "deleting a missing topic is NotFound"
        );
    } else {
        expect_unsupported("delete_topic", admin.delete_topic(&topic).await);
        unsupported.push("delete_topic");
    }
    ctx.backend.close().await.expect("close");
    assert!(
        matches!(admin.health_check().await, Err(Error::Closed(_))),
        "health_check after close is Closed"
    );
    if unsupported.is_empty() {
        Outcome::Passed
    } else {
        Outcome::Unsupported(format!(
            "admin: {} (refused with Error::Unsupported)",
            unsupported.join(", ")
        ))
    }
}

/// Waits until the backlog of `sub` is `want` (the broker may learn of
/// acks a little later, as Kafka commits in the background).
async fn wait_backlog(admin: &dyn Admin, topic: &Topic, sub: &str, want: u64) -> Vec<SubscriptionInfo> {
    let started = Instant::now();
    loop {
        let subs = admin.subscriptions(topic).await.expect("subscriptions");
        let backlog = subs.iter().find(|s| s.name == sub).and_then(|s| s.backlog);
        if backlog == Some(want) {
            return subs;
        }
        assert!(
            started.elapsed() < ARRIVAL_TIMEOUT,
            "backlog of {sub} stayed {backlog:?}, expected {want}; subscriptions: {subs:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A subscription's backlog counts what was published and not yet acked:
/// 5 after five sends, 2 after three acks, 0 after all; every subscription
/// of the topic is listed by its name.
pub async fn admin_subscription_backlog(ctx: &Ctx) -> Outcome {
    let admin = ctx.backend.admin();
    let topic = ctx.topic(Qos::AtLeastOnce, "admin-backlog");
    if !ctx.caps.admin.subscriptions {
        expect_unsupported("subscriptions", admin.subscriptions(&topic).await);
        return Outcome::Unsupported("admin: subscriptions and backlog (refused with Error::Unsupported)".into());
    }
    let missing = ctx.topic(Qos::AtLeastOnce, "admin-never-created");
    assert!(
        matches!(admin.subscriptions(&missing).await, Err(Error::NotFound(_))),
        "subscriptions of a missing topic is NotFound"
    );
    let (s, t) = (ctx.sub("s.one"), ctx.sub("t"));
    let c = ctx.consumer(&topic, &s, ConsumerOptions::default()).await;
    let other = ctx.consumer(&topic, &t, ConsumerOptions::default()).await;
    let p = ctx.producer(&topic).await;
    for i in 0..5 {
        p.send(crate::OutgoingMessage::new(format!("m{i}")))
            .await
            .expect("send");
    }
    let got = receive_n(c.as_ref(), 5, false).await;
    let subs = wait_backlog(admin, &topic, &s, 5).await;
    let names: Vec<&str> = subs.iter().map(|x| x.name.as_str()).collect();
    assert!(
        names.contains(&s.as_str()) && names.contains(&t.as_str()),
        "both subscriptions listed by name, got {names:?}"
    );
    assert!(names.windows(2).all(|w| w[0] <= w[1]), "sorted by name: {names:?}");
    for m in &got[..3] {
        m.ack().await.expect("ack");
    }
    wait_backlog(admin, &topic, &s, 2).await;
    for m in &got[3..] {
        m.ack().await.expect("ack");
    }
    wait_backlog(admin, &topic, &s, 0).await;
    wait_backlog(admin, &topic, &t, 5).await;
    for h in [c, other] {
        h.close().await.expect("close consumer");
    }
    p.close().await.expect("close producer");
    Outcome::Passed
}
