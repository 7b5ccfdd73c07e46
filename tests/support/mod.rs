//! Shared end-to-end harness: a fault-injecting simulator that verifies the relay's
//! signatures, a clean simulator for reference answers, the relay in-process between
//! them, and aws-sdk-bedrockruntime clients pointed at each.
#![allow(dead_code)]

pub mod canon;
pub mod h2c;
pub mod rng;

use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_bedrockruntime::Client;
use bedrock_relay::RelayHandle;
use bedrock_relay::Signer;
use bedrock_relay::{ServeArgs, Settings};
use bedrock_relay_sim::{self as sim, FaultRule, SimConfig, SimHandle};

/// Credentials the relay signs with; the faulty simulator accepts only these.
pub const RELAY_KEY: &str = "AKIDRELAYEXAMPLE";
pub const RELAY_SECRET: &str = "relay-secret-key-for-tests";
/// Credentials the application signs with: the relay must replace them.
pub const CLIENT_KEY: &str = "AKIDCLIENTEXAMPLE";
pub const CLIENT_SECRET: &str = "client-secret-that-bedrock-would-reject";

pub struct Harness {
    /// Upstream of the relay: verifies the relay's signatures, injects faults.
    pub sim: SimHandle,
    /// Same generator, no faults: the uninterrupted reference.
    pub clean: SimHandle,
    pub relay: RelayHandle,
    /// SDK client → relay.
    pub client: Client,
    /// SDK client → clean simulator.
    pub reference: Client,
}

/// Relay settings for tests: short backoff, everything else as shipped.
pub fn args(upstream: &str) -> ServeArgs {
    ServeArgs {
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        region: Some("us-east-1".into()),
        upstream: Some(upstream.into()),
        backoff_base: Some("1ms".into()),
        backoff_max: Some("5ms".into()),
        ..Default::default()
    }
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(|_| {}).await
    }

    /// Start with extra relay flags.
    pub async fn start_with(tweak: impl FnOnce(&mut ServeArgs)) -> Harness {
        Self::start_full(tweak, |_| {}).await
    }

    /// Start with extra relay flags, then settings that only the config file can set.
    pub async fn start_full(
        tweak: impl FnOnce(&mut ServeArgs),
        settings_tweak: impl FnOnce(&mut Settings),
    ) -> Harness {
        let sim = sim::start(SimConfig {
            credentials: vec![(RELAY_KEY.into(), RELAY_SECRET.into())],
            ..SimConfig::default()
        })
        .await
        .expect("simulator starts");
        let clean = sim::start(SimConfig::default())
            .await
            .expect("clean simulator starts");
        let mut a = args(&sim.url());
        tweak(&mut a);
        let mut settings = bedrock_relay::load_config(&a).expect("test settings are valid");
        settings_tweak(&mut settings);
        let signer = Signer::for_tests(RELAY_KEY, RELAY_SECRET, None, "us-east-1");
        let relay = bedrock_relay::start_with_signer(settings, signer)
            .await
            .expect("relay starts");
        let client = sdk_client(&format!("http://{}", relay.addr), CLIENT_KEY, CLIENT_SECRET);
        let reference = sdk_client(&clean.url(), CLIENT_KEY, CLIENT_SECRET);
        Harness {
            sim,
            clean,
            relay,
            client,
            reference,
        }
    }

    pub fn fault(&self, tag: &str, attempts: Option<Vec<u32>>, fault: sim::Fault) {
        self.sim.add_rule(FaultRule {
            operation: None,
            tag: Some(tag.into()),
            attempts,
            fault,
        });
    }

    /// The relay's Prometheus text.
    pub async fn metrics(&self) -> String {
        http_get(&format!("http://{}/metrics", self.relay.admin_addr)).await
    }

    /// Sum of a metric's samples whose label set contains every `labels` pair.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        sum_metric(&self.metrics().await, name, labels)
    }

    /// Every simulator log entry for a tag, CountTokens requests included.
    pub fn log_for(&self, tag: &str) -> Vec<sim::LogEntry> {
        self.sim
            .log()
            .into_iter()
            .filter(|e| e.tag.as_deref() == Some(tag))
            .collect()
    }

    /// Simulator log entries for a tag: the model requests (CountTokens requests the relay
    /// makes before a continuation are not attempts).
    pub fn attempts_for(&self, tag: &str) -> Vec<sim::LogEntry> {
        self.sim
            .log()
            .into_iter()
            .filter(|e| e.tag.as_deref() == Some(tag) && e.operation != "CountTokens")
            .collect()
    }
}

/// An SDK client with its own retries off, so what the relay does is what we see.
pub fn sdk_client(endpoint: &str, key: &str, secret: &str) -> Client {
    let conf = aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(key, secret, None, None, "test"))
        .retry_config(aws_sdk_bedrockruntime::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

pub fn sum_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Minimal HTTP/1.1 GET over loopback (admin endpoints).
pub async fn http_get(url: &str) -> String {
    let (status, body) = http_get_status(url).await;
    assert_eq!(status, 200, "GET {url}: {body}");
    body
}

pub async fn http_get_status(url: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = tokio::net::TcpStream::connect(host).await.expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
