//! The SSE codecs through the real resume core: a stream cut mid-answer and continued reads
//! as one answer in each API's own events (Anthropic Messages and Chat Completions here,
//! Responses in `responses`).

mod property;
mod responses;

use crate::resume::sse::*;
use crate::resume::{Heal, Stop, Strategy};
use bytes::Bytes;
use serde_json::Value;

/// One client stream through the heal step, as the pump runs it (tool-call hold on, as
/// by default): what the client got, as text.
pub(super) struct Stream {
    pub heal: Heal<SseCodec>,
    pub client: String,
}

impl Stream {
    pub(super) fn new(op: Operation, body: &str) -> Stream {
        let mut codec = SseCodec::new(op).unwrap();
        codec.observe_request(body.as_bytes());
        Stream {
            heal: Heal::new(codec, Transcript::with_limit(FORMAT, 1 << 20), true),
            client: String::new(),
        }
    }

    /// One upstream event through the heal step.
    pub(super) fn try_feed(&mut self, raw: &str) -> Result<(), Stop> {
        let mut out: Vec<Bytes> = Vec::new();
        let fed = self
            .heal
            .feed(Bytes::copy_from_slice(raw.as_bytes()), &mut out);
        for bytes in out {
            self.client.push_str(std::str::from_utf8(&bytes).unwrap());
        }
        fed
    }

    pub(super) fn feed(&mut self, raw: &str) {
        self.try_feed(raw).expect("no error, no divergence");
    }

    /// The upstream error event `raw` is, as the heal step reads it.
    pub(super) fn error_of(&mut self, raw: &str) -> UpstreamError {
        match self.try_feed(raw) {
            Err(Stop::Upstream { error, .. }) => error,
            other => panic!("not an upstream error: {other:?}"),
        }
    }

    pub(super) fn resume(&mut self, body: &str, caps: ModelCaps) -> (Strategy, Value) {
        let next = self.heal.plan(body.as_bytes(), &caps).unwrap();
        self.heal.resumed(next.splicer);
        (next.strategy, serde_json::from_slice(&next.body).unwrap())
    }

    pub(super) fn transcript(&self) -> &Transcript {
        self.heal.transcript()
    }

    /// The data of every client event, as JSON (`[DONE]` as a string).
    pub(super) fn events(&self) -> Vec<Value> {
        self.client
            .split("\n\n")
            .filter_map(|e| fields(e.as_bytes()).data)
            .map(|d| serde_json::from_str(&d).unwrap_or(Value::String(d)))
            .collect()
    }
}

pub(super) const PREFILL: ModelCaps = ModelCaps {
    prefill: true,
    instructed: false,
    replay: true,
};
pub(super) const INSTRUCTED: ModelCaps = ModelCaps {
    prefill: false,
    instructed: true,
    replay: true,
};

