//! Every connection the adapter opens to Redis has `TCP_NODELAY` set
//! (redis-rs 1.x leaves it off, and pipelined commands and acks then wait on
//! Nagle). Against a real Redis (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`). One test in this binary, so every connection
//! to the port is the adapter's.

use std::time::Duration;

use pubsub_core::testkit::sockets::assert_all_nodelay;
use pubsub_core::{ConsumerOptions, OutgoingMessage, PubSubBackend, Qos, Topic};
use pubsub_redis::{RedisBackend, RedisConfig};

/// The port of a `redis://[user:pass@]host[:port][/db]` URL.
fn port_of(url: &str) -> u16 {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = host.split('/').next().unwrap_or(host);
    host.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(6379)
}

#[tokio::test]
async fn every_connection_has_tcp_nodelay() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let config = RedisConfig::new(url.clone()).with_timeout(Duration::from_secs(3));
    let backend = match RedisBackend::connect(config).await {
        Ok(b) => b,
        Err(e) if !pubsub_core::testkit::brokers_required() => {
            eprintln!("SKIPPED every_connection_has_tcp_nodelay: {e}");
            return;
        }
        Err(e) => panic!("connect: {e}"),
    };
    let n = std::process::id();
    // Kept, so their connections stay open for the next check.
    let mut held = Vec::new();
    // q1: the shared connection, and a consumer's connection for blocking
    // reads; q0: a Pub/Sub connection.
    for qos in [Qos::AtLeastOnce, Qos::AtMostOnce] {
        let topic = Topic::new(qos, "tg", "nodelay", &format!("t{n}")).unwrap();
        let consumer = backend
            .create_consumer(&topic, "s", ConsumerOptions::default())
            .await
            .unwrap();
        let producer = backend.create_producer(&topic, Default::default()).await.unwrap();
        producer.send(OutgoingMessage::new("x")).await.unwrap();
        let m = consumer.receive_timeout(Duration::from_secs(10)).await.unwrap();
        m.ack().await.unwrap();
        let open = assert_all_nodelay(port_of(&url), if qos == Qos::AtLeastOnce { 2 } else { 3 });
        eprintln!("{qos:?}: {open} connections to Redis, all with TCP_NODELAY");
        held.push((consumer, producer));
    }
    drop(held);
    let _ = backend.close().await;
}
