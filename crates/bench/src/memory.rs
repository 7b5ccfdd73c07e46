//! `bench --memory`: what an open ConverseStream costs the relay with each upstream
//! protocol, side by side in one run, and nginx in front of the same simulator as the
//! baseline. For each variant a fresh dripping simulator (one token every 5 s) and a fresh
//! relay with the variant's `BEDROCK_RELAY_*` settings (or nginx); N streams are opened and
//! held until each has its first frame, then the proxy's RSS and open descriptors are read.
//! Per stream = RSS growth over the fresh proxy's / N.

use super::phases::{self, Held};
use super::procs;
use super::BenchArgs;
use std::fmt::Write as _;
use std::path::Path;

/// The variants compared: name and the relay's extra environment.
const VARIANTS: &[(&str, &[(&str, &str)])] = &[
    (
        "upstream HTTP/1.1",
        &[("BEDROCK_RELAY_UPSTREAM_HTTP2", "never")],
    ),
    (
        "upstream h2c",
        &[("BEDROCK_RELAY_UPSTREAM_HTTP2", "always")],
    ),
    (
        "upstream h2c, 1 thread",
        &[
            ("BEDROCK_RELAY_UPSTREAM_HTTP2", "always"),
            ("BEDROCK_RELAY_WORKER_THREADS", "1"),
        ],
    ),
];

struct Row {
    name: String,
    held: Held,
}

/// Run every variant and print the table (also written to `<out_dir>/memory.md`).
pub async fn run(args: &BenchArgs, bin: &Path) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for (name, env) in VARIANTS {
        eprintln!("bench: memory: {name}: {} open streams", args.open_streams);
        let sim = procs::start_sim(bin, &["--inter-token", "5s"])?;
        let relay = procs::start_relay_env(bin, sim.addr, env)?;
        let target = phases::target("relay", &relay);
        let held = phases::hold(args.open_streams, &target, &relay).await;
        rows.push(Row {
            name: name.to_string(),
            held,
        });
        drop(relay);
        drop(sim);
    }
    // nginx in front of the same dripping simulator, in the same run.
    let nginx = match args.nginx.as_deref() {
        Some("none") => None,
        Some(path) => Some(std::path::PathBuf::from(path)),
        None => procs::find_nginx(),
    };
    if let Some(nb) = nginx {
        eprintln!("bench: memory: nginx: {} open streams", args.open_streams);
        let sim = procs::start_sim(bin, &["--inter-token", "5s"])?;
        let dir = std::path::absolute(args.out_dir.join("drip-memory"))?;
        match procs::start_nginx(&nb, sim.addr, &dir) {
            Ok(proxy) => {
                let target = phases::target("nginx", &proxy);
                let held = phases::hold(args.open_streams, &target, &proxy).await;
                rows.push(Row {
                    name: "nginx (HTTP/1.1 upstream)".into(),
                    held,
                });
            }
            Err(e) => eprintln!("bench: memory: nginx skipped: {e}"),
        }
    }
    let table = table(&rows);
    println!("\n{table}");
    std::fs::write(args.out_dir.join("memory.md"), &table)?;
    Ok(())
}

fn per_stream_kib(h: &Held) -> f64 {
    h.rss.saturating_sub(h.base) as f64 / 1024.0 / h.streams.max(1) as f64
}

fn table(rows: &[Row]) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let first = rows.first().map(|r| per_stream_kib(&r.held)).unwrap_or(0.0);
    let mut out = String::from(
        "| proxy | streams held | RSS fresh (MiB) | with streams (MiB) | per stream (KiB) | ratio to first | descriptors open |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let kib = per_stream_kib(&r.held);
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            r.name,
            r.held.streams,
            mib(r.held.base),
            mib(r.held.rss),
            kib,
            if first > 0.0 { kib / first } else { 0.0 },
            r.held.fds
        );
    }
    for r in rows {
        if let Some(e) = &r.held.first_error {
            let _ = writeln!(out, "\n{}: some streams failed to open, first: {e}", r.name);
        }
    }
    out
}
