//! TLS against the real Apache Pulsar standalone of scripts/brokers.sh: its
//! TLS port `pulsar+ssl://127.0.0.1:6653` (`PULSAR_APACHE_TLS_URL`) with
//! the throw-away certificates the script makes in target/brokers/tls/
//! (`PULSAR_TLS_DIR`), admin HTTP on 8082 (`PULSAR_APACHE_ADMIN_URL`). The
//! broker requires a client certificate from its CA on that port
//! (`tlsRequireTrustedClientCertOnConnect`), so the conformance cases run
//! over mutual TLS; a server certificate from another CA, no client
//! certificate and a client certificate from another CA are each refused
//! with `Error::Tls`, fast and not retriable.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pubsub_core::{Error, PubSubBackend, TlsConfig};
use pubsub_pulsar::{PulsarBackend, PulsarConfig};

/// Conformance cases run over mutual TLS.
const CASES: [&str; 4] = [
    "publish_subscribe_1000",
    "ack_prevents_redelivery",
    "nack_redelivers_with_higher_count",
    "payload_at_the_limit",
];

fn url() -> String {
    std::env::var("PULSAR_APACHE_TLS_URL").unwrap_or_else(|_| "pulsar+ssl://127.0.0.1:6653".into())
}

fn admin_url() -> String {
    std::env::var("PULSAR_APACHE_ADMIN_URL").unwrap_or_else(|_| "http://127.0.0.1:8082".into())
}

/// The certificates of scripts/brokers.sh (`make_test_certificates`).
struct Certs(PathBuf);

impl Certs {
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The broker's CA and a client certificate it trusts.
    fn mutual(&self) -> TlsConfig {
        self.ca_only()
            .with_client_auth(self.file("client.pem"), self.file("client.key"))
    }

    /// The broker's CA, no client certificate.
    fn ca_only(&self) -> TlsConfig {
        TlsConfig::default().with_ca_file(self.file("ca.pem"))
    }
}

/// The certificates, when the TLS port answers; `None` (reported as a
/// skip, a failure under CI) when the broker or its certificates are missing.
async fn tls_broker(test: &str) -> Option<Certs> {
    let dir = std::env::var("PULSAR_TLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/brokers/tls"));
    if !dir.join("other-client.key").exists() {
        let why = format!(
            "no test certificates in {} (scripts/brokers.sh makes them)",
            dir.display()
        );
        pubsub_core::testkit::broker_unavailable(test, &why);
        return None;
    }
    let addr = url()
        .trim_start_matches("pulsar+ssl://")
        .trim_end_matches('/')
        .to_string();
    match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr.as_str())).await {
        Ok(Ok(_)) => Some(Certs(dir)),
        Ok(Err(e)) => {
            pubsub_core::testkit::broker_unavailable(test, &format!("Apache Pulsar TLS port {addr}: {e}"));
            None
        }
        Err(_) => {
            pubsub_core::testkit::broker_unavailable(test, &format!("Apache Pulsar TLS port {addr}: no answer"));
            None
        }
    }
}

fn config(tls: TlsConfig) -> PulsarConfig {
    PulsarConfig::new(url())
        .with_admin_url(admin_url())
        .with_tls(tls)
        .with_timeout(Duration::from_secs(10))
}

async fn connect(tls: TlsConfig) -> pubsub_core::Result<Arc<dyn PubSubBackend>> {
    Ok(Arc::new(PulsarBackend::connect(config(tls)).await?))
}

/// Connecting with `tls` must fail at once with `Error::Tls` whose text says `why`.
async fn refused_tls(what: &str, tls: TlsConfig, why: &str) {
    let started = Instant::now();
    match connect(tls).await {
        Ok(_) => panic!("{what}: connected"),
        Err(e @ Error::Tls { .. }) => {
            let text = e.to_string();
            assert!(text.contains(why), "{what}: {text}");
            assert!(!e.is_retriable(), "{what}: a TLS refusal is not retriable");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{what}: took {:?}, not refused at once",
                started.elapsed()
            );
        }
        Err(other) => panic!("{what}: expected Error::Tls ({why}), got {other:?}"),
    }
}

