//! Compressed messages cross between the SDK and the official Python client
//! (`pulsar-client`, in the venv scripts/brokers.sh makes at
//! `target/pyenv`), both ways, with the Pulsar codecs LZ4, ZLIB, ZSTD and
//! Snappy. Runs against the broker `PULSAR_URL` names, Apache Pulsar
//! standalone on 6652 (admin 8082) by default, as tests/conformance.rs.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use pubsub_core::{
    testkit, Compression, ConsumerOptions, InitialPosition, OutgoingMessage, ProducerOptions, PubSubBackend, Topic,
};
use pubsub_pulsar::{PulsarBackend, PulsarConfig};

/// The admin URL the tests use, if any (Apache Pulsar's; pulsar-lite has none).
fn admin_url() -> Option<String> {
    match std::env::var("PULSAR_URL") {
        Ok(_) => std::env::var("PULSAR_ADMIN_URL").ok(),
        Err(_) => Some("http://127.0.0.1:8082".into()),
    }
}

/// The broker's URL (without our `?broker=` hint, for the Python client) and a backend on it.
async fn backend(test: &str) -> Option<(String, PulsarBackend)> {
    let (url, admin) = match std::env::var("PULSAR_URL") {
        Ok(url) => (url, std::env::var("PULSAR_ADMIN_URL").ok()),
        Err(_) => ("pulsar://127.0.0.1:6652".into(), Some("http://127.0.0.1:8082".into())),
    };
    let mut config = PulsarConfig::new(url.clone());
    if let Some(admin) = admin {
        config = config.with_admin_url(admin);
    }
    match PulsarBackend::connect(config).await {
        Ok(b) => Some((url.split('?').next().unwrap_or_default().to_string(), b)),
        Err(e) => {
            testkit::broker_unavailable(test, &e);
            None
        }
    }
}

fn python() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv/bin/python");
    let ok = Command::new(&p)
        .args(["-c", "import pulsar"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        testkit::broker_unavailable("pulsar compression interop", &"no target/pyenv with pulsar-client");
    }
    ok.then_some(p)
}

/// A topic in a namespace of its own, and its Pulsar name.
fn unique(queue: &str) -> (Topic, String) {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let topic: Topic = format!("q1/compress/n{n}/{queue}").parse().unwrap();
    (topic, format!("persistent://compress/n{n}/{queue}"))
}

/// Every codec the SDK claims on Pulsar, with the Python client's name of
/// it and the broker's (the admin API's `X-Pulsar-compression`). Snappy
/// both ways only since the patch of the pulsar crate (it wrote and read
/// the framed format: patches/pulsar/PATCHED.md).
const CODECS: [(Compression, &str, &str); 4] = [
    (Compression::Gzip, "ZLib", "ZLIB"),
    (Compression::Lz4, "LZ4", "LZ4"),
    (Compression::Zstd, "ZSTD", "ZSTD"),
    (Compression::Snappy, "SNAPPY", "SNAPPY"),
];

/// Prints the codec the broker stored the topic's first message with
/// (`X-Pulsar-compression` of the admin API's examinemessage; absent: NONE).
const EXAMINE: &str = r#"
import sys, urllib.request
admin, topic = sys.argv[1], sys.argv[2].replace("persistent://", "")
url = "%s/admin/v2/persistent/%s/examinemessage?initialPosition=earliest&messagePosition=1" % (admin, topic)
r = urllib.request.urlopen(url, timeout=10)
print("CODEC|%s" % r.headers.get("X-Pulsar-compression", "NONE"))
"#;

/// Messages per direction and codec: several, so that a batch is compressed.
const N: usize = 5;

/// A compressible payload.
fn compressible(from: &str, i: usize) -> String {
    format!("{i} {}", format!("{from} ").repeat(40))
}

/// Sends `N` messages with a codec, batched (the client's default) and
/// then one more on its own, unbatched.
const PRODUCE: &str = r#"
import sys, pulsar
url, topic, codec, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = pulsar.Client(url)
for batched, ids in ((True, range(n - 1)), (False, [n - 1])):
    p = c.create_producer(topic, compression_type=getattr(pulsar.CompressionType, codec),
                          batching_enabled=batched, batching_max_publish_delay_ms=50)
    for i in ids:
        payload = ("%d " % i) + "pulsar-client " * 40
        p.send_async(payload.encode(), None, properties={"codec": codec}, partition_key="k-%d" % i)
    p.flush()
    p.close()
