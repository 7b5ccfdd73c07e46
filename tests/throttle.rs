//! Throttle absorption and regional spillover end to end (`src/admission/`): the relay
//! in-process in front of simulators that enforce Bedrock's on-demand quotas
//! (`crates/sim/src/quota.rs`: input + max_tokens × burndown charged at the start, the
//! unused part refunded at the end), aws-sdk-bedrockruntime clients with their own retries
//! off.
//!
//! Quota windows are compressed (one second instead of a minute) so each test takes a few
//! seconds; loopback only.

use crate::support;

use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ContentBlockDelta, ConversationRole, ConverseStreamOutput,
    InferenceConfiguration, Message,
};
use aws_sdk_bedrockruntime::Client;
use bedrock_relay::RelayHandle;
use bedrock_relay::ServeArgs;
use bedrock_relay::Signer;
use bedrock_relay_sim::{self as sim, Fault, FaultRule, QuotaConfig, SimConfig, SimHandle};
use serde_json::Value;
use std::time::{Duration, Instant};
use support::canon::{self, ConverseReq};
use support::{
    sdk_client, sum_metric, Harness, CLIENT_KEY, CLIENT_SECRET, RELAY_KEY, RELAY_SECRET,
};

/// Claude Sonnet 4.6: output burns down the token quota 5×.
const SONNET_46: &str = "us.anthropic.claude-sonnet-4-6-v1:0";
/// Claude 3.5 Sonnet: burndown 1.
const SONNET_35: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
/// A provisioned-throughput model: bound to its region.
const PROVISIONED: &str = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123xyz";

