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
    for var in [
        "PUBSUB_BACKEND",
        "PUBSUB_EMBEDDED_DIR",
        "KAFKA_BOOTSTRAP_SERVERS",
        "PULSAR_HOST",
        "MQTT_HOST",
        "MQTT_PORT",
        "NATS_URL",
        "REDIS_URL",
        "PUBSUB_RESULTS",
    ] {
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
    // What the user typed, not a topic made up from it ("q1/demo//x").
    let e = fails(&env, &["topics", "list", "demo"], 2);
    assert!(e.contains("\"demo\" is not tenant/namespace"), "{e}");
    assert!(!e.contains("q1/demo"), "{e}");
    // Counted as the user wrote it, not as the topic made up from it.
    let e = fails(&env, &["topics", "list", "demo/cli/x"], 2);
    assert!(e.contains("expected 2 segments, found 3"), "{e}");
    assert!(!e.contains("found 5"), "{e}");
    let e = fails(&env, &["topics", "list", "demo/bad.ns"], 2);
    assert!(e.contains("\"demo/bad.ns\" is not tenant/namespace"), "{e}");
    let e = fails(&env, &["topics", "info", "q1/demo/cli/never"], 1);
    assert!(e.contains("not found"), "{e}");
    fails(&env, &["no-such-command"], 2);
}

/// `consume` of a topic that does not exist exits 1 (README: "a missing
/// topic"), with a subscription or without, and does not create it.
#[test]
fn consume_of_a_missing_topic_exits_1_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = embedded(dir.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for args in [
        &["consume", "q1/demo/cli/absent", "-s", "audit", "--timeout", "0.2"][..],
        &[
            "consume",
            "q1/demo/cli/absent",
            "--from",
            "earliest",
            "--timeout",
            "0.2",
        ][..],
    ] {
        let e = fails(&env, args, 1);
        assert!(e.contains("not found") && e.contains("q1/demo/cli/absent"), "{e}");
    }
    assert_eq!(ok(&env, &["topics", "list", "demo/cli"], ""), "");
}

/// The backend flags work before and after the subcommand, and the data
/// directory flag is named like the others (after its variable).
#[test]
fn backend_flags_work_after_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = ok(&[], &["health", "--pubsub-backend", "embedded"], "");
    assert_eq!(out.trim(), "embedded: ok");
    ok(
        &[],
        &["topics", "create", "q1/demo/flags/t", "--pubsub-embedded-dir", d],
        "",
    );
    let listed = ok(&[], &["--pubsub-embedded-dir", d, "topics", "list", "demo/flags"], "");
    assert_eq!(listed.trim(), "q1/demo/flags/t");
    // The old name still works.
    let listed = ok(&[], &["topics", "list", "demo/flags", "--embedded-dir", d], "");
    assert_eq!(listed.trim(), "q1/demo/flags/t");
    // An empty variable is unset.
    let out = ok(&[("PUBSUB_BACKEND", ""), ("PUBSUB_EMBEDDED_DIR", "")], &["health"], "");
    assert_eq!(out.trim(), "embedded: ok");
}

/// `pubsub --help` describes the tool, not `PubSubArgs` and its code sample.
#[test]
fn help_describes_the_tool() {
    for flag in ["--help", "-h"] {
        let help = ok(&[], &[flag], "");
        assert!(help.starts_with("Publish, consume and manage topics"), "{help}");
        assert!(!help.contains("Flatten it") && !help.contains("```"), "{help}");
        assert!(
            help.contains("--pubsub-embedded-dir") && help.contains("PUBSUB_BACKEND"),
            "{help}"
        );
    }
}

