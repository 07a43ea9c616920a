//! `from_env` and `connect`: backend choice, defaults, and clear errors.
//! The tests change process environment variables, so each holds `ENV`.

use std::time::Duration;

use pubsub::{ConsumerOptions, Error, OutgoingMessage, Topic};

/// Held by each test while it changes the environment.
static ENV: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Clears every pubsub variable.
fn clear_env() {
    for k in [
        "PUBSUB_BACKEND",
        "PUBSUB_EMBEDDED_DIR",
        "KAFKA_BOOTSTRAP_SERVERS",
        "PULSAR_HOST",
        "PULSAR_API_KEY",
        "PULSAR_LISTENER",
        "PULSAR_ADMIN_URL",
        "MQTT_HOST",
        "MQTT_PORT",
        "MQTT_USERNAME",
        "MQTT_PASSWORD",
        "NATS_URL",
        "REDIS_URL",
        "KAFKA_SASL_MECHANISM",
        "KAFKA_SASL_USERNAME",
        "KAFKA_SASL_PASSWORD",
    ] {
        std::env::remove_var(k);
    }
    for backend in ["KAFKA", "PULSAR", "MQTT", "NATS", "REDIS"] {
        for what in ["CA_FILE", "CERT_FILE", "KEY_FILE", "SERVER_NAME"] {
            std::env::remove_var(format!("{backend}_TLS_{what}"));
        }
    }
}

#[tokio::test]
async fn environment_chooses_and_configures_the_backend() {
    let _env = ENV.lock().await;
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
        // No version of the crate that is not published, and what to set instead.
        assert!(err.to_string().contains("features = [\"pulsar\"]"), "{err}");
        assert!(!err.to_string().contains("version ="), "{err}");
        assert!(
            err.to_string()
                .contains("set PUBSUB_BACKEND to a backend this build has: embedded"),
            "{err}"
        );
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
}

/// The message of a configuration error from `from_env`.
async fn config_error(vars: &[(&str, &str)]) -> String {
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
    let result = pubsub::from_env().await;
    for (k, _) in vars {
        std::env::remove_var(k);
    }
    match result {
        Err(Error::InvalidConfiguration(m)) => m,
        Err(other) => panic!("{vars:?}: not InvalidConfiguration: {other:?}"),
        Ok(b) => panic!("{vars:?}: connected to {}", b.name()),
    }
}

/// Environment errors name the variable, its value and what is allowed,
/// in the words of a service that has no command-line flags.
#[tokio::test]
async fn bad_variables_are_named_with_their_value_and_what_is_allowed() {
    let _env = ENV.lock().await;
    clear_env();
    let m = config_error(&[("PUBSUB_BACKEND", "bogus")]).await;
    assert!(m.contains("PUBSUB_BACKEND=\"bogus\""), "{m}");
    assert!(m.contains("embedded, kafka, pulsar, mqtt, nats, redis"), "{m}");
    assert!(!m.contains("--") && !m.contains("help"), "a command-line message: {m}");

    let m = config_error(&[("PUBSUB_BACKEND", "mqtt"), ("MQTT_PORT", "abc")]).await;
    assert!(m.contains("MQTT_PORT=\"abc\"") && m.contains("1 to 65535"), "{m}");
    assert!(!m.contains("--"), "a command-line message: {m}");

    // The URL-like variables: the chosen backend's value is checked before
    // anything connects (or before "not compiled in").
    for (backend, var, value, expect) in [
        ("redis", "REDIS_URL", "http://localhost:6379", "redis://"),
        ("redis", "REDIS_URL", "redis://:pw@localhost:port", "1 to 65535"),
        ("nats", "NATS_URL", "http://localhost:4222", "nats://"),
        ("pulsar", "PULSAR_HOST", "http://localhost:6650", "pulsar://"),
        (
            "kafka",
            "KAFKA_BOOTSTRAP_SERVERS",
            "kafka://localhost:9092",
            "host:port",
        ),
        ("mqtt", "MQTT_HOST", "http://localhost", "mqtt://"),
        ("mqtt", "MQTT_HOST", "localhost/x", "host name"),
    ] {
        let m = config_error(&[("PUBSUB_BACKEND", backend), (var, value)]).await;
        assert!(
            m.contains(&format!("{var}=")) && m.contains(expect),
            "{var}={value}: {m}"
        );
        assert!(!m.contains(":pw@"), "the password leaked: {m}");
    }
    let m = config_error(&[
        ("PUBSUB_BACKEND", "mqtt"),
        ("MQTT_HOST", "mqtt://127.0.0.1:1884"),
        ("MQTT_PORT", "1885"),
    ])
    .await;
    assert!(m.contains("MQTT_PORT=1885") && m.contains("1884"), "{m}");

    // Kafka's SASL variables make sense only together, each named.
    for (vars, expect) in [
        (&[("KAFKA_SASL_PASSWORD", "pw")][..], "KAFKA_SASL_USERNAME is not"),
        (&[("KAFKA_SASL_USERNAME", "app")][..], "KAFKA_SASL_PASSWORD is not"),
        (
            &[("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")][..],
            "KAFKA_SASL_USERNAME is not",
        ),
        (
            &[
                ("KAFKA_SASL_USERNAME", "app"),
                ("KAFKA_SASL_PASSWORD", "pw"),
                ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-1"),
            ][..],
            "KAFKA_SASL_MECHANISM=\"SCRAM-SHA-1\"",
        ),
    ] {
        if !cfg!(feature = "kafka") && vars.len() == 3 {
            continue; // the mechanism is checked by the Kafka adapter, not compiled in
        }
        let mut all = vec![("PUBSUB_BACKEND", "kafka")];
        all.extend_from_slice(vars);
        let m = config_error(&all).await;
        assert!(m.contains(expect), "{vars:?}: {m}");
        assert!(!m.contains("\"pw\""), "the password leaked: {m}");
    }
}

