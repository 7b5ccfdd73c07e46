//! The measurement phases of a benchmark run, each filling part of a
//! [`TargetResult`]: the common load phases run against every target, the open-streams and
//! resume-gap phases start their own simulator (dripping, or with an injected reset) and a
//! fresh proxy in front of it so their memory and timing are not mixed with the load phases.

use super::load::{self, Conn, LoadError, Op, Target};
use super::procs::{self, Proc};
use super::report::TargetResult;
use super::BenchArgs;
use std::path::Path;
use std::time::Duration;

/// Answer length (pieces) of the streaming phases; about 205 frames per stream.
const STREAM_LEN: usize = 200;
/// First-token delay of the resume-gap simulator (its own time to the first event, measured
/// in the same run, is what is subtracted from each gap).
const RESUME_TTFT: Duration = Duration::from_millis(10);

/// The target that reaches `proc` on its address.
pub fn target(name: &'static str, proc: &Proc) -> Target {
    Target {
        name,
        addr: proc.addr,
        prefix: String::new(),
        headers: vec![],
    }
}

/// A result with nothing measured and the reason.
pub fn skipped(name: &'static str, why: &str) -> TargetResult {
    TargetResult {
        name,
        notes: vec![format!("skipped: {why}")],
        ..Default::default()
    }
}

/// A result for a target that failed to start or to answer.
pub fn failed(name: &'static str, e: impl std::fmt::Display) -> TargetResult {
    eprintln!("bench: {name} failed: {e}");
    TargetResult {
        name,
        notes: vec![format!("failed: {e}")],
        ..Default::default()
    }
}

/// The load phases against one target; `proc` is the proxy process whose CPU and memory
/// are read (none for the direct target).
pub async fn measure(
    args: &BenchArgs,
    target: Target,
    proc: Option<&Proc>,
) -> Result<TargetResult, LoadError> {
    let secs = Duration::from_secs_f64(args.seconds);
    let cpu = || proc.map(Proc::cpu);
    let mut r = TargetResult {
        name: target.name,
        rss_idle: proc.map(Proc::rss),
        ..Default::default()
    };
    eprintln!("bench: {}: warm-up", target.name);
    load::drive(&target, Op::Converse, 40, 4, 200, secs).await?;
    load::drive(&target, Op::ConverseStream, STREAM_LEN, 4, 20, secs).await?;

    eprintln!("bench: {}: Converse c=1", target.name);
    let cpu0 = cpu();
    let (c1, _) = load::drive(&target, Op::Converse, 40, 1, args.requests, secs * 5).await?;
    eprintln!("bench: {}: Converse c=64", target.name);
    let (c64, wall) = load::drive(&target, Op::Converse, 40, 64, usize::MAX, secs).await?;
    r.rps_c64 = Some(c64.len() as f64 / wall.as_secs_f64());
    let n = (c1.len() + c64.len()) as u32;
    r.cpu_per_req = cpu().zip(cpu0).map(|(b, a)| (b - a) / n.max(1));
    r.c1 = c1.iter().map(|s| s.total).collect();

    eprintln!("bench: {}: ConverseStream", target.name);
    let ttfe_time = secs * 5;
    let (t, _) = load::drive(
        &target,
        Op::ConverseStream,
        STREAM_LEN,
        1,
        args.ttfe_streams,
        ttfe_time,
    )
    .await?;
    r.ttfe = t.iter().filter_map(|s| s.first_event).collect();
    let cpu0 = cpu();
    let (s, wall) = load::drive(
        &target,
        Op::ConverseStream,
        STREAM_LEN,
        16,
        usize::MAX,
        secs,
    )
    .await?;
    let events: u64 = s.iter().map(|s| s.events).sum();
    r.events_per_s = Some(events as f64 / wall.as_secs_f64());
    r.cpu_per_event = cpu()
        .zip(cpu0)
        .map(|(b, a)| (b - a) / (events.max(1) as u32));
    r.rss_after = proc.map(Proc::rss);
    Ok(r)
}

/// Hold `args.open_streams` streams open through a fresh proxy (the relay, or nginx when
/// `nginx` is given) in front of a simulator that drips one token every 5 s, and record the
/// proxy's RSS before and with them open.
pub async fn open_streams(
    args: &BenchArgs,
    bin: &Path,
    r: &mut TargetResult,
    nginx: Option<(&Path, &Path)>,
) {
    if let Err(e) = try_open_streams(args, bin, r, nginx).await {
        r.notes.push(format!("open streams: {e}"));
    }
}

