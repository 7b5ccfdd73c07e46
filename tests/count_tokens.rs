//! Exact output limits for continuations (docs/continuation.md, "Limits, exactly"): before a
//! continuation the relay counts what the client has with Bedrock CountTokens and asks for
//! exactly what is left of the client's limit. A stream cut late under a tight limit is then
//! continued (the bounds, one token per byte, would leave only replay); a model that cannot
//! be counted, or may not be, falls back to the bounds, and a refusal is remembered.

use crate::support;

use bedrock_relay_sim::{Fault, LogEntry};
use std::time::Instant;
use support::canon::{self, ConverseReq};
use support::Harness;

const CLAUDE: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
/// The client's limit: the answer (100 words) is cut by it, at 70 tokens.
const LIMIT: i32 = 70;

fn request(model: &str, tag: &str) -> ConverseReq {
    let mut req = ConverseReq::new(
        model,
        format!("Write about ferries sim:len=100 sim:tag={tag}"),
    );
    req.max_tokens = Some(LIMIT);
    req
}

/// The model requests the simulator received for a tag (its CountTokens requests aside).
fn model_requests(h: &Harness, tag: &str) -> Vec<LogEntry> {
    h.log_for(tag)
        .into_iter()
        .filter(|e| e.operation == "ConverseStream")
        .collect()
}

/// The CountTokens requests the simulator received (they carry the conversation, so its tag).
fn counts(h: &Harness, tag: &str) -> Vec<LogEntry> {
    h.log_for(tag)
        .into_iter()
        .filter(|e| e.operation == "CountTokens")
        .collect()
}

fn max_tokens(e: &LogEntry) -> Option<i64> {
    e.body.pointer("/inferenceConfig/maxTokens")?.as_i64()
}

/// Cut the tagged stream late (after 50 of its 70 tokens) and return what the client got,
/// checked against the uninterrupted answer.
async fn cut_late(h: &Harness, model: &str, tag: &str) {
    let req = request(model, tag);
    let reference = canon::converse_stream(&h.reference, &req).await;
    h.fault(tag, Some(vec![1]), Fault::ResetAfterEvents { events: 52 });
    let got = canon::converse_stream(&h.client, &req).await;
    assert_eq!(got.error, None, "{tag}: healed");
    assert_eq!(
        got.events, reference.events,
        "{tag}: the uninterrupted answer"
    );
    assert!(
        got.events.iter().any(|e| e.contains("max_tokens")),
        "{tag}: it ends at the client's limit: {:?}",
        got.events.last()
    );
}

#[tokio::test]
async fn a_stream_cut_late_under_a_tight_limit_is_continued_with_the_counted_limit() {
    let h = Harness::start().await;
    for (model, tag) in [
        (CLAUDE, "count-bare"),
        (
            "us.anthropic.claude-3-5-sonnet-20240620-v1:0",
            "count-profile",
        ),
    ] {
        let started = Instant::now();
        cut_late(&h, model, tag).await;
        let took = started.elapsed();
        let sent = model_requests(&h, tag);
        assert_eq!(sent.len(), 2, "{tag}: the cut attempt and one continuation");
        let prefill = sent[1]
            .prefill
            .as_deref()
            .unwrap_or_else(|| panic!("{tag}: continued by prefill, not replayed"));
        // One simulated token per word: the client had this many of its 70.
        let delivered = prefill.split_whitespace().count() as i64;
        assert!(
            (prefill.len() as i64) > i64::from(LIMIT),
            "{tag}: the bounds (one token per byte) would leave no room: {prefill:?}"
        );
        assert_eq!(
            max_tokens(&sent[1]),
            Some(i64::from(LIMIT) - delivered),
            "{tag}: the continuation asks for exactly what is left"
        );
        let counted = counts(&h, tag);
        assert_eq!(
            counted.len(),
            2,
            "{tag}: with and without the delivered text"
        );
        for c in &counted {
            assert_eq!(
                c.model_id.as_deref(),
                Some(CLAUDE),
                "{tag}: counted for the bare foundation model"
            );
            assert_eq!(c.signature, "valid", "{tag}: signed as model requests are");
            assert_eq!(c.status, 200, "{tag}");
        }
        println!("{tag}: healed in {took:?}");
    }
    assert_eq!(
        h.metric(
            "bedrock_relay_count_tokens_total",
            &[("outcome", "counted")]
        )
        .await,
        2.0
    );
    let n = h
        .metric("bedrock_relay_count_tokens_seconds_count", &[])
        .await;
    let sum = h
        .metric("bedrock_relay_count_tokens_seconds_sum", &[])
        .await;
    assert_eq!(n, 2.0);
    println!(
        "count latency (in-process simulator): mean {:.2} ms",
        sum / n * 1000.0
    );
}