/// A simulator that verifies the relay's signatures and enforces `quota`.
async fn quota_sim(quota: QuotaConfig, inter_token: Duration) -> SimHandle {
    sim::start(SimConfig {
        credentials: vec![(RELAY_KEY.into(), RELAY_SECRET.into())],
        quota,
        inter_token,
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts")
}

fn per_second(tpm: u64) -> QuotaConfig {
    QuotaConfig {
        rpm: 0,
        tpm,
        window: Duration::from_secs(1),
    }
}

/// The relay in front of `upstream` (us-east-1), signing with the keys the simulators accept.
async fn relay(upstream: &str, tweak: impl FnOnce(&mut ServeArgs)) -> RelayHandle {
    let mut a = support::args(upstream);
    tweak(&mut a);
    let settings = bedrock_relay::load_config(&a).expect("test settings are valid");
    let signer = Signer::for_tests(RELAY_KEY, RELAY_SECRET, None, "us-east-1");
    bedrock_relay::start_with_signer(settings, signer)
        .await
        .expect("relay starts")
}

fn client_of(relay: &RelayHandle, key: &str) -> Client {
    sdk_client(&format!("http://{}", relay.addr), key, CLIENT_SECRET)
}

async fn metric(relay: &RelayHandle, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = support::http_get(&format!("http://{}/metrics", relay.admin_addr)).await;
    sum_metric(&text, name, labels)
}

/// The simulator's quota accounting (`GET /_sim/quota`): the entry for region × model.
async fn quota_entry(sim: &SimHandle, region: &str, model: &str) -> Option<Value> {
    let report: Value =
        serde_json::from_str(&support::http_get(&format!("{}/_sim/quota", sim.url())).await)
            .expect("quota report is JSON");
    report["quotas"]
        .as_array()?
        .iter()
        .find(|q| q["region"] == region && q["model"] == model)
        .cloned()
}

fn tagged(sim: &SimHandle, tag: &str) -> Vec<sim::LogEntry> {
    sim.log()
        .into_iter()
        .filter(|e| e.tag.as_deref() == Some(tag) && e.operation != "CountTokens")
        .collect()
}

/// How one ConverseStream ended.
#[derive(Debug, Default)]
struct Streamed {
    text: String,
    /// The modelled error's code and message, when it failed.
    error: Option<(String, String)>,
    input_tokens: Option<i32>,
    output_tokens: Option<i32>,
}

/// One ConverseStream; `on_first` runs once the first event has arrived.
async fn converse(
    client: &Client,
    model: &str,
    prompt: &str,
    max_tokens: i32,
    on_first: Option<tokio::sync::oneshot::Sender<()>>,
) -> Streamed {
    let mut out = Streamed::default();
    let sent = client
        .converse_stream()
        .model_id(model)
        .messages(
            Message::builder()
                .role(ConversationRole::User)
                .content(ContentBlock::Text(prompt.into()))
                .build()
                .unwrap(),
        )
        .inference_config(
            InferenceConfiguration::builder()
                .max_tokens(max_tokens)
                .build(),
        )
        .send()
        .await;
    let mut stream = match sent {
        Ok(o) => o.stream,
        Err(e) => {
            let e = e.into_service_error();
            out.error = Some((
                e.code().unwrap_or("?").to_owned(),
                e.message().unwrap_or("").to_owned(),
            ));
            return out;
        }
    };
    let mut on_first = on_first;
    loop {
        match stream.recv().await {
            Ok(Some(ev)) => {
                if let Some(tx) = on_first.take() {
                    let _ = tx.send(());
                    // Let the caller look before the stream goes on.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                match ev {
                    ConverseStreamOutput::ContentBlockDelta(d) => {
                        if let Some(ContentBlockDelta::Text(t)) = d.delta {
                            out.text.push_str(&t);
                        }
                    }
                    ConverseStreamOutput::Metadata(m) => {
                        out.input_tokens = m.usage.as_ref().map(|u| u.input_tokens);
                        out.output_tokens = m.usage.as_ref().map(|u| u.output_tokens);
                    }
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(e) => {
                out.error = Some((
                    e.code().unwrap_or("stream").to_owned(),
                    e.message().unwrap_or(&format!("{e:?}")).to_owned(),
                ));
                break;
            }
        }
    }
    out
}

/// (a) A burst of ConverseStreams over the quota, within the wait budget: every one
/// succeeds, the client never sees a throttle, and the relay absorbed the simulator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_quota_is_absorbed_not_throttled() {
    // 1500 tokens a second; each request reserves its input + 100 × 5.
    let sim = quota_sim(per_second(1500), Duration::ZERO).await;
    let relay = relay(&sim.url(), |a| a.throttle_max_wait = Some("15s".into())).await;
    let client = client_of(&relay, CLIENT_KEY);
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let prompt = format!("burst {i} sim:len=20 sim:tag=burst");
                converse(&client, SONNET_46, &prompt, 100, None).await
            })
        })
        .collect();
    for t in tasks {
        let got = t.await.unwrap();
        assert_eq!(got.error, None, "no client-visible throttle");
        assert!(!got.text.is_empty());
    }
    let elapsed = t0.elapsed();
    let q = quota_entry(&sim, "us-east-1", SONNET_46)
        .await
        .expect("quota charged");
    assert_eq!(q["admitted"], 16, "{q}");
    assert!(
        q["throttled"].as_u64().unwrap() > 0,
        "the burst exceeded the quota: {q}"
    );
    println!("burst: {q} in {elapsed:?}");
    let absorbed = metric(
        &relay,
        "bedrock_relay_throttles_total",
        &[("outcome", "absorbed")],
    )
    .await;
    assert!(absorbed > 0.0, "throttles absorbed: {absorbed}");
    for outcome in ["passed", "timed_out", "queue_full"] {
        let n = metric(
            &relay,
            "bedrock_relay_throttles_total",
            &[("outcome", outcome)],
        )
        .await;
        assert_eq!(n, 0.0, "{outcome}");
    }
    assert_eq!(
        metric(
            &relay,
            "bedrock_relay_retries_total",
            &[("reason", "throttled")]
        )
        .await,
        0.0,
        "absorbed throttles use no retry budget"
    );
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
}

