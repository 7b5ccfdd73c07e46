//! Seams that never lie, on the relay's own side (the stream pump and the retry driver),
//! through aws-sdk-bedrockruntime against the simulator: every stream ends as the model's
//! whole answer or a typed error the SDK raises — never a clean but short answer, never the
//! relay's 502 where Bedrock said something else, never a heal refused for lack of budget
//! after heals that succeeded.

use crate::support;

use bedrock_relay_sim::Fault;
use std::time::Duration;
use support::canon::{self, ConverseReq};
use support::Harness;

const CLAUDE_35: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

fn req(model: &str, prompt: &str, tag: &str) -> ConverseReq {
    let mut r = ConverseReq::new(model, format!("{prompt} sim:len=40 sim:tag={tag}"));
    r.temperature = Some(0.0);
    r
}

/// `active_streams` settles at zero once every stream's task has ended.
async fn no_stream_left(h: &Harness) {
    for _ in 0..100 {
        if h.metric("bedrock_relay_active_streams", &[]).await == 0.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("active_streams never went back to 0");
}

#[tokio::test]
async fn a_frame_that_cannot_be_reframed_ends_in_a_typed_error_not_a_short_answer() {
    let h = Harness::start().await;
    let tag = "oversized";
    // The first attempt breaks; the continuation's frames carry a 40 KB header, over what the
    // EventStream encoder accepts, so the frames the relay must rewrite cannot be encoded.
    h.fault(tag, Some(vec![1]), Fault::ResetAfterEvents { events: 8 });
    h.fault(tag, Some(vec![2]), Fault::OversizedHeader { events: 0 });
    let got = canon::converse_stream(&h.client, &req(CLAUDE_35, "Write about rivers", tag)).await;
    let err = got
        .error
        .expect("the client must not get a clean end without the answer's end");
    assert!(
        got.modelled_error,
        "a typed exception the SDK raises: {err}"
    );
    assert!(err.contains("ModelStreamError"), "{err}");
    assert!(err.contains("re-framed"), "{err}");
    no_stream_left(&h).await;
    assert_eq!(
        h.metric("bedrock_relay_stream_panics_total", &[]).await,
        0.0
    );
    assert_eq!(
        h.metric(
            "bedrock_relay_interrupted_streams_total",
            &[("family", "claude"), ("outcome", "failed")]
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn a_retryable_exception_as_first_frame_reaches_the_client_as_bedrock_sent_it() {
    // Throttle absorption off: the throttle is retried like any retryable exception.
    let h = Harness::start_with(|a| {
        a.max_attempts = Some("3".into());
        a.throttle_max_wait = Some("0s".into());
    })
    .await;
    let tag = "throttled-first";
    h.fault(
        tag,
        None,
        Fault::Exception {
            events: 0,
            exception_type: "throttlingException".into(),
        },
    );
    let got = canon::converse_stream(&h.client, &req(CLAUDE_35, "Write about hail", tag)).await;
    let err = got.error.expect("every attempt was throttled");
    assert!(got.modelled_error, "{err}");
    assert!(
        err.contains("ThrottlingException"),
        "throttling stays throttling, so the application backs off: {err}"
    );
    assert!(!err.contains("InternalServer"), "{err}");
    assert_eq!(h.attempts_for(tag).len(), 3, "retried invisibly first");
    assert_eq!(
        h.metric("bedrock_relay_retries_total", &[("reason", "throttled")])
            .await,
        2.0
    );
}

#[tokio::test]
async fn hundreds_of_healed_streams_leave_the_retry_budget_full() {
    // The default budget (500 tokens, 5 per retry). Refunding 1 per success drained it
    // after ~125 healed streams; a heal that succeeds now gives back what it took.
    let h = Harness::start().await;
    const STREAMS: usize = 200;
    const WORKERS: usize = 8;
    for i in 0..STREAMS {
        h.fault(
            &format!("budget-{i}"),
            Some(vec![1]),
            Fault::ResetAfterEvents { events: 6 },
        );
    }
    let healed: usize = futures_util::future::join_all((0..WORKERS).map(|worker| {
        let (client, reference) = (h.client.clone(), h.reference.clone());
        async move {
            let mut healed = 0;
            for i in (worker..STREAMS).step_by(WORKERS) {
                let r = req(CLAUDE_35, "Write about tides", &format!("budget-{i}"));
                let want = canon::converse_stream(&reference, &r).await;
                let got = canon::converse_stream(&client, &r).await;
                if got.error.is_none() && got.events == want.events {
                    healed += 1;
                }
            }
            healed
        }
    }))
    .await
    .into_iter()
    .sum();
    assert_eq!(healed, STREAMS, "every cut stream healed, whole and exact");
    assert_eq!(
        h.metric(
            "bedrock_relay_stream_resumes_total",
            &[("outcome", "success")]
        )
        .await,
        STREAMS as f64
    );
    assert_eq!(
        h.metric("bedrock_relay_retry_budget_exhausted_total", &[])
            .await,
        0.0
    );
    assert_eq!(
        h.metric("bedrock_relay_retry_budget_tokens", &[]).await,
        500.0,
        "successful heals gave back what they took"
    );
    assert_eq!(
        h.metric(
            "bedrock_relay_interrupted_streams_total",
            &[("family", "claude"), ("outcome", "healed")]
        )
        .await,
        STREAMS as f64,
        "the heal ratio per family counts every healed stream"
    );
}

#[tokio::test]
async fn a_refused_continuation_request_falls_to_the_next_rung() {
    let h = Harness::start().await;
    let tag = "refused-400";
    let r = req(CLAUDE_35, "Write about moss", tag);
    let reference = canon::converse_stream(&h.reference, &r).await;
    h.fault(tag, Some(vec![1]), Fault::ResetAfterEvents { events: 10 });
    // The prefill continuation is refused with a 400 that is not the known prefill refusal.
    h.fault(tag, Some(vec![2]), Fault::Status { code: 400 });
    let got = canon::converse_stream(&h.client, &r).await;
    assert_eq!(got.error, None);
    assert_eq!(
        got.events, reference.events,
        "healed by replay, byte for byte"
    );
    let attempts = h.attempts_for(tag);
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts[1].prefill.is_some(),
        "the second attempt was a prefill"
    );
    assert_eq!(attempts[2].prefill, None, "the third a replay");
    assert_eq!(
        h.metric(
            "bedrock_relay_stream_resumes_total",
            &[("strategy", "replay"), ("outcome", "success")]
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn a_prefill_refusal_is_learned_for_every_spelling_of_the_model() {
    // The relay is not told which models take no prefill: it learns it from Bedrock.
    let h = Harness::start_full(|_| {}, |s| s.resume.no_prefill_models.clear()).await;
    let spellings = [
        "us.anthropic.claude-sonnet-4-6-v1:0",
        "global.anthropic.claude-sonnet-4-6-v1:0",
        "eu.anthropic.claude-sonnet-4-6-v1:0",
    ];
    for (i, model) in spellings.into_iter().enumerate() {
        let tag = format!("spelling-{i}");
        let r = req(model, "Write about frost", &tag);
        let reference = canon::converse_stream(&h.reference, &r).await;
        h.fault(&tag, Some(vec![1]), Fault::ResetAfterEvents { events: 10 });
        let got = canon::converse_stream(&h.client, &r).await;
        assert_eq!(got.error, None, "{model}");
        // Healed by instructed continuation (the default for a model that takes no prefill):
        // the same text and events, the text deltas at the seam perhaps regrouped.
        assert_eq!(got.text(), reference.text(), "{model}");
        let others = |r: &canon::Received| -> Vec<String> {
            r.events
                .iter()
                .filter(|e| !e.contains(" text="))
                .cloned()
                .collect()
        };
        assert_eq!(others(&got), others(&reference), "{model}");
        // First spelling: reset, prefill refused, instructed. Then: reset, instructed at once.
        let attempts = h.attempts_for(&tag);
        let expected = if i == 0 { 3 } else { 2 };
        assert_eq!(attempts.len(), expected, "{model}");
        assert!(attempts[expected - 1].continuation, "{model}");
    }
}

#[tokio::test]
async fn refused_continuations_do_not_use_up_max_resumes_or_count_as_resumes() {
    // One resume allowed. The prefill is refused (learned), the replay heals: one resume.
    let h = Harness::start_full(
        |a| a.max_resumes = Some("1".into()),
        |s| s.resume.no_prefill_models.clear(),
    )
    .await;
    let tag = "one-resume";
    let r = req("anthropic.claude-opus-4-6-v1:0", "Write about reeds", tag);
    let reference = canon::converse_stream(&h.reference, &r).await;
    h.fault(tag, Some(vec![1]), Fault::ResetAfterEvents { events: 10 });
    let got = canon::converse_stream(&h.client, &r).await;
    assert_eq!(
        got.error, None,
        "the refused prefill did not use up the one resume"
    );
    // The same answer; an instructed seam may deliver the text after the anchor in one delta.
    assert_eq!(got.text(), reference.text());

    // A stream whose continuation never opens reports that it was never resumed.
    let tag = "never-resumed";
    h.fault(tag, Some(vec![1]), Fault::ResetAfterEvents { events: 10 });
    h.fault(tag, Some(vec![2, 3, 4, 5]), Fault::Status { code: 500 });
    let got = canon::converse_stream(&h.client, &req(CLAUDE_35, "Write about slate", tag)).await;
    let err = got.error.expect("no continuation opened");
    assert!(got.modelled_error, "{err}");
    assert!(err.contains("resumes: 0"), "nothing was resumed: {err}");
}