c.close()
"#;

/// Reads `N` messages from the start and prints each as `MSG|payload|key|codec property`.
const CONSUME: &str = r#"
import sys, pulsar
url, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = pulsar.Client(url)
consumer = c.subscribe(topic, "python", initial_position=pulsar.InitialPosition.Earliest)
for _ in range(n):
    m = consumer.receive(20000)
    consumer.acknowledge(m)
    print("MSG|%s|%s|%s" % (m.data().decode(), m.partition_key(), m.properties().get("codec")))
c.close()
"#;

/// pulsar-client sends with each codec, batched and not; the SDK reads
/// every message with its key and properties. Before the pulsar crate's
/// `compression` feature, an LZ4 message stayed in the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_by_pulsar_client_read_by_sdk() {
    let Some((url, backend)) = backend("pulsar compression python->sdk").await else {
        return;
    };
    let Some(py) = python() else {
        return;
    };
    let codecs: Vec<Compression> = CODECS.iter().map(|c| c.0).collect();
    assert_eq!(backend.capabilities().compression, &codecs[..]);
    let mut failed = Vec::new();
    for (codec, py_name, _) in CODECS {
        let (topic, name) = unique(&format!("from-python-{codec}"));
        let opts = ConsumerOptions::default().with_initial_position(InitialPosition::Earliest);
        let c = backend.create_consumer(&topic, "sdk", opts).await.unwrap();
        let (py, url) = (py.clone(), url.clone());
        let out = tokio::task::spawn_blocking(move || {
            Command::new(py)
                .args(["-c", PRODUCE, &url, &name, py_name, &N.to_string()])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{codec}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut got = Vec::new();
        while got.len() < N {
            match c.receive_timeout(Duration::from_secs(10)).await {
                Ok(m) => {
                    assert_eq!(m.property("codec"), Some(py_name), "{codec}");
                    got.push((
                        String::from_utf8(m.payload().to_vec()).unwrap(),
                        m.key().unwrap().to_string(),
                    ));
                    m.ack().await.unwrap();
                }
                Err(e) => {
                    failed.push(format!("{codec}: {} of {N} messages, then {e}", got.len()));
                    break;
                }
            }
        }
        if got.len() == N {
            got.sort();
            let want: Vec<_> = (0..N)
                .map(|i| (compressible("pulsar-client", i), format!("k-{i}")))
                .collect();
            assert_eq!(got, want, "{codec}");
        }
        c.close().await.unwrap();
    }
    assert!(failed.is_empty(), "{failed:?}");
}

/// The SDK compresses with each codec; pulsar-client reads every message
/// with its key and properties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_by_sdk_read_by_pulsar_client() {
    let Some((url, backend)) = backend("pulsar compression sdk->python").await else {
        return;
    };
    let Some(py) = python() else {
        return;
    };
    let mut failed = Vec::new();
    for (codec, _, stored) in CODECS {
        let (topic, name) = unique(&format!("to-python-{codec}"));
        let p = backend
            .create_producer(&topic, ProducerOptions::default().with_compression(codec))
            .await
            .unwrap();
        let batch = (0..N)
            .map(|i| {
                OutgoingMessage::new(compressible("sdk", i))
                    .with_key(format!("k-{i}"))
                    .with_property("codec", codec.to_string())
            })
            .collect();
        p.send_batch(batch).await.unwrap();
        // Compressed on the wire, not only readable: what the broker stored.
        if let Some(admin) = admin_url() {
            let out = Command::new(&py).args(["-c", EXAMINE, &admin, &name]).output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains(&format!("CODEC|{stored}")),
                "{codec}: the broker stored {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let (py, url) = (py.clone(), url.clone());
        let out = tokio::task::spawn_blocking(move || {
            Command::new(py)
                .args(["-c", CONSUME, &url, &name, &N.to_string()])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut got: Vec<&str> = stdout.lines().filter(|l| l.starts_with("MSG|")).collect();
        got.sort();
        let want: Vec<String> = (0..N)
            .map(|i| format!("MSG|{}|k-{i}|{codec}", compressible("sdk", i)))
            .collect();
        if got != want {
            failed.push(format!(
                "{codec}: pulsar-client read {got:?} (exit {:?}): {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .rev()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
        }
        p.close().await.unwrap();
    }
    assert!(failed.is_empty(), "{failed:?}");
}
