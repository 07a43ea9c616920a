//! Cases about how many messages a consumer holds and who gets them when
//! consumers go away: `max_unacked`, scaling a Shared subscription down,
//! and the same subscription name on other topics.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::cases::{number_of, numbered};
use super::{expect_quiet, receive_n, Ctx, Outcome, ARRIVAL_TIMEOUT, QUIET_PERIOD};
use crate::{Consumer, ConsumerOptions, Error, InitialPosition, Message, Qos, SubscriptionType, Topic};

/// Sends `range` in batches of 100.
async fn send_range(ctx: &Ctx, topic: &Topic, range: std::ops::Range<usize>) {
    let p = ctx.producer(topic).await;
    let all: Vec<usize> = range.collect();
    for chunk in all.chunks(100) {
        p.send_batch(chunk.iter().map(|i| numbered(*i)).collect())
            .await
            .unwrap_or_else(|e| panic!("send {chunk:?}: {e}"));
    }
    p.close().await.expect("close producer");
}

fn numbers(ms: &[Message]) -> Vec<usize> {
    ms.iter().map(number_of).collect()
}

/// `ConsumerOptions::max_unacked` bounds what a consumer holds received and
/// not acked, the same way on every backend: 2,000 unacked messages all
/// arrive when the bound allows them (more than any backend's old silent
/// limit: 100 on MQTT, 1,000 on NATS), and at a bound of 5 receiving pauses
/// at 5 and resumes as acks and nacks free places.
pub async fn hold_many_unacked(ctx: &Ctx) -> Outcome {
    const MANY: usize = 2_000;
    let topic = ctx.topic(Qos::AtLeastOnce, "hold-many");
    let opts = ConsumerOptions::default().with_max_unacked(MANY);
    let c = ctx.consumer(&topic, &ctx.sub("many"), opts).await;
    send_range(ctx, &topic, 0..MANY).await;
    let held = receive_n(c.as_ref(), MANY, false).await;
    let got: BTreeSet<usize> = numbers(&held).into_iter().collect();
    assert_eq!(got, (0..MANY).collect(), "all {MANY} arrive while none is acked");
    for m in &held {
        m.ack().await.unwrap_or_else(|e| panic!("ack {}: {e}", m.id()));
    }
    c.close().await.expect("close");

    const FEW: usize = 5;
    const SENT: usize = 20;
    let topic = ctx.topic(Qos::AtLeastOnce, "hold-few");
    let opts = ConsumerOptions::default().with_max_unacked(FEW);
    let c = ctx.consumer(&topic, &ctx.sub("few"), opts).await;
    send_range(ctx, &topic, 0..SENT).await;
    let mut held = receive_n(c.as_ref(), FEW, false).await;
    expect_quiet(c.as_ref(), "receiving must pause at max_unacked = 5").await;
    let mut seen = numbers(&held);
    // An ack and a nack each free one place.
    held.remove(0).ack().await.expect("ack");
    let nacked = held.remove(0);
    if ctx.caps.nack {
        nacked.nack().await.expect("nack");
    } else {
        nacked.ack().await.expect("ack");
    }
    let more = receive_n(c.as_ref(), 2, false).await;
    expect_quiet(c.as_ref(), "receiving must pause again at 5 held").await;
    seen.extend(numbers(&more));
    held.extend(more);
    for m in held.drain(..) {
        m.ack().await.expect("ack");
    }
    // The rest, acked as they come (with the nacked one again).
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    let mut distinct: BTreeSet<usize> = seen.iter().copied().collect();
    while distinct.len() < SENT && Instant::now() < deadline {
        for m in c
            .receive_batch(SENT, Duration::from_millis(500))
            .await
            .expect("receive")
        {
            m.ack().await.expect("ack");
            seen.push(number_of(&m));
            distinct.insert(number_of(&m));
        }
    }
    assert_eq!(distinct, (0..SENT).collect(), "every message arrives: got {seen:?}");
    if ctx.caps.individual_acks {
        expect_quiet(c.as_ref(), "everything was acked").await;
    }
    c.close().await.expect("close");
    Outcome::Passed
}

/// Polls every consumer until `n` messages arrived in all; each keeps what it got.
async fn receive_spread(consumers: &[Box<dyn Consumer>], n: usize) -> Vec<Vec<Message>> {
    let mut got: Vec<Vec<Message>> = consumers.iter().map(|_| Vec::new()).collect();
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    while got.iter().map(Vec::len).sum::<usize>() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages arrived within {ARRIVAL_TIMEOUT:?}",
            got.iter().map(Vec::len).sum::<usize>()
        );
        for (c, mine) in consumers.iter().zip(&mut got) {
            match c.receive_batch(n, Duration::from_millis(20)).await {
                Ok(batch) => mine.extend(batch),
                Err(e) => panic!("receive: {e}"),
            }
        }
    }
    got
}

