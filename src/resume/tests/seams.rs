//! Rule tests for the seams of issue 10: limits (finish at a used-up limit), usage with
//! cache tokens and latency, running counters, opaque streams replayed byte-exact.

use super::util::*;
use crate::resume::*;
use serde_json::json;

fn llama(text: &str, n: u64) -> aws_smithy_types::event_stream::Message {
    claude_chunk(
        json!({"generation": text, "prompt_token_count": if n == 2 { json!(7) } else { json!(null) },
        "generation_token_count": n, "stop_reason": null}),
    )
}

#[test]
fn a_used_up_limit_ends_the_answer_with_the_format_s_own_terminal_chunk() {
    let fmt = StreamFormat::Invoke(Family::Llama);
    let mut c = Client::new(fmt);
    // Two chunks of two tokens each: 4 tokens, exactly the limit.
    c.feed(&[llama("One two", 2), llama(" three four", 4)])
        .unwrap();
    let body = br#"{"prompt":"x","max_gen_len":4}"#;
    let end = finish_at_limit(&fmt, body, c.transcript()).expect("limit used up");
    c.feed(&frames(end)).unwrap();
    assert!(c.transcript().is_complete());
    let last = inner(&c.received).pop().unwrap();
    assert_eq!(last["stop_reason"], "length");
    assert_eq!(last["generation_token_count"], 4);
    assert_eq!(
        last["amazon-bedrock-invocationMetrics"]["outputTokenCount"],
        4
    );
    assert_eq!(
        last["amazon-bedrock-invocationMetrics"]["inputTokenCount"],
        7
    );
    // Below the limit: nothing to finish, and the continuation asks for what is left.
    let mut c = Client::new(fmt);
    c.feed(&[llama("One two", 2)]).unwrap();
    assert!(finish_at_limit(&fmt, body, c.transcript()).is_none());
    let (s, next) = c.resume(body, ALL).unwrap();
    assert_eq!(
        (s, next["max_gen_len"].as_u64()),
        (Strategy::Prefill, Some(2))
    );
    // A Converse stream: one token per delta at least, so 3 deltas use up a limit of 3.
    let conv = StreamFormat::Converse;
    let mut c = Client::new(conv);
    let blocks = [RefBlock::Text(vec!["a".into(), " b".into(), " c".into()])];
    let full = converse_stream(&blocks, "max_tokens", 5);
    c.feed(&full[..4]).unwrap();
    let body = br#"{"messages":[],"inferenceConfig":{"maxTokens":3}}"#;
    let end = finish_at_limit(&conv, body, c.transcript()).expect("limit used up");
    c.feed(&frames(end)).unwrap();
    assert!(c.transcript().is_complete());
    assert_eq!(c.transcript().stop(), Some("max_tokens"));
    let metadata: serde_json::Value =
        serde_json::from_slice(c.received.last().unwrap().payload()).unwrap();
    assert_eq!(metadata["usage"]["outputTokens"], 3);
}

