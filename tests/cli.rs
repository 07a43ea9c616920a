//! The `pubsub` binary, run as a user runs it: against the embedded
//! backend with a data directory (so separate invocations share state)
//! and against a real Redis.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `pubsub` with `args`, `stdin` piped in, and the environment
/// cleared of pubsub settings except `env`.
fn pubsub(env: &[(&str, &str)], args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pubsub"));
    for var in ["PUBSUB_BACKEND", "PUBSUB_EMBEDDED_DIR", "REDIS_URL"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run the pubsub binary");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for pubsub")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs and requires exit code 0; gives stdout.
fn ok(env: &[(&str, &str)], args: &[&str], stdin: &str) -> String {
    let out = pubsub(env, args, stdin);
    assert!(
        out.status.success(),
        "pubsub {args:?} failed ({:?}): {}",
        out.status.code(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs and requires exit code `code`; gives stderr.
fn fails(env: &[(&str, &str)], args: &[&str], code: i32) -> String {
    let out = pubsub(env, args, "");
    assert_eq!(
        out.status.code(),
        Some(code),
        "pubsub {args:?}: stdout {:?}, stderr {:?}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

fn embedded(dir: &Path) -> [(&'static str, String); 2] {
    [
        ("PUBSUB_BACKEND", "embedded".to_string()),
        ("PUBSUB_EMBEDDED_DIR", dir.display().to_string()),
    ]
}

/// The README's terminal session: create, publish (argument, stdin, count),
/// consume as JSON and as text, inspect the backlog, list, delete.
fn session(env: &[(&str, &str)], topic: &str, namespace: &str) {
    let created = ok(env, &["topics", "create", topic], "");
    assert_eq!(created.trim(), format!("{topic}: created"));
    let again = ok(env, &["topics", "create", topic], "");
    assert_eq!(again.trim(), format!("{topic}: exists already"));
    assert!(ok(env, &["topics", "list", namespace], "").lines().any(|l| l == topic));

    // The subscription exists before anything is published, so it sees everything.
    ok(env, &["consume", topic, "-s", "audit", "--timeout", "0.2"], "");
    ok(
        env,
        &["publish", topic, "hello", "-p", "source=cli", "--key", "user-1"],
        "",
    );
    ok(env, &["publish", topic, "-"], "line one\nline two\n");
    ok(env, &["publish", topic, "again", "-n", "250"], "");

    let info = ok(env, &["topics", "info", topic], "");
    assert!(info.contains("subscription audit: backlog 253"), "{info}");

    let json = ok(env, &["consume", topic, "-s", "audit", "-n", "3", "--json"], "");
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    assert_eq!(lines.len(), 3, "{json}");
    assert_eq!(lines[0]["payload"], "hello");
    assert_eq!(lines[0]["key"], "user-1");
    assert_eq!(lines[0]["properties"]["source"], "cli");
    assert_eq!(lines[1]["payload"], "line one");
    assert_eq!(lines[2]["payload"], "line two");
    assert_eq!(lines[2]["topic"], topic);

    // Acked by the first consume: the next one starts at the 250 copies.
    let rest = ok(env, &["consume", topic, "-s", "audit", "--timeout", "2"], "");
    assert_eq!(rest.lines().count(), 250, "{rest}");
    assert!(rest.lines().all(|l| l == "again"));
    let info = ok(env, &["topics", "info", topic], "");
    assert!(info.contains("subscription audit: backlog 0"), "{info}");

    // Replay: a reader from the earliest message (no subscription), then
    // the subscription moved back to the second message.
    let replay = ok(env, &["consume", topic, "--from", "earliest", "-n", "3"], "");
    let first: Vec<&str> = replay.lines().map(|l| l.split('\t').next().unwrap_or("")).collect();
    assert_eq!(first, ["hello", "line one", "line two"], "{replay}");
    let second_id = lines[1]["id"].as_str().expect("an id").to_string();
    let from_id = format!("id:{second_id}");
    let again = ok(
        env,
        &["consume", topic, "-s", "audit", "--from", &from_id, "--timeout", "2"],
        "",
    );
    assert_eq!(
        again.lines().count(),
        252,
        "line one, line two and the 250 copies again: {again}"
    );
    assert_eq!(again.lines().next(), Some("line one"));

    assert_eq!(
        ok(env, &["topics", "delete", topic], "").trim(),
        format!("{topic}: deleted")
    );
    assert!(!ok(env, &["topics", "list", namespace], "").lines().any(|l| l == topic));
    let missing = fails(env, &["topics", "delete", topic], 1);
    assert!(missing.contains("not found"), "{missing}");
}

#[test]
fn embedded_session_shares_state_across_invocations() {
    let dir = tempfile::tempdir().unwrap();
    let env = embedded(dir.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(ok(&env, &["health"], "").trim(), "embedded: ok");
    session(&env, "q1/demo/cli/orders", "demo/cli");
}

#[test]
fn bad_input_gives_clear_errors_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let env = embedded(dir.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let e = fails(&env, &["publish", "q9/demo/cli/x", "hi"], 2);
    assert!(e.contains("invalid topic"), "{e}");
    let e = fails(&env, &["publish", "q1/demo/cli/x", "hi", "-p", "novalue"], 2);
    assert!(e.contains("name=value"), "{e}");
    let e = fails(&env, &["publish", "q1/demo/cli/x", "hi", "-p", "bad name=v"], 2);
    assert!(e.contains("bad name"), "{e}");
    let e = fails(&env, &["consume", "q1/demo/cli/x", "-s", "bad/sub"], 2);
    assert!(e.contains("invalid subscription"), "{e}");
    let e = fails(&env, &["consume", "q1/demo/cli/x", "-s", "s", "--timeout=-1"], 2);
    assert!(e.contains("--timeout"), "{e}");
    let e = fails(&env, &["topics", "create", "q1/demo/cli/x", "--partitions", "4"], 1);
    assert!(e.contains("does not support"), "{e}");
    let e = fails(&env, &["consume", "q1/demo/cli/x", "--from", "yesterday"], 2);
    assert!(e.contains("earliest, latest"), "{e}");
    let e = fails(&env, &["consume", "q1/demo/cli/x"], 2);
    assert!(e.contains("--subscription"), "{e}");
    let e = fails(&env, &["topics", "list", "demo"], 2);
    assert!(e.contains("invalid topic"), "{e}");
    let e = fails(&env, &["topics", "info", "q1/demo/cli/never"], 1);
    assert!(e.contains("not found"), "{e}");
    fails(&env, &["no-such-command"], 2);
}

#[test]
fn unreachable_broker_exits_with_3_and_hides_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://:hunter2secret@127.0.0.1:{port}");
    let env = [("PUBSUB_BACKEND", "redis"), ("REDIS_URL", url.as_str())];
    let out = pubsub(&env, &["health"], "");
    let stderr = text(&out.stderr);
    if stderr.contains("feature") {
        // Built without the redis feature: the error says which one.
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("hunter2secret"), "the password leaked: {stderr}");
}

#[cfg(all(feature = "redis", feature = "testing"))]
mod redis {
    use pubsub::testing::TestBroker;
    use pubsub::BackendKind;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_session() {
        let broker = match TestBroker::start(BackendKind::Redis).await {
            Ok(b) => b,
            Err(e) => return pubsub_core::testkit::broker_unavailable("cli redis_session", &e),
        };
        let url = broker.url();
        tokio::task::spawn_blocking(move || {
            let env = [("PUBSUB_BACKEND", "redis"), ("REDIS_URL", url.as_str())];
            assert_eq!(super::ok(&env, &["health"], "").trim(), "redis: ok");
            super::session(&env, "q1/demo/cli/orders", "demo/cli");
            let e = super::fails(&env, &["topics", "create", "q0/demo/cli/live"], 1);
            assert!(e.contains("does not support"), "{e}");
        })
        .await
        .unwrap();
    }
}
