//! Mid-stream continuity, end to end: every fault kind at every interesting position, on
//! both streaming operations and every model family, compared byte-exactly (text, tool
//! input, reasoning, event order) with an uninterrupted run of the same request.

use crate::support;

use bedrock_relay::sim::Fault;
use std::time::{Duration, Instant};
use support::canon::{self, ConverseReq, Received};
use support::Harness;

const PREFILL_MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
const NO_PREFILL_MODEL: &str = "anthropic.claude-sonnet-4-6";
const INVOKE_MODELS: [&str; 5] = [
    "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "amazon.nova-pro-v1:0",
    "meta.llama3-1-70b-instruct-v1:0",
    "mistral.mistral-large-2407-v1:0",
    "amazon.titan-text-premier-v1:0",
];

/// Faults that break a stream after `events` whole frames (stall has its own test).
fn kinds(events: usize) -> Vec<Fault> {
    let mut v = vec![
        Fault::ResetAfterEvents { events },
        Fault::ResetMidFrame { events },
        Fault::EofNoTerminator { events },
        Fault::Truncate { events },
        Fault::CorruptCrc { events },
    ];
    for t in [
        "internalServerException",
        "modelStreamErrorException",
        "throttlingException",
        "serviceUnavailableException",
        "modelTimeoutException",
    ] {
        v.push(Fault::Exception {
            events,
            exception_type: t.into(),
        });
    }
    v
}

/// Which call a case makes.
#[derive(Clone)]
enum Call {
    Converse(ConverseReq),
    Invoke {
        model: String,
        body: serde_json::Value,
    },
}

impl Call {
    async fn run(&self, client: &aws_sdk_bedrockruntime::Client) -> Received {
        match self {
            Call::Converse(req) => canon::converse_stream(client, req).await,
            Call::Invoke { model, body } => canon::invoke_stream(client, model, body).await,
        }
    }
}

fn converse(model: &str, prompt: &str, tools: bool, reasoning: bool) -> Call {
    Call::Converse(ConverseReq {
        tools,
        reasoning,
        // Claude 4.6+ samples at 1 by default: only a greedy answer replays byte-exactly.
        temperature: (model == NO_PREFILL_MODEL).then_some(0.0),
        ..ConverseReq::new(model, prompt)
    })
}

fn invoke(model: &str, prompt: &str) -> Call {
    Call::Invoke {
        model: model.into(),
        body: canon::invoke_body(model, prompt),
    }
}

/// Run one faulted case; `None` if the client got exactly the reference.
async fn check(
    h: &Harness,
    name: &str,
    make: impl Fn(&str) -> Call,
    position: impl Fn(&Received) -> usize,
    fault: impl Fn(usize) -> Fault,
) -> Option<String> {
    let call = make(&format!("sim:len=40 sim:tag={name}"));
    let reference = call.run(&h.reference).await;
    assert_eq!(reference.error, None, "{name}: the reference run is clean");
    let at = position(&reference);
    h.fault(name, Some(vec![1]), fault(at));
    let got = call.run(&h.client).await;
    if got.error.is_some() || got.events != reference.events {
        return Some(format!(
            "{name} (fault after {at} events): error={:?}\n  got {} events, reference {}\n  first difference at {:?}",
            got.error,
            got.events.len(),
            reference.events.len(),
            got.events.iter().zip(&reference.events).position(|(a, b)| a != b).map(|i| (i, &got.events[i], &reference.events[i]))
        ));
    }
    if got.output_tokens < reference.output_tokens {
        return Some(format!(
            "{name}: usage {:?} is not the sum over attempts (reference {:?})",
            got.output_tokens, reference.output_tokens
        ));
    }
    None
}

/// Where a case puts its fault, given the reference run.
type Position = fn(&Received) -> usize;
/// Builds a case's call from the prompt suffix (length and tag directives).
type MakeCall = Box<dyn Fn(&str) -> Call>;

fn position_of(r: &Received, what: &str) -> usize {
    r.events
        .iter()
        .position(|e| e.contains(what))
        .map(|i| i + 2)
        .unwrap_or_else(|| panic!("reference has no {what}: {:?}", r.events))
}

