//! `bench_otel`: what OpenTelemetry export costs when its endpoint is down. Relays in front of
//! one simulator, the same binary: export off; export on towards a closed port (every batch
//! fails); export on towards a sink that accepts everything; export on with spans not sampled
//! (metrics only). A short batch delay, so export is attempted all through the run.
//! Rounds alternate between the two (off, on, off, on, ...) so drift of the machine hits both
//! alike; each round sends Converse at concurrency 16 and ConverseStream (200 events) at
//! concurrency 8. Prints requests per second and p50/p99 latency per mode, and the ratios.
//!
//! `cargo build --release --workspace --bin bench_otel --bin bedrock-relay && target/release/bench_otel`
#![forbid(unsafe_code)]

use bedrock_relay_bench::load::{self, Op, Target};
use bedrock_relay_bench::procs::{self, Proc};
use bedrock_relay_bench::report::percentile;
use std::path::PathBuf;
use std::time::Duration;

const ROUNDS: usize = 6;

fn main() {
    let rounds = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(ROUNDS);
    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("bedrock-relay")))
        .unwrap_or_else(|| PathBuf::from("target/release/bedrock-relay"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(&bin, rounds)) {
        eprintln!("bench_otel: {e}");
        std::process::exit(1);
    }
}

#[derive(Default)]
struct Tally {
    whole: Vec<Duration>,
    whole_wall: Duration,
    streams: Vec<Duration>,
    stream_wall: Duration,
}

async fn run(bin: &std::path::Path, rounds: usize) -> Result<(), Box<dyn std::error::Error>> {
    let sim = procs::start_sim(bin, &[])?;
    let dead = procs::free_addr();
    let dead_url = format!("http://{dead}");
    let off = procs::start_relay_env(bin, sim.addr, &[])?;
    let on = procs::start_relay_env(
        bin,
        sim.addr,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", dead_url.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
        ],
    )?;
    let sink = sink().await?;
    let sink_url = format!("http://{sink}");
    let up = procs::start_relay_env(
        bin,
        sim.addr,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", sink_url.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
        ],
    )?;
    let unsampled = procs::start_relay_env(
        bin,
        sim.addr,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", dead_url.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
            ("OTEL_TRACES_SAMPLER", "always_off"),
        ],
    )?;
    let mut tallies: [Tally; 4] = Default::default();
    let relays: [(&'static str, &Proc); 4] = [
        ("off", &off),
        ("on, endpoint down", &on),
        ("on, endpoint up (a sink answering 200)", &up),
        (
            "on, endpoint down, spans not sampled (metrics only)",
            &unsampled,
        ),
    ];
    for (name, relay) in relays {
        let t = target(name, relay);
        load::drive(&t, Op::Converse, 40, 4, 200, Duration::from_secs(10)).await?;
    }
    for round in 0..rounds {
        // Alternate which goes first.
        let order = if round % 2 == 0 {
            [0, 1, 2, 3]
        } else {
            [3, 2, 1, 0]
        };
        for i in order {
            let t = target(relays[i].0, relays[i].1);
            let (w, wall) =
                load::drive(&t, Op::Converse, 40, 16, 3000, Duration::from_secs(30)).await?;
            let (s, swall) =
                load::drive(&t, Op::ConverseStream, 200, 8, 300, Duration::from_secs(30)).await?;
            let tally = &mut tallies[i];
            tally.whole.extend(w.iter().map(|x| x.total));
            tally.whole_wall += wall;
            tally.streams.extend(s.iter().map(|x| x.total));
            tally.stream_wall += swall;
        }
        eprintln!("bench_otel: round {} of {rounds} done", round + 1);
    }
    println!("| OTLP export | Converse req/s (c=16) | p50 | p99 | ConverseStream req/s (c=8, 200 events) | p50 | p99 |");
    println!("|---|---|---|---|---|---|---|");
    let mut rates = Vec::new();
    for (i, (name, _)) in relays.iter().enumerate() {
        let t = &tallies[i];
        let rps = t.whole.len() as f64 / t.whole_wall.as_secs_f64();
        let sps = t.streams.len() as f64 / t.stream_wall.as_secs_f64();
        rates.push((rps, sps, p(&t.whole, 0.5), p(&t.streams, 0.5)));
        println!(
            "| {name} | {rps:.0} | {} | {} | {sps:.1} | {} | {} |",
            ms(p(&t.whole, 0.5)),
            ms(p(&t.whole, 0.99)),
            ms(p(&t.streams, 0.5)),
            ms(p(&t.streams, 0.99)),
        );
    }
    let off = rates[0];
    for (i, on) in rates.iter().enumerate().skip(1) {
        println!(
            "\n{} / off: Converse throughput {:.3}, p50 {:.3}; ConverseStream throughput {:.3}, p50 {:.3}",
            relays[i].0,
            on.0 / off.0,
            on.2.as_secs_f64() / off.2.as_secs_f64(),
            on.1 / off.1,
            on.3.as_secs_f64() / off.3.as_secs_f64(),
        );
    }
    Ok(())
}

fn target(name: &'static str, p: &Proc) -> Target {
    Target {
        name,
        addr: p.addr,
        prefix: String::new(),
        headers: vec![],
    }
}

fn p(samples: &[Duration], q: f64) -> Duration {
    percentile(samples, q).unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// An OTLP/HTTP endpoint that accepts everything: 200 with an empty (valid) protobuf answer.
async fn sink() -> std::io::Result<std::net::SocketAddr> {
    use http_body_util::{BodyExt, Full};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        hyper::Response::builder()
                            .header("content-type", "application/x-protobuf")
                            .body(Full::new(bytes::Bytes::new()))
                    },
                );
                let io = hyper_util::rt::TokioIo::new(socket);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Ok(addr)
}
