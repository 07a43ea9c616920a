//! A q1 `send_batch` has more than one PUBLISH in flight (up to the
//! broker's receive maximum) instead of waiting for each PUBACK before the
//! next PUBLISH. A relay between the adapter and Mosquitto (`MQTT_HOST`,
//! `MQTT_PORT`, default 127.0.0.1:1883) counts the PUBLISHes it forwards to
//! the broker and the PUBACKs it forwards back. One at a time, a PUBLISH can
//! only reach the relay after the previous PUBACK went through it, so at
//! most one is ever in flight there.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pubsub_core::{OutgoingMessage, PubSubBackend, Qos, Topic};
use pubsub_mqtt::{MqttBackend, MqttConfig};

const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;

/// Finds packet boundaries in one direction of an MQTT stream and reports
/// each packet's type as its fixed header arrives.
#[derive(Default)]
struct Frames {
    /// Bytes of the current packet still to pass (after its length).
    skip: usize,
    /// Decoding a remaining length: (value so far, multiplier).
    length: Option<(usize, usize)>,
}

impl Frames {
    fn feed(&mut self, mut buf: &[u8], mut packet: impl FnMut(u8)) {
        while !buf.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(buf.len());
                (self.skip, buf) = (self.skip - n, &buf[n..]);
            } else if let Some((value, mult)) = self.length {
                let b = buf[0] as usize;
                buf = &buf[1..];
                let value = value + (b & 0x7f) * mult;
                if b & 0x80 != 0 {
                    self.length = Some((value, mult * 128));
                } else {
                    (self.length, self.skip) = (None, value);
                }
            } else {
                packet(buf[0] >> 4);
                buf = &buf[1..];
                self.length = Some((0, 1));
            }
        }
    }
}

#[derive(Default)]
struct Counts {
    publishes: AtomicUsize,
    pubacks: AtomicUsize,
    most_in_flight: AtomicUsize,
}

/// Copies `from` to `to`, calling `seen` with each packet's type before
/// the bytes that hold it are written on.
fn pump(mut from: TcpStream, mut to: TcpStream, mut seen: impl FnMut(u8)) {
    let mut frames = Frames::default();
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        frames.feed(&buf[..n], &mut seen);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// A relay on a free port to `broker`, counting PUBLISHes and PUBACKs.
fn relay(broker: String, counts: Arc<Counts>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            let Ok(server) = TcpStream::connect(&broker) else { break };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let up = counts.clone();
            std::thread::spawn(move || {
                pump(client, server, |t| {
                    if t == PUBLISH {
                        let p = up.publishes.fetch_add(1, Ordering::SeqCst) + 1;
                        let in_flight = p.saturating_sub(up.pubacks.load(Ordering::SeqCst));
                        up.most_in_flight.fetch_max(in_flight, Ordering::SeqCst);
                    }
                })
            });
            let down = counts.clone();
            std::thread::spawn(move || {
                pump(s2, c2, |t| {
                    if t == PUBACK {
                        down.pubacks.fetch_add(1, Ordering::SeqCst);
                    }
                })
            });
        }
    });
    port
}

#[tokio::test]
async fn q1_send_batch_has_several_publishes_in_flight() {
    let host = std::env::var("MQTT_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port: u16 = std::env::var("MQTT_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1883);
    if TcpStream::connect((host.as_str(), port)).is_err() && !pubsub_core::testkit::brokers_required() {
        eprintln!("SKIPPED q1_send_batch_has_several_publishes_in_flight: no broker at {host}:{port}");
        return;
    }
    let counts = Arc::new(Counts::default());
    let relay_port = relay(format!("{host}:{port}"), counts.clone());
    let config = MqttConfig::new("127.0.0.1", relay_port)
        .with_timeout(Duration::from_secs(5))
        .with_session_expiry(Duration::from_secs(60));
    let backend = MqttBackend::connect(config).await.unwrap();
    let topic = Topic::new(Qos::AtLeastOnce, "tg", "pipelined", &format!("t{}", std::process::id())).unwrap();
    let producer = backend.create_producer(&topic, Default::default()).await.unwrap();
    let batch = (0..100).map(|i| OutgoingMessage::new(format!("m{i}"))).collect();
    let ids = producer.send_batch(batch).await.unwrap();
    assert_eq!(ids.len(), 100);
    let (publishes, pubacks) = (
        counts.publishes.load(Ordering::SeqCst),
        counts.pubacks.load(Ordering::SeqCst),
    );
    let most = counts.most_in_flight.load(Ordering::SeqCst);
    eprintln!("{publishes} PUBLISHes, {pubacks} PUBACKs, at most {most} in flight");
    assert_eq!((publishes, pubacks), (100, 100));
    assert!(
        most > 1,
        "send_batch waited for each PUBACK: at most {most} PUBLISH in flight"
    );
    let _ = backend.close().await;
}
