//! Conformance cases of the processor runtime, run on every backend.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{receive_n, Ctx, Outcome, ARRIVAL_TIMEOUT};
use crate::processor::{
    respond, Backoff, HandlerError, Processor, ProcessorOptions, Requester, Shutdown, DEAD_LETTER_ATTEMPTS,
    DEAD_LETTER_ORIGIN, DEAD_LETTER_REASON,
};
use crate::{ConsumerOptions, Error, Message, OutgoingMessage, Qos};

fn fast_retries() -> ProcessorOptions {
    let backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        factor: 2.0,
    };
    ProcessorOptions::default()
        .with_backoff(backoff)
        .with_max_attempts(3)
        .with_shutdown_grace(Duration::from_secs(10))
}

fn number(m: &Message) -> usize {
    std::str::from_utf8(m.payload())
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("numbered payload")
}

/// A handler that keeps failing gets `max_attempts` tries, then its message
/// goes to the dead-letter topic with the error, and the original is acked;
/// a poison message (codec error) goes there at once.
pub async fn processor_retries_then_dead_letters(ctx: &Ctx) -> Outcome {
    if !ctx.caps.nack {
        return Outcome::Unsupported("the processor's retries need nack".into());
    }
    let topic = ctx.topic(Qos::AtLeastOnce, "proc-retry");
    let dlq = ctx.topic(Qos::AtLeastOnce, "proc-retry-dlq");
    let dead = ctx.consumer(&dlq, &ctx.sub("dlq"), ConsumerOptions::default()).await;
    // The processor's subscription exists before anything is sent.
    ctx.consumer(&topic, &ctx.sub("workers"), ConsumerOptions::default())
        .await
        .close()
        .await
        .expect("close");
    let seen: Arc<Mutex<Vec<(usize, u32)>>> = Default::default();
    let log = seen.clone();
    let processor = Processor::new(
        ctx.backend.clone(),
        topic.clone(),
        ctx.sub("workers"),
        move |m: Message| {
            let log = log.clone();
            async move {
                if m.property("poison").is_some() {
                    let _: serde_json::Value = m.value()?; // not JSON: a codec error, fatal
                }
                let n = number(&m);
                log.lock().unwrap().push((n, m.redelivery_count()));
                if m.property("fail").is_some() {
                    // A reason ending in a newline must not make the dead
                    // letter itself invalid (a trailing space once did).
                    let end = if n == 4 { "\n" } else { "" };
                    return Err(HandlerError::retry(format!("refusing {n}\non purpose{end}")));
                }
                Ok(())
            }
        },
    )
    .with_options(fast_retries().with_dead_letter_topic(dlq.clone()));
    let shutdown = Shutdown::new();
    let running = tokio::spawn(processor.run(shutdown.clone()));
    let p = ctx.producer(&topic).await;
    for i in 0..3 {
        p.send(OutgoingMessage::new(i.to_string())).await.expect("send");
    }
    for i in 3..5 {
        p.send(
            OutgoingMessage::new(i.to_string())
                .with_property("fail", "yes")
                .with_key(format!("k{i}")),
        )
        .await
        .expect("send");
    }
    p.send(
        OutgoingMessage::new("not json")
            .with_property("poison", "yes")
            .with_property("content-type", "application/json"),
    )
    .await
    .expect("send");
    let letters = receive_n(dead.as_ref(), 3, true).await;
    shutdown.trigger();
    let report = running.await.expect("processor task").expect("processor run");
    let mut failed = Vec::new();
    for l in &letters {
        assert_eq!(l.property(DEAD_LETTER_ORIGIN), Some(topic.as_str()));
        let reason = l.property(DEAD_LETTER_REASON).expect("reason");
        if l.property("poison").is_some() {
            assert_eq!(l.property(DEAD_LETTER_ATTEMPTS), Some("1"), "poison goes at once");
            assert!(reason.contains("JSON decode failed"), "{reason}");
        } else {
            assert_eq!(l.property(DEAD_LETTER_ATTEMPTS), Some("3"));
            assert!(reason.contains("refusing") && !reason.contains('\n'), "{reason}");
            assert_eq!(l.property("fail"), Some("yes"), "original properties travel");
            assert!(l.key().is_some(), "the key travels");
            failed.push(number(l));
        }
    }
    failed.sort_unstable();
    assert_eq!(failed, vec![3, 4]);
    let seen = seen.lock().unwrap().clone();
    for n in 3..5 {
        let tries = seen.iter().filter(|(m, _)| *m == n).count();
        assert_eq!(tries, 3, "message {n} was tried max_attempts times: {seen:?}");
    }
    assert_eq!((report.acked, report.dead_lettered), (3, 3), "{report:?}");
    assert!(report.retried >= 4, "{report:?}");
    Outcome::Passed
}

