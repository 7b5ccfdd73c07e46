//! `bedrock-relay demo`: the simulator with faults, the relay in front of it, and a client
//! streaming a few conversations through the relay, in one process, with no AWS account.
//!
//! Each conversation's first upstream attempt is broken in a different way (reset,
//! in-stream exception, torn frame, silent truncation), the last one on Claude Sonnet 4.6,
//! which takes no prefill and samples at temperature 1: the relay heals it by instructed
//! continuation, and the simulated model answers with a preamble and its last words again,
//! which the seam removes. The client prints the answer as it arrives and marks each moment
//! the relay healed the stream; at the end it compares every answer with an uninterrupted
//! reference (for the sampled model: the same first sample) and prints a summary. Exit code 0
//! means every answer was identical to its reference.

use crate::config::{self, ServeArgs};
use crate::eventstream::{FrameSplitter, Kind};
use crate::signing::Signer;
use anyhow::Context;
use bedrock_relay_sim::{self as sim, Fault, FaultRule, SimConfig};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// No model-like delays (time to first token, inter-token): finishes in a second.
    #[arg(long)]
    pub fast: bool,
    /// Plain output without colours.
    #[arg(long)]
    pub no_color: bool,
}

const RELAY_KEY: &str = "AKIDDEMORELAY";
const RELAY_SECRET: &str = "demo-relay-secret";
/// The marker printed where the relay spliced the continuation in.
const HEALED: &str = " ⟲ relay healed the stream here ";
const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
/// Takes no prefill, samples at temperature 1: healed by instructed continuation.
const MODEL_4_6: &str = "us.anthropic.claude-sonnet-4-6-v1:0";

struct Scenario {
    title: &'static str,
    topic: &'static str,
    fault: Fault,
    model: &'static str,
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            title: "connection reset mid-answer",
            topic: "lighthouses",
            fault: Fault::ResetAfterEvents { events: 14 },
            model: MODEL,
        },
        Scenario {
            title: "modelStreamErrorException mid-answer",
            topic: "tide pools",
            fault: Fault::Exception {
                events: 22,
                exception_type: "modelStreamErrorException".into(),
            },
            model: MODEL,
        },
        Scenario {
            title: "reset in the middle of a frame",
            topic: "glaciers",
            fault: Fault::ResetMidFrame { events: 9 },
            model: MODEL,
        },
        Scenario {
            title: "stream ends cleanly without its last events",
            topic: "volcanoes",
            fault: Fault::Truncate { events: 30 },
            model: MODEL,
        },
        Scenario {
            title: "Claude Sonnet 4.6 (no prefill, sampled): serviceUnavailableException",
            topic: "coral reefs sim:cont=preamble-echo",
            fault: Fault::Exception {
                events: 18,
                exception_type: "serviceUnavailableException".into(),
            },
            model: MODEL_4_6,
        },
    ]
}

/// Run the demo; returns the process exit code.
pub async fn run(args: DemoArgs) -> i32 {
    match demo(args).await {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            1
        }
    }
}