/// Scaling a Shared subscription down: after 10 of its consumers close
/// (each holding some messages unacked), a fresh consumer gets every message
/// published afterwards (the closed ones take no more shares), and what the
/// closed ones held unacked comes back to it.
pub async fn shared_scale_down(ctx: &Ctx) -> Outcome {
    if !ctx.caps.shared {
        return Outcome::Unsupported("Shared subscriptions are not claimed".into());
    }
    const CONSUMERS: usize = 10;
    const BEFORE: usize = 50;
    const AFTER: usize = 50;
    let topic = ctx.topic(Qos::AtLeastOnce, "scale-down");
    let sub = ctx.sub("s");
    let opts = || ConsumerOptions::default().with_type(SubscriptionType::Shared);
    let mut consumers = Vec::new();
    for _ in 0..CONSUMERS {
        consumers.push(ctx.consumer(&topic, &sub, opts()).await);
    }
    send_range(ctx, &topic, 0..BEFORE).await;
    let got = receive_spread(&consumers, BEFORE).await;
    // Each acks its even-numbered messages and holds the odd ones.
    let mut unacked = BTreeSet::new();
    for m in got.iter().flatten() {
        let n = number_of(m);
        if n % 2 == 0 {
            m.ack().await.unwrap_or_else(|e| panic!("ack {n}: {e}"));
        } else {
            unacked.insert(n);
        }
    }
    for c in &consumers {
        c.close().await.expect("close");
    }
    drop(got);
    let fresh = ctx.consumer(&topic, &sub, opts()).await;
    send_range(ctx, &topic, BEFORE..BEFORE + AFTER).await;
    let mut expected: BTreeSet<usize> = (BEFORE..BEFORE + AFTER).collect();
    expected.extend(&unacked);
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + ARRIVAL_TIMEOUT * 2;
    while !expected.is_subset(&seen) && Instant::now() < deadline {
        match fresh.receive_timeout(Duration::from_millis(500)).await {
            Ok(m) => {
                seen.insert(number_of(&m));
                m.ack().await.expect("ack");
            }
            Err(Error::Timeout(_)) => {}
            Err(e) => panic!("receive: {e}"),
        }
    }
    let missing_after: Vec<_> = (BEFORE..BEFORE + AFTER).filter(|n| !seen.contains(n)).collect();
    let missing_held: Vec<_> = unacked.iter().filter(|n| !seen.contains(n)).collect();
    assert!(
        missing_after.is_empty() && missing_held.is_empty(),
        "after {CONSUMERS} consumers closed, a fresh consumer got {} of the {AFTER} messages sent afterwards \
         (missing {missing_after:?}) and {} of the {} the closed ones held unacked (missing {missing_held:?})",
        AFTER - missing_after.len(),
        unacked.len() - missing_held.len(),
        unacked.len(),
    );
    if ctx.caps.individual_acks {
        let acked: Vec<_> = seen.iter().filter(|n| **n < BEFORE && *n % 2 == 0).collect();
        assert!(acked.is_empty(), "acked messages came back: {acked:?}");
    }
    fresh.close().await.expect("close");
    Outcome::Passed
}

