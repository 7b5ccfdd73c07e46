//! HTTP/2 mass reset: 300 ConverseStream calls through the relay, multiplexed on one h2c
//! connection to the simulator (`upstream_http2 = always`), the connection reset with a TCP
//! RST while every answer is half-way. One reset breaks all 300 upstream streams at once.
//!
//! Asserts: every client stream ends with the answer byte-identical to an uninterrupted
//! reference (temperature 0); each stream was resumed exactly once (no retry storm: one
//! retry per broken stream); the default retry budget (500 tokens, 5 a retry: 100 retries)
//! held, since the broken connection is paid for once, not 300 times, and every token came
//! back;
//! the simulator saw the 300 first attempts on one connection and the 300 resumes on one
//! new connection. Loopback only; a few seconds on 2 cores.

use crate::support::{self, canon, RELAY_KEY, RELAY_SECRET};
use bedrock_relay::Signer;
use bedrock_relay_sim::{self as sim, SimConfig};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::canon::ConverseReq;

const STREAMS: usize = 300;
const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
/// The default retry budget: 300 streams paying 5 tokens each would need 1,500.
const BUDGET: u32 = 500;

fn prompt(i: usize) -> String {
    format!("Mass reset {i}: tell me about tides sim:len=100")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_streams_on_one_h2_connection_all_heal_after_a_reset() {
    let started = Instant::now();
    // 100 pieces 25 ms apart: each answer takes ~2.5 s; the reset lands well inside it even
    // when opening the 300 streams is slow.
    let sim = sim::start(SimConfig {
        credentials: vec![(RELAY_KEY.into(), RELAY_SECRET.into())],
        inter_token: Duration::from_millis(25),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let clean = sim::start(SimConfig::default()).await.unwrap();
    let mut args = support::args(&sim.url());
    args.upstream_http2 = Some("always".into());
    args.backoff_base = Some("50ms".into());
    args.backoff_max = Some("500ms".into());
    let settings = bedrock_relay::load_config(&args).unwrap();
    assert_eq!(settings.retry_budget, BUDGET);
    let signer = Signer::for_tests(RELAY_KEY, RELAY_SECRET, None, "us-east-1");
    let relay = bedrock_relay::start_with_signer(settings, signer)
        .await
        .unwrap();
    let endpoint = format!("http://{}", relay.addr);
    let client = support::sdk_client(&endpoint, support::CLIENT_KEY, support::CLIENT_SECRET);
    let reference = support::sdk_client(&clean.url(), "AKIDX", "x");

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..STREAMS {
        let client = client.clone();
        tasks.spawn(async move {
            let got = canon::converse_stream(&client, &ConverseReq::new(MODEL, prompt(i))).await;
            (i, got)
        });
    }
    // Every stream admitted and flowing, then a little more: all are mid-answer.
    let deadline = Instant::now() + Duration::from_secs(15);
    while sim.log().len() < STREAMS {
        assert!(
            Instant::now() < deadline,
            "only {} streams opened",
            sim.log().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sim.reset_h2_connections(),
        1,
        "one upstream connection to reset"
    );

    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.push(r.unwrap());
    }
    results.sort_by_key(|(i, _)| *i);
    for (i, got) in &results {
        assert_eq!(got.error, None, "stream {i} failed");
        let want = canon::converse_stream(&reference, &ConverseReq::new(MODEL, prompt(*i))).await;
        assert_eq!(
            got.events, want.events,
            "stream {i} differs from the reference"
        );
    }

    let log = sim.log();
    let first: BTreeSet<u64> = log
        .iter()
        .filter(|e| e.attempt == 1)
        .map(|e| e.connection)
        .collect();
    let resumed: BTreeSet<u64> = log
        .iter()
        .filter(|e| e.attempt > 1)
        .map(|e| e.connection)
        .collect();
    assert_eq!(
        first.len(),
        1,
        "first attempts on one connection: {first:?}"
    );
    assert_eq!(
        resumed.len(),
        1,
        "resumes on one new connection: {resumed:?}"
    );
    assert!(first.is_disjoint(&resumed));
    assert_eq!(log.len(), 2 * STREAMS, "one resume per stream, no storm");
    assert!(log.iter().all(|e| e.signature == "valid" && e.attempt <= 2));
    let mid_answer = |e: &&sim::LogEntry| e.prefill.as_deref().is_some_and(|p| !p.is_empty());
    assert!(
        log.iter()
            .filter(|e| e.attempt == 2)
            .all(|e| mid_answer(&e)),
        "every resume continued a half-delivered answer (prefill)"
    );

    let m = &relay.metrics;
    assert_eq!(
        m.retry_budget_exhausted_total.get(),
        0,
        "budget never refused"
    );
    let retries: u64 = [
        "connect",
        "reset",
        "timeout",
        "throttled",
        "server_error",
        "unavailable",
        "stall",
        "corrupt_frame",
        "truncated",
        "in_stream_error",
    ]
    .iter()
    .map(|r| m.retries_total.with_label_values(&[r]).get())
    .sum();
    assert_eq!(retries, STREAMS as u64, "one retry per broken stream");
    assert_eq!(
        m.retry_budget_tokens.get(),
        i64::from(BUDGET),
        "every token given back"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    relay.shutdown().await;
    sim.shutdown().await;
    clean.shutdown().await;
}
