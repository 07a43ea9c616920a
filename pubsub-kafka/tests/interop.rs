//! Messages cross between the SDK and an independent Kafka client (Python
//! `confluent-kafka`, in the venv `scripts/brokers.sh` makes at
//! `target/pyenv`), with key and headers, both ways; and typed messages
//! default to Avro here.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use pubsub_core::{
    testkit, Compression, ConsumerOptions, OutgoingMessage, ProducerExt, ProducerOptions, PubSubBackend, Topic,
};
use pubsub_kafka::{KafkaBackend, KafkaConfig};

fn servers() -> String {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn python() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv/bin/python");
    let ok = Command::new(&p)
        .args(["-c", "import confluent_kafka"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(p)
}

async fn backend(test: &str) -> Option<KafkaBackend> {
    match KafkaBackend::connect(KafkaConfig::new(servers()).with_timeout(Duration::from_secs(5))).await {
        Ok(b) => Some(b),
        Err(e) => {
            testkit::broker_unavailable(test, &e);
            None
        }
    }
}

fn unique(queue: &str) -> Topic {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("q1/interop/n{n}/{queue}").parse().unwrap()
}

const CONSUME: &str = r#"
import json, sys
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[3], "auto.offset.reset": "earliest"})
c.subscribe([sys.argv[2]])
for _ in range(60):
    m = c.poll(0.5)
    if m is None or m.error():
        continue
    print(json.dumps({"payload": m.value().decode(), "key": m.key().decode() if m.key() else None,
                      "headers": {k: v.decode() for k, v in (m.headers() or [])}}))
    break
c.close()
"#;

