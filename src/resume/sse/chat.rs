//! OpenAI Chat Completions chunks ↔ the core's Claude events.
//!
//! Read: the role delta → `message_start`; `delta.content` → a text block;
//! `delta.reasoning_content` (or `reasoning`) → a thinking block (replay only, as for every
//! format); each `tool_calls` entry with an `id` → a tool-use block whose `arguments` are its
//! input deltas (held until whole by `resume.hold_tool_use`, so a cut inside a call is
//! invisible and the resumed answer brings it whole); `finish_reason` → the open block's
//! stop, then `message_delta` with the stop reason; the usage chunk
//! (`stream_options.include_usage`) → a `message_delta` carrying usage, which the splicer
//! sums over attempts; `data: [DONE]` → `message_stop`. Chunks with several choices or
//! fields the codec does not know are carried whole (`sse_chat`), which the core treats as
//! not understood: replay only, verified.
//!
//! Write: every chunk from the first attempt's chunk template (`id`, `created`, `model`,
//! …), so the client sees one completion: one role delta, continuous content, tool calls
//! numbered from 0 in the order the client receives them, one `finish_reason`, one usage
//! chunk (the summed counts), one `[DONE]`.

use super::{core, UpstreamError};
use crate::resume::Msg;
use bytes::Bytes;
use serde_json::{json, Map, Value};

/// Fields of a chunk that differ between attempts of one answer.
const PER_ATTEMPT: [&str; 5] = [
    "id",
    "created",
    "model",
    "system_fingerprint",
    "obfuscation",
];

/// Delta fields the codec reads (and writes back).
const KNOWN_DELTA: [&str; 6] = [
    "role",
    "content",
    "reasoning_content",
    "reasoning",
    "refusal",
    "tool_calls",
];

#[derive(Debug, Default)]
pub(super) struct Chat {
    /// The first attempt's chunk without `choices` and `usage`.
    template: Option<Map<String, Value>>,
    /// This attempt's open block: (core index, kind).
    open: Option<(u32, Kind)>,
    next_index: u32,
    started: bool,
    /// This attempt's tool calls: (the chunk's `index`, core block index).
    calls: Vec<(u64, u32)>,
    /// Where the upstream puts reasoning text.
    reasoning_key: Option<String>,
    /// Core block indexes of the tool calls written to the client, in order.
    written_calls: Vec<u64>,
    /// The request sets `max_completion_tokens` (kept in continuations).
    pub used_completion_tokens: bool,
    /// The request asks for a usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    usage_written: bool,
}

/// A stop reason as Chat Completions names it (the relay's own ends use Claude's names).
fn finish_reason(reason: &str) -> &str {
    match reason {
        "max_tokens" => "length",
        "end_turn" | "stop_sequence" => "stop",
        "tool_use" => "tool_calls",
        other => other,
    }
}

/// What a core block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Thinking,
    Tool,
}

impl Chat {
    pub(super) fn begin_attempt(&mut self) {
        self.open = None;
        self.next_index = 0;
        self.started = false;
        self.calls.clear();
    }