/// (b) Bedrock's token accounting end to end: a request is charged input + max_tokens ×
/// burndown when it starts (5 for Claude Sonnet 4.6, 1 for Claude 3.5 Sonnet) and the
/// unused part is refunded when it ends; the relay prices each attempt the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_is_input_plus_max_tokens_times_burndown_then_refunded() {
    // A large quota (nothing throttles) and a slow stream (the refund comes at its end).
    let sim = quota_sim(per_second(10_000_000), Duration::from_millis(25)).await;
    let relay = relay(&sim.url(), |_| {}).await;
    let client = client_of(&relay, CLIENT_KEY);
    let max_tokens = 200;
    for (model, burndown) in [(SONNET_46, 5u64), (SONNET_35, 1)] {
        let admitted_before = metric(
            &relay,
            "bedrock_relay_admitted_tokens_total",
            &[("region", "us-east-1")],
        )
        .await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let prompt = "Write about lighthouses sim:len=20 sim:tag=burndown";
        let call = {
            let client = client.clone();
            tokio::spawn(
                async move { converse(&client, model, prompt, max_tokens, Some(tx)).await },
            )
        };
        rx.await.expect("the stream started");
        let at_start = quota_entry(&sim, "us-east-1", model)
            .await
            .expect("charged at the start");
        let got = call.await.unwrap();
        assert_eq!(got.error, None);
        let input = got.input_tokens.expect("usage reported") as u64;
        let output = got.output_tokens.expect("usage reported") as u64;
        assert!(
            output > 0 && output < max_tokens as u64,
            "{model}: {output}"
        );
        assert_eq!(
            at_start["charged_tokens"].as_u64().unwrap(),
            input + max_tokens as u64 * burndown,
            "{model}: input + max_tokens × {burndown} while it streams: {at_start}"
        );
        // The refund comes after the answer's simulated duration.
        let expected = input + output * burndown;
        let mut at_end = Value::Null;
        for _ in 0..100 {
            at_end = quota_entry(&sim, "us-east-1", model).await.unwrap();
            if at_end["charged_tokens"] == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            at_end["charged_tokens"], expected,
            "{model}: the unused reservation refunded: {at_end}"
        );
        // The relay reserved the same shape of cost for the attempt: its input estimate
        // (a quarter of the body's bytes, erring high) + max_tokens × burndown.
        let admitted = metric(
            &relay,
            "bedrock_relay_admitted_tokens_total",
            &[("region", "us-east-1")],
        )
        .await
            - admitted_before;
        let reserved = (max_tokens as u64 * burndown) as f64;
        assert!(
            admitted >= reserved + input as f64 && admitted < reserved + 200.0,
            "{model}: the relay admitted {admitted} for input {input} + {reserved}"
        );
    }
}

/// (c) With a tiny `throttle.max_wait` and a saturated quota, the client gets Bedrock's 429
/// ThrottlingException naming the relay's wait, no later than max_wait (+ slack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_never_waits_past_max_wait() {
    // 1000 tokens an hour: one request reserving 950 (its answer uses all of max_tokens,
    // so nothing is refunded) leaves the quota saturated for the rest of the test.
    let sim = quota_sim(
        QuotaConfig {
            rpm: 0,
            tpm: 1000,
            window: Duration::from_secs(3600),
        },
        Duration::ZERO,
    )
    .await;
    let max_wait = Duration::from_millis(400);
    let relay = relay(&sim.url(), |a| a.throttle_max_wait = Some("400ms".into())).await;
    let client = client_of(&relay, CLIENT_KEY);
    let first = converse(
        &client,
        SONNET_46,
        "tides sim:len=300 sim:tag=mw",
        190,
        None,
    )
    .await;
    assert_eq!(first.error, None);
    // Later, so the rate the relay learns from the next throttle (what was admitted over
    // the time since) makes the next attempt wait longer than max_wait.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t0 = Instant::now();
    let second = converse(
        &client,
        SONNET_46,
        "rivers sim:len=300 sim:tag=mw",
        190,
        None,
    )
    .await;
    let elapsed = t0.elapsed();
    let (code, message) = second.error.expect("throttled in the end");
    assert_eq!(code, "ThrottlingException", "{message}");
    assert!(
        message.starts_with("Too many tokens, please wait before trying again.")
            && message.contains("bedrock-relay held this request")
            && message.contains("(throttle.max_wait)"),
        "{message}"
    );
    assert!(
        elapsed >= max_wait && elapsed < max_wait + Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert_eq!(
        metric(
            &relay,
            "bedrock_relay_throttles_total",
            &[("outcome", "timed_out")]
        )
        .await,
        1.0
    );
}

