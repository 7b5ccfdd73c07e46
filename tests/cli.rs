//! The binary as an operator meets it: bad configuration, `--check`, `--help`.

use std::process::Command;

fn relay() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bedrock-relay"));
    // The operator's environment must not leak into these checks.
    for (k, _) in std::env::vars() {
        if k.starts_with("BEDROCK_RELAY_") || k.starts_with("AWS_") {
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
        stdout.contains("answers identical to reference 4/4"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("relay healed the stream here").count(),
        4,
        "{stdout}"
    );
    assert!(
        stdout.contains("upstream interruptions        4"),
        "{stdout}"
    );
}
