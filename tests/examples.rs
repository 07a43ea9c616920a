//! The examples run as the README says.

use std::process::Command;

/// `cargo test` and `cargo nextest` build the examples next to the test
/// binaries: `target/<profile>/examples/<name>`.
fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --examples`",
        path.display()
    );
    path
}

#[test]
fn quickstart_prints_what_it_sent_and_received() {
    let out = Command::new(example("quickstart"))
        .env_remove("PUBSUB_BACKEND")
        .env_remove("PUBSUB_EMBEDDED_DIR")
        .output()
        .expect("run quickstart");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "quickstart failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("backend: embedded"), "{stdout}");
    assert_eq!(stdout.matches("sent ").count(), 3, "{stdout}");
    assert_eq!(stdout.matches("received ").count(), 3, "{stdout}");
    assert!(
        stdout.contains("received 0: hello 0") && stdout.contains("received 1: hello 1"),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"{"system":"You are helpful","prompt":"Hello world","streaming":false}"#),
        "None fields are omitted from the JSON: {stdout}"
    );
    assert!(stdout.trim_end().ends_with("done"), "{stdout}");
}

/// The processor example on embedded, and on every real backend compiled in
/// and reachable, changing only PUBSUB_BACKEND.
#[test]
fn processor_runs_on_each_backend_with_one_env_var() {
    let mut backends = vec!["embedded"];
    for (name, feature) in [
        ("redis", cfg!(feature = "redis")),
        ("nats", cfg!(feature = "nats")),
        ("mqtt", cfg!(feature = "mqtt")),
        ("kafka", cfg!(feature = "kafka")),
    ] {
        if feature {
            backends.push(name);
        }
    }
    let run = std::process::id();
    for backend in backends {
        let out = Command::new(example("processor"))
            .env("PUBSUB_BACKEND", backend)
            .env("INPUT_TOPIC", format!("q1/example/r{run}/records"))
            .env("OUTPUT_TOPIC", format!("q1/example/r{run}/results"))
            .env("SUBSCRIPTION", format!("example-{run}"))
            .args(["--demo", "3", "--max-messages", "3"])
            .output()
            .expect("run processor");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && stderr.contains("connection failed") {
            pubsub::testkit::broker_unavailable(&format!("processor example on {backend}"), &stderr);
            continue;
        }
        assert!(out.status.success(), "{backend}: {stdout}\n{stderr}");
        assert!(stdout.contains(&format!("backend: {backend}")), "{stdout}");
        assert_eq!(stdout.matches("handled record").count(), 3, "{backend}: {stdout}");
        assert!(stdout.contains("RECORD NUMBER 2"), "{stdout}");
        assert!(stdout.contains("acked: 3"), "{backend}: {stdout}");
    }
}

/// SIGTERM stops the processor gracefully: in-flight work is finished and
/// acked, and it exits successfully with its report.
#[test]
fn processor_stops_gracefully_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(example("processor"))
        .env("PUBSUB_BACKEND", "embedded")
        .env_remove("PUBSUB_EMBEDDED_DIR")
        .args(["--demo", "3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run processor");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut handled = 0;
    while handled < 3 {
        let line = lines.next().expect("output").unwrap();
        handled += line.starts_with("handled record") as usize;
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit after SIGTERM: {exit:?} {rest:?}");
    assert!(
        rest.iter().any(|l| l.starts_with("done:") && l.contains("acked: 3")),
        "{rest:?}"
    );
}

/// A program that flattens `PubSubArgs` shows its own description in
/// `--help`, and its own flags outside the backend section.
#[test]
fn processor_help_describes_the_processor() {
    for flag in ["--help", "-h"] {
        let out = Command::new(example("processor"))
            .arg(flag)
            .output()
            .expect("run processor");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{help}");
        assert!(help.starts_with("Transforms JSON records"), "{help}");
        assert!(!help.contains("Flatten it") && !help.contains("```"), "{help}");
        let own = help.find("--input-topic").expect("its own flags");
        let backend = help.find("Backend (").expect("the backend section");
        assert!(own < backend, "its own flags come first: {help}");
    }
}

/// The tasks example (delay, countdown, chain, group, chord) on embedded
/// with memory results, and on NATS with Redis results (the seed design's
/// pair) when both are compiled in and reachable.
#[cfg(feature = "tasks")]
#[test]
fn tasks_example_runs_on_embedded_and_on_nats_with_redis_results() {
    let mut runs = vec![("embedded", None)];
    if cfg!(all(feature = "nats", feature = "redis")) {
        let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        runs.push(("nats", Some(redis)));
    }
    for (backend, results) in runs {
        let mut cmd = Command::new(example("tasks"));
        cmd.env("PUBSUB_BACKEND", backend)
            .env_remove("PUBSUB_EMBEDDED_DIR")
            .env("TASKS_QUEUE", format!("q1/example/t{}/default", std::process::id()));
        match &results {
            Some(url) => cmd.env("PUBSUB_RESULTS", url),
            None => cmd.env_remove("PUBSUB_RESULTS"),
        };
        let out = cmd.output().expect("run the tasks example");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && stderr.contains("connection failed") {
            pubsub::testkit::broker_unavailable(&format!("tasks example on {backend}"), &stderr);
            continue;
        }
        assert!(out.status.success(), "{backend}: {stdout}\n{stderr}");
        for line in [
            "delay: add(1, 2) = 3",
            "chain: add(1, 2) | add(10) = 13",
            "group: [0,2,4,6,8,10,12,14,16,18]",
            "chord: sum of the group = 90",
            "done",
        ] {
            assert!(stdout.lines().any(|l| l == line), "{backend}: {line:?} in {stdout}");
        }
        assert!(
            stdout.contains("countdown 1 s: add(2, 3) = 5 after 1."),
            "{backend}: {stdout}"
        );
    }
}
