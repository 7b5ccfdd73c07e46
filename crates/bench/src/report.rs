//! Results of a benchmark run and the one table that compares them: the simulator reached
//! directly (the limit), the relay, nginx and LiteLLM side by side, each proxy's figures as
//! an overhead over the direct ones measured in the same run, plus the targets and
//! whether this run met them.

use std::fmt::Write as _;
use std::time::Duration;

/// Nearest-rank percentile (`q` in 0..=1) of unsorted samples.
pub fn percentile(samples: &[Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// Everything measured for one way of reaching the simulator.
#[derive(Debug, Default, Clone)]
pub struct TargetResult {
    pub name: &'static str,
    /// Converse, concurrency 1: latency of each request.
    pub c1: Vec<Duration>,
    /// Converse, concurrency 64: requests per second.
    pub rps_c64: Option<f64>,
    /// Proxy CPU per non-streaming request (c=1 and c=64 phases together).
    pub cpu_per_req: Option<Duration>,
    /// ConverseStream, 200-piece answers: time to first event per stream, concurrency 1.
    pub ttfe: Vec<Duration>,
    /// ConverseStream throughput: events per second.
    pub events_per_s: Option<f64>,
    /// Proxy CPU per forwarded event.
    pub cpu_per_event: Option<Duration>,
    /// Resident memory right after start, and after the load phases.
    pub rss_idle: Option<u64>,
    pub rss_after: Option<u64>,
    /// Open slow streams held, the proxy's RSS while they were open, and its RSS just
    /// before (a fresh proxy process for this phase).
    pub open_streams: Option<(usize, u64, u64)>,
    /// Resume gap minus the simulator's first-token delay, per sample.
    pub resume_gap: Vec<Duration>,
    /// Why parts were skipped or failed.
    pub notes: Vec<String>,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Signed difference in µs of a percentile over the direct one.
fn added(t: &[Duration], direct: &[Duration], q: f64) -> Option<f64> {
    Some(us(percentile(t, q)?) - us(percentile(direct, q)?))
}

struct Row {
    label: &'static str,
    cells: Vec<Option<f64>>,
    target: &'static str,
    verdict: Option<bool>,
}

/// Render the comparison table (Markdown) for `direct` and the proxies in `rest`.
pub fn table(direct: &TargetResult, rest: &[TargetResult]) -> String {
    let all: Vec<&TargetResult> = std::iter::once(direct).chain(rest).collect();
    let col = |f: &dyn Fn(&TargetResult) -> Option<f64>| all.iter().map(|t| f(t)).collect();
    let relay = rest.iter().find(|t| t.name == "relay");
    let nginx = rest.iter().find(|t| t.name == "nginx");
    let litellm = rest.iter().find(|t| t.name == "litellm");
    let rv = |f: &dyn Fn(&TargetResult) -> Option<f64>| relay.and_then(f);
    let a50 = |t: &TargetResult| added(&t.c1, &direct.c1, 0.5);
    let a99 = |t: &TargetResult| added(&t.c1, &direct.c1, 0.99);
    let t50 = |t: &TargetResult| added(&t.ttfe, &direct.ttfe, 0.5);
    let t99 = |t: &TargetResult| added(&t.ttfe, &direct.ttfe, 0.99);
    let le = |v: Option<f64>, max: f64| v.map(|v| v <= max);
    let rows = vec![
        Row {
            label: "Converse c=1 latency p50 (µs)",
            cells: col(&|t| percentile(&t.c1, 0.5).map(us)),
            target: "",
            verdict: None,
        },
        Row {
            label: "Converse c=1 added p50 (µs)",
            cells: col(&|t| a50(t).filter(|_| t.name != "direct")),
            target: "<= 30",
            verdict: le(rv(&a50), 30.0),
        },
        Row {
            label: "Converse c=1 added p99 (µs)",
            cells: col(&|t| a99(t).filter(|_| t.name != "direct")),
            target: "<= 100",
            verdict: le(rv(&a99), 100.0),
        },
        Row {
            label: "Converse c=64 requests/s",
            cells: col(&|t| t.rps_c64),
            target: ">= 80% of nginx",
            verdict: rv(&|t| t.rps_c64)
                .zip(nginx.and_then(|n| n.rps_c64))
                .map(|(r, n)| r >= 0.8 * n),
        },
        Row {
            label: "proxy CPU per request (µs)",
            cells: col(&|t| t.cpu_per_req.map(us)),
            target: "<= 20",
            verdict: le(rv(&|t| t.cpu_per_req.map(us)), 20.0),
        },
        Row {
            label: "ConverseStream events/s",
            cells: col(&|t| t.events_per_s),
            target: "",
            verdict: None,
        },
        Row {
            label: "proxy CPU per event (µs)",
            cells: col(&|t| t.cpu_per_event.map(us)),
            target: "<= 1",
            verdict: le(rv(&|t| t.cpu_per_event.map(us)), 1.0),
        },
        Row {
            label: "TTFE overhead p50 (µs)",
            cells: col(&|t| t50(t).filter(|_| t.name != "direct")),
            target: "",
            verdict: None,
        },
        Row {
            label: "TTFE overhead p99 (µs)",
            cells: col(&|t| t99(t).filter(|_| t.name != "direct")),
            target: "<= 1000",
            verdict: le(rv(&t99), 1000.0),
        },
        Row {
            label: "idle RSS (MiB)",
            cells: col(&|t| t.rss_idle.map(mib)),
            target: "<= 15",
            verdict: le(rv(&|t| t.rss_idle.map(mib)), 15.0),
        },
        Row {
            label: "RSS after load (MiB)",
            cells: col(&|t| t.rss_after.map(mib)),
            target: "",
            verdict: None,
        },
        Row {
            label: "open slow streams held",
            cells: col(&|t| t.open_streams.map(|(n, _, _)| n as f64)),
            target: "",
            verdict: None,
        },
        Row {
            label: "RSS with streams open (MiB)",
            cells: col(&|t| t.open_streams.map(|(_, r, _)| mib(r))),
            target: "<= 100 at 10k",
            verdict: None,
        },
        Row {
            label: "RSS at 10k streams, measured or extrapolated (MiB)",
            cells: col(&|t| t.open_streams.map(|(n, r, base)| mib(at_10k(n, r, base)))),
            target: "<= 100",
            verdict: rv(&|t| t.open_streams.map(|(n, r, base)| mib(at_10k(n, r, base))))
                .map(|r| r <= 100.0),
        },
        Row {
            label: "RSS per open stream (KiB)",
            cells: col(&|t| {
                let (n, r, base) = t.open_streams?;
                Some(r.saturating_sub(base) as f64 / 1024.0 / n.max(1) as f64)
            }),
            target: "",
            verdict: None,
        },
        Row {
            label: "resume gap p50 (ms)",
            cells: col(&|t| percentile(&t.resume_gap, 0.5).map(|d| us(d) / 1e3)),
            target: "",
            verdict: None,
        },
        Row {
            label: "resume gap max (ms)",
            cells: col(&|t| percentile(&t.resume_gap, 1.0).map(|d| us(d) / 1e3)),
            target: "<= backoff (1) + 5",
            verdict: le(
                rv(&|t| percentile(&t.resume_gap, 1.0).map(|d| us(d) / 1e3)),
                6.0,
            ),
        },
        Row {
            label: "LiteLLM added p50 / relay added p50",
            cells: col(&|t| {
                (t.name == "relay")
                    .then(|| ratio(litellm, relay, &a50))
                    .flatten()
            }),
            target: ">= 100",
            verdict: ratio(litellm, relay, &a50).map(|r| r >= 100.0),
        },
        Row {
            label: "LiteLLM RSS / relay RSS (after load)",
            cells: col(&|t| {
                (t.name == "relay")
                    .then(|| ratio(litellm, relay, &|t| t.rss_after.map(|b| b as f64)))
                    .flatten()
            }),
            target: ">= 20",
            verdict: ratio(litellm, relay, &|t| t.rss_after.map(|b| b as f64)).map(|r| r >= 20.0),
        },
    ];
    render(&all, &rows)
}

/// RSS with 10,000 streams open: measured when `n` reached it, else the base plus `n`
/// streams' growth scaled linearly.
fn at_10k(n: usize, rss: u64, base: u64) -> u64 {
    if n >= 10_000 || n == 0 {
        return rss;
    }
    base + (rss.saturating_sub(base) as f64 * 10_000.0 / n as f64) as u64
}

fn ratio(
    a: Option<&TargetResult>,
    b: Option<&TargetResult>,
    f: &dyn Fn(&TargetResult) -> Option<f64>,
) -> Option<f64> {
    let (x, y) = (f(a?)?, f(b?)?);
    (y > 0.0).then(|| x / y)
}

fn render(all: &[&TargetResult], rows: &[Row]) -> String {
    let mut s = String::from("| metric |");
    for t in all {
        let _ = write!(s, " {} |", t.name);
    }
    s.push_str(" target (relay) | met |\n|---|");
    s.push_str(&"---:|".repeat(all.len()));
    s.push_str("---|---|\n");
    for r in rows {
        let _ = write!(s, "| {} |", r.label);
        for c in &r.cells {
            match c {
                Some(v) if v.abs() >= 100.0 || v.fract() == 0.0 => {
                    let _ = write!(s, " {v:.0} |");
                }
                Some(v) => {
                    let _ = write!(s, " {v:.2} |");
                }
                None => s.push_str(" – |"),
            }
        }
        let verdict = match r.verdict {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        let _ = writeln!(s, " {} | {verdict} |", r.target);
    }
    for t in all {
        for n in &t.notes {
            let _ = writeln!(s, "\nnote ({}): {n}", t.name);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        assert_eq!(percentile(&v, 0.5), Some(Duration::from_micros(50)));
        assert_eq!(percentile(&v, 0.99), Some(Duration::from_micros(99)));
        assert_eq!(percentile(&v, 1.0), Some(Duration::from_micros(100)));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn open_stream_memory_extrapolates_to_10k() {
        let mib = 1024 * 1024;
        assert_eq!(at_10k(5_000, 30 * mib, 10 * mib), 50 * mib);
        assert_eq!(at_10k(10_000, 30 * mib, 10 * mib), 30 * mib);
        assert_eq!(at_10k(0, 30 * mib, 10 * mib), 30 * mib);
    }

    #[test]
    fn table_shows_overheads_and_verdicts() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&x| Duration::from_micros(x))
                .collect::<Vec<_>>()
        };
        let direct = TargetResult {
            name: "direct",
            c1: ms(&[100, 100, 100]),
            ..Default::default()
        };
        let relay = TargetResult {
            name: "relay",
            c1: ms(&[150, 150, 400]),
            ..Default::default()
        };
        let t = table(&direct, &[relay]);
        assert!(
            t.contains("| Converse c=1 added p50 (µs) | – | 50 | <= 30 | NO |"),
            "{t}"
        );
        assert!(
            t.contains("| Converse c=1 added p99 (µs) | – | 300 | <= 100 | NO |"),
            "{t}"
        );
    }
}
