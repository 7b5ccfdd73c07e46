//! Soak and chaos: 2,000 ConverseStream calls at concurrency 200 through the relay, the
//! simulator injecting a random fault into 5% of attempts (resets, torn frames, CRC errors,
//! truncation, stalls, throttling, in-stream exceptions), while the relay's AWS credentials
//! expire every few hundred milliseconds and must be refreshed.
//!
//! Asserts: every stream ends byte-exact (its text equals the simulator's uninterrupted
//! answer) or with a modelled exception, never a transport error or a stitched answer;
//! every upstream attempt was validly signed; the credentials were refreshed many times;
//! file descriptors and resident memory return near the warm baseline afterwards.

use crate::support;

use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use bedrock_relay::Signer;
use bedrock_relay_sim::{self as sim, SimConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use support::canon::{self, ConverseReq};

const STREAMS: usize = 2_000;
const CONCURRENCY: usize = 200;
const KEYS: usize = 1_000;
const MODELS: [&str; 2] = [
    "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "anthropic.claude-sonnet-4-6",
];

fn key(i: usize) -> (String, String) {
    (format!("AKIDROT{i:04}"), format!("rotating-secret-{i}"))
}

/// Hands out a new key pair on every call, valid for 400 ms past the relay's 5-minute
/// refresh margin: the relay must refresh again and again during the run.
#[derive(Debug)]
struct Rotating {
    calls: Arc<AtomicUsize>,
}

impl ProvideCredentials for Rotating {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) % KEYS;
        let (id, secret) = key(n);
        let expiry = SystemTime::now() + Duration::from_secs(300) + Duration::from_millis(400);
        future::ProvideCredentials::ready(Ok(Credentials::new(
            id,
            secret,
            None,
            Some(expiry),
            "rotating-test",
        )))
    }
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Run `prompts` at `CONCURRENCY`; returns (clean, modelled errors, failures).
async fn drive(
    client: &aws_sdk_bedrockruntime::Client,
    range: std::ops::Range<usize>,
) -> (usize, usize, Vec<String>) {
    let gate = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for i in range {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let client = client.clone();
        tasks.spawn(async move {
            let model = MODELS[i % MODELS.len()];
            let prompt = format!("Soak {i}: tell me about lighthouses sim:len=24");
            // Greedy (Claude 4.6+ samples at 1 by default): every attempt means the same
            // answer, so the reference is known whatever the fault schedule.
            let req = ConverseReq {
                temperature: Some(0.0),
                ..ConverseReq::new(model, &prompt)
            };
            let got = canon::converse_stream(&client, &req).await;
            drop(permit);
            let want =
                sim::reference_pieces_at(model, "", &[("user", &prompt)], Some(0.0)).concat();
            match &got.error {
                None if got.text() == want => Ok(true),
                None => Err(format!("stream {i}: text differs from the reference")),
                Some(_) if got.modelled_error => Ok(false),
                Some(e) => Err(format!("stream {i}: untyped error {e}")),
            }
        });
    }
    let (mut clean, mut typed, mut failed) = (0, 0, Vec::new());
    while let Some(r) = tasks.join_next().await {
        match r.expect("task") {
            Ok(true) => clean += 1,
            Ok(false) => typed += 1,
            Err(e) => failed.push(e),
        }
    }
    (clean, typed, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_streams_with_faults_and_expiring_credentials() {
    let sim = sim::start(SimConfig {
        credentials: (0..KEYS).map(key).collect(),
        fault_rate: 0.05,
        seed: 20_261_128,
        log_capacity: 50_000,
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts");
    // Idle upstream connections are closed after 1 s, so descriptors can settle.
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, b"pool_idle_timeout = \"1s\"\n").unwrap();
    let mut args = support::args(&sim.url());
    args.config = Some(file.path().to_path_buf());
    args.max_attempts = Some("6".into());
    args.max_resumes = Some("5".into());
    args.retry_budget = Some("5000".into());
    let settings = bedrock_relay::load_config(&args).expect("valid settings");
    let calls = Arc::new(AtomicUsize::new(0));
    let provider = SharedCredentialsProvider::new(Rotating {
        calls: calls.clone(),
    });
    let fd_idle = fds();
    let relay = bedrock_relay::start_with_signer(settings, Signer::sigv4(provider, "us-east-1"))
        .await
        .expect("relay starts");
    let client = support::sdk_client(
        &format!("http://{}", relay.addr),
        support::CLIENT_KEY,
        support::CLIENT_SECRET,
    );

    // Warm up at full concurrency so connection pools reach their working size.
    let (_, _, failed) = drive(&client, 0..CONCURRENCY).await;
    assert!(failed.is_empty(), "{failed:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fd0, rss0) = (fds(), rss_kib());
    assert!(
        fd0 > fd_idle + CONCURRENCY,
        "pools hold connections: {fd_idle} -> {fd0}"
    );
    let refreshes0 = calls.load(Ordering::SeqCst);

    let t0 = Instant::now();
    let (clean, typed, failed) = drive(&client, CONCURRENCY..CONCURRENCY + STREAMS).await;
    let took = t0.elapsed();
    assert!(
        failed.is_empty(),
        "{} failures: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(clean + typed, STREAMS);
    assert!(
        typed <= STREAMS / 100,
        "{typed} streams ended in a typed error"
    );

    let log = sim.log();
    let faults = log.iter().filter(|e| e.fault.is_some()).count();
    assert!(faults >= STREAMS / 40, "only {faults} faults injected");
    let invalid: Vec<_> = log.iter().filter(|e| e.signature != "valid").collect();
    assert!(
        invalid.is_empty(),
        "{} attempts not validly signed",
        invalid.len()
    );
    let refreshes = calls.load(Ordering::SeqCst) - refreshes0;
    assert!(
        refreshes >= 3,
        "credentials refreshed only {refreshes} times in {took:?}"
    );

    // With the client gone and idle pools expired, every connection the run opened is
    // closed: descriptors return to where they were before any traffic (the relay is
    // still running). Memory returns near the warm baseline.
    drop(client);
    let settle = Instant::now();
    let mut fd1 = fds();
    while fd1 > fd_idle + 8 && settle.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        fd1 = fds();
    }
    let rss1 = rss_kib();
    eprintln!(
        "soak: {STREAMS} streams in {took:?}: {clean} exact, {typed} typed errors, {faults} faults, \
         {refreshes} credential refreshes; fds {fd_idle} idle, {fd0} warm, {fd1} after {:?}; \
         RSS {rss0} -> {rss1} KiB",
        settle.elapsed()
    );
    assert!(
        fd1 <= fd_idle + 8,
        "descriptors leaked: {fd_idle} before traffic, {fd1} after"
    );
    assert!(
        rss1 <= rss0 + 48 * 1024,
        "memory did not settle: {rss0} -> {rss1} KiB"
    );
    relay.shutdown().await;
}
