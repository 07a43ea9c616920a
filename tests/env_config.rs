//! `from_env` and `connect`: backend choice, defaults, and clear errors.
//! One test, because it changes process environment variables.

use std::time::Duration;

use pubsub::{ConsumerOptions, Error, OutgoingMessage, Topic};

fn clear_env() {
    for k in [
        "PUBSUB_BACKEND",
        "PUBSUB_EMBEDDED_DIR",
        "KAFKA_BOOTSTRAP_SERVERS",
        "PULSAR_HOST",
        "PULSAR_API_KEY",
        "MQTT_HOST",
        "MQTT_PORT",
        "MQTT_PASSWORD",
        "NATS_URL",
        "REDIS_URL",
    ] {
        std::env::remove_var(k);
    }
}

#[tokio::test]
async fn environment_chooses_and_configures_the_backend() {
    clear_env();
    // Nothing set: embedded, in memory.
    let backend = pubsub::from_env().await.expect("default backend");
    assert_eq!(backend.name(), "embedded");
    assert!(!backend.capabilities().persistence);

    // A data dir makes it persistent, and what was sent survives a reopen.
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("PUBSUB_EMBEDDED_DIR", dir.path());
    let topic: Topic = "q1/env/test/persist".parse().unwrap();
    {
        let backend = pubsub::from_env().await.expect("embedded with a dir");
        assert!(backend.capabilities().persistence);
        backend
            .create_consumer(&topic, "s", ConsumerOptions::default())
            .await
            .unwrap();
        let p = backend.create_producer(&topic, Default::default()).await.unwrap();
        p.send(OutgoingMessage::new("kept")).await.unwrap();
        backend.close().await.unwrap();
    }
    let backend = pubsub::connect(&format!("embedded://{}", dir.path().display()))
        .await
        .unwrap();
    let c = backend
        .create_consumer(&topic, "s", ConsumerOptions::default())
        .await
        .unwrap();
    assert_eq!(
        c.receive_timeout(Duration::from_secs(5))
            .await
            .unwrap()
            .payload()
            .as_ref(),
        b"kept"
    );
    std::env::remove_var("PUBSUB_EMBEDDED_DIR");

    // An unknown backend name lists the valid ones.
    std::env::set_var("PUBSUB_BACKEND", "rabbit");
    let err = pubsub::from_env().await.unwrap_err();
    assert!(matches!(err, Error::InvalidConfiguration(_)), "{err:?}");
    assert!(
        err.to_string().contains("embedded") && err.to_string().contains("kafka"),
        "{err}"
    );

    // A backend whose feature is off names the feature; with the feature,
    // PULSAR_LISTENER reaches the adapter, which cannot honour it and says
    // so. (scripts/test.sh runs this test with default features too, so
    // both branches run.)
    std::env::set_var("PUBSUB_BACKEND", "pulsar");
    std::env::set_var("PULSAR_LISTENER", "internal");
    let err = pubsub::from_env().await.unwrap_err();
    std::env::remove_var("PULSAR_LISTENER");
    if cfg!(feature = "pulsar") {
        assert!(matches!(err, Error::Unsupported { backend: "pulsar", .. }), "{err:?}");
        assert!(err.to_string().contains("\"internal\""), "{err}");
    } else {
        assert!(matches!(err, Error::InvalidConfiguration(_)), "{err:?}");
        assert!(err.to_string().contains("cargo feature \"pulsar\""), "{err}");
    }

    // A malformed value is a configuration error, not a panic.
    std::env::set_var("PUBSUB_BACKEND", "mqtt");
    std::env::set_var("MQTT_PORT", "not-a-port");
    let err = pubsub::from_env().await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidConfiguration(_)) && err.to_string().contains("not-a-port"),
        "{err}"
    );

    // Secrets from the environment never reach Debug output.
    std::env::set_var("MQTT_PORT", "1883");
    std::env::set_var("MQTT_PASSWORD", "env-secret-pw");
    std::env::set_var("REDIS_URL", "redis://:env-redis-pw@localhost:6379");
    let args = pubsub::PubSubArgs::from_env().unwrap();
    let shown = format!("{args:?} {:?}", args.config());
    assert!(
        !shown.contains("env-secret-pw") && !shown.contains("env-redis-pw"),
        "{shown}"
    );
    clear_env();
}