struct Paint(bool);
impl Paint {
    fn dim(&self, s: &str) -> String {
        if self.0 {
            format!("\x1b[2m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
    fn bold(&self, s: &str) -> String {
        if self.0 {
            format!("\x1b[1m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
    fn mark(&self, s: &str) -> String {
        if self.0 {
            format!("\x1b[33m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
}

async fn demo(args: DemoArgs) -> anyhow::Result<bool> {
    let paint = Paint(!args.no_color);
    let (ttft, gap) = if args.fast {
        (Duration::ZERO, Duration::ZERO)
    } else {
        (Duration::from_millis(400), Duration::from_millis(25))
    };
    let faulty = sim::start(SimConfig {
        credentials: vec![(RELAY_KEY.into(), RELAY_SECRET.into())],
        ttft,
        inter_token: gap,
        ..SimConfig::default()
    })
    .await?;
    let clean = sim::start(SimConfig::default()).await?;
    let settings = config::load(&ServeArgs {
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        region: Some("us-east-1".into()),
        upstream: Some(faulty.url()),
        backoff_base: Some("10ms".into()),
        backoff_max: Some("100ms".into()),
        ..Default::default()
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let relay = crate::app::start_with_signer(
        settings,
        Signer::for_tests(RELAY_KEY, RELAY_SECRET, None, "us-east-1"),
    )
    .await?;
    let relay_url = format!("http://{}", relay.addr);
    println!("{}", paint.bold("bedrock-relay demo"));
    println!("  simulator (Bedrock stand-in, faults on) {}", faulty.url());
    println!(
        "  relay                                   {relay_url}   metrics: http://{}/metrics\n",
        relay.admin_addr
    );

    let client = DemoClient::new();
    let mut matched = 0;
    let list = scenarios();
    let mut total_extra = Duration::ZERO;
    for (i, s) in list.iter().enumerate() {
        let tag = format!("demo-{i}");
        let prompt = format!("Tell me about {} sim:len=60 sim:tag={tag}", s.topic);
        faulty.add_rule(FaultRule {
            operation: None,
            tag: Some(tag.clone()),
            attempts: Some(vec![1]),
            fault: s.fault.clone(),
        });
        println!(
            "{} {}",
            paint.bold(&format!("[{}/{}]", i + 1, list.len())),
            paint.dim(&format!("first attempt upstream: {}", s.title))
        );
        let before = interruptions(&relay);
        let started = Instant::now();
        let live = !args.fast;
        let got = client
            .stream(
                &relay_url,
                s.model,
                &prompt,
                |text| {
                    if live {
                        print!("{text}");
                        let _ = std::io::stdout().flush();
                    }
                },
                || {
                    let now = interruptions(&relay);
                    (live && now > before).then(|| paint.mark(HEALED))
                },
            )
            .await?;
        let took = started.elapsed();
        if !live {
            // Too fast to watch: print the answer with the seam where the simulator saw the
            // relay's continuation request pick up (its prefill is what the client had).
            let log = faulty.log();
            let seam = log
                .iter()
                .filter(|e| e.tag.as_deref() == Some(tag.as_str()))
                .find_map(|e| {
                    e.prefill
                        .as_ref()
                        .map(String::len)
                        .or_else(|| delivered_len(e))
                });
            match seam {
                Some(at) if got.text.is_char_boundary(at) => {
                    print!(
                        "{}{}{}",
                        &got.text[..at],
                        paint.mark(HEALED),
                        &got.text[at..]
                    )
                }
                _ => print!("{}", got.text),
            }
        }
        let reference = client
            .stream(&clean.url(), s.model, &prompt, |_| {}, || None)
            .await?;
        let same = got.text == reference.text && got.complete;
        matched += usize::from(same);
        let expected = ttft + gap * reference.deltas as u32;
        total_extra += took.saturating_sub(expected);
        let verdict = if same {
            "identical to the uninterrupted answer"
        } else {
            "DIFFERS from the uninterrupted answer"
        };
        println!(
            "\n  {} {verdict} ({} chars, {} ms)\n",
            if same { "✓" } else { "✗" },
            got.text.len(),
            took.as_millis()
        );
    }
    let interrupted = interruptions(&relay);
    println!("{}", paint.bold("summary"));
    println!("  conversations                 {}", list.len());
    println!("  upstream interruptions        {interrupted}");
    let resumed = |strategy: &str| {
        relay
            .metrics
            .stream_resumes_total
            .with_label_values(&[strategy, "success"])
            .get()
    };
    println!(
        "  resumed streams               {} (prefill {}, instructed {})",
        resumed("prefill") + resumed("instructed"),
        resumed("prefill"),
        resumed("instructed")
    );
    println!(
        "  added latency (all streams)   {} ms",
        total_extra.as_millis()
    );
    println!("  answers identical to reference {matched}/{}", list.len());
    relay.shutdown().await;
    faulty.shutdown().await;
    clean.shutdown().await;
    Ok(matched == list.len())
}

/// Length of the delivered text an instructed continuation request carried (its assistant
/// turn before the final user turn).
fn delivered_len(e: &sim::LogEntry) -> Option<usize> {
    let msgs = e.body.get("messages")?.as_array()?;
    let turn = msgs.get(msgs.len().checked_sub(2)?)?;
    (e.continuation && turn["role"] == "assistant")
        .then(|| turn.pointer("/content/0/text")?.as_str().map(str::len))
        .flatten()
}

fn interruptions(relay: &crate::app::RelayHandle) -> u64 {
    [
        "reset",
        "exception",
        "corrupt_frame",
        "truncated",
        "eof",
        "stall",
    ]
    .iter()
    .map(|r| {
        relay
            .metrics
            .stream_interruptions_total
            .with_label_values(&[r])
            .get()
    })
    .sum()
}

/// What a demo stream delivered.
struct Streamed {
    text: String,
    deltas: usize,
    complete: bool,
}

/// A minimal application: signs with its own (dummy) keys, sends ConverseStream, decodes
/// the EventStream frame by frame.
struct DemoClient {
    http: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    signer: Signer,
}

impl DemoClient {
    fn new() -> Self {
        DemoClient {
            http: Client::builder(TokioExecutor::new()).build_http(),
            signer: Signer::for_tests(
                "AKIDDEMOAPPLICATION",
                "the-application-secret",
                None,
                "us-east-1",
            ),
        }
    }

    async fn stream(
        &self,
        base: &str,
        model: &str,
        prompt: &str,
        mut on_text: impl FnMut(&str),
        mut on_event: impl FnMut() -> Option<String>,
    ) -> anyhow::Result<Streamed> {
        let body =
            serde_json::json!({"messages": [{"role": "user", "content": [{"text": prompt}]}]})
                .to_string();
        let mut req = http::Request::post(format!("{base}/model/{model}/converse-stream"))
            .header("content-type", "application/json")
            .body(Bytes::from(body))?;
        self.signer.sign(&mut req).await.context("signing")?;
        let (parts, body) = req.into_parts();
        let resp = self
            .http
            .request(http::Request::from_parts(parts, Full::new(body)))
            .await?;
        anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
        let mut body = resp.into_body();
        let mut splitter = FrameSplitter::new();
        let mut out = Streamed {
            text: String::new(),
            deltas: 0,
            complete: false,
        };
        let mut healed_shown = false;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                splitter.push(&data);
            }
            while let Some(f) = splitter.next_frame()? {
                match f.kind() {
                    Kind::Event("contentBlockDelta") => {
                        let v: serde_json::Value = serde_json::from_slice(f.payload())?;
                        if let Some(t) = v["delta"]["text"].as_str() {
                            if !healed_shown {
                                if let Some(mark) = on_event() {
                                    on_text(&mark);
                                    healed_shown = true;
                                }
                            }
                            on_text(t);
                            out.text.push_str(t);
                            out.deltas += 1;
                        }
                    }
                    Kind::Event("metadata") => out.complete = true,
                    Kind::Exception(t) => anyhow::bail!("stream ended with {t}"),
                    _ => {}
                }
            }
        }
        Ok(out)
    }
}
