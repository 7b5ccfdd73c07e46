//! The rungs of the resumption ladder, end to end: which strategy the relay chose (seen in
//! what the simulator received), and that each one yields the uninterrupted answer.

use crate::support;

use bedrock_relay_sim::Fault;
use regex::Regex;
use support::canon::{self, ConverseReq};
use support::Harness;

const CLAUDE_46: &str = "anthropic.claude-sonnet-4-6";
const FAMILIES: [&str; 5] = [
    "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "amazon.nova-pro-v1:0",
    "meta.llama3-1-70b-instruct-v1:0",
    "mistral.mistral-large-2407-v1:0",
    "amazon.titan-text-premier-v1:0",
];

#[tokio::test]
async fn every_invoke_family_is_continued_by_prefill_in_its_own_format() {
    let h = Harness::start().await;
    for model in FAMILIES {
        let tag = format!("fam-{}", &model[..8]);
        let body = canon::invoke_body(
            model,
            &format!("sim:len=40 sim:tag={tag} Write about ferries"),
        );
        let reference = canon::invoke_stream(&h.reference, model, &body).await;
        h.fault(&tag, Some(vec![1]), Fault::ResetAfterEvents { events: 15 });
        let got = canon::invoke_stream(&h.client, model, &body).await;
        assert_eq!(got.error, None, "{model}");
        assert_eq!(got.events, reference.events, "{model}");
        let attempts = h.attempts_for(&tag);
        assert_eq!(attempts.len(), 2, "{model}");
        let prefill = attempts[1]
            .prefill
            .as_deref()
            .unwrap_or_else(|| panic!("{model}: the resume carried a prefill"));
        assert!(
            !prefill.is_empty() && !prefill.ends_with(char::is_whitespace),
            "{model}: {prefill:?}"
        );
    }
    let m = h
        .metric(
            "bedrock_relay_stream_resumes_total",
            &[("strategy", "prefill"), ("outcome", "success")],
        )
        .await;
    assert_eq!(m, FAMILIES.len() as f64);
}

#[tokio::test]
async fn instructed_continuation_removes_the_words_the_model_repeats() {
    let h = Harness::start_full(
        |_| {},
        |s| s.resume.instructed_models = vec![Regex::new("claude-sonnet-4-6").unwrap()],
    )
    .await;
    for overlap in 0..=3 {
        let tag = format!("instr-{overlap}");
        let req = ConverseReq::new(
            CLAUDE_46,
            format!("Write about kelp sim:len=50 sim:overlap={overlap} sim:tag={tag}"),
        );
        let reference = canon::converse_stream(&h.reference, &req).await;
        h.fault(&tag, Some(vec![1]), Fault::ResetAfterEvents { events: 20 });
        let got = canon::converse_stream(&h.client, &req).await;
        assert_eq!(got.error, None, "overlap {overlap}");
        assert_eq!(
            got.text(),
            reference.text(),
            "overlap {overlap}: seam repaired"
        );
        let attempts = h.attempts_for(&tag);
        assert!(
            attempts[1].continuation,
            "overlap {overlap}: an instructed continuation was sent"
        );
    }
    let m = h
        .metric(
            "bedrock_relay_stream_resumes_total",
            &[("strategy", "instructed"), ("outcome", "success")],
        )
        .await;
    assert_eq!(m, 4.0);
}

#[tokio::test]
async fn a_prefill_rejection_is_learned_and_the_stream_continued_by_instruction() {
    // Misconfigured: the relay believes Claude 4.6 takes prefill. Bedrock says otherwise.
    let h = Harness::start_full(|_| {}, |s| s.resume.no_prefill_models.clear()).await;
    for (i, tag) in ["learn-i1", "learn-i2"].into_iter().enumerate() {
        // Sampled (no temperature: 1): the clean simulator's first attempt is the same sample.
        let req = ConverseReq::new(
            CLAUDE_46,
            format!("Write about dunes sim:len=40 sim:cont=echo2 sim:tag={tag}"),
        );
        let reference = canon::converse_stream(&h.reference, &req).await;
        h.fault(tag, Some(vec![1]), Fault::ResetAfterEvents { events: 12 });
        let got = canon::converse_stream(&h.client, &req).await;
        assert_eq!(got.error, None, "{tag}");
        assert_eq!(got.text(), reference.text(), "{tag}");
        let attempts = h.attempts_for(tag);
        // First stream: reset, prefill refused (400), instructed. Second: reset, instructed.
        assert_eq!(attempts.len(), if i == 0 { 3 } else { 2 }, "{tag}");
        assert!(attempts.last().unwrap().continuation, "{tag}");
    }
    for (strategy, outcome, n) in [("prefill", "rejected", 1.0), ("instructed", "success", 2.0)] {
        let labels = [("strategy", strategy), ("outcome", outcome)];
        let m = h
            .metric("bedrock_relay_stream_resumes_total", &labels)
            .await;
        assert_eq!(m, n, "{strategy} {outcome}");
    }
}