/// The basic cases, over `pulsar+ssl://` with the CA and a client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_cases_over_mutual_tls() {
    let Some(certs) = tls_broker("pulsar TLS conformance").await else {
        return;
    };
    // Connecting must work: a TLS error here is a failure, not a skip.
    let backend = connect(certs.mutual()).await.expect("connect over mutual TLS");
    backend.close().await.unwrap();
    for case in CASES {
        let (first, second) = (certs.mutual(), certs.mutual());
        pubsub_core::testkit::run_case_with(
            case,
            move || connect(first),
            Some(move || async move { connect(second).await }),
        )
        .await;
    }
}

/// A `pulsar://` URL with TLS settings connects as `pulsar+ssl://`, and a
/// bare `host:port` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_settings_turn_tls_on() {
    let Some(certs) = tls_broker("pulsar TLS settings").await else {
        return;
    };
    let plain_url = url().replace("pulsar+ssl://", "pulsar://");
    let bare = url().replace("pulsar+ssl://", "");
    for u in [plain_url, bare] {
        let cfg = PulsarConfig::new(u.clone())
            .with_admin_url(admin_url())
            .with_tls(certs.mutual());
        let backend = PulsarBackend::connect(cfg).await.unwrap_or_else(|e| panic!("{u}: {e}"));
        backend.close().await.unwrap();
    }
}

/// Trusting another CA: the broker's certificate is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_from_another_ca_is_refused() {
    let Some(certs) = tls_broker("pulsar TLS other CA").await else {
        return;
    };
    let other = TlsConfig::default()
        .with_ca_file(certs.file("other-ca.pem"))
        .with_client_auth(certs.file("client.pem"), certs.file("client.key"));
    refused_tls("other CA", other, "not signed by a trusted CA").await;
}

/// The broker requires a client certificate from its CA: none, or one from
/// another CA, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_untrusted_client_certificate_is_refused() {
    let Some(certs) = tls_broker("pulsar TLS client certificate").await else {
        return;
    };
    refused_tls(
        "no client certificate",
        certs.ca_only(),
        "requires a client certificate",
    )
    .await;
    let untrusted = certs
        .ca_only()
        .with_client_auth(certs.file("other-client.pem"), certs.file("other-client.key"));
    refused_tls(
        "untrusted client certificate",
        untrusted,
        "refuse the client certificate",
    )
    .await;
}

/// The crate checks the certificate against the URL's host: a server name
/// override is refused up front, not ignored.
#[tokio::test]
async fn server_name_override_is_unsupported() {
    let tls = TlsConfig::default().with_server_name("broker.internal");
    match PulsarBackend::connect(PulsarConfig::new("pulsar+ssl://127.0.0.1:1").with_tls(tls)).await {
        Err(Error::Unsupported { .. }) => {}
        other => panic!("expected Error::Unsupported, got {other:?}"),
    }
}

