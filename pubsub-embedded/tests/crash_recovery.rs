//! Kill a writer with SIGKILL mid-write, reopen its data directory, and
//! check that no message whose `send` returned is lost and no message whose
//! q2 `ack` returned is delivered again.
//!
//! The writer is this test binary run again as a child: `writer_child`
//! writes until killed when `PUBSUB_CRASH_DIR` is set, and otherwise runs
//! a bounded write-close-reopen round itself.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pubsub_core::{ConsumerOptions, Error, InitialPosition, OutgoingMessage, PubSubBackend, Topic};
use pubsub_embedded::{EmbeddedBackend, EmbeddedConfig};

const CRASH_DIR_ENV: &str = "PUBSUB_CRASH_DIR";
const SUBSCRIPTION: &str = "survivor";

fn topic() -> Topic {
    "q2/crash/test/log".parse().unwrap()
}

fn opts() -> ConsumerOptions {
    ConsumerOptions::default().with_initial_position(InitialPosition::Earliest)
}

/// Sends numbered messages and acks every other one it receives, printing
/// `sent N` / `acked N` only after the call returned. Stops after `limit`.
async fn write(dir: &std::path::Path, limit: usize) -> (BTreeSet<usize>, BTreeSet<usize>) {
    let backend = EmbeddedBackend::open(EmbeddedConfig::data_dir(dir)).expect("open");
    let consumer = backend
        .create_consumer(&topic(), SUBSCRIPTION, opts())
        .await
        .expect("consumer");
    let producer = backend
        .create_producer(&topic(), Default::default())
        .await
        .expect("producer");
    let acker = tokio::spawn(async move {
        let mut acked = BTreeSet::new();
        loop {
            match consumer.receive_timeout(Duration::from_millis(500)).await {
                Ok(m) => {
                    let n: usize = std::str::from_utf8(m.payload()).unwrap().parse().unwrap();
                    if n % 2 == 0 {
                        m.ack().await.expect("ack");
                        println!("acked {n}");
                        acked.insert(n);
                    }
                }
                Err(Error::Timeout(_)) => return acked,
                Err(e) => panic!("{e}"),
            }
        }
    });
    let mut sent = BTreeSet::new();
    for n in 0..limit {
        producer
            .send(OutgoingMessage::new(n.to_string()).with_dedup_id(format!("m{n}")))
            .await
            .expect("send");
        println!("sent {n}");
        sent.insert(n);
    }
    let acked = acker.await.expect("acker");
    backend.close().await.expect("close");
    (sent, acked)
}

/// Everything a reopened backend delivers to the subscription, acked.
async fn drain(dir: &std::path::Path) -> Vec<(usize, u32)> {
    let backend = EmbeddedBackend::open(EmbeddedConfig::data_dir(dir)).expect("reopen after crash");
    let consumer = backend
        .create_consumer(&topic(), SUBSCRIPTION, opts())
        .await
        .expect("consumer");
    let mut got = Vec::new();
    loop {
        match consumer.receive_timeout(Duration::from_millis(1500)).await {
            Ok(m) => {
                got.push((
                    std::str::from_utf8(m.payload()).unwrap().parse().unwrap(),
                    m.redelivery_count(),
                ));
                m.ack().await.expect("ack");
            }
            Err(Error::Timeout(_)) => break,
            Err(e) => panic!("receive after recovery: {e}"),
        }
    }
    backend.close().await.expect("close");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_child() {
    if let Ok(dir) = std::env::var(CRASH_DIR_ENV) {
        // Child mode: write until the parent kills us (bounded in case it dies).
        write(std::path::Path::new(&dir), 1_000_000).await;
        return;
    }
    // Standalone: a clean close and reopen keeps exactly the unacked messages.
    let dir = tempfile::tempdir().unwrap();
    let (sent, acked) = write(dir.path(), 200).await;
    assert_eq!(sent.len(), 200);
    let got: BTreeSet<usize> = drain(dir.path()).await.into_iter().map(|(n, _)| n).collect();
    let expected: BTreeSet<usize> = sent.difference(&acked).copied().collect();
    assert_eq!(got, expected);
}

#[test]
fn sigkill_mid_write_loses_nothing_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
        .env(CRASH_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn writer");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut sent, mut acked) = (BTreeSet::new(), BTreeSet::new());
    let record = |line: &str, sent: &mut BTreeSet<usize>, acked: &mut BTreeSet<usize>| {
        if let Some(n) = line.strip_prefix("sent ") {
            sent.insert(n.parse::<usize>().unwrap());
        } else if let Some(n) = line.strip_prefix("acked ") {
            acked.insert(n.parse::<usize>().unwrap());
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while sent.len() < 500 || acked.len() < 100 {
        assert!(
            Instant::now() < deadline,
            "writer too slow: {} sent, {} acked",
            sent.len(),
            acked.len()
        );
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => record(&line, &mut sent, &mut acked),
            Err(e) => panic!("writer stopped talking: {e}"),
        }
    }
    child.kill().expect("SIGKILL the writer"); // std sends SIGKILL on Unix
    child.wait().unwrap();
    // Lines already in the pipe were printed before the kill: they count.
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        record(&line, &mut sent, &mut acked);
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    let got = rt.block_on(drain(dir.path()));
    let received: BTreeSet<usize> = got.iter().map(|(n, _)| *n).collect();
    let duplicates = got.len() - received.len();
    // The child acks only even numbers, so every odd one must survive. An
    // even one may be missing without its `acked` line: the kill can land
    // between the ack returning and the line being printed.
    let lost: Vec<usize> = sent
        .iter()
        .filter(|n| *n % 2 == 1 && !received.contains(n))
        .copied()
        .collect();
    let redelivered_acked: Vec<usize> = acked.intersection(&received).copied().collect();
    eprintln!(
        "crash recovery: confirmed sends {}, confirmed acks {}, delivered after restart {} ({} duplicates), lost {}, acked-but-redelivered {}",
        sent.len(),
        acked.len(),
        received.len(),
        duplicates,
        lost.len(),
        redelivered_acked.len()
    );
    assert!(
        lost.is_empty(),
        "confirmed, never-acked messages lost in the crash: {lost:?}"
    );
    let unaccounted: Vec<usize> = sent
        .iter()
        .filter(|n| !received.contains(n) && !acked.contains(n))
        .copied()
        .collect();
    assert!(
        unaccounted.len() <= 2,
        "more even messages missing than acks can be in flight: {unaccounted:?}"
    );
    assert!(
        redelivered_acked.is_empty(),
        "q2 messages whose ack returned came back: {redelivered_acked:?}"
    );
    assert_eq!(duplicates, 0, "a message was delivered twice after recovery");
    // Unacked messages the child had received come back marked as redelivered.
    let odd_seen_by_child = got.iter().filter(|(n, _)| n % 2 == 1 && *n < 100).count();
    assert!(
        odd_seen_by_child > 0,
        "unacked messages from before the crash are delivered again"
    );
}