fn chat_chunk(id: &str, delta: Value, finish: Value) -> String {
    let c = json!({"id": id, "object": "chat.completion.chunk", "created": 7, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {c}\n\n")
}

fn chat_usage(id: &str, input: u64, output: u64) -> String {
    let c = json!({"id": id, "object": "chat.completion.chunk", "created": 7, "model": "m", "choices": [],
        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}});
    format!("data: {c}\n\n")
}

#[test]
fn sse_fields_are_read_whatever_the_line_endings() {
    let f = fields(b"event: x\r\ndata: a\r\ndata:b\r\n\r\n");
    assert_eq!(f.event.as_deref(), Some("x"));
    assert_eq!(f.data.as_deref(), Some("a\nb"));
    assert_eq!(fields(b": keep-alive\n\n"), Fields::default());
}

#[test]
fn anthropic_events_go_out_byte_for_byte_and_errors_are_faults() {
    let mut s = Stream::new(Operation::AnthropicMessages, "{}");
    let raw = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n";
    s.feed(raw);
    assert_eq!(s.client, raw);
    let err = s.error_of("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}\n\n");
    assert_eq!(
        (err.kind.as_str(), err.message.as_str()),
        ("overloaded_error", "busy")
    );
}

#[test]
fn a_cut_chat_completion_continues_as_one_completion() {
    let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":50,"messages":[{"role":"user","content":"Hi"}]}"#;
    let mut s = Stream::new(Operation::ChatCompletions, body);
    s.feed(&chat_chunk(
        "a",
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ));
    s.feed(&chat_chunk("a", json!({"content": "Hello"}), Value::Null));
    s.feed(&chat_chunk("a", json!({"content": " wide"}), Value::Null));
    // Cut. A prefill continuation: the delivered text as the assistant's turn, the limit
    // reduced to what is left, in the client's own field.
    let (strategy, next) = s.resume(body, PREFILL);
    assert_eq!(strategy, Strategy::Prefill);
    assert_eq!(
        next["messages"][1],
        json!({"role": "assistant", "content": "Hello wide"})
    );
    assert!(next["max_completion_tokens"].as_u64().unwrap() < 50);
    assert!(next.get("max_tokens").is_none());
    s.feed(&chat_chunk(
        "b",
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ));
    s.feed(&chat_chunk("b", json!({"content": " world"}), Value::Null));
    s.feed(&chat_chunk("b", json!({}), json!("stop")));
    s.feed(&chat_usage("b", 9, 1));
    s.feed("data: [DONE]\n\n");
    assert!(s.transcript().is_complete());
    let events = s.events();
    let roles = events
        .iter()
        .filter(|e| e.pointer("/choices/0/delta/role").is_some());
    assert_eq!(roles.count(), 1, "{}", s.client);
    let text: String = events
        .iter()
        .filter_map(|e| {
            e.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(text, "Hello wide world");
    let finishes: Vec<_> = events
        .iter()
        .filter_map(|e| {
            e.pointer("/choices/0/finish_reason")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(finishes, ["stop"]);
    let usage: Vec<_> = events.iter().filter(|e| e["usage"].is_object()).collect();
    assert_eq!(usage.len(), 1);
    // The failed attempt's two deltas are added to the continuation's count.
    assert_eq!(usage[0]["usage"]["completion_tokens"], 3);
    assert_eq!(events.last(), Some(&json!("[DONE]")));
    assert!(
        events[..events.len() - 1].iter().all(|e| e["id"] == "a"),
        "one completion id"
    );
}

#[test]
fn chat_tool_calls_are_tool_use_blocks_written_back_as_tool_calls() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"Hi"}]}"#;
    let mut s = Stream::new(Operation::ChatCompletions, body);
    s.feed(&chat_chunk(
        "a",
        json!({"role": "assistant", "content": "Let me look."}),
        Value::Null,
    ));
    let start = json!({"tool_calls": [{"index": 0, "id": "c1", "type": "function",
        "function": {"name": "f", "arguments": ""}}]});
    s.feed(&chat_chunk("a", start.clone(), Value::Null));
    let args = json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"x\":1}"}}]});
    s.feed(&chat_chunk("a", args.clone(), Value::Null));
    s.feed(&chat_chunk("a", json!({}), json!("tool_calls")));
    s.feed("data: [DONE]\n\n");
    assert!(s.transcript().is_complete());
    let blocks = s.transcript().blocks();
    assert_eq!(blocks.len(), 2);
    assert!(blocks[1].kind.is_tool() && blocks[1].text == "{\"x\":1}");
    let events = s.events();
    let deltas: Vec<&Value> = events.iter().map(|e| &e["choices"][0]["delta"]).collect();
    assert_eq!(deltas[2], &start);
    assert_eq!(deltas[3], &args);
}

#[test]
fn chunks_the_codec_does_not_know_are_only_replayed() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"Hi"}]}"#;
    let mut s = Stream::new(Operation::ChatCompletions, body);
    s.feed(&chat_chunk(
        "a",
        json!({"role": "assistant", "content": "Hi"}),
        Value::Null,
    ));
    let odd = json!({"id": "a", "object": "chat.completion.chunk", "created": 7, "model": "m",
        "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": null},
                    {"index": 1, "delta": {"content": "y"}, "finish_reason": null}]});
    s.feed(&format!("data: {odd}\n\n"));
    assert_eq!(s.events()[2], odd, "carried whole");
    let (strategy, next) = s.resume(body, PREFILL);
    assert_eq!(strategy, Strategy::Replay);
    assert_eq!(next, serde_json::from_str::<Value>(body).unwrap());
}

