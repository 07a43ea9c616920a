//! TLS and authentication against real brokers on loopback (Redis
//! `tls-port`, nats-server `tls {}`, a Mosquitto TLS listener, an Apache
//! Kafka `SASL_SSL` listener with PLAIN and SCRAM users), with a
//! throw-away CA from `TestCertificates`: the conformance suite's basic
//! cases over mutual TLS with a password, and every way a connection must
//! be refused (wrong CA, expired or wrong-host server certificate, no or an
//! untrusted client certificate, wrong password), each as a typed error that
//! never contains the password.

use std::sync::Arc;

use pubsub::testing::{ServerTls, TestBroker, TestCertificates};
use pubsub::{BackendConfig, BackendKind, Error, PubSubBackend, Secret, TlsConfig};

const USER: &str = "app";
const PASSWORD: &str = "tls-Pa55word";

/// Conformance cases run over mutual TLS with credentials.
const CASES: [&str; 4] = [
    "publish_subscribe_1000",
    "ack_prevents_redelivery",
    "nack_redelivers_with_higher_count",
    "payload_at_the_limit",
];

async fn start(kind: BackendKind, tls: ServerTls, credentials: bool) -> Option<TestBroker> {
    let creds = credentials.then(|| (USER.to_string(), Secret::new(PASSWORD)));
    match TestBroker::start_tls(kind, tls, creds).await {
        Ok(b) => Some(b),
        Err(e) => {
            pubsub::testkit::broker_unavailable(&format!("{kind} TLS test broker"), &e);
            None
        }
    }
}

/// The configuration for `url` with `tls`; Kafka, whose URL has no
/// credentials, logs in with SASL `mechanism` and `password`.
fn config(url: &str, tls: TlsConfig, mechanism: &str, password: &str) -> pubsub::Result<BackendConfig> {
    let config = BackendConfig::from_url(url)?.with_tls(tls)?;
    if url.starts_with("kafka://") {
        return config.with_sasl(mechanism, USER, Secret::new(password));
    }
    Ok(config)
}

async fn connect(url: &str, tls: TlsConfig) -> pubsub::Result<Arc<dyn PubSubBackend>> {
    config(url, tls, "SCRAM-SHA-512", PASSWORD)?.connect().await
}

/// Connecting must fail with a TLS error whose text says `why` (Kafka:
/// librdkafka does not say which certificate check failed, only that one did).
async fn refused_tls(what: &str, url: &str, tls: TlsConfig, why: &str) {
    let why = match (url.starts_with("kafka://"), why) {
        (true, "not signed by a trusted CA" | "expired" | "not valid for the host") => "could not be verified",
        _ => why,
    };
    match connect(url, tls).await {
        Ok(_) => panic!("{what}: connected"),
        Err(e @ Error::Tls { .. }) => {
            let text = e.to_string();
            assert!(text.contains(why), "{what}: {text}");
            assert!(!text.contains(PASSWORD), "{what}: the password shows: {text}");
            assert!(!e.is_retriable(), "{what}: a TLS refusal is not retriable");
        }
        Err(other) => panic!("{what}: expected Error::Tls ({why}), got {other:?}"),
    }
}