/// Scaling a Shared subscription up: a consumer holding messages unacked
/// gets none of them again when another consumer joins. Where the broker
/// moves work between consumers on a join (Kafka moves partitions), the
/// newcomer may get some of the held messages: at least once, each one
/// held. Everything acked afterwards stays acked. (On Kafka every join
/// revoked all of the holder's partitions, and it got back the messages it
/// held on those it was given again: 200 of 200 on one partition.)
pub async fn shared_scale_up_keeps_held(ctx: &Ctx) -> Outcome {
    if !ctx.caps.shared {
        return Outcome::Unsupported("Shared subscriptions are not claimed".into());
    }
    const HELD: usize = 200;
    let topic = ctx.topic(Qos::AtLeastOnce, "scale-up");
    let sub = ctx.sub("s");
    let opts = || ConsumerOptions::default().with_type(SubscriptionType::Shared);
    let holder = ctx.consumer(&topic, &sub, opts()).await;
    send_range(ctx, &topic, 0..HELD).await;
    let held = receive_n(holder.as_ref(), HELD, false).await;
    let joined = ctx.consumer(&topic, &sub, opts()).await;
    expect_quiet(
        holder.as_ref(),
        "a consumer joined: the holder must not get what it holds again",
    )
    .await;
    let moved = joined
        .receive_batch(HELD, QUIET_PERIOD)
        .await
        .unwrap_or_else(|e| panic!("receive on the new consumer: {e}"));
    let moved_numbers: BTreeSet<usize> = numbers(&moved).into_iter().collect();
    assert!(
        moved_numbers.iter().all(|n| *n < HELD) && moved_numbers.len() == moved.len(),
        "the new consumer may only get held messages, once each: got {:?}",
        numbers(&moved)
    );
    holder.ack_all(&held).await.expect("ack what the holder held");
    joined.ack_all(&moved).await.expect("ack what moved");
    // New messages are shared, each delivered once, and nothing acked returns.
    send_range(ctx, &topic, HELD..HELD + 20).await;
    let consumers = [holder, joined];
    let got = receive_spread(&consumers, 20).await;
    let mut all: Vec<usize> = got.iter().flatten().map(number_of).collect();
    all.sort_unstable();
    assert_eq!(all, (HELD..HELD + 20).collect::<Vec<_>>(), "the next 20, once each");
    for c in &consumers {
        c.close().await.expect("close");
    }
    Outcome::Passed
}

/// A subscription belongs to its topic: the same name on another topic is
/// another subscription. Consumers of that name coming and going on the
/// other topic, and unsubscribing it there, leave this topic's subscription
/// alone: the messages held unacked here are not delivered again, the acks
/// given meanwhile are kept, and the position survives. (Kafka once made one
/// consumer group of both: each join there rebalanced the consumer here,
/// which got its 200 held messages again, and the unsubscribe there deleted
/// the position here.)
pub async fn subscription_name_on_other_topics_is_independent(ctx: &Ctx) -> Outcome {
    const HELD: usize = 200;
    let here = ctx.topic(Qos::AtLeastOnce, "same-name-here");
    let there = ctx.topic(Qos::AtLeastOnce, "same-name-there");
    let sub = ctx.sub("s");
    // Earliest where claimed, so a lost position would show as the whole
    // topic again (else a lost position shows as the session's backlog).
    let start = if ctx.caps.earliest {
        InitialPosition::Earliest
    } else {
        InitialPosition::Latest
    };
    let earliest = || ConsumerOptions::default().with_initial_position(start);
    let c = ctx.consumer(&here, &sub, earliest()).await;
    send_range(ctx, &here, 0..HELD).await;
    let mut held = receive_n(c.as_ref(), HELD, false).await;

    // On the other topic, from another connection where the backend has
    // one (as another process would): a consumer joins, takes and acks a
    // few messages, leaves; another joins and unsubscribes.
    let elsewhere = ctx.second_backend().await.unwrap_or_else(|| ctx.backend.clone());
    let other_consumer = || async {
        elsewhere
            .create_consumer(&there, &sub, earliest())
            .await
            .unwrap_or_else(|e| panic!("consumer of {sub} on the other topic: {e}"))
    };
    let other = other_consumer().await;
    // Numbered apart from this topic's, to tell them apart.
    const THEIRS: std::ops::Range<usize> = 1_000..1_010;
    send_range(ctx, &there, THEIRS).await;
    let theirs = receive_n(other.as_ref(), THEIRS.len(), true).await;
    let theirs: BTreeSet<usize> = numbers(&theirs).into_iter().collect();
    assert_eq!(
        theirs,
        THEIRS.collect(),
        "the other topic's consumer gets that topic's messages"
    );
    other.close().await.expect("close the other topic's consumer");
    let other = other_consumer().await;
    other.unsubscribe().await.expect("unsubscribe on the other topic");

    // Here: half of what is held is acked now, and nothing comes again.
    let rest = held.split_off(HELD / 2);
    c.ack_all(&held).await.expect("ack the first half");
    expect_quiet(c.as_ref(), "messages held on this topic must not come again").await;
    c.ack_all(&rest).await.expect("ack the second half");
    c.close().await.expect("close");

    // Every ack was kept and the position survived the other unsubscribe.
    let c = ctx.consumer(&here, &sub, earliest()).await;
    expect_quiet(c.as_ref(), "every message here was acked; the position must survive").await;
    send_range(ctx, &here, HELD..HELD + 1).await;
    let next = receive_n(c.as_ref(), 1, true).await;
    assert_eq!(numbers(&next), vec![HELD], "the subscription resumes where it was");
    c.close().await.expect("close");
    Outcome::Passed
}
