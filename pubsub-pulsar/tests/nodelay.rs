//! Every connection the adapter opens to the broker has `TCP_NODELAY` set.
//! The `pulsar` crate never sets it (its small ack and flow frames then wait
//! on Nagle for the broker's delayed ACK, about 40 ms each); the workspace
//! uses the patched copy in patches/pulsar (see its PATCHED.md). Against the
//! broker `PULSAR_URL` names, Apache Pulsar on 6652 by default (see
//! tests/conformance.rs). One test in this binary, so every connection to
//! the broker's port is the adapter's.

use std::time::Duration;

use pubsub_core::testkit::sockets::assert_all_nodelay;
use pubsub_core::{ConsumerOptions, OutgoingMessage, PubSubBackend, Qos, Topic};
use pubsub_pulsar::{PulsarBackend, PulsarConfig};

/// The port of a `pulsar://host:port[?...]` URL.
fn port_of(url: &str) -> u16 {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['?', '/']).next().unwrap_or(rest);
    host.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(6650)
}

#[tokio::test]
async fn every_connection_has_tcp_nodelay() {
    let (url, admin) = match std::env::var("PULSAR_URL") {
        Ok(url) => (url, std::env::var("PULSAR_ADMIN_URL").ok()),
        Err(_) => ("pulsar://127.0.0.1:6652".into(), Some("http://127.0.0.1:8082".into())),
    };
    let mut config = PulsarConfig::new(url.clone());
    if let Some(admin) = admin {
        config = config.with_admin_url(admin);
    }
    let backend = match PulsarBackend::connect(config).await {
        Ok(b) => b,
        Err(e) if !pubsub_core::testkit::brokers_required() => {
            eprintln!("SKIPPED every_connection_has_tcp_nodelay: {e}");
            return;
        }
        Err(e) => panic!("connect: {e}"),
    };
    let topic = Topic::new(Qos::AtLeastOnce, "tg", "nodelay", &format!("t{}", std::process::id())).unwrap();
    let consumer = backend
        .create_consumer(&topic, "s", ConsumerOptions::default())
        .await
        .unwrap();
    let producer = backend.create_producer(&topic, Default::default()).await.unwrap();
    producer.send(OutgoingMessage::new("x")).await.unwrap();
    let m = consumer.receive_timeout(Duration::from_secs(15)).await.unwrap();
    m.ack().await.unwrap();
    let open = assert_all_nodelay(port_of(&url), 1);
    eprintln!("{open} connections to the broker, all with TCP_NODELAY");
    drop((consumer, producer));
    let _ = backend.close().await;
}