impl Stream {
    /// What the pump does at a fault when the client's limit is used up.
    pub(super) fn finish_at_limit(&mut self, body: &str) -> bool {
        let mut out: Vec<Bytes> = Vec::new();
        let ended = self
            .heal
            .finish_at_limit(body.as_bytes(), &mut out)
            .unwrap();
        for bytes in out {
            self.client.push_str(std::str::from_utf8(&bytes).unwrap());
        }
        ended
    }
}

#[test]
fn a_chat_completion_cut_at_its_limit_ends_as_the_api_would() {
    let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":2,"messages":[{"role":"user","content":"Hi"}]}"#;
    let mut s = Stream::new(Operation::ChatCompletions, body);
    s.feed(&chat_chunk(
        "a",
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ));
    s.feed(&chat_chunk("a", json!({"content": "Hello"}), Value::Null));
    s.feed(&chat_chunk("a", json!({"content": " wide"}), Value::Null));
    assert!(s.finish_at_limit(body));
    assert!(s.transcript().is_complete());
    let events = s.events();
    let n = events.len();
    assert_eq!(events[n - 3]["choices"][0]["finish_reason"], "length");
    assert_eq!(events[n - 2]["usage"]["completion_tokens"], 2);
    assert_eq!(events[n - 1], json!("[DONE]"));
}

#[test]
fn anthropic_usage_and_invocation_metrics_are_summed_over_attempts() {
    let body = r#"{"model":"m","max_tokens":100,"messages":[{"role":"user","content":"Hi"}]}"#;
    let mut s = Stream::new(Operation::AnthropicMessages, body);
    let ev = |v: Value| format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap());
    let start = json!({"type": "message_start", "message": {"role": "assistant", "usage": {"input_tokens": 5, "output_tokens": 1}}});
    let block = json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}});
    let text = |t: &str| json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}});
    for v in [start.clone(), block.clone(), text("Hello"), text(" wide")] {
        s.feed(&ev(v));
    }
    assert_eq!(s.resume(body, PREFILL).0, Strategy::Prefill);
    for v in [
        start,
        block,
        text(" world"),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}}),
        json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 7, "outputTokenCount": 1}}),
    ] {
        s.feed(&ev(v));
    }
    let events = s.events();
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "message_start")
            .count(),
        1
    );
    let delta = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(
        delta["usage"]["output_tokens"], 3,
        "1 + the cut attempt's 2 deltas"
    );
    let metrics = &events.last().unwrap()["amazon-bedrock-invocationMetrics"];
    assert_eq!(metrics["outputTokenCount"], 3);
    assert!(
        metrics["inputTokenCount"].as_u64().unwrap() > 7,
        "the cut attempt's input too"
    );
}

#[test]
fn continuation_bodies_keep_what_the_client_sent() {
    // A cached user turn keeps its content blocks; only the added turns are plain strings.
    let body = r#"{"model":"m","max_tokens":50,"stop":["END"],"messages":[{"role":"user","content":[{"type":"text","text":"Hi","cache_control":{"type":"ephemeral"}}]}]}"#;
    let mut s = Stream::new(Operation::ChatCompletions, body);
    s.feed(&chat_chunk(
        "a",
        json!({"role": "assistant", "content": "Hello there"}),
        Value::Null,
    ));
    let (strategy, next) = s.resume(body, INSTRUCTED);
    assert_eq!(strategy, Strategy::Instructed);
    let original: Value = serde_json::from_str(body).unwrap();
    assert_eq!(next["messages"][0], original["messages"][0]);
    assert_eq!(
        next["messages"][1],
        json!({"role": "assistant", "content": "Hello there"})
    );
    assert_eq!(next["stop"], original["stop"]);
    assert!(next["max_tokens"].as_u64().unwrap() < 50);
}