/// (d) A throttlingException mid-stream is an interruption, healed like any other: the
/// client gets the answer an uninterrupted stream gives. As a stream's first frame it is a
/// throttle before the first byte: absorbed, no retry budget used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_exception_mid_stream_is_healed() {
    let h = Harness::start().await;
    let throttling = |events| Fault::Exception {
        events,
        exception_type: "throttlingException".into(),
    };
    let req = ConverseReq::new(
        SONNET_35,
        "sim:len=40 sim:tag=midthrottle Write about kites",
    );
    let reference = canon::converse_stream(&h.reference, &req).await;
    assert_eq!(reference.error, None);
    h.fault("midthrottle", Some(vec![1]), throttling(6));
    let got = canon::converse_stream(&h.client, &req).await;
    assert_eq!(got.error, None);
    assert_eq!(got.events, reference.events, "healed into the same answer");
    let attempts = h.attempts_for("midthrottle");
    assert_eq!(attempts.len(), 2, "one resume");
    assert_eq!(attempts[0].fault.as_deref(), Some("exception"));
    assert!(attempts.iter().all(|a| a.signature == "valid"));
    assert_eq!(
        h.metric("bedrock_relay_throttles_total", &[("outcome", "absorbed")])
            .await,
        0.0,
        "mid-stream it is an interruption, not a throttle before the first byte"
    );

    let req = ConverseReq::new(
        SONNET_35,
        "sim:len=40 sim:tag=firstthrottle Write about owls",
    );
    let reference = canon::converse_stream(&h.reference, &req).await;
    let retries = h
        .metric("bedrock_relay_retries_total", &[("reason", "throttled")])
        .await;
    assert_eq!(retries, 1.0, "the mid-stream resume was a retry");
    h.fault("firstthrottle", Some(vec![1]), throttling(0));
    let got = canon::converse_stream(&h.client, &req).await;
    assert_eq!(got.error, None);
    assert_eq!(got.events, reference.events);
    assert_eq!(h.attempts_for("firstthrottle").len(), 2);
    assert_eq!(
        h.metric("bedrock_relay_throttles_total", &[("outcome", "absorbed")])
            .await,
        1.0,
        "a throttlingException as the first frame is absorbed"
    );
    assert_eq!(
        h.metric("bedrock_relay_retries_total", &[("reason", "throttled")])
            .await,
        retries,
        "no retry: the throttle was absorbed"
    );
}

