//! Redis beyond the conformance suite: broker restarts, the server's own
//! limits, wrong types at a key, an unreachable server, secrets. Each test
//! starts its own redis-server (`pubsub::testing`), so none disturbs another.

mod common;

use std::time::Duration;

use common::broker;
use pubsub::{BackendKind, ConsumerOptions, Error, OutgoingMessage, Topic};

/// q1 no-loss across a crash of redis-server (AOF, `appendfsync always`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_loses_no_confirmed_message() {
    let Some(b) = broker(BackendKind::Redis, &[]).await else {
        return;
    };
    common::no_loss_across_restart(b, common::Outage::Kill, 300, 10).await;
}

/// The server's `proto-max-bulk-len` lowers the payload limit; a larger
/// payload is refused before it is sent, and nothing accepted is lost.
#[tokio::test]
async fn payload_limit_follows_the_server() {
    let Some(broker) = broker(BackendKind::Redis, &["--proto-max-bulk-len", "1mb"]).await else {
        return;
    };
    let backend = broker.backend().await.unwrap();
    let max = backend.capabilities().max_payload.expect("a limit");
    assert!(max < 1024 * 1024, "limit {max} is below the server's 1 MiB");
    let topic: Topic = "q1/bad/input/limit".parse().unwrap();
    let c = backend
        .create_consumer(&topic, "s", ConsumerOptions::default())
        .await
        .unwrap();
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    match p.send(OutgoingMessage::new(vec![1u8; max + 1])).await {
        Err(Error::PayloadTooLarge { size, max: m }) => assert_eq!((size, m), (max + 1, max)),
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    p.send(OutgoingMessage::new(vec![2u8; max]))
        .await
        .expect("exactly the limit is accepted");
    let m = c.receive_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(m.payload().len(), max);
}

/// A key holding another type gives a typed broker error, not a panic.
#[tokio::test]
async fn wrong_type_at_the_key_is_a_broker_error() {
    let Some(broker) = broker(BackendKind::Redis, &[]).await else {
        return;
    };
    let status = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &broker.port().to_string(),
            "SET",
            "pubsub:{bad.input.wrongtype}",
            "a string",
        ])
        .output()
        .expect("redis-cli");
    assert!(status.status.success());
    let backend = broker.backend().await.unwrap();
    let topic: Topic = "q1/bad/input/wrongtype".parse().unwrap();
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    let err = p.send(OutgoingMessage::new("x")).await.unwrap_err();
    assert!(
        matches!(&err, Error::Broker { message, .. } if message.contains("WRONGTYPE")),
        "{err:?}"
    );
    let err = backend
        .create_consumer(&topic, "s", ConsumerOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Broker { message, .. } if message.contains("WRONGTYPE")),
        "{err:?}"
    );
}

/// Nothing listening: a typed connection error within a bounded time, and
/// no password in it.
#[tokio::test]
async fn unreachable_server_is_a_connection_error_without_secrets() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}");
    let result = tokio::time::timeout(Duration::from_secs(30), pubsub::connect(&url))
        .await
        .expect("bounded wait");
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert!(err.is_retriable());
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

/// A consumer keeps receiving after the server restarts (its read
/// connection and group come back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_resumes_after_graceful_restart() {
    let Some(b) = broker(BackendKind::Redis, &[]).await else {
        return;
    };
    common::consumer_resumes_after_restart(b).await;
}

/// A reader goes on where it was after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_resumes_after_restart() {
    let Some(b) = broker(BackendKind::Redis, &[]).await else {
        return;
    };
    common::reader_resumes_after_restart(b).await;
}

/// `calls` of `XACK` in the server's `INFO commandstats` (a short blocking read).
fn xack_calls(port: u16) -> u64 {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    conn.write_all(b"INFO commandstats\r\n").unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    // A bulk reply: `$<len>\r\n<text>\r\n`; read until all of it is here.
    loop {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed the connection");
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        if let Some((len, rest)) = text.strip_prefix('$').and_then(|t| t.split_once("\r\n")) {
            if rest.len() >= len.parse::<usize>().unwrap() {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&reply);
    text.lines()
        .find_map(|l| l.strip_prefix("cmdstat_xack:calls="))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// Acks given together go out as a few `XACK`s, not one each (counted by
/// the server), and all of them take effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_given_together_are_coalesced() {
    let Some(b) = broker(BackendKind::Redis, &[]).await else {
        return;
    };
    let backend = b.backend().await.unwrap();
    let topic: Topic = "q1/acks/coalesced/t".parse().unwrap();
    let c = backend
        .create_consumer(&topic, "s", ConsumerOptions::default().with_batch_size(200))
        .await
        .unwrap();
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    p.send_batch((0..100).map(|i| OutgoingMessage::new(format!("m{i}"))).collect())
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 100 {
        let batch = c.receive_batch(100 - got.len(), Duration::from_secs(10)).await.unwrap();
        assert!(!batch.is_empty(), "only {} of 100 arrived", got.len());
        got.extend(batch);
    }
    let before = xack_calls(b.port());
    futures::future::try_join_all(got.iter().map(|m| m.ack()))
        .await
        .unwrap();
    let calls = xack_calls(b.port()) - before;
    assert!(calls <= 10, "100 acks at once took {calls} XACKs");
    let subs = backend.admin().subscriptions(&topic).await.unwrap();
    assert_eq!(
        subs.iter().map(|s| s.backlog).collect::<Vec<_>>(),
        [Some(0)],
        "every ack counted"
    );
    c.close().await.unwrap();
}