/// A burst is sent; the processor is shut down mid-way. Every message was
/// either handled and acked, or is still there for the next consumer.
pub async fn processor_shutdown_loses_nothing(ctx: &Ctx) -> Outcome {
    let topic = ctx.topic(Qos::AtLeastOnce, "proc-shutdown");
    let sub = ctx.sub("workers");
    ctx.subscribe_ahead(&topic, &sub).await;
    let total = 200;
    let p = ctx.producer(&topic).await;
    for i in 0..total {
        p.send(OutgoingMessage::new(i.to_string())).await.expect("send");
    }
    let handled: Arc<Mutex<BTreeSet<usize>>> = Default::default();
    let log = handled.clone();
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let processor = Processor::new(ctx.backend.clone(), topic.clone(), sub.clone(), move |m: Message| {
        let (log, stop) = (log.clone(), stop.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let mut done = log.lock().unwrap();
            done.insert(number(&m));
            if done.len() == 50 {
                stop.trigger(); // shut down mid-burst, from inside a handler
            }
            Ok(())
        }
    })
    .with_options(
        ProcessorOptions::default()
            .with_concurrency(4)
            .with_shutdown_grace(Duration::from_secs(10)),
    );
    let report = tokio::time::timeout(ARRIVAL_TIMEOUT * 2, processor.run(shutdown))
        .await
        .expect("stops")
        .expect("run");
    assert_eq!(report.abandoned, 0, "{report:?}");
    let handled = handled.lock().unwrap().clone();
    assert!(
        handled.len() >= 50 && handled.len() < total,
        "shut down mid-burst: {} handled",
        handled.len()
    );
    assert_eq!(
        report.acked as usize,
        handled.len(),
        "every handled message was acked: {report:?}"
    );
    let c = ctx.consumer(&topic, &sub, ConsumerOptions::default()).await;
    let mut rest = BTreeSet::new();
    loop {
        match c.receive_timeout(super::QUIET_PERIOD).await {
            Ok(m) => {
                rest.insert(number(&m));
                m.ack().await.expect("ack");
            }
            Err(Error::Timeout(_)) => break,
            Err(e) => panic!("receive: {e}"),
        }
    }
    let all: BTreeSet<usize> = handled.union(&rest).copied().collect();
    assert_eq!(all, (0..total).collect(), "nothing lost");
    if ctx.caps.individual_acks {
        assert!(handled.is_disjoint(&rest), "acked messages did not come back");
    }
    Outcome::Passed
}

