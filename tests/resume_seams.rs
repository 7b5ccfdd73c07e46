//! Seams that must not change the answer, end to end through aws-sdk-bedrockruntime: chunk
//! formats the relay once did not parse (Mistral chat, Claude legacy completion), stop
//! sequences and prompt control strings at the seam, running token counters and usage
//! after a splice. Each compares with an uninterrupted run of the same request.

use crate::support;

use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::ResponseStream;
use bedrock_relay_sim::Fault;
use serde_json::{json, Value};
use support::canon::{self, ConverseReq};
use support::Harness;

const CLAUDE: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
const LLAMA: &str = "meta.llama3-1-70b-instruct-v1:0";
const MISTRAL: &str = "mistral.mistral-large-2407-v1:0";
const TITAN: &str = "amazon.titan-text-premier-v1:0";

/// Every chunk of an invoke stream as the client decoded it (nothing scrubbed).
async fn raw_chunks(
    client: &aws_sdk_bedrockruntime::Client,
    model: &str,
    body: &Value,
) -> Vec<Value> {
    let out = client
        .invoke_model_with_response_stream()
        .model_id(model)
        .content_type("application/json")
        .body(Blob::new(serde_json::to_vec(body).unwrap()))
        .send()
        .await
        .expect("stream opens");
    let mut stream = out.body;
    let mut chunks = Vec::new();
    while let Some(ev) = stream.recv().await.expect("no stream error") {
        if let ResponseStream::Chunk(part) = ev {
            let bytes = part.bytes.map(|b| b.into_inner()).unwrap_or_default();
            chunks.push(serde_json::from_slice(&bytes).expect("JSON chunk"));
        }
    }
    chunks
}

#[tokio::test]
async fn mistral_chat_and_claude_completion_streams_are_never_sent_twice() {
    let h = Harness::start().await;
    let cases = [
        (
            MISTRAL,
            "mistral-chat",
            json!({"messages": [{"role": "user", "content": "sim:len=40 sim:tag=mistral-chat Write about kites"}],
                   "max_tokens": 4096}),
        ),
        (
            "anthropic.claude-v2:1",
            "claude-text",
            json!({"prompt": "\n\nHuman: sim:len=40 sim:tag=claude-text Write about kites\n\nAssistant:",
                   "max_tokens_to_sample": 4096}),
        ),
    ];
    for (model, tag, body) in cases {
        let reference = canon::invoke_stream(&h.reference, model, &body).await;
        assert_eq!(reference.error, None, "{tag}");
        assert!(
            reference.text_events() > 30,
            "{tag}: {:?}",
            reference.events
        );
        h.fault(tag, Some(vec![1]), Fault::ResetAfterEvents { events: 4 });
        let got = canon::invoke_stream(&h.client, model, &body).await;
        assert_eq!(got.error, None, "{tag}");
        assert_eq!(
            got.events, reference.events,
            "{tag}: the answer once, unbroken"
        );
        assert_eq!(h.attempts_for(tag).len(), 2, "{tag}");
    }
}

#[tokio::test]
async fn a_stop_sequence_begun_before_the_seam_still_stops_the_answer() {
    let h = Harness::start().await;
    let prompt = "sim:len=60 sim:tag=stopseq Write about gulls";
    let plain = canon::converse_stream(&h.reference, &ConverseReq::new(CLAUDE, prompt)).await;
    let texts: Vec<String> = plain
        .events
        .iter()
        .filter_map(|e| e.split_once(" text=").map(|(_, t)| t.to_owned()))
        .collect();
    let full = texts.concat();
    // A stop sequence made of the end of text piece k and the start of piece k+1.
    let (k, stop) = (10..texts.len() - 5)
        .find_map(|k| {
            let boundary: usize = texts[..=k].iter().map(String::len).sum();
            let (a, b) = (&texts[k], &texts[k + 1]);
            if a.len() < 4 || b.len() < 4 || a.ends_with(char::is_whitespace) {
                return None;
            }
            let stop = format!("{}{}", &a[a.len() - 3..], &b[..3]);
            (full.find(&stop) == Some(boundary - 3)).then_some((k, stop))
        })
        .expect("a stop sequence across a piece boundary");
    let req = ConverseReq {
        stop_sequences: vec![stop.clone()],
        ..ConverseReq::new(CLAUDE, prompt)
    };
    let reference = canon::converse_stream(&h.reference, &req).await;
    assert!(
        reference.events.iter().any(|e| e.contains("stop_sequence")),
        "{stop:?}: {:?}",
        reference.events
    );
    assert_eq!(
        reference.text(),
        texts[..=k].concat(),
        "the partial match was streamed"
    );
    // Cut right after the delta that ends in the first part of the stop sequence.
    h.fault(
        "stopseq",
        Some(vec![1]),
        Fault::ResetAfterEvents { events: k + 2 },
    );
    let got = canon::converse_stream(&h.client, &req).await;
    assert_eq!(got.error, None);
    assert_eq!(
        got.events, reference.events,
        "the model still stops at {stop:?}"
    );
    let attempts = h.attempts_for("stopseq");
    assert_eq!(
        attempts.last().unwrap().prefill,
        None,
        "replayed, not prefilled"
    );
}