#[tokio::test]
async fn every_fault_at_every_position_heals_byte_exactly() {
    // 250 faulted streams in a row would (rightly) drain the default retry budget. Instructed
    // continuation (the default for Claude 4.6+) is off: this matrix is about exactness, and
    // `no_prefill_heal` measures instructed healing.
    let h = Harness::start_with(|a| {
        a.retry_budget = Some("100000".into());
        a.instructed = Some("off".into());
    })
    .await;
    let mut failures = Vec::new();
    let positions: [(&str, Position); 3] = [
        ("first", |_| 1),
        ("mid", |r| r.events.len() / 2),
        ("before-terminal", |r| r.events.len() - 2),
    ];
    let mut families: Vec<(String, MakeCall)> = vec![
        (
            "cs-prefill".into(),
            Box::new(|p: &str| {
                converse(
                    PREFILL_MODEL,
                    &format!("Write about harbours {p}"),
                    false,
                    false,
                )
            }),
        ),
        (
            "cs-replay".into(),
            Box::new(|p: &str| {
                converse(
                    NO_PREFILL_MODEL,
                    &format!("Write about harbours {p}"),
                    false,
                    false,
                )
            }),
        ),
    ];
    for m in INVOKE_MODELS {
        families.push((
            format!("inv-{}", &m[..m.find('-').unwrap_or(m.len())]),
            Box::new(move |p: &str| invoke(m, &format!("Write about lighthouses {p}"))),
        ));
    }
    let mut cases = 0;
    for (fam, make) in &families {
        for (pos, position) in positions {
            for (k, _) in kinds(0).iter().enumerate() {
                let name = format!("{fam}-{pos}-{k}");
                if let Some(f) = check(&h, &name, make, position, |at| kinds(at)[k].clone()).await {
                    failures.push(f);
                }
                cases += 1;
            }
        }
    }
    // Inside a tool-use block and inside a reasoning block (Converse; replay or prefill).
    for model in [PREFILL_MODEL, NO_PREFILL_MODEL] {
        for (k, _) in kinds(0).iter().enumerate() {
            let name = format!("tool-{}-{k}", model.len());
            let f = check(
                &h,
                &name,
                |p| converse(model, &format!("Weather in Oslo? {p}"), true, false),
                |r| position_of(r, "input="),
                |at| kinds(at)[k].clone(),
            )
            .await;
            failures.extend(f);
            let name = format!("reason-{}-{k}", model.len());
            let f = check(
                &h,
                &name,
                |p| converse(model, &format!("Think about primes {p}"), false, true),
                |r| position_of(r, "reasoning="),
                |at| kinds(at)[k].clone(),
            )
            .await;
            failures.extend(f);
            cases += 2;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases differ from the reference:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let interruptions = h
        .metric("bedrock_relay_stream_interruptions_total", &[])
        .await;
    assert_eq!(interruptions as usize, cases, "every interruption counted");
    let resumed = h
        .metric(
            "bedrock_relay_stream_resumes_total",
            &[("outcome", "success")],
        )
        .await;
    assert_eq!(
        resumed as usize, cases,
        "every healed stream counted as a successful resume"
    );
}

#[tokio::test]
async fn double_faults_heal_and_stalls_are_detected() {
    let h = Harness::start_with(|a| a.stall_timeout = Some("300ms".into())).await;
    // First attempt breaks after 6 events, the first resume after 3 more: still exact.
    let call = converse(
        PREFILL_MODEL,
        "Write about canals sim:len=50 sim:tag=double",
        false,
        false,
    );
    let reference = call.run(&h.reference).await;
    h.fault(
        "double",
        Some(vec![1]),
        Fault::ResetAfterEvents { events: 6 },
    );
    h.fault("double", Some(vec![2]), Fault::ResetMidFrame { events: 3 });
    let got = call.run(&h.client).await;
    assert_eq!(got.error, None);
    assert_eq!(got.events, reference.events);
    assert_eq!(h.attempts_for("double").len(), 3);
    // A stall longer than --stall-timeout is an interruption too.
    let call = converse(
        PREFILL_MODEL,
        "Write about bridges sim:len=30 sim:tag=stall",
        false,
        false,
    );
    let reference = call.run(&h.reference).await;
    h.fault(
        "stall",
        Some(vec![1]),
        Fault::Stall {
            events: 5,
            duration: Duration::from_secs(3),
        },
    );
    let got = call.run(&h.client).await;
    assert_eq!(got.error, None);
    assert_eq!(got.events, reference.events);
    assert_eq!(
        h.metric(
            "bedrock_relay_stream_interruptions_total",
            &[("reason", "stall")]
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn persistent_faults_end_in_a_modelled_exception_within_the_deadline() {
    let h = Harness::start_with(|a| {
        a.max_resumes = Some("2".into());
        a.request_deadline = Some("10s".into());
    })
    .await;
    for (tag, call) in [
        (
            "persist-cs",
            converse(
                PREFILL_MODEL,
                "Write about dunes sim:len=40 sim:tag=persist-cs",
                false,
                false,
            ),
        ),
        (
            "persist-inv",
            invoke(
                INVOKE_MODELS[0],
                "Write about dunes sim:len=40 sim:tag=persist-inv",
            ),
        ),
    ] {
        h.fault(tag, None, Fault::ResetAfterEvents { events: 4 });
        let started = Instant::now();
        let got = call.run(&h.client).await;
        let err = got.error.expect("a persistent fault cannot be healed");
        assert!(
            got.modelled_error,
            "{tag}: the SDK raises a modelled exception, not a transport error: {err}"
        );
        assert!(err.contains("ModelStreamError"), "{tag}: {err}");
        assert!(
            err.contains("resumes: 2"),
            "{tag}: the message says how many resumes were tried: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{tag}: within the deadline"
        );
        assert_eq!(
            h.attempts_for(tag).len(),
            3,
            "{tag}: first attempt + max_resumes"
        );
    }
    // What the client received before the error is still a prefix of the reference.
    let reference = converse(
        PREFILL_MODEL,
        "Write about dunes sim:len=40 sim:tag=persist-cs",
        false,
        false,
    )
    .run(&h.reference)
    .await;
    let partial = converse(
        PREFILL_MODEL,
        "Write about dunes sim:len=40 sim:tag=persist-cs",
        false,
        false,
    )
    .run(&h.client)
    .await;
    assert!(
        reference.text().starts_with(&partial.text()),
        "no garbled text before the error"
    );
}

#[tokio::test]
async fn a_replay_that_diverges_ends_in_a_typed_error_not_a_different_answer() {
    // Instructed continuation switched off: the no-prefill model is replayed.
    let h = Harness::start_with(|a| a.instructed = Some("off".into())).await;
    // temperature > 0: the simulator answers differently on every attempt, so replay of a
    // model without prefill cannot verify what the client already has.
    let req = ConverseReq {
        temperature: Some(0.9),
        ..ConverseReq::new(
            NO_PREFILL_MODEL,
            "Write about moss sim:len=40 sim:tag=diverge",
        )
    };
    h.fault(
        "diverge",
        Some(vec![1]),
        Fault::ResetAfterEvents { events: 10 },
    );
    let got = canon::converse_stream(&h.client, &req).await;
    let err = got.error.expect("divergence is reported");
    assert!(got.modelled_error, "{err}");
    assert!(err.contains("diverged"), "{err}");
    assert_eq!(
        h.metric(
            "bedrock_relay_stream_resumes_total",
            &[("strategy", "replay"), ("outcome", "diverged")]
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn non_retryable_in_stream_errors_pass_through_unchanged() {
    let h = Harness::start().await;
    h.fault(
        "valid",
        Some(vec![1]),
        Fault::Exception {
            events: 5,
            exception_type: "validationException".into(),
        },
    );
    let got = canon::converse_stream(
        &h.client,
        &ConverseReq::new(PREFILL_MODEL, "x sim:tag=valid"),
    )
    .await;
    let err = got.error.expect("passes through");
    assert!(err.contains("ValidationException"), "{err}");
    assert_eq!(h.attempts_for("valid").len(), 1, "not retried");
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_request() {
    let h = Harness::start_with(|a| a.stall_timeout = Some("30s".into())).await;
    // A slow stream; the client reads one event and drops it.
    h.fault(
        "gone",
        None,
        Fault::Stall {
            events: 3,
            duration: Duration::from_secs(20),
        },
    );
    let out = h
        .client
        .converse_stream()
        .model_id(PREFILL_MODEL)
        .messages(
            aws_sdk_bedrockruntime::types::Message::builder()
                .role(aws_sdk_bedrockruntime::types::ConversationRole::User)
                .content(aws_sdk_bedrockruntime::types::ContentBlock::Text(
                    "x sim:tag=gone".into(),
                ))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let mut stream = out.stream;
    stream.recv().await.unwrap();
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.metric("bedrock_relay_active_streams", &[]).await != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the relay still holds the stream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        h.metric("bedrock_relay_client_disconnects_total", &[])
            .await,
        1.0
    );
}