    pub(super) fn read(&mut self, data: &str, first: bool) -> Result<Vec<Msg>, UpstreamError> {
        let mut out = Vec::new();
        if data.trim() == "[DONE]" {
            self.close(&mut out);
            out.push(core(json!({"type": "message_stop"})));
            return Ok(out);
        }
        let Ok(Value::Object(v)) = serde_json::from_str::<Value>(data) else {
            return Ok(vec![core(json!({"type": "sse_chat", "data": data}))]);
        };
        if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
            return Err(UpstreamError {
                kind: e["type"].as_str().unwrap_or("error").into(),
                message: e["message"].as_str().unwrap_or("upstream error").into(),
            });
        }
        if first && self.template.is_none() {
            let mut t = v.clone();
            t.remove("choices");
            t.remove("usage");
            self.template = Some(t);
        }
        self.start(&mut out);
        if !understood(&v) {
            let mut chunk = v;
            for k in PER_ATTEMPT {
                chunk.remove(k);
            }
            out.push(core(json!({"type": "sse_chat", "chunk": chunk})));
            return Ok(out);
        }
        if let Some(c) = v.get("choices").and_then(|c| c.get(0)) {
            let delta = &c["delta"];
            for (key, kind) in [
                ("reasoning_content", Kind::Thinking),
                ("reasoning", Kind::Thinking),
                ("content", Kind::Text),
            ] {
                let Some(t) = delta[key].as_str().filter(|t| !t.is_empty()) else {
                    continue;
                };
                let d = if kind == Kind::Text {
                    json!({"type": "text_delta", "text": t})
                } else {
                    self.reasoning_key.get_or_insert_with(|| key.to_owned());
                    json!({"type": "thinking_delta", "thinking": t})
                };
                let index = self.open_block(kind, &mut out);
                out.push(core(
                    json!({"type": "content_block_delta", "index": index, "delta": d}),
                ));
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                self.tool_call(call, &mut out);
            }
            if let Some(reason) = c["finish_reason"].as_str() {
                self.close(&mut out);
                out.push(core(
                    json!({"type": "message_delta", "delta": {"stop_reason": reason}}),
                ));
            }
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            out.push(core(json!({"type": "message_delta", "delta": {},
                "usage": {"input_tokens": u["prompt_tokens"], "output_tokens": u["completion_tokens"]},
                "sse_usage": u})));
        }
        Ok(out)
    }

    fn start(&mut self, out: &mut Vec<Msg>) {
        if !self.started {
            self.started = true;
            out.push(core(
                json!({"type": "message_start", "message": {"role": "assistant"}}),
            ));
        }
    }

    /// The open block of `kind` (text or thinking), opened if needed.
    fn open_block(&mut self, kind: Kind, out: &mut Vec<Msg>) -> u32 {
        if let Some((i, k)) = self.open {
            if k == kind {
                return i;
            }
        }
        let block = if kind == Kind::Text {
            json!({"type": "text", "text": ""})
        } else {
            json!({"type": "thinking", "thinking": ""})
        };
        self.start_block(kind, block, out)
    }

    fn start_block(&mut self, kind: Kind, block: Value, out: &mut Vec<Msg>) -> u32 {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        out.push(core(
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        self.open = Some((index, kind));
        index
    }

    /// One `tool_calls` entry: a call with an `id` starts a tool-use block, its `arguments`
    /// (and those of the entries after it with the same `index`) are the block's input.
    fn tool_call(&mut self, call: &Value, out: &mut Vec<Msg>) {
        let k = call["index"].as_u64().unwrap_or(0);
        let known = self.calls.iter().find(|c| c.0 == k).map(|c| c.1);
        let index = match (call["id"].as_str(), known) {
            (None, Some(index)) => index,
            (id, _) => {
                let name = call.pointer("/function/name").and_then(Value::as_str);
                let block = json!({"type": "tool_use", "id": id.unwrap_or(""),
                    "name": name.unwrap_or(""), "input": {}});
                let index = self.start_block(Kind::Tool, block, out);
                self.calls.push((k, index));
                index
            }
        };
        let args = call.pointer("/function/arguments").and_then(Value::as_str);
        if let Some(args) = args.filter(|a| !a.is_empty()) {
            out.push(core(json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": args}})));
        }
    }

    fn close(&mut self, out: &mut Vec<Msg>) {
        if let Some((i, _)) = self.open.take() {
            out.push(core(json!({"type": "content_block_stop", "index": i})));
        }
    }
}

/// One choice holding only the fields the codec reads (or a usage chunk).
fn understood(v: &Map<String, Value>) -> bool {
    let usage = v.get("usage").is_some_and(Value::is_object);
    let Some(choices) = v.get("choices").and_then(Value::as_array) else {
        return usage;
    };
    let [c] = choices.as_slice() else {
        return choices.is_empty() && usage;
    };
    let plain = c.as_object().is_some_and(|c| {
        c.iter().all(|(k, x)| {
            matches!(k.as_str(), "index" | "delta" | "finish_reason")
                || (k == "logprobs" && x.is_null())
        })
    });
    plain
        && c["delta"].as_object().is_some_and(|d| {
            d.iter().all(|(k, x)| match k.as_str() {
                "refusal" => x.is_null(),
                "tool_calls" => x.is_null() || plain_calls(x),
                k => KNOWN_DELTA.contains(&k),
            })
        })
}

/// `tool_calls` entries with only the fields the codec writes back.
fn plain_calls(calls: &Value) -> bool {
    let plain_call = |c: &Value| {
        let keys = c.as_object().is_some_and(|c| {
            c.keys()
                .all(|k| matches!(k.as_str(), "index" | "id" | "type" | "function"))
        });
        let function = c.get("function").is_none_or(|f| {
            f.as_object()
                .is_some_and(|f| f.keys().all(|k| k == "name" || k == "arguments"))
        });
        keys && function && c.get("type").is_none_or(|t| t == "function")
    };
    calls
        .as_array()
        .is_some_and(|calls| calls.iter().all(plain_call))
}

impl Chat {
    pub(super) fn write(&mut self, inner: &[u8]) -> Bytes {
        let Ok(v) = serde_json::from_slice::<Value>(inner) else {
            return Bytes::new();
        };
        let mut out = String::new();
        let index = v["index"].as_u64().unwrap_or(0);
        match v["type"].as_str().unwrap_or("") {
            "message_start" => {
                out += &self.chunk(json!({"role": "assistant", "content": ""}), Value::Null);
            }
            "content_block_start" if v["content_block"]["type"] == "tool_use" => {
                let at = self.written_calls.len();
                self.written_calls.push(index);
                let b = &v["content_block"];
                let call = json!({"index": at, "id": b["id"], "type": "function",
                    "function": {"name": b["name"], "arguments": ""}});
                out += &self.chunk(json!({"tool_calls": [call]}), Value::Null);
            }
            "content_block_delta" => match v.pointer("/delta/type").and_then(Value::as_str) {
                Some("text_delta") => {
                    out += &self.chunk(json!({"content": v["delta"]["text"]}), Value::Null)
                }
                Some("thinking_delta") => {
                    let key = self.reasoning_key.as_deref().unwrap_or("reasoning_content");
                    out += &self.chunk(json!({key: v["delta"]["thinking"]}), Value::Null)
                }
                Some("input_json_delta") => {
                    let at = self.written_calls.iter().position(|i| *i == index);
                    let call = json!({"index": at.unwrap_or(0),
                        "function": {"arguments": v["delta"]["partial_json"]}});
                    out += &self.chunk(json!({"tool_calls": [call]}), Value::Null);
                }
                _ => {}
            },
            "message_delta" => {
                if let Some(reason) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    out += &self.chunk(json!({}), json!(finish_reason(reason)));
                }
                // The upstream's usage chunk (the relay's own end at the limit has none).
                if let (Some(u), true) = (v.get("usage"), v.get("sse_usage").is_some()) {
                    self.usage_written = true;
                    out += &self.usage(&v, u);
                }
            }
            "message_stop" => {
                // The relay ended the answer at the client's limit: its usage, if asked for.
                let metrics = v.get("amazon-bedrock-invocationMetrics");
                if let (Some(m), true, false) = (metrics, self.include_usage, self.usage_written) {
                    let u = json!({"input_tokens": m["inputTokenCount"], "output_tokens": m["outputTokenCount"]});
                    out += &self.usage(&v, &u);
                }
                out += "data: [DONE]\n\n";
            }
            "sse_chat" => match (&v["chunk"], &v["data"]) {
                (Value::Object(c), _) => {
                    let mut chunk = self.template.clone().unwrap_or_default();
                    chunk.extend(c.clone());
                    out += &format!("data: {}\n\n", Value::Object(chunk));
                }
                (_, Value::String(d)) => out += &format!("data: {d}\n\n"),
                _ => {}
            },
            _ => {}
        }
        Bytes::from(out)
    }

    /// A usage chunk with the (summed) counts of `u`.
    fn usage(&self, v: &Value, u: &Value) -> String {
        let mut usage = v
            .get("sse_usage")
            .cloned()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        let input = u["input_tokens"].as_u64().unwrap_or(0);
        let output = u["output_tokens"].as_u64().unwrap_or(0);
        usage["prompt_tokens"] = json!(input);
        usage["completion_tokens"] = json!(output);
        usage["total_tokens"] = json!(input + output);
        let mut chunk = self.template.clone().unwrap_or_default();
        chunk.insert("choices".into(), json!([]));
        chunk.insert("usage".into(), usage);
        format!("data: {}\n\n", Value::Object(chunk))
    }

    fn chunk(&self, delta: Value, finish: Value) -> String {
        let mut chunk = self.template.clone().unwrap_or_default();
        chunk.insert(
            "choices".into(),
            json!([{"index": 0, "delta": delta, "finish_reason": finish}]),
        );
        format!("data: {}\n\n", Value::Object(chunk))
    }
}