const PRODUCE: &str = r#"
import sys
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": sys.argv[1]})
p.produce(sys.argv[2], value=b"from confluent-kafka", key=b"k-py", headers=[("trace-id", b"py-1"), ("content-type", b"text/plain")])
assert p.flush(20) == 0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_to_confluent_kafka() {
    let Some(backend) = backend("kafka interop sdk->python").await else {
        return;
    };
    let Some(py) = python() else {
        return testkit::broker_unavailable(
            "kafka interop",
            &"no target/pyenv with confluent-kafka (scripts/brokers.sh makes it)",
        );
    };
    let topic = unique("to-python");
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    p.send(
        OutgoingMessage::new("from the sdk")
            .with_key("k-sdk")
            .with_property("trace-id", "sdk-1"),
    )
    .await
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .args(["-c", CONSUME, &servers(), &topic.joined("."), "py-reader"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        r#""payload": "from the sdk""#,
        r#""key": "k-sdk""#,
        r#""trace-id": "sdk-1""#,
    ] {
        assert!(
            line.contains(expected),
            "confluent-kafka read {line}, lacking {expected}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_to_sdk() {
    let Some(backend) = backend("kafka interop python->sdk").await else {
        return;
    };
    let Some(py) = python() else {
        return testkit::broker_unavailable(
            "kafka interop",
            &"no target/pyenv with confluent-kafka (scripts/brokers.sh makes it)",
        );
    };
    let topic = unique("from-python");
    let c = backend
        .create_consumer(&topic, "sdk-reader", ConsumerOptions::default())
        .await
        .unwrap();
    let name = topic.joined(".");
    let status = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .args(["-c", PRODUCE, &servers(), &name])
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(status.success());
    let m = c.receive_timeout(Duration::from_secs(20)).await.unwrap();
    assert_eq!(m.payload().as_ref(), b"from confluent-kafka");
    assert_eq!(m.key(), Some("k-py"));
    assert_eq!(m.property("trace-id"), Some("py-1"));
    assert_eq!(m.content_type(), Some("text/plain"));
    m.ack().await.unwrap();
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_messages_default_to_avro() {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, apache_avro::AvroSchema)]
    struct Reading {
        sensor: String,
        value: f64,
    }
    let Some(backend) = backend("kafka avro default").await else {
        return;
    };
    let codec = backend.capabilities().default_codec;
    assert_eq!(codec, pubsub_core::codec::CodecKind::Avro);
    let topic = unique("avro");
    let c = backend
        .create_consumer(&topic, "s", ConsumerOptions::default())
        .await
        .unwrap();
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    let v = Reading {
        sensor: "t1".into(),
        value: 21.5,
    };
    p.send_encoded(&codec, &v).await.unwrap();
    let m = c.receive_timeout(Duration::from_secs(20)).await.unwrap();
    assert_eq!(m.content_type(), Some(pubsub_core::codec::AVRO_CONTENT_TYPE));
    assert_eq!(&m.payload()[..2], &[0xC3, 0x01], "single object encoding");
    assert_eq!(m.decode::<Reading, _>(&codec).unwrap(), v);
    m.ack().await.unwrap();
    c.close().await.unwrap();
}

/// Every codec a Kafka client meets, both ways.
const CODECS: [Compression; 4] = [
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// Records per direction and codec: several, so that a batch is compressed.
const COMPRESSED: usize = 5;

/// A compressible payload (a batch of them shrinks, whatever the codec).
fn compressible(from: &str, i: usize) -> String {
    format!("{i} {}", format!("{from} ").repeat(40))
}

const PRODUCE_COMPRESSED: &str = r#"
import sys
from confluent_kafka import Producer
servers, topic, codec, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
p = Producer({"bootstrap.servers": servers, "compression.type": codec, "linger.ms": 50})
for i in range(n):
    payload = ("%d " % i) + "confluent-kafka " * 40
    p.produce(topic, value=payload.encode(), key=("k-%d" % i).encode(), headers=[("codec", codec.encode())])
assert p.flush(20) == 0
"#;

const CONSUME_MANY: &str = r#"
import json, sys
from confluent_kafka import Consumer
servers, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": servers, "group.id": "py-" + topic, "auto.offset.reset": "earliest"})
c.subscribe([topic])
got = 0
for _ in range(80):
    m = c.poll(0.5)
    if m is None:
        continue
    if m.error():
        print("ERROR", m.error(), file=sys.stderr)
        continue
    print(json.dumps({"payload": m.value().decode(), "key": m.key().decode() if m.key() else None,
                      "headers": {k: v.decode() for k, v in (m.headers() or [])}}))
    got += 1
    if got == n:
        break
c.close()
"#;

/// confluent-kafka produces batches with each codec; the SDK reads every
/// record with its key and headers (zstd needs rdkafka's `zstd` feature:
/// without it the consumer received nothing, and no error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_by_confluent_kafka_read_by_sdk() {
    let Some(backend) = backend("kafka compression python->sdk").await else {
        return;
    };
    let Some(py) = python() else {
        return testkit::broker_unavailable("kafka interop", &"no target/pyenv with confluent-kafka");
    };
    assert_eq!(backend.capabilities().compression, &CODECS[..]);
    for codec in CODECS {
        let topic = unique(&format!("from-python-{codec}"));
        let c = backend
            .create_consumer(&topic, "sdk-reader", ConsumerOptions::default())
            .await
            .unwrap();
        let (py, name) = (py.clone(), topic.joined("."));
        let out = tokio::task::spawn_blocking(move || {
            Command::new(py)
                .args([
                    "-c",
                    PRODUCE_COMPRESSED,
                    &servers(),
                    &name,
                    &codec.to_string(),
                    &COMPRESSED.to_string(),
                ])
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
        while got.len() < COMPRESSED {
            let m = c
                .receive_timeout(Duration::from_secs(20))
                .await
                .unwrap_or_else(|e| panic!("{codec}: {} of {COMPRESSED} records, then {e}", got.len()));
            assert_eq!(m.property("codec"), Some(codec.to_string().as_str()));
            got.push((
                String::from_utf8(m.payload().to_vec()).unwrap(),
                m.key().unwrap().to_string(),
            ));
            m.ack().await.unwrap();
        }
        got.sort();
        let want: Vec<_> = (0..COMPRESSED)
            .map(|i| (compressible("confluent-kafka", i), format!("k-{i}")))
            .collect();
        assert_eq!(got, want, "{codec}");
        c.close().await.unwrap();
    }
}

/// The SDK compresses with each codec; confluent-kafka reads every record
/// with its key and headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_by_sdk_read_by_confluent_kafka() {
    let Some(backend) = backend("kafka compression sdk->python").await else {
        return;
    };
    let Some(py) = python() else {
        return testkit::broker_unavailable("kafka interop", &"no target/pyenv with confluent-kafka");
    };
    for codec in CODECS {
        let topic = unique(&format!("to-python-{codec}"));
        let opts = ProducerOptions::default().with_compression(codec);
        let p = backend.create_producer(&topic, opts).await.unwrap();
        let batch = (0..COMPRESSED)
            .map(|i| {
                OutgoingMessage::new(compressible("sdk", i))
                    .with_key(format!("k-{i}"))
                    .with_property("codec", codec.to_string())
            })
            .collect();
        p.send_batch(batch).await.unwrap();
        let (py, name) = (py.clone(), topic.joined("."));
        let out = tokio::task::spawn_blocking(move || {
            Command::new(py)
                .args(["-c", CONSUME_MANY, &servers(), &name, &COMPRESSED.to_string()])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{codec}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with('{')).collect();
        assert_eq!(
            lines.len(),
            COMPRESSED,
            "{codec}: confluent-kafka read {stdout}; stderr {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for i in 0..COMPRESSED {
            let payload = format!(r#""payload": "{}""#, compressible("sdk", i));
            let key = format!(r#""key": "k-{i}""#);
            let header = format!(r#""codec": "{codec}""#);
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains(&payload) && l.contains(&key) && l.contains(&header)),
                "{codec}: record {i} missing from {stdout}"
            );
        }
        p.close().await.unwrap();
    }
}
