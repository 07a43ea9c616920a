//! NATS `.creds` file logins against a nats-server in operator
//! (decentralized JWT) mode: an operator, an account with JetStream and a
//! user are made here (NKeys, JWTs signed the nats-io/jwt v2 way), the
//! server trusts the operator and has the account preloaded in a memory
//! resolver. The user's `.creds` file logs in and a q1 round trip works;
//! a user of an account the server does not know is refused as
//! `Error::Authentication` without the seed; a missing file is
//! `Error::InvalidConfiguration` naming it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPair;
use pubsub::nats::{NatsBackend, NatsConfig};
use pubsub::testing::TestBroker;
use pubsub::{BackendKind, Error, OutgoingMessage, PubSubBackend, Topic};
use serde_json::{json, Value};
use sha2::{Digest, Sha512_256};

/// A JWT for `subject` signed by `issuer`, as nats-io/jwt v2 encodes it:
/// base64url (no padding) header and claims, the issuer's ed25519
/// signature over `header.claims`; the jti is the base32 SHA-512/256 of
/// the claims without it.
fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let iat = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut claims = json!({
        "iat": iat,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let jti = BASE32_NOPAD.encode(&Sha512_256::digest(claims.to_string().as_bytes()));
    claims["jti"] = Value::String(jti);
    let header = json!({ "typ": "JWT", "alg": "ed25519-nkey" });
    let signed = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(header.to_string().as_bytes()),
        BASE64URL_NOPAD.encode(claims.to_string().as_bytes())
    );
    let signature = issuer.sign(signed.as_bytes()).expect("sign the JWT");
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature))
}

/// An account JWT signed by `operator`, without limits; with JetStream
/// (unlimited storage, streams and consumers) if `jetstream`.
fn account_jwt(operator: &KeyPair, account: &KeyPair, name: &str, jetstream: bool) -> String {
    let mut limits = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
    });
    if jetstream {
        for key in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits[key] = json!(-1);
        }
    }
    let nats = json!({
        "type": "account",
        "version": 2,
        "limits": limits,
        "default_permissions": { "pub": {}, "sub": {} },
    });
    jwt(operator, &account.public_key(), name, nats)
}

/// A user JWT signed by `account`, allowed everything.
fn user_jwt(account: &KeyPair, user: &KeyPair) -> String {
    let nats = json!({
        "type": "user",
        "version": 2,
        "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
    });
    jwt(account, &user.public_key(), "app", nats)
}

/// Writes a `.creds` file (the user JWT and seed, as `nsc` writes them).
fn write_creds(path: &Path, user_jwt: &str, seed: &str) -> PathBuf {
    let text = format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    );
    std::fs::write(path, text).expect("write the .creds file");
    path.to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creds_file_logs_in_to_an_operator_mode_server() {
    let dir = tempfile::tempdir().unwrap();
    let operator = KeyPair::new_operator();
    // nats-server 2.9 will not start JetStream in operator mode without a
    // system account ("system account not setup"), nor with JetStream
    // enabled on that account: it gets none.
    let system = KeyPair::new_account();
    let account = KeyPair::new_account();
    let user = KeyPair::new_user();
    let seed = user.seed().unwrap();

    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "test-operator",
        json!({ "type": "operator", "version": 2, "system_account": system.public_key() }),
    );
    let conf = dir.path().join("operator.conf");
    std::fs::write(
        &conf,
        format!(
            "operator: {operator_jwt}\n\
             system_account: {system}\n\
             resolver: MEMORY\n\
             resolver_preload: {{\n  {system}: {system_jwt}\n  {account}: {account_jwt}\n}}\n",
            system = system.public_key(),
            system_jwt = account_jwt(&operator, &system, "SYS", false),
            account = account.public_key(),
            account_jwt = account_jwt(&operator, &account, "app-account", true),
        ),
    )
    .unwrap();
    // JetStream comes from TestBroker's `-js -sd <its data dir>` (a
    // `store_dir` here too is refused as a duplicate).
    let conf = conf.display().to_string();
    let broker = match TestBroker::start_with_args(BackendKind::Nats, &["-c", &conf]).await {
        Ok(b) => b,
        Err(e) => {
            pubsub::testkit::broker_unavailable("nats operator-mode test broker", &e);
            return;
        }
    };
    let url = broker.url();

    // The user's .creds file logs in; a q1 round trip over JetStream.
    let creds = write_creds(&dir.path().join("app.creds"), &user_jwt(&account, &user), &seed);
    let backend = match NatsBackend::connect(NatsConfig::new(&url).with_credentials_file(&creds)).await {
        Ok(b) => b,
        Err(e) => panic!("the .creds file did not log in: {e:?}\nserver log:\n{}", broker.logs()),
    };
    let topic: Topic = "q1/creds/test/jobs".parse().unwrap();
    let consumer = backend.create_consumer(&topic, "s", Default::default()).await.unwrap();
    let producer = backend.create_producer(&topic, Default::default()).await.unwrap();
    for i in 0..10u8 {
        producer.send(OutgoingMessage::new(vec![i])).await.unwrap();
    }
    let mut received = Vec::new();
    for _ in 0..10 {
        let m = consumer.receive_timeout(Duration::from_secs(10)).await.unwrap();
        received.push(m.payload()[0]);
        m.ack().await.unwrap();
    }
    received.sort_unstable();
    assert_eq!(received, (0..10u8).collect::<Vec<_>>());
    backend.close().await.unwrap();

    // A user of an account the server does not know (signed by another
    // account key) is refused, and the error does not show its seed.
    let stranger_account = KeyPair::new_account();
    let stranger = KeyPair::new_user();
    let stranger_seed = stranger.seed().unwrap();
    let stranger_creds = write_creds(
        &dir.path().join("stranger.creds"),
        &user_jwt(&stranger_account, &stranger),
        &stranger_seed,
    );
    match NatsBackend::connect(NatsConfig::new(&url).with_credentials_file(&stranger_creds)).await {
        Err(e @ Error::Authentication { .. }) => {
            let text = format!("{e} {e:?}");
            assert!(!text.contains(&stranger_seed), "the seed shows: {text}");
            assert!(!e.is_retriable(), "a refused login is not retriable");
        }
        other => panic!(
            "an unknown account's user: expected Error::Authentication, got {:?}",
            other.map(|_| ())
        ),
    }

    // A missing file is a configuration error naming it.
    let missing = dir.path().join("no-such.creds");
    match NatsBackend::connect(NatsConfig::new(&url).with_credentials_file(&missing)).await {
        Err(Error::InvalidConfiguration(message)) => {
            assert!(message.contains(&missing.display().to_string()), "{message}")
        }
        other => panic!(
            "a missing .creds file: expected Error::InvalidConfiguration, got {:?}",
            other.map(|_| ())
        ),
    }
}