async fn tls_suite(kind: BackendKind) {
    let certs = TestCertificates::generate().expect("test certificates");
    let Some(broker) = start(kind, certs.server_tls(true), true).await else {
        return;
    };
    let url = broker.url();

    // The basic cases over mutual TLS, with the password.
    for case in CASES {
        let config = config(&url, certs.mutual_tls(), "SCRAM-SHA-512", PASSWORD).unwrap();
        let second = config.clone();
        pubsub::testkit::run_case_with(
            case,
            move || async move { config.connect().await },
            Some(move || async move { second.connect().await }),
        )
        .await;
    }

    // Kafka: each SASL mechanism the broker offers logs in.
    if kind == BackendKind::Kafka {
        for mechanism in ["PLAIN", "SCRAM-SHA-256"] {
            let backend = config(&url, certs.mutual_tls(), mechanism, PASSWORD)
                .unwrap()
                .connect()
                .await
                .unwrap_or_else(|e| panic!("kafka SASL {mechanism}: {e}"));
            backend.close().await.unwrap();
        }
    }

    // A wrong password: Error::Authentication, naming the user, never the password.
    let wrong = config(
        &url.replace(PASSWORD, "not-the-password"),
        certs.mutual_tls(),
        "SCRAM-SHA-512",
        "not-the-password",
    )
    .unwrap();
    match wrong.connect().await {
        Ok(_) => panic!("{kind}: a wrong password was accepted"),
        Err(e @ Error::Authentication { .. }) => {
            assert!(e.to_string().contains(USER), "{kind}: the user is not named: {e}");
            assert!(!e.to_string().contains("not-the-password"), "{e}");
            assert!(!format!("{e:?}").contains("not-the-password"), "{e:?}");
            assert!(!e.is_retriable());
        }
        Err(other) => panic!("{kind}: expected Error::Authentication, got {other:?}"),
    }

    // Files that cannot work are named before anything connects: a CA file
    // with no certificate, a key from another pair.
    let empty = certs.ca.with_file_name("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let no_ca = TlsConfig::default().with_ca_file(&empty);
    match connect(&url, no_ca).await {
        Err(Error::InvalidConfiguration(m)) => assert!(m.contains("empty.pem"), "{kind}: {m}"),
        other => panic!(
            "{kind} empty CA file: expected InvalidConfiguration, got {:?}",
            other.map(|_| ())
        ),
    }
    let mismatched = certs
        .client_tls()
        .with_client_auth(&certs.client.cert, &certs.untrusted_client.key);
    match connect(&url, mismatched).await {
        Err(e @ (Error::InvalidConfiguration(_) | Error::Tls { .. })) => assert!(!e.is_retriable(), "{kind}: {e}"),
        other => panic!(
            "{kind} mismatched key: expected a permanent error, got {:?}",
            other.map(|_| ())
        ),
    }

    // Trusting another CA: the server's certificate is refused.
    let other_ca = TlsConfig::default()
        .with_ca_file(&certs.other_ca)
        .with_client_auth(&certs.client.cert, &certs.client.key);
    refused_tls(
        &format!("{kind} other CA"),
        &url,
        other_ca,
        "not signed by a trusted CA",
    )
    .await;

    // Mutual TLS without a client certificate, and with one from another CA.
    refused_tls(
        &format!("{kind} no client certificate"),
        &url,
        certs.client_tls(),
        "TLS failed",
    )
    .await;
    let untrusted = certs
        .client_tls()
        .with_client_auth(&certs.untrusted_client.cert, &certs.untrusted_client.key);
    refused_tls(
        &format!("{kind} untrusted client certificate"),
        &url,
        untrusted,
        "TLS failed",
    )
    .await;
    drop(broker);

    // An expired server certificate.
    let expired = ServerTls {
        ca_file: certs.ca.clone(),
        cert: certs.expired_server.clone(),
        require_client_cert: false,
    };
    let Some(broker) = start(kind, expired, false).await else {
        return;
    };
    refused_tls(&format!("{kind} expired"), &broker.url(), certs.client_tls(), "expired").await;
    drop(broker);

    // A certificate for another host, then the same with that name set.
    let other_host = ServerTls {
        ca_file: certs.ca.clone(),
        cert: certs.wrong_host_server.clone(),
        require_client_cert: false,
    };
    let Some(broker) = start(kind, other_host, false).await else {
        return;
    };
    refused_tls(
        &format!("{kind} wrong host"),
        &broker.url(),
        certs.client_tls(),
        "not valid for the host",
    )
    .await;
    let renamed = certs.client_tls().with_server_name("other.invalid");
    match (kind, connect(&broker.url(), renamed).await) {
        (BackendKind::Redis | BackendKind::Kafka, Err(Error::Unsupported { .. })) => pubsub::testkit::report(&format!(
            "UNSUPPORTED {kind} tls_server_name: the client library checks the host it connects to"
        )),
        (_, Ok(backend)) => backend.close().await.unwrap(),
        (_, Err(e)) => panic!("{kind}: the server name override did not connect: {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls() {
    tls_suite(BackendKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_tls() {
    tls_suite(BackendKind::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls() {
    tls_suite(BackendKind::Mqtt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_over_tls() {
    tls_suite(BackendKind::Kafka).await;
}

/// TLS settings never print a key's contents, and a half-set client
/// identity is refused before connecting.
#[tokio::test]
async fn tls_settings_are_checked_before_connecting() {
    let certs = TestCertificates::generate().expect("test certificates");
    let key = std::fs::read_to_string(&certs.client.key).unwrap();
    let config = BackendConfig::from_url("tls://127.0.0.1:1")
        .unwrap()
        .with_tls(certs.mutual_tls())
        .unwrap();
    let body = key.lines().nth(1).unwrap();
    assert!(!format!("{config:?}").contains(body), "a key's contents in Debug");
    let mut only_cert = TlsConfig::default();
    only_cert.cert_file = Some(certs.client.cert.clone());
    let half = BackendConfig::from_url("rediss://127.0.0.1:1")
        .unwrap()
        .with_tls(only_cert)
        .unwrap();
    match half.connect().await {
        Err(Error::InvalidConfiguration(m)) => assert!(m.contains("no key file"), "{m}"),
        other => panic!("expected InvalidConfiguration, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        BackendConfig::from_url("nats://127.0.0.1:4222")
            .unwrap()
            .with_sasl("PLAIN", "u", Secret::new("p")),
        Err(Error::Unsupported { .. })
    ));
    let oauth = BackendConfig::from_url("kafka://127.0.0.1:1")
        .unwrap()
        .with_sasl("OAUTHBEARER", "u", Secret::new("p"))
        .unwrap();
    assert!(matches!(oauth.connect().await, Err(Error::Unsupported { .. })));
}

/// A NATS server with one user per way of logging in that
/// `BackendConfig`'s URL cannot express: NKey and token. The right key
/// connects, a wrong one is `Error::Authentication` without the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_nkey_and_token_logins() {
    use pubsub::nats::{NatsBackend, NatsConfig};

    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let conf_dir = tempfile::tempdir().unwrap();
    let nkey_conf = conf_dir.path().join("nkey.conf");
    let nkey_users = format!(
        "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
        user.public_key()
    );
    std::fs::write(&nkey_conf, nkey_users).unwrap();
    let conf = nkey_conf.display().to_string();
    let Some(broker) = start_with_args(BackendKind::Nats, &["-c", &conf]).await else {
        return;
    };
    let url = broker.url();
    let backend = NatsBackend::connect(NatsConfig::new(&url).with_nkey(Secret::new(seed.clone())))
        .await
        .expect("the NKey logs in");
    pubsub::PubSubBackend::close(&backend).await.unwrap();
    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    match NatsBackend::connect(NatsConfig::new(&url).with_nkey(Secret::new(stranger.clone()))).await {
        Err(e @ Error::Authentication { .. }) => assert!(!format!("{e} {e:?}").contains(&stranger)),
        other => panic!(
            "an unknown NKey: expected Error::Authentication, got {:?}",
            other.map(|_| ())
        ),
    }
    drop(broker);

    let token_conf = conf_dir.path().join("token.conf");
    std::fs::write(&token_conf, "authorization { token: \"t0ken-s3cret\" }\n").unwrap();
    let conf = token_conf.display().to_string();
    let Some(broker) = start_with_args(BackendKind::Nats, &["-c", &conf]).await else {
        return;
    };
    let port = broker.port();
    // In the URL, as NATS_URL carries it, and through the config.
    let backend = pubsub::connect(&format!("nats://t0ken-s3cret@127.0.0.1:{port}"))
        .await
        .expect("the token in the URL logs in");
    backend.close().await.unwrap();
    let backend = NatsBackend::connect(NatsConfig::new(broker.url()).with_token(Secret::new("t0ken-s3cret")))
        .await
        .expect("the token logs in");
    pubsub::PubSubBackend::close(&backend).await.unwrap();
    match pubsub::connect(&format!("nats://wrong-t0ken@127.0.0.1:{port}")).await {
        Err(e @ Error::Authentication { .. }) => assert!(!format!("{e} {e:?}").contains("wrong-t0ken"), "{e:?}"),
        other => panic!(
            "a wrong token: expected Error::Authentication, got {:?}",
            other.map(|_| ())
        ),
    }
}

async fn start_with_args(kind: BackendKind, args: &[&str]) -> Option<TestBroker> {
    match TestBroker::start_with_args(kind, args).await {
        Ok(b) => Some(b),
        Err(e) => {
            pubsub::testkit::broker_unavailable(&format!("{kind} test broker"), &e);
            None
        }
    }
}
