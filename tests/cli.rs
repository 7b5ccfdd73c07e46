//! The binary as an operator meets it: bad configuration, `--check`, `--help`.

use std::process::Command;

fn relay() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bedrock-relay"));
    // The operator's environment must not leak into these checks.
    for (k, _) in std::env::vars() {
        if k.starts_with("BEDROCK_RELAY_") || k.starts_with("AWS_") || k.starts_with("OTEL_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn bad_config_exits_64_listing_every_error_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:1\"\nbogus_key = 1\n").unwrap();
    let out = relay()
        .args(["serve", "--config"])
        .arg(&file)
        .args([
            "--listen",
            "not-an-address",
            "--stall-timeout",
            "soon",
            "--max-attempts",
            "0",
        ])
        .args([
            "--backoff-base",
            "5s",
            "--backoff-max",
            "1s",
            "--region",
            "us-east-1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "bogus_key",
        "not-an-address",
        "soon",
        "max_attempts",
        "backoff",
    ] {
        assert!(stderr.contains(needle), "stderr names {needle}: {stderr}");
    }
}

#[test]
fn check_validates_the_shipped_example_config_and_exits_0() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/bedrock-relay.toml");
    let out = relay()
        .args([
            "serve",
            "--check",
            "--region",
            "us-east-1",
            "--config",
            example,
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_subcommand_documents_its_flags() {
    let out = relay().args(["sim", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--access-key-id",
        "--secret-access-key",
        "--fault",
        "--faults-file",
        "--fault-rate",
        "--seed",
        "--ttft",
        "--inter-token",
    ] {
        assert!(help.contains(flag), "sim --help documents {flag}");
    }
    let out = relay().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--listen",
        "--admin-listen",
        "--region",
        "--upstream",
        "--stall-timeout",
        "--max-attempts",
        "--backoff-base",
        "--backoff-max",
    ] {
        assert!(help.contains(flag), "serve --help documents {flag}");
    }
}

#[test]
fn the_demo_heals_every_broken_stream_and_exits_0() {
    let out = relay()
        .args(["demo", "--fast", "--no-color"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("answers identical to reference 5/5"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("relay healed the stream here").count(),
        5,
        "{stdout}"
    );
    assert!(
        stdout.contains("upstream interruptions        5"),
        "{stdout}"
    );
    assert!(stdout.contains("(prefill 4, instructed 1)"), "{stdout}");
    assert!(
        !stdout.contains("Continuing"),
        "the preamble never reaches the client: {stdout}"
    );
}

/// `worker_threads` sizes the runtime `serve` runs on (Linux: its threads are counted in /proc).
#[cfg(target_os = "linux")]
#[test]
fn worker_threads_sizes_the_serve_runtime() {
    for (flag, expected) in [("1", 1), ("3", 3)] {
        let mut child = relay()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(["--region", "us-east-1", "--worker-threads", flag])
            .env("AWS_ACCESS_KEY_ID", "AKIDCLITEST")
            .env("AWS_SECRET_ACCESS_KEY", "cli-test-secret")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let tasks = format!("/proc/{}/task", child.id());
        let workers = || {
            std::fs::read_dir(&tasks)
                .map(|dir| {
                    dir.filter_map(Result::ok)
                        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                        .filter(|comm| comm.trim() == "tokio-rt-worker")
                        .count()
                })
                .unwrap_or(0)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while workers() < expected && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let seen = workers();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(seen, expected, "--worker-threads {flag}");
    }
}
