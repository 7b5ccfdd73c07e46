//! CI smoke test of the benchmark: the `bench` binary in `--smoke` mode starts the simulator
//! and the relay as processes, runs every phase with tiny counts and prints the table. Only
//! completion and the presence of numbers are asserted, never timings.
//!
//! The relay is the `bedrock-relay` binary next to `bench` in the same target directory:
//! `cargo test --workspace` builds it (the relay's own integration tests need it); alone,
//! `cargo build --bin bedrock-relay && cargo test -p bedrock-relay-bench`.

use std::path::PathBuf;
use std::process::Command;

/// The `bedrock-relay` binary of this build (same target directory and profile as `bench`).
fn relay_bin() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_bench"))
        .with_file_name(format!("bedrock-relay{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build it first (`cargo build --bin bedrock-relay`, or run \
         `cargo test --workspace`)",
        bin.display()
    );
    bin
}

/// The cells of the table row whose label is `label`, as text.
fn row<'a>(table: &'a str, label: &str) -> Vec<&'a str> {
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("| {label} |")))
        .unwrap_or_else(|| panic!("no row {label:?} in:\n{table}"));
    line.trim_matches('|').split('|').map(str::trim).collect()
}

fn number(cell: &str) -> f64 {
    cell.parse()
        .unwrap_or_else(|_| panic!("{cell:?} is not a number"))
}

#[test]
fn smoke_run_completes_and_prints_numbers() {
    let out_dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bench"));
    cmd.args(["--smoke", "--nginx", "none", "--open-streams", "20"])
        .arg("--relay-bin")
        .arg(relay_bin())
        .arg("--out-dir")
        .arg(out_dir.path());
    for (k, _) in std::env::vars() {
        if k.starts_with("BENCH_") || k.starts_with("AWS_") || k.starts_with("BEDROCK_RELAY_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("run the bench binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");

    let header = row(&stdout, "metric");
    assert_eq!(&header[1..5], ["direct", "relay", "nginx", "litellm"]);
    for label in [
        "Converse c=1 latency p50 (µs)",
        "Converse c=64 requests/s",
        "ConverseStream events/s",
    ] {
        let cells = row(&stdout, label);
        assert!(number(cells[1]) > 0.0, "{label}: direct {}", cells[1]);
        assert!(number(cells[2]) > 0.0, "{label}: relay {}", cells[2]);
    }
    for label in [
        "Converse c=1 added p50 (µs)",
        "proxy CPU per request (µs)",
        "TTFE overhead p99 (µs)",
        "idle RSS (MiB)",
        "resume gap max (ms)",
    ] {
        let cells = row(&stdout, label);
        number(cells[2]);
        assert_eq!(cells[1], "–", "{label}: nothing to compare for direct");
    }
    assert_eq!(number(row(&stdout, "open slow streams held")[2]), 20.0);
    assert!(number(row(&stdout, "RSS with streams open (MiB)")[2]) > 0.0);
    assert!(stdout.contains("note (nginx): skipped"), "{stdout}");

    let csv = std::fs::read_to_string(out_dir.path().join("samples.csv")).expect("samples.csv");
    let relay_rows = csv
        .lines()
        .filter(|l| l.starts_with("relay,converse_c1,"))
        .count();
    assert!(
        (1..=200).contains(&relay_rows),
        "one sample per c=1 request: {relay_rows}"
    );
}