#[tokio::test]
async fn models_that_cannot_or_may_not_be_counted_fall_back_to_the_bounds_and_are_remembered() {
    let h = Harness::start().await;
    // Amazon Nova: Bedrock does not count it, so the relay does not ask. Under this tight
    // limit the bounds leave only replay.
    cut_late(&h, "amazon.nova-pro-v1:0", "count-nova").await;
    assert!(counts(&h, "count-nova").is_empty(), "Nova is not counted");
    let sent = model_requests(&h, "count-nova");
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].prefill, None, "replayed: the bounds leave no room");
    assert_eq!(
        h.metric(
            "bedrock_relay_count_tokens_total",
            &[("outcome", "skipped")]
        )
        .await,
        1.0
    );

    // Not permitted (no bedrock:CountTokens): refused once, remembered for the model.
    h.sim.set_deny_count_tokens(true);
    cut_late(&h, CLAUDE, "count-denied").await;
    let refused = counts(&h, "count-denied");
    assert!(!refused.is_empty(), "asked once");
    assert!(refused.iter().all(|c| c.status == 403));
    assert_eq!(model_requests(&h, "count-denied")[1].prefill, None);
    assert_eq!(
        h.metric("bedrock_relay_count_tokens_total", &[("outcome", "denied")])
            .await,
        1.0
    );
    // Allowed again at Bedrock, but the relay remembers: it does not ask for this model
    // (under any of its spellings), and heals with the bounds.
    h.sim.set_deny_count_tokens(false);
    for (model, tag) in [
        (CLAUDE, "count-remembered"),
        (
            "us.anthropic.claude-3-5-sonnet-20240620-v1:0",
            "count-remembered-profile",
        ),
    ] {
        cut_late(&h, model, tag).await;
        assert!(counts(&h, tag).is_empty(), "{tag}: not asked again");
    }
    assert_eq!(
        h.metric(
            "bedrock_relay_count_tokens_total",
            &[("outcome", "skipped")]
        )
        .await,
        3.0
    );
    assert_eq!(
        h.metric(
            "bedrock_relay_count_tokens_total",
            &[("outcome", "counted")]
        )
        .await,
        0.0
    );
}

#[tokio::test]
async fn an_unlimited_request_is_not_counted_and_a_loose_limit_is_counted_once() {
    let h = Harness::start().await;
    // No output limit: nothing to size, no count.
    let req = ConverseReq::new(
        CLAUDE,
        "Write about kelp sim:len=40 sim:tag=count-unlimited",
    );
    let reference = canon::converse_stream(&h.reference, &req).await;
    h.fault(
        "count-unlimited",
        Some(vec![1]),
        Fault::ResetAfterEvents { events: 20 },
    );
    let got = canon::converse_stream(&h.client, &req).await;
    assert_eq!(got.events, reference.events);
    assert!(counts(&h, "count-unlimited").is_empty());

    // A loose limit, cut twice at the same place (the continuation breaks before it adds
    // anything): the delivered text is counted once, and both continuations ask for the
    // counted rest.
    let mut req = ConverseReq::new(CLAUDE, "Write about kelp sim:len=40 sim:tag=count-twice");
    req.max_tokens = Some(1000);
    let reference = canon::converse_stream(&h.reference, &req).await;
    h.fault(
        "count-twice",
        Some(vec![1]),
        Fault::ResetAfterEvents { events: 20 },
    );
    h.fault(
        "count-twice",
        Some(vec![2]),
        Fault::ResetAfterEvents { events: 0 },
    );
    let got = canon::converse_stream(&h.client, &req).await;
    assert_eq!(got.error, None);
    assert_eq!(got.events, reference.events);
    assert_eq!(
        counts(&h, "count-twice").len(),
        2,
        "one count: two requests"
    );
    let sent = model_requests(&h, "count-twice");
    assert_eq!(sent.len(), 3, "{sent:#?}");
    let delivered = sent[2]
        .prefill
        .as_deref()
        .unwrap()
        .split_whitespace()
        .count() as i64;
    for continuation in &sent[1..] {
        assert_eq!(max_tokens(continuation), Some(1000 - delivered));
    }
}