/// A malformed URL exits 2 on every backend, naming the variable; so does
/// a bad backend name or port, without a command-line flag's wording.
#[test]
fn malformed_settings_exit_2_on_every_backend() {
    for (backend, var, value) in [
        ("redis", "REDIS_URL", "http://127.0.0.1:6379"),
        ("redis", "REDIS_URL", "redis://127.0.0.1:port"),
        ("nats", "NATS_URL", "nats://127.0.0.1:port"),
        ("nats", "NATS_URL", "http://127.0.0.1:4222"),
        ("pulsar", "PULSAR_HOST", "pulsar://127.0.0.1:port"),
        ("pulsar", "PULSAR_HOST", "http://127.0.0.1:6650"),
        ("kafka", "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:port"),
        ("kafka", "KAFKA_BOOTSTRAP_SERVERS", "kafka://127.0.0.1:9092"),
        ("mqtt", "MQTT_HOST", "mqtt://127.0.0.1:port"),
        ("mqtt", "MQTT_HOST", "http://127.0.0.1"),
    ] {
        let e = fails(&[("PUBSUB_BACKEND", backend), (var, value)], &["health"], 2);
        assert!(e.contains(&format!("{var}=")), "{var}={value}: {e}");
    }
    let e = fails(&[("PUBSUB_BACKEND", "bogus")], &["health"], 2);
    assert!(e.contains("PUBSUB_BACKEND=\"bogus\" is not a backend"), "{e}");
    let e = fails(&[("PUBSUB_BACKEND", "mqtt"), ("MQTT_PORT", "abc")], &["health"], 2);
    assert!(e.contains("MQTT_PORT"), "{e}");
}