/// Unusable client identities are refused before connecting, naming the file.
#[tokio::test]
async fn unusable_client_identity_is_invalid_configuration() {
    let dir = std::env::temp_dir().join(format!("pubsub-pulsar-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("client.pem");
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
    let pkcs1 = dir.join("client.rsa.key");
    std::fs::write(
        &pkcs1,
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n",
    )
    .unwrap();
    let unreachable = |tls: TlsConfig| PulsarConfig::new("pulsar+ssl://127.0.0.1:1").with_tls(tls);

    let mut half = TlsConfig::default();
    half.cert_file = Some(cert.clone());
    let missing = TlsConfig::default().with_client_auth(&cert, dir.join("missing.key"));
    let not_pkcs8 = TlsConfig::default().with_client_auth(&cert, &pkcs1);
    let not_a_cert = TlsConfig::default().with_ca_file(&pkcs1);
    for (what, tls, says) in [
        ("half an identity", half, "no key file"),
        ("missing key file", missing, "missing.key"),
        ("PKCS#1 key", not_pkcs8, "not PKCS#8"),
        ("CA file without a certificate", not_a_cert, "holds no PEM certificate"),
    ] {
        match PulsarBackend::connect(unreachable(tls)).await {
            Err(e @ Error::InvalidConfiguration(_)) => assert!(e.to_string().contains(says), "{what}: {e}"),
            other => panic!("{what}: expected Error::InvalidConfiguration, got {other:?}"),
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// TLS settings are printed (paths), and turn TLS on.
#[test]
fn tls_settings_are_printed() {
    let cfg = PulsarConfig::new("127.0.0.1:6653").with_tls(TlsConfig::default().with_ca_file("/x/ca.pem"));
    assert!(cfg.uses_tls());
    assert!(format!("{cfg:?}").contains("/x/ca.pem"));
    assert!(!PulsarConfig::new("127.0.0.1:6652").uses_tls());
    assert!(PulsarConfig::new("pulsar+ssl://127.0.0.1:6653").uses_tls());
}

/// The broker's certificate names `localhost` and `127.0.0.1`; reached as
/// `127.0.0.2` (a plain TCP relay to the TLS port, so the handshake is the
/// broker's own), the name does not match and the connection is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_for_another_host_is_refused() {
    let Some(certs) = tls_broker("pulsar TLS wrong host").await else {
        return;
    };
    let target = url()
        .trim_start_matches("pulsar+ssl://")
        .trim_end_matches('/')
        .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let port = listener.local_addr().unwrap().port();
    let relay = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target.as_str()).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    let cfg = PulsarConfig::new(format!("pulsar+ssl://127.0.0.2:{port}"))
        .with_tls(certs.mutual())
        .with_timeout(Duration::from_secs(10));
    match PulsarBackend::connect(cfg).await {
        Ok(_) => panic!("a certificate for another host was accepted"),
        Err(e @ Error::Tls { .. }) => assert!(!e.is_retriable(), "{e}"),
        Err(other) => panic!("expected Error::Tls, got {other:?}"),
    }
    relay.abort();
}

/// The test broker checks tokens signed with its throw-away key
/// (scripts/pulsar/standalone.conf): a token signed with it logs in, one
/// signed with another key is `Error::Authentication`, without the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_by_another_key_is_refused() {
    // HS256 tokens for {"sub":"app"}: with the broker's test key, and with another.
    const GOOD: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhcHAifQ.JBDevFG_XC4OQhQ8lijMjniIM8qyIKKSAHuJLJwEeJc";
    const FORGED: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhcHAifQ.2tb_jSXu6NUx9lDy5bTjTh0drOEmBDUEEDZe4iBdM6g";
    let Some(certs) = tls_broker("pulsar token").await else {
        return;
    };
    let with_token = |token: &str| {
        config(certs.mutual())
            .with_token(pubsub_core::Secret::new(token))
            .with_timeout(Duration::from_secs(10))
    };
    let backend = PulsarBackend::connect(with_token(GOOD))
        .await
        .expect("the broker's token logs in");
    backend.close().await.unwrap();
    let started = Instant::now();
    match PulsarBackend::connect(with_token(FORGED)).await {
        Ok(_) => panic!("a token signed by another key was accepted"),
        Err(e @ Error::Authentication { .. }) => {
            let text = format!("{e} {e:?}");
            assert!(
                !text.contains(FORGED) && !text.contains("2tb_jSXu"),
                "the token shows: {text}"
            );
            assert!(!e.is_retriable());
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "took {:?}",
                started.elapsed()
            );
        }
        Err(other) => panic!("expected Error::Authentication, got {other:?}"),
    }
}