/// (e) Spillover: the primary region answers 429 before the first byte (or its quota is
/// saturated), so the attempt goes to the spillover region, re-signed for it (the
/// simulator there verifies the signature and charges the quota of the region in its
/// scope). A provisioned-throughput ARN never moves: it gets the throttle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spillover_resigns_for_the_other_region_and_never_moves_an_arn() {
    let primary = quota_sim(per_second(1500), Duration::ZERO).await;
    let spill = quota_sim(per_second(10_000_000), Duration::ZERO).await;
    let relay = relay(&primary.url(), |a| {
        a.throttle_max_wait = Some("1s".into());
        a.spillover_region = vec!["us-west-2".into()];
        a.region_upstream = vec![format!("us-west-2={}", spill.url())];
    })
    .await;
    let client = client_of(&relay, CLIENT_KEY);
    let always_429 = |tag: &str| FaultRule {
        operation: None,
        tag: Some(tag.into()),
        attempts: None,
        fault: Fault::Status { code: 429 },
    };

    // The primary throttles before the first byte: the request is served in us-west-2.
    primary.add_rule(always_429("spill"));
    let got = converse(
        &client,
        SONNET_35,
        "harbours sim:len=20 sim:tag=spill",
        100,
        None,
    )
    .await;
    assert_eq!(got.error, None);
    let there = tagged(&spill, "spill");
    assert_eq!(there.len(), 1, "{there:?}");
    assert_eq!(there[0].signature, "valid", "re-signed: {:?}", there[0]);
    assert_eq!(there[0].model_id.as_deref(), Some(SONNET_35));
    let q = quota_entry(&spill, "us-west-2", SONNET_35)
        .await
        .expect("charged to the quota of the region in the signature's scope");
    assert_eq!(q["admitted"], 1);
    assert!(quota_entry(&spill, "us-east-1", SONNET_35).await.is_none());
    assert_eq!(tagged(&primary, "spill")[0].status, 429);
    assert_eq!(
        metric(
            &relay,
            "bedrock_relay_region_attempts_total",
            &[("region", "us-west-2"), ("reason", "throttled")]
        )
        .await,
        1.0
    );

    // A provisioned-throughput model is bound to its region: never sent to us-west-2.
    primary.add_rule(always_429("arn"));
    let t0 = Instant::now();
    let got = converse(
        &client,
        PROVISIONED,
        "bridges sim:len=20 sim:tag=arn",
        100,
        None,
    )
    .await;
    let (code, _) = got.error.expect("throttled");
    assert_eq!(code, "ThrottlingException");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(tagged(&spill, "arn").is_empty(), "an ARN never moves");
    assert!(!tagged(&primary, "arn").is_empty());

    // A burst over the primary's quota: what does not fit there goes to us-west-2.
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let prompt = format!("flood {i} sim:len=20 sim:tag=spillburst");
                converse(&client, SONNET_46, &prompt, 100, None).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().error, None);
    }
    let there = tagged(&spill, "spillburst");
    assert!(!there.is_empty(), "some went to us-west-2");
    assert!(there.iter().all(|e| e.signature == "valid"));
    let q = quota_entry(&spill, "us-west-2", SONNET_46).await.unwrap();
    assert_eq!(q["admitted"].as_u64().unwrap(), there.len() as u64);
    let primary_ok = tagged(&primary, "spillburst")
        .iter()
        .filter(|e| e.status == 200)
        .count();
    assert_eq!(primary_ok + there.len(), 12, "each served once");
}

/// (f) Fairness across inbound identities (the SigV4 access key id each client signs
/// with): while one client's flood waits for the quota, another's few requests are
/// admitted in turn, long before the flood drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_greedy_client_cannot_starve_another() {
    // 600 tokens a second; each request reserves ~115 and uses all of it (no refund).
    let sim = quota_sim(per_second(600), Duration::ZERO).await;
    let relay = relay(&sim.url(), |a| a.throttle_max_wait = Some("15s".into())).await;
    let greedy = client_of(&relay, "AKIDGREEDYCLIENT");
    let polite = client_of(&relay, "AKIDPOLITECLIENT");
    let t0 = Instant::now();
    let done = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let spawn = |client: &Client, who: &'static str, i: usize| {
        let (client, done) = (client.clone(), done.clone());
        tokio::spawn(async move {
            let prompt = format!("{who} {i} sim:len=40 sim:tag=fair");
            let got = converse(&client, SONNET_46, &prompt, 20, None).await;
            assert_eq!(got.error, None, "{who} {i}");
            done.lock().unwrap().push((who, t0.elapsed()));
        })
    };
    let mut tasks: Vec<_> = (0..30).map(|i| spawn(&greedy, "greedy", i)).collect();
    // The flood is queued (the quota has thrown it back once) before the others arrive.
    tokio::time::sleep(Duration::from_millis(700)).await;
    tasks.extend((0..2).map(|i| spawn(&polite, "polite", i)));
    for t in tasks {
        t.await.unwrap();
    }
    let done = done.lock().unwrap().clone();
    let polite_done = done
        .iter()
        .filter(|(w, _)| *w == "polite")
        .map(|d| d.1)
        .max()
        .unwrap();
    let greedy_after = done
        .iter()
        .filter(|(w, t)| *w == "greedy" && *t > polite_done)
        .count();
    println!("fairness: {done:?}");
    assert!(
        greedy_after >= 10,
        "the polite client's requests were served before the flood drained \
         ({greedy_after} greedy requests after them): {done:?}"
    );
}