/// q2 on a backend without exactly-once: the error names the option and the
/// flag, and `--allow-degraded-qos` runs it (MQTT, on the shared Mosquitto).
#[test]
fn allow_degraded_qos_is_a_flag() {
    if !cfg!(feature = "mqtt") {
        return;
    }
    let env = [("PUBSUB_BACKEND", "mqtt"), ("MQTT_HOST", "127.0.0.1")];
    let out = pubsub(&env, &["health"], "");
    if !out.status.success() {
        eprintln!(
            "SKIPPED allow_degraded_qos_is_a_flag: broker unavailable: {}",
            text(&out.stderr)
        );
        return;
    }
    let e = fails(&env, &["publish", "q2/demo/cli/degraded", "hi"], 1);
    assert!(
        e.contains("allow_degraded_qos()") && e.contains("--allow-degraded-qos"),
        "{e}"
    );
    assert!(e.contains("q1's guarantee, at least once"), "{e}");
    ok(
        &env,
        &["publish", "q2/demo/cli/degraded", "hi", "--allow-degraded-qos"],
        "",
    );
    ok(
        &env,
        &[
            "consume",
            "q2/demo/cli/degraded",
            "-s",
            "cli",
            "--timeout",
            "0.2",
            "--allow-degraded-qos",
        ],
        "",
    );
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

/// `pubsub tasks`: the task layer's queues, workers and results.
mod tasks {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use pubsub::processor::Shutdown;
    use pubsub::tasks::{open_result_store, ResultStore, Signature, TaskError, TaskOptions, TaskState, Tasks, Worker};
    use pubsub::{PubSubBackend, Topic};
    use serde_json::{json, Value};

    const WAIT: Duration = Duration::from_secs(20);

    fn worker(backend: Arc<dyn PubSubBackend>, store: Arc<dyn ResultStore>, queue: Topic, name: &str) -> Worker {
        Worker::new(backend, store, queue)
            .with_name(name)
            .with_heartbeat(Duration::from_millis(200))
            .register_fn("add", TaskOptions::default(), |args, _ctx| async move {
                let (a, b): (i64, i64) = serde_json::from_value(args).map_err(TaskError::fatal)?;
                Ok(json!(a + b))
            })
            .register_fn(
                "fail",
                TaskOptions::default().with_max_retries(0),
                |_a, _c| async move { Err(TaskError::fatal("refused by the test")) },
            )
    }

    async fn blocking(env: Vec<(String, String)>, args: Vec<String>, code: i32) -> (String, String) {
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = super::pubsub(&env, &args, "");
            assert_eq!(
                out.status.code(),
                Some(code),
                "pubsub {args:?}: stdout {:?} stderr {:?}",
                super::text(&out.stdout),
                super::text(&out.stderr)
            );
            (super::text(&out.stdout), super::text(&out.stderr))
        })
        .await
        .unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// The embedded backend with a data dir and a DirResultStore: a worker
    /// ran two tasks and stopped, three more wait; the CLI, a separate
    /// process, sees them pending, no live worker, and each result.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inspect_and_result_on_embedded_with_dir_results() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("log");
        let results_url = format!("dir:{}", dir.path().join("results").display());
        let queue: Topic = "q1/app/tasks/default".parse().unwrap();
        let (ok_id, failed_id) = {
            let config = pubsub::embedded::EmbeddedConfig::data_dir(&data);
            let backend: Arc<dyn PubSubBackend> = Arc::new(pubsub::embedded::EmbeddedBackend::open(config).unwrap());
            let store = open_result_store(&results_url).await.unwrap();
            let shutdown = Shutdown::new();
            let running =
                tokio::spawn(worker(backend.clone(), store.clone(), queue.clone(), "cli-w").run(shutdown.clone()));
            let tasks = Tasks::new(backend.clone(), store.clone(), queue.clone());
            let ok = tasks.send::<i64>(Signature::new("add", (1, 2)).unwrap()).await.unwrap();
            assert_eq!(ok.get(WAIT).await.unwrap(), 3);
            let failed = tasks.send::<Value>(Signature::new("fail", ()).unwrap()).await.unwrap();
            assert!(failed.get(WAIT).await.is_err());
            tokio::time::sleep(Duration::from_millis(500)).await; // a heartbeat or two
            assert_eq!(store.workers().await.unwrap().len(), 1, "the worker's heartbeat");
            shutdown.trigger();
            running.await.unwrap().unwrap();
            assert!(store.workers().await.unwrap().is_empty(), "removed when it stopped");
            for i in 0..3 {
                tasks.send::<i64>(Signature::new("add", (i, i)).unwrap()).await.unwrap();
            }
            tasks.close().await.unwrap();
            backend.close().await.unwrap();
            (ok.id().to_string(), failed.id().to_string())
        };
        let mut env: Vec<(String, String)> = super::embedded(dir.path().join("log").as_path())
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let (out, _) = blocking(
            env.clone(),
            strings(&["tasks", "inspect", "--queue", queue.as_str(), "--results", &results_url]),
            0,
        )
        .await;
        assert!(out.contains(&format!("queue {queue}: 3 pending")), "{out}");
        assert!(out.contains("workers: none"), "{out}");
        env.push(("PUBSUB_RESULTS".into(), results_url.clone()));
        let (out, _) = blocking(env.clone(), strings(&["tasks", "result", &ok_id]), 0).await;
        for line in [
            "state: success",
            "result: 3",
            "attempts: 1",
            "worker: cli-w",
            "name: add",
        ] {
            assert!(out.lines().any(|l| l == line), "{line:?} in {out}");
        }
        assert!(out.contains("finished: "), "{out}");
        let (out, _) = blocking(env.clone(), strings(&["tasks", "result", &failed_id, "--json"]), 0).await;
        let record: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(
            (record["state"].as_str(), record["error"].as_str()),
            (Some("failure"), Some("refused by the test"))
        );
        let (_, err) = blocking(env.clone(), strings(&["tasks", "result", "no-such-task"]), 1).await;
        assert!(err.contains("no result"), "{err}");
        // Without a result store: bad input, exit 2.
        let bare: Vec<(String, String)> = env.iter().filter(|(k, _)| k != "PUBSUB_RESULTS").cloned().collect();
        let (_, err) = blocking(bare.clone(), strings(&["tasks", "result", &ok_id]), 2).await;
        assert!(err.contains("PUBSUB_RESULTS"), "{err}");
        let (_, err) = blocking(bare, strings(&["tasks", "result", &ok_id, "--results", "ftp://x"]), 2).await;
        assert!(err.contains("unknown kind"), "{err}");
    }

    /// Redis backend and Redis results: a task running on a worker in this
    /// process is listed by the CLI with its worker, the queue shows it
    /// unacked, then its result; the worker is gone once it stopped.
    #[cfg(all(feature = "redis", feature = "testing"))]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inspect_and_result_on_redis_with_redis_results() {
        use pubsub::testing::TestBroker;
        use pubsub::BackendKind;
        let broker = match TestBroker::start(BackendKind::Redis).await {
            Ok(b) => b,
            Err(e) => return pubsub_core::testkit::broker_unavailable("cli tasks on redis", &e),
        };
        let url = broker.url();
        let backend: Arc<dyn PubSubBackend> = Arc::new(
            pubsub::redis::RedisBackend::connect(pubsub::redis::RedisConfig::new(url.clone()))
                .await
                .unwrap(),
        );
        let store = open_result_store(&url).await.unwrap();
        let queue: Topic = "q1/app/tasks/slow".parse().unwrap();
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let (gate, count) = (release.clone(), started.clone());
        let shutdown = Shutdown::new();
        let w = worker(backend.clone(), store.clone(), queue.clone(), "cli-redis-w").register_fn(
            "block",
            TaskOptions::default(),
            move |_a, _c| {
                let (gate, count) = (gate.clone(), count.clone());
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    gate.acquire().await.map_err(TaskError::fatal)?.forget();
                    Ok(json!("released"))
                }
            },
        );
        let running = tokio::spawn(w.run(shutdown.clone()));
        let tasks = Tasks::new(backend.clone(), store.clone(), queue.clone());
        let r = tasks
            .send::<String>(Signature::new("block", ()).unwrap())
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        while r.state().await.unwrap() != TaskState::Started {
            assert!(tokio::time::Instant::now() < deadline, "the task never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await; // a heartbeat with it
        let env = vec![
            ("PUBSUB_BACKEND".to_string(), "redis".to_string()),
            ("REDIS_URL".to_string(), url.clone()),
            ("PUBSUB_RESULTS".to_string(), url.clone()),
        ];
        let (out, _) = blocking(
            env.clone(),
            strings(&["tasks", "inspect", "--queue", queue.as_str()]),
            0,
        )
        .await;
        assert!(out.contains(&format!("queue {queue}: 1 pending")), "{out}");
        let worker_line = out
            .lines()
            .find(|l| l.starts_with("worker cli-redis-w "))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            worker_line.contains("1 running") && worker_line.contains("seen"),
            "{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("{} block started", r.id()))),
            "{out}"
        );
        let (out, _) = blocking(env.clone(), strings(&["tasks", "inspect", "--json"]), 0).await;
        let seen: Value = serde_json::from_str(out.trim()).unwrap();
        let me = seen["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "cli-redis-w")
            .cloned()
            .unwrap();
        assert_eq!(
            (me["live"].as_bool(), me["running"][0]["id"].as_str()),
            (Some(true), Some(r.id()))
        );
        let (out, _) = blocking(env.clone(), strings(&["tasks", "result", r.id()]), 0).await;
        assert!(out.lines().any(|l| l == "state: started"), "{out}");
        release.add_permits(1);
        assert_eq!(r.get(WAIT).await.unwrap(), "released");
        let (out, _) = blocking(env.clone(), strings(&["tasks", "result", r.id()]), 0).await;
        assert!(
            out.lines().any(|l| l == "state: success") && out.contains("result: \"released\""),
            "{out}"
        );
        shutdown.trigger();
        running.await.unwrap().unwrap();
        let (out, _) = blocking(
            env.clone(),
            strings(&["tasks", "inspect", "--queue", queue.as_str()]),
            0,
        )
        .await;
        assert!(
            out.contains(&format!("queue {queue}: 0 pending")) && out.contains("workers: none"),
            "{out}"
        );
        assert_eq!(started.load(Ordering::SeqCst), 1);
        tasks.close().await.unwrap();
        backend.close().await.unwrap();
    }
}
