//! Messages cross between the SDK and an independent Redis client (Python
//! `redis`, redis-py, in the venv `scripts/brokers.sh` makes at
//! `target/pyenv`), both ways, using only what the README's "Wire format"
//! section documents: stream `pubsub:{tenant.namespace.queue}` with the
//! fields `pubsub.payload`, `pubsub.key` and one field per property (q1/q2),
//! and channel `pubsub:{tenant.namespace.queue}:q0` carrying a `PSE1`
//! envelope (q0), which the Python side encodes and decodes itself.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use pubsub_core::{testkit, ConsumerOptions, InitialPosition, OutgoingMessage, ProducerExt, PubSubBackend, Topic};
use pubsub_redis::{RedisBackend, RedisConfig};
use serde_json::Value;

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The backend and the venv's python with redis-py, or `None` after a
/// printed skip (a failure under `CI=true`).
async fn setup(test: &str) -> Option<(RedisBackend, PathBuf)> {
    let backend = match RedisBackend::connect(RedisConfig::new(url()).with_timeout(Duration::from_secs(3))).await {
        Ok(b) => b,
        Err(e) => {
            testkit::broker_unavailable(test, &e);
            return None;
        }
    };
    let py = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv/bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import redis"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        testkit::broker_unavailable(
            test,
            &"no target/pyenv with redis-py (scripts/brokers.sh makes it; or target/pyenv/bin/pip install redis)",
        );
        return None;
    }
    Some((backend, py))
}

fn unique(qos: &str, queue: &str) -> Topic {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{qos}/interop/n{n}/{queue}").parse().unwrap()
}

/// The README's key pattern, written out here rather than taken from the crate.
fn stream_key(topic: &Topic) -> String {
    format!("pubsub:{{{}.{}.{}}}", topic.tenant(), topic.namespace(), topic.queue())
}

/// Runs a Python snippet with `url key extra...`, returning its stdout's last line as JSON.
fn python(py: &PathBuf, script: &str, args: &[&str]) -> Value {
    let out = Command::new(py)
        .arg("-c")
        .arg(format!("{PRELUDE}{script}"))
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap()
}

/// Connection plus a PSE1 encoder/decoder written from the README alone.
const PRELUDE: &str = r#"
import json, struct, sys, redis
r = redis.Redis.from_url(sys.argv[1])
key = sys.argv[2]

def pse1_encode(payload, key=None, props={}):
    out = b"PSE1" + struct.pack("<I", len(props))
    for k, v in props.items():
        for s in (k.encode(), v.encode()):
            out += struct.pack("<I", len(s)) + s
    if key is None:
        out += struct.pack("<I", 0xFFFFFFFF)
    else:
        out += struct.pack("<I", len(key.encode())) + key.encode()
    return out + payload

def pse1_decode(b):
    assert b[:4] == b"PSE1", b[:4]
    pos = 4
    def u32():
        nonlocal pos
        (n,) = struct.unpack_from("<I", b, pos); pos += 4; return n
    def text(n):
        nonlocal pos
        s = b[pos:pos + n].decode(); pos += n; return s
    props = {}
    for _ in range(u32()):
        k = text(u32()); props[k] = text(u32())
    n = u32()
    k = None if n == 0xFFFFFFFF else text(n)
    return {"payload": b[pos:].decode(), "key": k, "properties": props}
"#;

/// A foreign consumer: its own consumer group, XREADGROUP, XACK.
const READ_GROUP: &str = r#"
try:
    r.xgroup_create(key, "py-readers", id="0", mkstream=True)
except redis.ResponseError as e:
    assert "BUSYGROUP" in str(e), e
got = r.xreadgroup("py-readers", "py-1", {key: ">"}, count=1, block=10000)
entry_id, fields = got[0][1][0]
r.xack(key, "py-readers", entry_id)
print(json.dumps({k.decode(): v.decode() for k, v in fields.items()}))
"#;

/// A foreign producer: XADD with the documented fields.
const XADD: &str = r#"
entry_id = r.xadd(key, {"pubsub.payload": b"from redis-py \xe2\x9c\x93", "pubsub.key": "k-py",
                        "trace-id": "py-1", "content-type": "text/plain"})