#[tokio::test]
async fn a_prefill_rejection_is_learned_and_the_stream_is_replayed() {
    // Misconfigured: the relay believes Claude 4.6 takes prefill, and instructed continuation
    // is switched off. At temperature 0 the replay is exact.
    let h = Harness::start_full(
        |a| a.instructed = Some("off".into()),
        |s| s.resume.no_prefill_models.clear(),
    )
    .await;
    for (i, tag) in ["learn-1", "learn-2"].into_iter().enumerate() {
        let req = ConverseReq {
            temperature: Some(0.0),
            ..ConverseReq::new(
                CLAUDE_46,
                format!("Write about sand sim:len=40 sim:tag={tag}"),
            )
        };
        let reference = canon::converse_stream(&h.reference, &req).await;
        h.fault(tag, Some(vec![1]), Fault::ResetAfterEvents { events: 12 });
        let got = canon::converse_stream(&h.client, &req).await;
        assert_eq!(got.error, None, "{tag}");
        assert_eq!(got.events, reference.events, "{tag}");
        let attempts = h.attempts_for(tag);
        // First stream: reset, prefill refused (400), replay. Second: reset, replay at once.
        assert_eq!(attempts.len(), if i == 0 { 3 } else { 2 }, "{tag}");
        assert_eq!(
            attempts.last().unwrap().prefill,
            None,
            "{tag}: the last attempt is a replay"
        );
    }
    assert_eq!(
        h.metric(
            "bedrock_relay_stream_resumes_total",
            &[("strategy", "prefill"), ("outcome", "rejected")]
        )
        .await,
        1.0
    );
    assert_eq!(
        h.metric(
            "bedrock_relay_stream_resumes_total",
            &[("strategy", "replay"), ("outcome", "success")]
        )
        .await,
        2.0
    );
}

#[tokio::test]
async fn reasoning_and_tool_use_are_resumed_by_replay_even_where_prefill_works() {
    let h = Harness::start().await;
    let model = FAMILIES[0];
    for (tag, tools, reasoning) in [("tool-replay", true, false), ("think-replay", false, true)] {
        let req = ConverseReq {
            tools,
            reasoning,
            ..ConverseReq::new(
                model,
                format!("Weather and primes sim:len=30 sim:tag={tag}"),
            )
        };
        let reference = canon::converse_stream(&h.reference, &req).await;
        let at = reference
            .events
            .iter()
            .position(|e| e.contains("input=") || e.contains("reasoning="))
            .unwrap()
            + 2;
        h.fault(tag, Some(vec![1]), Fault::ResetAfterEvents { events: at });
        let got = canon::converse_stream(&h.client, &req).await;
        assert_eq!(got.error, None, "{tag}");
        assert_eq!(got.events, reference.events, "{tag}");
        let attempts = h.attempts_for(tag);
        assert_eq!(attempts[1].prefill, None, "{tag}: replayed, not prefilled");
        assert_eq!(
            attempts[1].body, attempts[0].body,
            "{tag}: the replay is the original request, byte for byte"
        );
    }
}

#[tokio::test]
async fn usage_is_the_sum_over_attempts() {
    let h = Harness::start().await;
    let model = FAMILIES[0];
    let req = ConverseReq::new(model, "Write about salt sim:len=60 sim:tag=usage");
    let reference = canon::converse_stream(&h.reference, &req).await;
    h.fault(
        "usage",
        Some(vec![1]),
        Fault::ResetAfterEvents { events: 31 },
    );
    let got = canon::converse_stream(&h.client, &req).await;
    assert_eq!(got.events, reference.events);
    // 30 deltas came from the failed attempt (one token each), the rest from the resume.
    let failed = h
        .metric(
            "bedrock_relay_failed_attempt_tokens_total",
            &[("kind", "output")],
        )
        .await;
    assert!(failed >= 29.0, "failed attempt's output counted: {failed}");
    let (got_out, ref_out) = (got.output_tokens.unwrap(), reference.output_tokens.unwrap());
    assert!(
        (ref_out..=ref_out + 1).contains(&got_out),
        "billed output {got_out} vs model output {ref_out}"
    );
}