async fn try_open_streams(
    args: &BenchArgs,
    bin: &Path,
    r: &mut TargetResult,
    nginx: Option<(&Path, &Path)>,
) -> anyhow::Result<()> {
    eprintln!("bench: {}: {} open streams", r.name, args.open_streams);
    let sim = procs::start_sim(bin, &["--inter-token", "5s"])?;
    let proxy = match nginx {
        Some((nb, dir)) => procs::start_nginx(nb, sim.addr, &dir.join("drip"))?,
        None => procs::start_relay(bin, sim.addr)?,
    };
    let held = hold(args.open_streams, &target(r.name, &proxy), &proxy).await;
    r.open_streams = Some((held.streams, held.rss, held.base));
    if let Some(e) = held.first_error {
        let failed = args.open_streams - held.streams;
        r.notes
            .push(format!("{failed} streams failed to open, first: {e}"));
    }
    Ok(())
}

/// What holding streams open through a proxy cost it.
pub struct Held {
    /// Streams held open at once.
    pub streams: usize,
    /// The proxy's RSS with them open, and before (bytes).
    pub rss: u64,
    pub base: u64,
    /// Descriptors the proxy's main process had open with them open.
    pub fds: usize,
    pub first_error: Option<LoadError>,
}

/// Open `n` streams through `proxy` (in front of a dripping simulator), wait until each has
/// its first frame, measure the proxy's RSS, then close them.
pub async fn hold(n: usize, target: &Target, proxy: &Proc) -> Held {
    // Let the proxy settle after start, then take its baseline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = proxy.rss();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (target, gate) = (target.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore open");
            let mut conn = Conn::open(&target).await?;
            let body = conn
                .open_stream(load::body(1000, &format!("drip-{i}")))
                .await?;
            Ok::<_, LoadError>((conn, body))
        });
    }
    let mut held = Vec::with_capacity(n);
    let mut first_error = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        match joined.expect("stream opener panicked") {
            Ok(h) => held.push(h),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = proxy.rss();
    let fds = std::fs::read_dir(format!("/proc/{}/fd", proxy.pid())).map_or(0, |d| d.count());
    tasks.abort_all();
    Held {
        streams: held.len(),
        rss,
        base,
        fds,
        first_error,
    }
}

/// Time from an injected reset (after 50 frames) to the first resumed frame at the client,
/// minus the simulator's first-token delay, through a fresh relay with 1 ms backoff.
pub async fn resume_gap(args: &BenchArgs, bin: &Path, r: &mut TargetResult) {
    if let Err(e) = try_resume_gap(args, bin, r).await {
        r.notes.push(format!("resume gap: {e}"));
    }
}

async fn try_resume_gap(args: &BenchArgs, bin: &Path, r: &mut TargetResult) -> anyhow::Result<()> {
    eprintln!("bench: relay: resume gap");
    let ttft = format!("{}ms", RESUME_TTFT.as_millis());
    let fault = "reset_after_events:events=50@tag=resume,attempts=1";
    let sim = procs::start_sim(bin, &["--ttft", &ttft, "--fault", fault])?;
    // The simulator's own first-token delay as a resumed request meets it: a new connection
    // (the reset one is gone), the configured delay, the simulator's own answer path.
    let mut own = Vec::new();
    for i in 0..args.resumes.clamp(1, 20) {
        let mut direct = Conn::open(&target("direct", &sim)).await?;
        let body = load::body(STREAM_LEN, &format!("resume-own-{i}"));
        let first = direct.send(Op::ConverseStream, body).await?.first_event;
        own.push(first.unwrap_or(RESUME_TTFT));
    }
    own.sort_unstable();
    let sim_first = own[own.len() / 2].max(RESUME_TTFT);
    r.notes.push(format!(
        "resume gap: the simulator's own time to first event on a new connection, {:.2} ms \
         (median of {}; {} ms of it configured), is subtracted",
        sim_first.as_secs_f64() * 1e3,
        own.len(),
        RESUME_TTFT.as_millis()
    ));
    let relay = procs::start_relay(bin, sim.addr)?;
    let mut conn = Conn::open(&target("relay", &relay)).await?;
    for i in 0..args.resumes {
        let body = load::body(STREAM_LEN, &format!("resume-{i} sim:tag=resume"));
        let s = conn.send(Op::ConverseStream, body).await?;
        anyhow::ensure!(
            s.events > STREAM_LEN as u64 && s.max_gap >= RESUME_TTFT,
            "stream {i} was not resumed whole: {} frames, longest gap {:?}",
            s.events,
            s.max_gap
        );
        r.resume_gap.push(s.max_gap.saturating_sub(sim_first));
    }
    Ok(())
}

/// Raw samples for plotting: `target,kind,micros` rows.
pub fn write_csv(dir: &Path, direct: &TargetResult, rest: &[TargetResult]) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let mut s = String::from("target,kind,micros\n");
    for t in std::iter::once(direct).chain(rest) {
        for (kind, v) in [("converse_c1", &t.c1), ("ttfe", &t.ttfe)] {
            for d in v {
                let _ = writeln!(s, "{},{kind},{:.1}", t.name, d.as_secs_f64() * 1e6);
            }
        }
    }
    std::fs::write(dir.join("samples.csv"), s)
}