/// Two requesters and two workers: every reply reaches the requester that asked.
pub async fn request_response_routes_every_reply(ctx: &Ctx) -> Outcome {
    let requests = ctx.topic(Qos::AtLeastOnce, "rr-requests");
    let responses = ctx.topic(Qos::AtLeastOnce, "rr-responses");
    let workers = ctx.sub("workers");
    ctx.consumer(&requests, &workers, ConsumerOptions::default())
        .await
        .close()
        .await
        .expect("close");
    let shutdown = Shutdown::new();
    let mut servers = Vec::new();
    for w in 0..2 {
        let backend = ctx.backend.clone();
        let (requests, workers, shutdown) = (requests.clone(), workers.clone(), shutdown.clone());
        servers.push(tokio::spawn(async move {
            respond(
                backend,
                requests,
                &workers,
                ProcessorOptions::default(),
                shutdown,
                move |m: Message| async move {
                    let text = String::from_utf8_lossy(m.payload()).to_uppercase();
                    Ok(OutgoingMessage::new(text).with_property("worker", w.to_string()))
                },
            )
            .await
        }));
    }
    let a = Requester::new(ctx.backend.as_ref(), &requests, &responses)
        .await
        .expect("requester a");
    let b = Requester::new(ctx.backend.as_ref(), &requests, &responses)
        .await
        .expect("requester b");
    async fn ask(r: &Requester, who: &'static str, i: usize) -> (&'static str, usize, crate::Result<Message>) {
        (
            who,
            i,
            r.request(OutgoingMessage::new(format!("{who}-{i}")), ARRIVAL_TIMEOUT)
                .await,
        )
    }
    let mut calls = Vec::new();
    for i in 0..10 {
        calls.push(ask(&a, "a", i));
        calls.push(ask(&b, "b", i));
    }
    for (who, i, reply) in futures::future::join_all(calls).await {
        let reply = reply.unwrap_or_else(|e| panic!("request {who}-{i}: {e}"));
        assert_eq!(
            reply.payload().as_ref(),
            format!("{who}-{i}").to_uppercase().as_bytes(),
            "reply to its caller"
        );
    }
    a.close().await.expect("close a");
    b.close().await.expect("close b");
    shutdown.trigger();
    for s in servers {
        s.await.expect("worker task").expect("worker run");
    }
    Outcome::Passed
}

/// Once shutdown is signalled no new handler starts, not even one for a
/// message already received and waiting for its key's turn, and the
/// processor stops promptly once the running handlers return.
pub async fn processor_starts_nothing_after_shutdown(ctx: &Ctx) -> Outcome {
    let topic = ctx.topic(Qos::AtLeastOnce, "proc-stop");
    let sub = ctx.sub("workers");
    ctx.subscribe_ahead(&topic, &sub).await;
    let p = ctx.producer(&topic).await;
    for i in 0..6 {
        // Two keys: each message after the first of its key waits for its turn.
        let key = if i % 2 == 0 { "a" } else { "b" };
        p.send(OutgoingMessage::new(i.to_string()).with_key(key))
            .await
            .expect("send");
    }
    let starts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let (count, release) = (starts.clone(), release_rx.clone());
    let processor = Processor::new(ctx.backend.clone(), topic.clone(), sub.clone(), move |_m: Message| {
        let mut release = release.clone();
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let _ = release.wait_for(|r| *r).await;
            Ok(())
        }
    })
    .with_options(
        ProcessorOptions::default()
            .with_concurrency(4)
            .ordered_by_key()
            .with_shutdown_grace(Duration::from_secs(60)),
    );
    let shutdown = Shutdown::new();
    let running = tokio::spawn(processor.run(shutdown.clone()));
    let waited = std::time::Instant::now();
    while starts.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(
            waited.elapsed() < ARRIVAL_TIMEOUT,
            "the first handler of each key did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the processor receive what it can hold before the signal.
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.trigger();
    let at_signal = starts.load(std::sync::atomic::Ordering::SeqCst);
    release_tx.send_replace(true);
    let released = std::time::Instant::now();
    let report = tokio::time::timeout(ARRIVAL_TIMEOUT * 2, running)
        .await
        .expect("the processor stops once its running handlers return")
        .expect("processor task")
        .expect("processor run");
    let stopped_in = released.elapsed();
    let started = starts.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        started,
        at_signal,
        "{} handler(s) started after shutdown was signalled ({report:?})",
        started - at_signal
    );
    assert_eq!(report.abandoned, 0, "{report:?}");
    assert!(
        stopped_in < ARRIVAL_TIMEOUT,
        "shutdown took {stopped_in:?} after the handlers returned"
    );
    Outcome::Passed
}