print(json.dumps(entry_id.decode()))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_to_redis_py_stream() {
    let Some((backend, py)) = setup("redis interop sdk->redis-py").await else {
        return;
    };
    let topic = unique("q1", "to-python");
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    p.send(
        OutgoingMessage::new("from the sdk")
            .with_key("user-7")
            .with_property("trace-id", "abc def"),
    )
    .await
    .unwrap();
    let key = stream_key(&topic);
    let fields = python(&py, READ_GROUP, &[&url(), &key]);
    assert_eq!(fields["pubsub.payload"], "from the sdk", "{fields}");
    assert_eq!(fields["pubsub.key"], "user-7", "{fields}");
    assert_eq!(fields["trace-id"], "abc def", "{fields}");
    assert_eq!(fields.as_object().unwrap().len(), 3, "no other fields: {fields}");
    // A typed send adds the codec's content type as an ordinary field.
    p.send_value(&serde_json::json!({"n": 1})).await.unwrap();
    let fields = python(&py, READ_GROUP, &[&url(), &key]);
    assert_eq!(fields["pubsub.payload"], r#"{"n":1}"#, "{fields}");
    assert_eq!(fields["content-type"], "application/json", "{fields}");
    assert!(fields.get("pubsub.key").is_none(), "no key, no field: {fields}");
    backend.admin().delete_topic(&topic).await.unwrap();
    backend.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_stream_to_sdk() {
    let Some((backend, py)) = setup("redis interop redis-py->sdk").await else {
        return;
    };
    let topic = unique("q1", "from-python");
    // No stream exists yet: the foreign XADD creates it, and an Earliest
    // subscription made afterwards starts at its beginning.
    let id = python(&py, XADD, &[&url(), &stream_key(&topic)]);
    let c = backend
        .create_consumer(
            &topic,
            "sdk",
            ConsumerOptions::default().with_initial_position(InitialPosition::Earliest),
        )
        .await
        .unwrap();
    let m = c.receive_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(m.payload().as_ref(), "from redis-py ✓".as_bytes());
    assert_eq!(m.key(), Some("k-py"));
    assert_eq!(m.property("trace-id"), Some("py-1"));
    assert_eq!(m.content_type(), Some("text/plain"));
    assert_eq!(
        m.properties().len(),
        2,
        "payload and key are not properties: {:?}",
        m.properties()
    );
    assert_eq!(
        m.id().to_string(),
        id.as_str().unwrap(),
        "the message id is the stream entry id"
    );
    m.ack().await.unwrap();
    c.close().await.unwrap();
    backend.admin().delete_topic(&topic).await.unwrap();
    backend.close().await.unwrap();
}

/// SUBSCRIBE, say "ready", print the first message decoded from PSE1.
const SUBSCRIBE_Q0: &str = r#"
p = r.pubsub()
p.subscribe(key)
while p.get_message(timeout=5)["type"] != "subscribe":
    pass
print("ready", flush=True)
m = None
while m is None or m["type"] != "message":
    m = p.get_message(timeout=10)
print(json.dumps(pse1_decode(m["data"])))
"#;

const PUBLISH_Q0: &str = r#"
# A plain (non-envelope) message is dropped by SDK consumers with a warning.
r.publish(key, b"not an envelope")
n = r.publish(key, pse1_encode("from redis-py".encode(), "k-q0", {"trace-id": "py-q0"}))
print(json.dumps(n))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q0_envelope_both_ways() {
    let Some((backend, py)) = setup("redis interop q0").await else {
        return;
    };
    let topic = unique("q0", "envelope");
    let channel = format!("{}:q0", stream_key(&topic));

    // SDK -> redis-py.
    let mut child = Command::new(&py)
        .arg("-c")
        .arg(format!("{PRELUDE}{SUBSCRIBE_Q0}"))
        .args([&url(), &channel])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let p = backend.create_producer(&topic, Default::default()).await.unwrap();
    p.send(
        OutgoingMessage::new("q0 from the sdk")
            .with_key("k-sdk")
            .with_property("trace-id", "sdk-q0"),
    )
    .await
    .unwrap();
    let got: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(got["payload"], "q0 from the sdk", "{got}");
    assert_eq!(got["key"], "k-sdk", "{got}");
    assert_eq!(got["properties"]["trace-id"], "sdk-q0", "{got}");

    // redis-py -> SDK.
    let c = backend
        .create_consumer(&topic, "sdk", ConsumerOptions::default())
        .await
        .unwrap();
    let receivers = python(&py, PUBLISH_Q0, &[&url(), &channel]);
    assert_eq!(receivers, 1, "the SDK consumer is subscribed to {channel}");
    let m = c.receive_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(m.payload().as_ref(), b"from redis-py");
    assert_eq!(m.key(), Some("k-q0"));
    assert_eq!(m.property("trace-id"), Some("py-q0"));
    c.close().await.unwrap();
    backend.close().await.unwrap();
}
