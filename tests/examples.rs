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