/// Under `ordered_by_key`, messages without a key run concurrently, and a
/// slow key holds up only its own later messages: another key's handlers
/// all complete while the slow one is still running.
pub async fn processor_orders_only_within_a_key(ctx: &Ctx) -> Outcome {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let topic = ctx.topic(Qos::AtLeastOnce, "proc-keys");
    let sub = ctx.sub("workers");
    ctx.subscribe_ahead(&topic, &sub).await;
    let p = ctx.producer(&topic).await;
    // a-0 and a-1 (a-0 is slow), then b-0..b-3, then 4 keyless.
    for i in 0..2 {
        p.send(OutgoingMessage::new(format!("a-{i}")).with_key("a"))
            .await
            .expect("send");
    }
    for i in 0..4 {
        p.send(OutgoingMessage::new(format!("b-{i}")).with_key("b"))
            .await
            .expect("send");
    }
    for i in 0..4 {
        p.send(OutgoingMessage::new(format!("none-{i}"))).await.expect("send");
    }
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let b_done: Arc<Mutex<Vec<String>>> = Default::default();
    let keyless_now = Arc::new(AtomicUsize::new(0));
    let keyless_max = Arc::new(AtomicUsize::new(0));
    let keyless_done = Arc::new(AtomicUsize::new(0));
    let a_done = Arc::new(AtomicUsize::new(0));
    let state = (
        release_rx,
        b_done.clone(),
        keyless_now.clone(),
        keyless_max.clone(),
        keyless_done.clone(),
        a_done.clone(),
    );
    let processor = Processor::new(ctx.backend.clone(), topic.clone(), sub.clone(), move |m: Message| {
        let (mut release, b_done, now, max, done, a_done) = state.clone();
        async move {
            let text = String::from_utf8_lossy(m.payload()).to_string();
            if text == "a-0" {
                let _ = release.wait_for(|r| *r).await;
                a_done.fetch_add(1, Ordering::SeqCst);
            } else if text.starts_with("a-") {
                a_done.fetch_add(1, Ordering::SeqCst);
            } else if text.starts_with("b-") {
                b_done.lock().unwrap().push(text);
            } else {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(running, Ordering::SeqCst);
                // Wait (bounded) for another keyless handler to run alongside.
                let waited = std::time::Instant::now();
                while max.load(Ordering::SeqCst) < 2 && waited.elapsed() < Duration::from_secs(5) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                now.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
    })
    .with_options(
        ProcessorOptions::default()
            .with_concurrency(4)
            .ordered_by_key()
            .with_shutdown_grace(Duration::from_secs(30)),
    );
    let shutdown = Shutdown::new();
    let running = tokio::spawn(processor.run(shutdown.clone()));
    let waited = std::time::Instant::now();
    while b_done.lock().unwrap().len() < 4 || keyless_done.load(Ordering::SeqCst) < 4 {
        if waited.elapsed() > ARRIVAL_TIMEOUT * 2 {
            release_tx.send_replace(true);
            shutdown.trigger();
            panic!(
                "while a-0 was running, only {:?} of key b and {} of 4 keyless messages were handled",
                b_done.lock().unwrap(),
                keyless_done.load(Ordering::SeqCst)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a_done.load(Ordering::SeqCst), 0, "a-1 waited for a-0");
    if ctx.caps.key_ordering {
        assert_eq!(
            *b_done.lock().unwrap(),
            ["b-0", "b-1", "b-2", "b-3"],
            "key b in arrival order"
        );
    }
    assert!(
        keyless_max.load(Ordering::SeqCst) >= 2,
        "keyless messages ran one at a time"
    );
    release_tx.send_replace(true);
    let waited = std::time::Instant::now();
    while a_done.load(Ordering::SeqCst) < 2 {
        assert!(waited.elapsed() < ARRIVAL_TIMEOUT, "key a finished after its release");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.trigger();
    let report = running.await.expect("processor task").expect("processor run");
    assert_eq!(report.acked, 10, "{report:?}");
    Outcome::Passed
}
