//! Mid-stream continuity, end to end: every fault kind at every interesting position, on
//! both streaming operations and every model family, compared byte-exactly (text, tool
//! input, reasoning, event order) with an uninterrupted run of the same request.

use crate::support;

use bedrock_relay_sim::Fault;
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

/// Every request format, its client limit (12 tokens) below the model's natural answer (30).
fn limited(format: &str, prompt: &str) -> Call {
    use serde_json::json;
    let invoke = |model: &str, body: serde_json::Value| Call::Invoke {
        model: model.into(),
        body,
    };
    match format {
        "converse" => Call::Converse(ConverseReq {
            max_tokens: Some(12),
            ..ConverseReq::new(PREFILL_MODEL, prompt)
        }),
        "claude" => invoke(
            INVOKE_MODELS[0],
            json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 12,
                   "messages": [{"role": "user", "content": prompt}]}),
        ),
        "claude-text" => invoke(
            "anthropic.claude-v2:1",
            json!({"prompt": format!("\n\nHuman: {prompt}\n\nAssistant:"), "max_tokens_to_sample": 12}),
        ),
        "nova" => invoke(
            INVOKE_MODELS[1],
            json!({"messages": [{"role": "user", "content": [{"text": prompt}]}],
                   "inferenceConfig": {"max_new_tokens": 12}}),
        ),
        "llama" => {
            let mut b = canon::invoke_body(INVOKE_MODELS[2], prompt);
            b["max_gen_len"] = json!(12);
            invoke(INVOKE_MODELS[2], b)
        }
        "mistral" => {
            let mut b = canon::invoke_body(INVOKE_MODELS[3], prompt);
            b["max_tokens"] = json!(12);
            invoke(INVOKE_MODELS[3], b)
        }
        "mistral-chat" => invoke(
            INVOKE_MODELS[3],
            json!({"messages": [{"role": "user", "content": prompt}], "max_tokens": 12}),
        ),
        _ => {
            let mut b = canon::invoke_body(INVOKE_MODELS[4], prompt);
            b["textGenerationConfig"]["maxTokenCount"] = json!(12);
            invoke(INVOKE_MODELS[4], b)
        }
    }
}

const LIMITED: [&str; 8] = [
    "converse",
    "claude",
    "claude-text",
    "nova",
    "llama",
    "mistral",
    "mistral-chat",
    "titan",
];

/// Indices of the events carrying answer text, and that text.
fn text_events(r: &Received) -> Vec<(usize, String)> {
    const TEXT: [&str; 7] = [
        "/delta/text",
        "/contentBlockDelta/delta/text",
        "/generation",
        "/outputText",
        "/outputs/0/text",
        "/choices/0/message/content",
        "/completion",
    ];
    r.events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let text = match e.split_once(" text=") {
                Some((_, t)) => t.to_owned(),
                None => {
                    let v: serde_json::Value = serde_json::from_str(e).ok()?;
                    TEXT.iter()
                        .find_map(|p| v.pointer(p).and_then(|t| t.as_str()))?
                        .to_owned()
                }
            };
            (!text.is_empty()).then_some((i, text))
        })
        .collect()
}

/// The output limit in a request body the simulator logged (any format).
fn logged_limit(body: &serde_json::Value) -> Option<u64> {
    [
        "/inferenceConfig/maxTokens",
        "/inferenceConfig/max_new_tokens",
        "/max_tokens",
        "/max_tokens_to_sample",
        "/max_gen_len",
        "/textGenerationConfig/maxTokenCount",
    ]
    .iter()
    .find_map(|p| body.pointer(p).and_then(|v| v.as_u64()))
}

#[tokio::test]
async fn every_format_keeps_the_client_output_limit_across_a_seam() {
    let h = Harness::start().await;
    let mut failures = Vec::new();
    for format in LIMITED {
        for pos in ["mid", "at-limit"] {
            let tag = format!("limit-{format}-{pos}");
            let call = limited(
                format,
                &format!("sim:len=30 sim:tag={tag} Write about tides"),
            );
            let reference = call.run(&h.reference).await;
            assert_eq!(reference.error, None, "{tag}");
            let texts = text_events(&reference);
            assert_eq!(texts.len(), 12, "{tag}: the reference stops at the limit");
            let stop =
                reference.events.iter().rev().take(3).any(|e| {
                    e.contains("max_tokens") || e.contains("length") || e.contains("LENGTH")
                });
            assert!(stop, "{tag}: a limit stop reason: {:?}", reference.events);
            // Mid: after 6 text events (or the first later one not ending in whitespace).
            let (delivered, at) = match pos {
                "mid" => {
                    let k = (5..texts.len())
                        .find(|k| !texts[*k].1.ends_with(char::is_whitespace))
                        .expect("a seam without trailing whitespace");
                    (k as u64 + 1, texts[k].0 + 1)
                }
                _ => (12, texts[11].0 + 1),
            };
            h.fault(&tag, Some(vec![1]), Fault::ResetAfterEvents { events: at });
            let got = call.run(&h.client).await;
            if got.error.is_some() || got.events != reference.events {
                failures.push(format!(
                    "{tag}: error={:?}\n  got       {:?}\n  reference {:?}",
                    got.error, got.events, reference.events
                ));
                continue;
            }
            let attempts = h.attempts_for(&tag);
            if pos == "at-limit" && attempts.len() != 1 {
                failures.push(format!(
                    "{tag}: the used-up limit sent {} requests",
                    attempts.len()
                ));
            }
            for a in attempts.iter().skip(1).filter(|a| a.prefill.is_some()) {
                let asked = logged_limit(&a.body).unwrap_or(u64::MAX);
                if asked + delivered > 12 {
                    failures.push(format!(
                        "{tag}: a continuation asked for {asked} after {delivered}"
                    ));
                }
            }
            if ["llama", "titan"].contains(&format) && pos == "mid" {
                let asked = attempts.get(1).and_then(|a| logged_limit(&a.body));
                if asked != Some(12 - delivered) {
                    failures.push(format!("{tag}: exact counts, yet asked for {asked:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // A seam early in a long answer where the delivered output may not be counted
    // (CountTokens refused: AccessDenied, so Converse has only bounds): the continuation asks
    // for the limit minus an upper bound; its max_tokens stop is the relay's bound, not the
    // client's, so the relay replays to find the real end.
    h.sim.set_deny_count_tokens(true);
    let tag = "limit-bound";
    let call = Call::Converse(ConverseReq {
        max_tokens: Some(30),
        ..ConverseReq::new(
            PREFILL_MODEL,
            format!("Write about reefs sim:len=60 sim:tag={tag}"),
        )
    });
    let reference = call.run(&h.reference).await;
    h.fault(tag, Some(vec![1]), Fault::ResetAfterEvents { events: 4 });
    let got = call.run(&h.client).await;
    assert_eq!(got.error, None);
    assert_eq!(got.events, reference.events, "{tag}");
    let attempts = h.attempts_for(tag);
    assert!(
        attempts[1].prefill.is_some(),
        "{tag}: continued by prefill first"
    );
    assert!(
        logged_limit(&attempts[1].body).is_some_and(|n| n < 27),
        "{tag}"
    );
    assert_eq!(
        attempts.last().unwrap().body,
        attempts[0].body,
        "{tag}: then replayed"
    );
}
