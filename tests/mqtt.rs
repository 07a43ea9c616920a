//! MQTT beyond the conformance suite: broker restarts, username/password
//! auth (a second Mosquitto with a password file), secrets, and interop
//! with the Mosquitto command-line clients. Each test starts its own
//! mosquitto (`pubsub::testing`).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::broker;
use pubsub::testing::TestBroker;
use pubsub::{BackendKind, ConsumerOptions, Error, OutgoingMessage, Secret, Topic};

/// q1 no-loss across a restart of mosquitto. Mosquitto writes its state on
/// shutdown (and every `autosave_interval`), so the outage is a clean stop:
/// a SIGKILL loses what arrived since the last save, which is the broker's
/// durability, not the adapter's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_loses_no_confirmed_message() {
    let Some(b) = broker(BackendKind::Mqtt, &[]).await else {
        return;
    };
    common::no_loss_across_restart(b, common::Outage::Stop, 300, 5).await;
}

/// A consumer that was away gets what was published meanwhile (its
/// persistent session), and one that reconnects after a broker restart
/// goes on receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_queues_while_away_and_survives_restart() {
    let Some(mut broker) = broker(BackendKind::Mqtt, &[]).await else {
        return;
    };
    let backend = broker.backend().await.unwrap();
    let topic: Topic = "q1/reliability/mqtt/away".parse().unwrap();
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    let c = backend
        .create_consumer(&topic, "s", ConsumerOptions::default())
        .await
        .unwrap();
    c.close().await.unwrap();
    p.send(OutgoingMessage::new("while away")).await.unwrap();
    let c = backend
        .create_consumer(&topic, "s", ConsumerOptions::default())
        .await
        .unwrap();
    let m = c
        .receive_timeout(Duration::from_secs(10))
        .await
        .expect("queued for the session");
    assert_eq!(m.payload().as_ref(), b"while away");
    m.ack().await.unwrap();

    broker.restart().await.unwrap();
    common::send_once_reconnected(p.as_ref(), "after").await;
    let m = c
        .receive_timeout(Duration::from_secs(30))
        .await
        .expect("the consumer reconnects");
    assert_eq!(m.payload().as_ref(), b"after");
}

/// Username and password against a Mosquitto that requires them; the
/// password never shows in errors or Debug.
#[tokio::test]
async fn password_auth_and_secrets() {
    let password = "s3cret-Pw";
    let broker = match TestBroker::start_with_credentials(BackendKind::Mqtt, "alice", Secret::new(password)).await {
        Ok(b) => b,
        Err(e) => return pubsub::testkit::broker_unavailable("mqtt auth broker", &e),
    };
    // Right credentials: works end to end.
    let backend = broker.backend().await.expect("connect with the right password");
    let topic: Topic = "q1/security/mqtt/auth".parse().unwrap();
    let c = backend
        .create_consumer(&topic, "s", ConsumerOptions::default())
        .await
        .unwrap();
    backend
        .create_producer(&topic, Default::default())
        .await
        .unwrap()
        .send(OutgoingMessage::new("ok"))
        .await
        .unwrap();
    assert_eq!(
        c.receive_timeout(Duration::from_secs(10))
            .await
            .unwrap()
            .payload()
            .as_ref(),
        b"ok"
    );
    assert!(!format!("{backend:?}").contains(password));

    // Wrong password, and none: refused with an authentication error naming the user, not the password.
    let port = broker.port();
    let wrong = pubsub::connect(&format!("mqtt://alice:wrong-{password}@127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(
        matches!(wrong, Error::Authentication { .. }) && !wrong.is_retriable(),
        "{wrong:?}"
    );
    let shown = format!("{wrong} {wrong:?}");
    assert!(shown.contains("alice") && !shown.contains(password), "{shown}");
    let anonymous = pubsub::connect(&format!("mqtt://127.0.0.1:{port}")).await.unwrap_err();
    assert!(matches!(anonymous, Error::Authentication { .. }), "{anonymous:?}");

    // From the environment, as a service gets it.
    let args = pubsub::PubSubArgs {
        pubsub_backend: BackendKind::Mqtt,
        mqtt_port: port,
        mqtt_host: "127.0.0.1".into(),
        mqtt_username: Some("alice".into()),
        mqtt_password: Some(Secret::new(password)),
        ..pubsub::PubSubArgs::from_env().unwrap()
    };
    assert!(!format!("{args:?}").contains(password));
    args.connect().await.expect("PubSubArgs carries the credentials");
}

fn mosquitto_clients() -> bool {
    Command::new("mosquitto_pub")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The SDK's messages read by `mosquitto_sub`, and `mosquitto_pub`'s read
/// by the SDK, with user properties, key and content type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_with_mosquitto_clients() {
    let Some(broker) = broker(BackendKind::Mqtt, &[]).await else {
        return;
    };
    if !mosquitto_clients() {
        return pubsub::testkit::broker_unavailable("mosquitto_pub/mosquitto_sub", &"not installed");
    }
    let port = broker.port().to_string();
    let backend = broker.backend().await.unwrap();
    let topic: Topic = "q1/interop/mqtt/both".parse().unwrap();

    // SDK -> mosquitto_sub
    let sub = Command::new("mosquitto_sub")
        .args([
            "-V",
            "mqttv5",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "interop/mqtt/both",
            "-C",
            "1",
            "-F",
            "%j",
            "-W",
            "15",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await; // let it subscribe
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    let msg = OutgoingMessage::new("from the sdk")
        .with_property("trace-id", "abc")
        .with_property("content-type", "text/plain")
        .with_key("user-7");
    p.send(msg).await.unwrap();
    let out = sub.wait_with_output().unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    for expected in [
        r#""payload":"from the sdk""#,
        r#""trace-id":"abc""#,
        r#""pubsub.key":"user-7""#,
        r#""content-type":"text/plain""#,
    ] {
        assert!(line.contains(expected), "mosquitto_sub saw {line}, lacking {expected}");
    }

    // mosquitto_pub -> SDK
    let c = backend
        .create_consumer(&topic, "interop", ConsumerOptions::default())
        .await
        .unwrap();
    let status = Command::new("mosquitto_pub")
        .args([
            "-V",
            "mqttv5",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "interop/mqtt/both",
            "-q",
            "1",
            "-m",
            "from mosquitto_pub",
        ])
        .args(["-D", "publish", "user-property", "trace-id", "xyz"])
        .args(["-D", "publish", "user-property", "pubsub.key", "k-1"])
        .args(["-D", "publish", "content-type", "text/plain"])
        .status()
        .unwrap();
    assert!(status.success());
    let m = c.receive_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(m.payload().as_ref(), b"from mosquitto_pub");
    assert_eq!(m.property("trace-id"), Some("xyz"));
    assert_eq!(m.content_type(), Some("text/plain"));
    assert_eq!(m.key(), Some("k-1"));
    m.ack().await.unwrap();
}

/// Nothing listening: a typed, retriable connection error within a bounded
/// time, without the password.
#[tokio::test]
async fn unreachable_broker_is_a_connection_error() {
    let url = format!("mqtt://user:mqtt-s3cret@127.0.0.1:{}", common::unused_port());
    common::unreachable_is_a_connection_error(&url, "mqtt-s3cret").await;
}