#[tokio::test]
async fn control_strings_in_delivered_text_never_enter_a_raw_prompt() {
    let h = Harness::start().await;
    for (model, marker, seen) in [
        (LLAMA, "%3C%7Ceot_id%7C%3E", "<|eot_id|>"),
        (MISTRAL, "%20%5BINST%5D", "[INST]"),
        (TITAN, "%0AUser:%20hi", "\\nUser: hi"),
    ] {
        let tag = format!("ctl-{}", &model[..6]);
        let body = canon::invoke_body(
            model,
            &format!("sim:len=30 sim:insert=8:{marker} sim:tag={tag} Write about piers"),
        );
        let reference = canon::invoke_stream(&h.reference, model, &body).await;
        assert_eq!(reference.error, None, "{tag}");
        assert!(
            reference.events.iter().any(|e| e.contains(seen)),
            "{tag}: the model wrote {seen}: {:?}",
            reference.events
        );
        // Cut two pieces after the one holding the control string.
        h.fault(&tag, Some(vec![1]), Fault::ResetAfterEvents { events: 11 });
        let got = canon::invoke_stream(&h.client, model, &body).await;
        assert_eq!(got.error, None, "{tag}");
        assert_eq!(got.events, reference.events, "{tag}");
        let attempts = h.attempts_for(&tag);
        assert_eq!(attempts.len(), 2, "{tag}");
        assert_eq!(attempts[1].prefill, None, "{tag}: replayed, not prefilled");
    }
}

#[tokio::test]
async fn running_token_counts_continue_across_the_seam_and_are_exact() {
    let h = Harness::start().await;
    // Three tokens per chunk, as real streams often carry: one per delta would be wrong.
    let body = canon::invoke_body(
        LLAMA,
        "sim:len=30 sim:tpp=3 sim:tag=running Write about oars",
    );
    let mut body = body;
    body.as_object_mut().unwrap().remove("max_gen_len");
    h.fault(
        "running",
        Some(vec![1]),
        Fault::ResetAfterEvents { events: 10 },
    );
    let got = raw_chunks(&h.client, LLAMA, &body).await;
    let counts: Vec<u64> = got
        .iter()
        .filter(|c| c["generation"].as_str().is_some_and(|t| !t.is_empty()))
        .map(|c| c["generation_token_count"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=30).map(|i| i * 3).collect();
    assert_eq!(counts, expected, "one counter for the whole answer");
    let last = got.last().unwrap();
    assert_eq!(last["generation_token_count"], 90);
    // Billed: the failed attempt's exact 30 tokens plus the continuation's 60.
    assert_eq!(
        last["amazon-bedrock-invocationMetrics"]["outputTokenCount"],
        90
    );
    let failed = h
        .metric(
            "bedrock_relay_failed_attempt_tokens_total",
            &[("kind", "output")],
        )
        .await;
    assert_eq!(failed, 30.0, "the failed attempt's exact running count");
    // No max_gen_len from the client: Llama's default 512, minus the 30 delivered.
    let attempts = h.attempts_for("running");
    assert_eq!(attempts[1].body["max_gen_len"], 482);
}

#[tokio::test]
async fn latency_is_summed_over_attempts() {
    let h = Harness::start_with(|a| a.stall_timeout = Some("300ms".into())).await;
    let req = ConverseReq::new(CLAUDE, "sim:len=30 sim:tag=latency Write about sails");
    h.fault(
        "latency",
        Some(vec![1]),
        Fault::Stall {
            events: 5,
            duration: std::time::Duration::from_secs(2),
        },
    );
    let got = canon::converse_stream(&h.client, &req).await;
    assert_eq!(got.error, None);
    let reference = canon::converse_stream(&h.reference, &req).await;
    assert_eq!(got.events, reference.events);
    let latency = got.latency_ms.expect("metadata has latencyMs");
    assert!(
        latency >= 300,
        "the stalled attempt's time counts: {latency} ms"
    );
}

#[tokio::test]
async fn cache_tokens_are_summed_over_attempts() {
    let h = Harness::start().await;
    let body = canon::invoke_body(
        CLAUDE,
        "sim:len=30 sim:cache=50 sim:tag=cache Write about nets",
    );
    let reference = raw_chunks(&h.reference, CLAUDE, &body).await;
    let metrics = |c: &[Value]| c.last().unwrap()["amazon-bedrock-invocationMetrics"].clone();
    assert_eq!(metrics(&reference)["cacheReadInputTokenCount"], 50);
    h.fault(
        "cache",
        Some(vec![1]),
        Fault::ResetAfterEvents { events: 12 },
    );
    let got = raw_chunks(&h.client, CLAUDE, &body).await;
    let attempts = h.attempts_for("cache");
    assert!(attempts[1].prefill.is_some(), "continued by prefill");
    // Both attempts read the cache: the failed one announced it in its message_start.
    assert_eq!(metrics(&got)["cacheReadInputTokenCount"], 100);
}