/// `MQTT_HOST=mqtts://host` without a port: TLS on 8883, as from a URL.
#[test]
fn mqtts_host_without_a_port_means_8883() {
    let _env = ENV.blocking_lock();
    clear_env();
    std::env::set_var("PUBSUB_BACKEND", "mqtt");
    std::env::set_var("MQTT_HOST", "mqtts://broker.internal");
    let config = pubsub::PubSubArgs::from_env().unwrap().checked_config().unwrap();
    clear_env();
    match config {
        pubsub::BackendConfig::Mqtt { port, tls, .. } => {
            assert_eq!(port, 8883);
            assert!(tls.is_some());
        }
        other => panic!("not MQTT: {other:?}"),
    }
}

/// An empty variable is unset, and MQTT_HOST may be a URL or host:port
/// without the port being added a second time.
#[test]
fn empty_variables_are_unset_and_mqtt_host_may_be_a_url() {
    let _env = ENV.blocking_lock();
    clear_env();
    for var in [
        "PUBSUB_BACKEND",
        "MQTT_PORT",
        "REDIS_URL",
        "NATS_URL",
        "PUBSUB_EMBEDDED_DIR",
    ] {
        std::env::set_var(var, "");
    }
    let args = pubsub::PubSubArgs::from_env().expect("empty variables are unset");
    assert_eq!(args.pubsub_backend, pubsub::BackendKind::default_for_build());
    assert_eq!(args.embedded_dir, None);
    assert_eq!(args.mqtt_port, 1883);
    assert_eq!(args.redis_url, "redis://localhost:6379");

    let mqtt = |host: &str| {
        let args = pubsub::PubSubArgs {
            pubsub_backend: pubsub::BackendKind::Mqtt,
            mqtt_host: host.to_string(),
            ..args.clone()
        };
        args.checked_config()
    };
    for (host, want_host, want_port) in [
        ("mqtt://127.0.0.1:1883", "127.0.0.1", 1883),
        ("mqtt://127.0.0.1", "127.0.0.1", 1883),
        ("127.0.0.1:1884", "127.0.0.1", 1884),
        ("broker.local", "broker.local", 1883),
    ] {
        match mqtt(host) {
            Ok(pubsub::BackendConfig::Mqtt { host: h, port, .. }) => {
                assert_eq!((h.as_str(), port), (want_host, want_port), "{host}")
            }
            other => panic!("{host}: {other:?}"),
        }
    }
    match mqtt("mqtt://bob:pw@broker:1884") {
        Ok(pubsub::BackendConfig::Mqtt { username, password, .. }) => {
            assert_eq!(username.as_deref(), Some("bob"));
            assert_eq!(password.map(|p| p.expose().to_string()).as_deref(), Some("pw"));
        }
        other => panic!("{other:?}"),
    }
}

/// A refused port fails within a second and says "refused" on Kafka and
/// Pulsar too (their clients retried for 10 s).
#[cfg(any(feature = "kafka", feature = "pulsar"))]
#[tokio::test]
async fn a_refused_port_fails_fast_on_kafka_and_pulsar() {
    let _env = ENV.lock().await;
    clear_env();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cases = Vec::new();
    if cfg!(feature = "kafka") {
        cases.push(("kafka", "KAFKA_BOOTSTRAP_SERVERS", format!("127.0.0.1:{port}")));
    }
    if cfg!(feature = "pulsar") {
        cases.push(("pulsar", "PULSAR_HOST", format!("pulsar://127.0.0.1:{port}")));
    }
    for (backend, var, value) in cases {
        std::env::set_var("PUBSUB_BACKEND", backend);
        std::env::set_var(var, &value);
        let started = std::time::Instant::now();
        let Err(err) = pubsub::from_env().await else {
            panic!("{backend}: nothing listens there")
        };
        let took = started.elapsed();
        std::env::remove_var(var);
        assert!(matches!(err, Error::Connection { .. }), "{backend}: {err:?}");
        assert!(err.to_string().contains("refused"), "{backend}: {err}");
        assert!(took < Duration::from_secs(1), "{backend}: took {took:?}");
        eprintln!("{backend}: refused after {took:?}");
    }
}

/// A Redis URL pointing at a server that speaks something else says so
/// (the redis crate said "Parse error at 1 Unexpected `78`").
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_redis_url_at_another_server_says_it_does_not_speak_redis() {
    use tokio::io::AsyncWriteExt;
    let _env = ENV.lock().await;
    clear_env();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Greets like a NATS server does, then waits.
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = socket.write_all(b"INFO {\"server_id\":\"x\"}\r\n").await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        }
    });
    std::env::set_var("PUBSUB_BACKEND", "redis");
    std::env::set_var("REDIS_URL", format!("redis://127.0.0.1:{port}"));
    let result = pubsub::from_env().await;
    clear_env();
    let Err(err) = result else { panic!("not a Redis server") };
    let m = err.to_string();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert!(m.contains("does not speak Redis") && !m.contains("Parse error"), "{m}");
}