#[test]
fn failed_attempt_input_is_estimated_from_the_whole_prompt_and_cache_is_summed() {
    // Converse: the failed attempt reported nothing; the continuation's inputTokens (4)
    // excludes the 50 cached tokens and includes the 2 delivered tokens it carried.
    let conv = StreamFormat::Converse;
    let mut c = Client::new(conv);
    let blocks = [RefBlock::Text(vec!["Hello".into(), " there".into()])];
    c.feed(&converse_stream(&blocks, "end_turn", 1)[..3])
        .unwrap();
    let body = br#"{"messages":[{"role":"user","content":[{"text":"q"}]}]}"#;
    c.resume(body, ALL).unwrap();
    c.feed(&[
        conv_msg(
            "contentBlockDelta",
            json!({"contentBlockIndex":0,"delta":{"text":" friend"}}),
        ),
        conv_msg("contentBlockStop", json!({"contentBlockIndex":0})),
        conv_msg("messageStop", json!({"stopReason":"end_turn"})),
        conv_msg(
            "metadata",
            json!({"usage":{"inputTokens":4,"outputTokens":1,"totalTokens":55,
            "cacheReadInputTokens":50},"metrics":{"latencyMs":9}}),
        ),
    ])
    .unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(c.received.last().unwrap().payload()).unwrap();
    assert_eq!(m["usage"]["inputTokens"], 4 + (4 + 50 - 2));
    assert_eq!(m["usage"]["outputTokens"], 1 + 2);
    assert_eq!(m["usage"]["cacheReadInputTokens"], 50);
    assert!(m["metrics"]["latencyMs"].as_u64().unwrap() >= 9);
    // Claude: cache tokens a failed attempt announced in message_start are summed.
    let fmt = StreamFormat::Invoke(Family::Claude);
    let start = |input: u64| {
        claude_chunk(
            json!({"type":"message_start","message":{"role":"assistant","content":[],
            "usage":{"input_tokens":input,"output_tokens":1,"cache_read_input_tokens":100,
            "cache_creation_input_tokens":0}}}),
        )
    };
    let delta = |t: &str| {
        claude_chunk(
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":t}}),
        )
    };
    let mut c = Client::new(fmt);
    c.feed(&[
        start(5),
        claude_chunk(json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})),
        delta("Hi"),
    ])
    .unwrap();
    let body = br#"{"max_tokens":100,"messages":[{"role":"user","content":"q"}]}"#;
    c.resume(body, ALL).unwrap();
    c.feed(&[
        start(6),
        claude_chunk(json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})),
        delta(" you"),
        claude_chunk(json!({"type":"content_block_stop","index":0})),
        claude_chunk(json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":1}})),
        claude_chunk(json!({"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":6,
            "outputTokenCount":1,"invocationLatency":10,"firstByteLatency":2,"cacheReadInputTokenCount":100}})),
    ])
    .unwrap();
    let last = inner(&c.received).pop().unwrap();
    let m = &last["amazon-bedrock-invocationMetrics"];
    assert_eq!(m["inputTokenCount"], 6 + 5);
    assert_eq!(m["cacheReadInputTokenCount"], 200);
    assert!(m["invocationLatency"].as_u64().unwrap() >= 10);
}

fn conv_msg(t: &str, v: serde_json::Value) -> aws_smithy_types::event_stream::Message {
    conv(t, v, 3)
}

#[test]
fn a_chunk_the_relay_does_not_understand_makes_the_stream_opaque() {
    let fmt = StreamFormat::Invoke(Family::Llama);
    let odd = claude_chunk(json!({"novel": "shape"}));
    let first = [llama("One", 1), odd.clone()];
    let mut c = Client::new(fmt);
    c.feed(&first).unwrap();
    let body = br#"{"prompt":"x","max_gen_len":40}"#;
    // Not "nothing delivered", never a continuation: byte-exact replay or a typed error.
    assert!(c.resume(body, REPLAY_ONLY).is_ok());
    let mut c2 = Client::new(fmt);
    c2.feed(&first).unwrap();
    let no_replay = ModelCaps {
        replay: false,
        ..ALL
    };
    assert!(matches!(
        c2.resume(body, no_replay),
        Err(CannotResume::NoStrategy { .. })
    ));
    let (s, next) = c.resume(body, ALL).unwrap();
    assert_eq!(s, Strategy::Replay);
    assert_eq!(next["prompt"], "x", "the original request");
    let rest = llama(" two", 2);
    c.feed(&[llama("One", 1), odd, rest.clone()]).unwrap();
    assert_eq!(c.received.last(), Some(&rest));
    // A replay whose chunks differ byte for byte diverges.
    let mut c = Client::new(fmt);
    c.feed(&first).unwrap();
    c.resume(body, ALL).unwrap();
    assert!(c
        .feed(&[llama("One", 1), claude_chunk(json!({"novel": "other"}))])
        .is_err());
}
