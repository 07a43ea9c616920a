//! Conformance cases of replay: readers, seek and log positions.

use std::time::{Duration, SystemTime};

use super::{expect_quiet, receive_n, Ctx, Outcome, ARRIVAL_TIMEOUT};
use crate::{ConsumerOptions, Error, Message, MessageId, OutgoingMessage, Position, Qos, Reader, Topic};

fn payloads(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload()).into_owned())
        .collect()
}

/// The payloads in arrival order where the backend keeps a topic's order,
/// else sorted by number (Kafka orders per partition only).
fn arrived(ctx: &Ctx, messages: &[Message]) -> Vec<String> {
    let mut got = payloads(messages);
    if !ctx.caps.topic_ordering {
        got.sort_by_key(|p| p.trim_start_matches('m').parse::<usize>().unwrap_or(usize::MAX));
    }
    got
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

/// Sends `m{i}` for each i in `range`; gives the ids.
async fn send(ctx: &Ctx, topic: &Topic, range: std::ops::Range<usize>) -> Vec<MessageId> {
    let p = ctx.producer(topic).await;
    let mut ids = Vec::new();
    for i in range {
        // Apart by more than a millisecond: on a partitioned log (Kafka) a
        // position from an id takes the other partitions at that message's
        // publish time, so a message in the same millisecond on another
        // partition, sent before or after it, comes too (as documented).
        tokio::time::sleep(Duration::from_millis(3)).await;
        ids.push(p.send(OutgoingMessage::new(format!("m{i}"))).await.expect("send"));
    }
    p.close().await.expect("close producer");
    ids
}

/// Reads `n` messages, each within the arrival timeout.
async fn read_n(reader: &dyn Reader, n: usize) -> Vec<Message> {
    let mut got = Vec::new();
    while got.len() < n {
        match reader.next_timeout(ARRIVAL_TIMEOUT).await {
            Ok(m) => got.push(m),
            Err(e) => panic!("after {} of {n} messages: {e}", got.len()),
        }
    }
    got
}

/// Waits (bounded) until the reader reports it is at the end.
async fn expect_at_end(reader: &dyn Reader) {
    let started = std::time::Instant::now();
    while reader.has_next().await.expect("has_next") {
        assert!(
            started.elapsed() < ARRIVAL_TIMEOUT,
            "has_next stays true at the end of the topic"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks that a backend without replay refuses readers and seek.
async fn refuses_replay(ctx: &Ctx, topic: &Topic) -> Outcome {
    match ctx.backend.create_reader(topic, Position::Earliest).await {
        Err(Error::Unsupported { .. }) => {}
        other => panic!("replay is not claimed; create_reader gave {other:?}"),
    }
    let c = ctx.consumer(topic, &ctx.sub("s"), ConsumerOptions::default()).await;
    match c.seek(Position::Earliest).await {
        Err(Error::Unsupported { .. }) => {}
        other => panic!("replay is not claimed; seek gave {other:?}"),
    }
    c.close().await.expect("close");
    Outcome::Unsupported("replay: readers and seek (refused with Error::Unsupported)".into())
}

/// Readers from the earliest message, from a remembered id and from a
/// publish time read exactly what follows, in order, and know when they
/// are at the end; a reader from the latest position sees only what is
/// published after it started. Nothing a reader does moves a subscription.
pub async fn replay_readers(ctx: &Ctx) -> Outcome {
    let topic = ctx.topic(Qos::AtLeastOnce, "replay-read");
    if !ctx.caps.replay {
        return refuses_replay(ctx, &topic).await;
    }
    let q0 = ctx.topic(Qos::AtMostOnce, "replay-q0");
    assert!(
        matches!(
            ctx.backend.create_reader(&q0, Position::Earliest).await,
            Err(Error::Unsupported { .. })
        ),
        "a reader of a q0 topic is refused: q0 keeps no history"
    );
    let sub = ctx
        .consumer(&topic, &ctx.sub("untouched"), ConsumerOptions::default())
        .await;
    let mut ids = send(ctx, &topic, 0..5).await;
    // A clear gap between the halves, well above any broker's timestamp resolution.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let middle = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ids.extend(send(ctx, &topic, 5..10).await);

    let all = ctx
        .backend
        .create_reader(&topic, Position::Earliest)
        .await
        .expect("reader");
    let got = read_n(all.as_ref(), 10).await;
    assert_eq!(arrived(ctx, &got), expected(0..10), "from Earliest");
    let m3 = got.iter().find(|m| m.payload().as_ref() == b"m3").expect("m3");
    assert_eq!(m3.id(), &ids[3], "a reader gives the ids the sends returned");
    expect_at_end(all.as_ref()).await;
    all.close().await.expect("close reader");
    assert!(
        matches!(all.next().await, Err(Error::Closed(_))),
        "next after close is Closed"
    );

    let from_id = ctx
        .backend
        .create_reader(&topic, Position::Id(ids[4].clone()))
        .await
        .expect("reader");
    assert_eq!(
        arrived(ctx, &read_n(from_id.as_ref(), 6).await),
        expected(4..10),
        "from the id of m4"
    );
    expect_at_end(from_id.as_ref()).await;

    let from_time = ctx
        .backend
        .create_reader(&topic, Position::Timestamp(middle))
        .await
        .expect("reader");
    assert_eq!(
        arrived(ctx, &read_n(from_time.as_ref(), 5).await),
        expected(5..10),
        "from a time between m4 and m5"
    );

    let latest = ctx
        .backend
        .create_reader(&topic, Position::Latest)
        .await
        .expect("reader");
    assert!(
        !latest.has_next().await.expect("has_next"),
        "a reader at Latest is at the end"
    );
    send(ctx, &topic, 10..12).await;
    assert_eq!(
        arrived(ctx, &read_n(latest.as_ref(), 2).await),
        expected(10..12),
        "published after it started"
    );
    assert_eq!(
        arrived(ctx, &read_n(from_id.as_ref(), 2).await),
        expected(10..12),
        "a reader at the end goes on"
    );

    // The subscription still has all 12, unread and unacked.
    let got = receive_n(sub.as_ref(), 12, true).await;
    assert_eq!(arrived(ctx, &got), expected(0..12));
    for r in [from_id, from_time, latest] {
        r.close().await.expect("close reader");
    }
    sub.close().await.expect("close consumer");
    Outcome::Passed
}

/// Seeking a subscription back delivers the same messages again (even
/// acked ones), to the earliest, to an id and to a time; seeking to the
/// latest skips what is there. Messages fetched but not yet received
/// before a seek are not delivered as well.
pub async fn replay_seek_subscription(ctx: &Ctx) -> Outcome {
    let topic = ctx.topic(Qos::AtLeastOnce, "replay-seek");
    if !ctx.caps.replay {
        return refuses_replay(ctx, &topic).await;
    }
    let c = ctx.consumer(&topic, &ctx.sub("s"), ConsumerOptions::default()).await;
    let ids = send(ctx, &topic, 0..3).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let middle = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    send(ctx, &topic, 3..6).await;
    // Two taken, four left waiting (fetched ahead by most clients): a seek
    // drops what was fetched for the old position.
    let first_two = receive_n(c.as_ref(), 2, true).await;
    c.seek(Position::Earliest).await.expect("seek to Earliest");
    assert_eq!(
        arrived(ctx, &receive_n(c.as_ref(), 6, true).await),
        expected(0..6),
        "after seek(Earliest), with m2..m5 not yet received ({} received before)",
        first_two.len()
    );
    expect_quiet(c.as_ref(), "nothing more after seek(Earliest)").await;
    c.seek(Position::Id(ids[1].clone())).await.expect("seek to an id");
    assert_eq!(
        arrived(ctx, &receive_n(c.as_ref(), 5, true).await),
        expected(1..6),
        "from m1 after seek(Id)"
    );
    c.seek(Position::Timestamp(middle)).await.expect("seek to a time");
    assert_eq!(
        arrived(ctx, &receive_n(c.as_ref(), 3, true).await),
        expected(3..6),
        "from m3 after seek(Timestamp)"
    );
    c.seek(Position::Latest).await.expect("seek to Latest");
    expect_quiet(c.as_ref(), "nothing after seek(Latest)").await;
    send(ctx, &topic, 6..7).await;
    assert_eq!(arrived(ctx, &receive_n(c.as_ref(), 1, true).await), expected(6..7));
    c.close().await.expect("close consumer");
    Outcome::Passed
}

/// After N sends the latest position is N past the earliest; a
/// subscription's position moves with its acks, so the distance to the
/// latest is its lag.
pub async fn replay_positions(ctx: &Ctx) -> Outcome {
    let admin = ctx.backend.admin();
    let topic = ctx.topic(Qos::AtLeastOnce, "replay-positions");
    if !ctx.caps.positions {
        match admin.latest_position(&topic).await {
            Err(Error::Unsupported { .. }) => {}
            other => panic!("positions are not claimed; latest_position gave {other:?}"),
        }
        return Outcome::Unsupported("replay: log positions (refused with Error::Unsupported)".into());
    }
    let c = ctx.consumer(&topic, &ctx.sub("s"), ConsumerOptions::default()).await;
    let earliest = admin.earliest_position(&topic).await.expect("earliest_position");
    assert_eq!(
        earliest.messages_until(&admin.latest_position(&topic).await.expect("latest_position")),
        0,
        "an empty topic"
    );
    let ids = send(ctx, &topic, 0..7).await;
    let latest = admin.latest_position(&topic).await.expect("latest_position");
    assert_eq!(
        earliest.messages_until(&latest),
        7,
        "7 sends: {earliest:?} .. {latest:?}"
    );
    let got = receive_n(c.as_ref(), 7, false).await;
    for m in &got[..4] {
        m.ack().await.expect("ack");
    }
    let started = std::time::Instant::now();
    loop {
        let pos = admin
            .subscription_position(&topic, &ctx.sub("s"))
            .await
            .expect("subscription_position");
        if pos.messages_until(&latest) == 3 {
            break;
        }
        assert!(
            started.elapsed() < ARRIVAL_TIMEOUT,
            "after acking 4 of 7 the lag stayed {} ({pos:?} .. {latest:?})",
            pos.messages_until(&latest)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        matches!(
            admin.subscription_position(&topic, &ctx.sub("never")).await,
            Err(Error::NotFound(_))
        ),
        "the position of a missing subscription is NotFound"
    );
    for m in &got[4..] {
        m.ack().await.expect("ack");
    }
    // After a seek the position is still known, and is where the seek put it.
    let lag_becomes = |lag: u64, after: &'static str| {
        let (topic, sub, latest) = (topic.clone(), ctx.sub("s"), latest.clone());
        async move {
            let started = std::time::Instant::now();
            loop {
                let pos = admin
                    .subscription_position(&topic, &sub)
                    .await
                    .unwrap_or_else(|e| panic!("subscription_position {after}: {e}"));
                if pos.messages_until(&latest) == lag {
                    return;
                }
                assert!(
                    started.elapsed() < ARRIVAL_TIMEOUT,
                    "{after} the lag stayed {}, not {lag} ({pos:?} .. {latest:?})",
                    pos.messages_until(&latest)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    lag_becomes(0, "after acking all 7").await;
    c.seek(Position::Latest).await.expect("seek to Latest");
    lag_becomes(0, "after a seek to Latest").await;
    if !ctx.caps.admin.partitions {
        // One log: a seek to the 4th message leaves 4 to read; reading and
        // acking them brings the lag back to 0.
        c.seek(Position::Id(ids[3].clone())).await.expect("seek to an id");
        lag_becomes(4, "after a seek to the 4th message").await;
        let again = receive_n(c.as_ref(), 4, true).await;
        assert_eq!(arrived(ctx, &again), expected(3..7), "read again after the seek");
        lag_becomes(0, "after acking what the seek gave back").await;
    }
    c.seek(Position::Earliest).await.expect("seek to Earliest");
    lag_becomes(7, "after a seek to Earliest").await;
    c.close().await.expect("close consumer");
    Outcome::Passed
}
