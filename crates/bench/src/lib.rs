//! bedrock-relay-bench: the side-by-side benchmark, binary `bench` (`scripts/bench`, or
//! `cargo build --release --workspace --bin bench --bin bedrock-relay`, then
//! `target/release/bench`). Starts the simulator and the relay as separate processes on
//! loopback (the `bedrock-relay` binary; neither is linked in), and nginx and LiteLLM's
//! Bedrock pass-through when they are installed, drives the same load at each from this
//! process, and prints one table (see [`report::table`]).
//!
//! Phases per target: Converse at concurrency 1 (latency) and 64 (throughput, proxy CPU),
//! ConverseStream with 200-piece answers (time to first event at concurrency 1, events per
//! second and proxy CPU per event at concurrency 16). For the relay (and nginx) also: many
//! open streams on a slowly dripping simulator (RSS per stream); for the relay: the resume
//! gap after an injected reset. `load`, `procs` and `report` are also `bench_otel`'s.
#![forbid(unsafe_code)]

pub mod load;
mod memory;
pub mod phases;
pub mod procs;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

/// Flags of the bench binary.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "bench",
    about = "Side-by-side benchmark: direct, relay, nginx, LiteLLM"
)]
pub struct BenchArgs {
    /// Tiny run for CI: few requests, 50 open streams, no nginx or LiteLLM unless given.
    #[arg(long)]
    pub smoke: bool,
    /// The `bedrock-relay` binary [default: next to this executable].
    #[arg(long)]
    pub relay_bin: Option<PathBuf>,
    /// nginx binary [default: found on PATH or /usr/sbin]; "none" skips it.
    #[arg(long, env = "BENCH_NGINX")]
    pub nginx: Option<String>,
    /// LiteLLM's `litellm` executable (e.g. in a venv); skipped when not given.
    #[arg(long, env = "BENCH_LITELLM")]
    pub litellm: Option<PathBuf>,
    /// Converse requests at concurrency 1, per target.
    #[arg(long, default_value_t = 5000)]
    pub requests: usize,
    /// Seconds of the concurrency-64 and streaming throughput phases, per target.
    #[arg(long, default_value_t = 4.0)]
    pub seconds: f64,
    /// Streams for the time-to-first-event measurement, per target.
    #[arg(long, default_value_t = 300)]
    pub ttfe_streams: usize,
    /// Open slow streams held at once (needs `ulimit -n` of about 3x this).
    #[arg(long, env = "BENCH_OPEN_STREAMS", default_value_t = 10_000)]
    pub open_streams: usize,
    /// Resume-gap samples.
    #[arg(long, default_value_t = 30)]
    pub resumes: usize,
    /// Simulator first-token delay for the main phases (e.g. 0s, or 5ms to be realistic).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub sim_ttft: Duration,
    /// Only compare memory per open stream across upstream protocols (see `memory`).
    #[arg(long)]
    pub memory: bool,
    /// Directory for raw samples (CSV) and child-process scratch files.
    #[arg(long, env = "BENCH_OUT_DIR", default_value = "target/bench")]
    pub out_dir: PathBuf,
}

impl BenchArgs {
    /// Shrink every count for a smoke run.
    pub fn effective(mut self) -> Self {
        if self.smoke {
            self.requests = self.requests.min(200);
            self.seconds = self.seconds.min(0.5);
            self.ttfe_streams = self.ttfe_streams.min(10);
            self.open_streams = self.open_streams.min(50);
            self.resumes = self.resumes.min(3);
            if self.nginx.is_none() {
                self.nginx = Some("none".into());
            }
        }
        self
    }

    fn relay_bin(&self) -> PathBuf {
        self.relay_bin.clone().unwrap_or_else(|| {
            let me = std::env::current_exe().expect("current executable");
            me.with_file_name("bedrock-relay")
        })
    }
}

/// A short description of the machine for the report.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cores} cores available, Linux {}", kernel.trim())
}

/// Run the whole benchmark and print the table to stdout.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let args = args.effective();
    std::fs::create_dir_all(&args.out_dir)?;
    let bin = args.relay_bin();
    anyhow::ensure!(bin.is_file(), "relay binary {} not found", bin.display());
    println!("machine: {}", machine());
    if args.memory {
        return memory::run(&args, &bin).await;
    }
    let ttft = humantime::format_duration(args.sim_ttft).to_string();
    let sim = procs::start_sim(&bin, &["--ttft", &ttft])?;
    let direct_target = load::Target {
        name: "direct",
        addr: sim.addr,
        prefix: String::new(),
        headers: vec![],
    };
    let direct = phases::measure(&args, direct_target, None).await?;

    let mut rest = Vec::new();
    let relay = procs::start_relay(&bin, sim.addr)?;
    let mut r = phases::measure(&args, phases::target("relay", &relay), Some(&relay)).await?;
    drop(relay);
    phases::open_streams(&args, &bin, &mut r, None).await;
    phases::resume_gap(&args, &bin, &mut r).await;
    rest.push(r);

    let nginx_bin = match args.nginx.as_deref() {
        Some("none") => Err("--nginx none"),
        Some(p) => Ok(PathBuf::from(p)),
        None => procs::find_nginx().ok_or("not installed (apt-get install nginx-light)"),
    };
    match nginx_bin {
        Ok(nb) => {
            let dir = std::path::absolute(args.out_dir.join("nginx"))?;
            match procs::start_nginx(&nb, sim.addr, &dir) {
                Ok(p) => {
                    let mut n = phases::measure(&args, phases::target("nginx", &p), Some(&p))
                        .await
                        .unwrap_or_else(|e| phases::failed("nginx", e));
                    drop(p);
                    phases::open_streams(&args, &bin, &mut n, Some((&nb, &dir))).await;
                    rest.push(n);
                }
                Err(e) => rest.push(phases::failed("nginx", e)),
            }
        }
        Err(why) => rest.push(phases::skipped("nginx", why)),
    }

    match &args.litellm {
        Some(exe) => {
            let dir = std::path::absolute(args.out_dir.join("litellm"))?;
            match procs::start_litellm(exe, sim.addr, &dir) {
                Ok(p) => {
                    let mut t = phases::target("litellm", &p);
                    t.prefix = "/bedrock".into();
                    t.headers = vec![("authorization".into(), "Bearer sk-bench".into())];
                    let mut small = args.clone();
                    small.requests = small.requests.min(1000);
                    small.ttfe_streams = small.ttfe_streams.min(100);
                    let l = phases::measure(&small, t, Some(&p))
                        .await
                        .unwrap_or_else(|e| phases::failed("litellm", e));
                    rest.push(l);
                }
                Err(e) => rest.push(phases::failed("litellm", e)),
            }
        }
        None => rest.push(phases::skipped(
            "litellm",
            "no --litellm given (scripts/bench installs it)",
        )),
    }

    phases::write_csv(&args.out_dir, &direct, &rest)?;
    println!("\n{}", report::table(&direct, &rest));
    Ok(())
}
