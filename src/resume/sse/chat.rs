//! OpenAI Chat Completions chunks ↔ the core's Claude events.
//!
//! Read: the role delta → `message_start`; `delta.content` → a text block;
//! `delta.reasoning_content` (or `reasoning`) → a thinking block (replay only, as for every
//! format); `finish_reason` → the open block's stop, then `message_delta` with the stop
//! reason; the usage chunk (`stream_options.include_usage`) → a `message_delta` carrying usage,
//! which the splicer sums over attempts; `data: [DONE]` → `message_stop`. Chunks with tool
//! calls, several choices or fields the codec does not know are carried whole (`sse_chat`),
//! which the core treats as not understood: replay only, verified.
//!
//! Write: every chunk from the first attempt's template (`id`, `created`, `model`, …), so
//! the client sees one completion: one role delta, one `finish_reason`, one usage chunk, one
//! `[DONE]`.

use super::{core, UpstreamError};
use aws_smithy_types::event_stream::Message;
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

#[derive(Debug, Default)]
pub(super) struct Chat {
    /// The first attempt's chunk without `choices` and `usage`.
    template: Option<Map<String, Value>>,
    /// This attempt's open block: (core index, is text).
    open: Option<(u32, bool)>,
    next_index: u32,
    started: bool,
    /// Where the upstream puts reasoning text.
    reasoning_key: Option<String>,
    /// The request sets `max_completion_tokens` (kept in continuations).
    pub used_completion_tokens: bool,
}

impl Chat {
    pub(super) fn begin_attempt(&mut self) {
        self.open = None;
        self.next_index = 0;
        self.started = false;
    }

    pub(super) fn read(&mut self, data: &str, first: bool) -> Result<Vec<Message>, UpstreamError> {
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
        let choices = v.get("choices").and_then(Value::as_array);
        let choice = choices.and_then(|c| c.first());
        if !self.understood(&v) {
            let mut chunk = v.clone();
            for k in PER_ATTEMPT {
                chunk.remove(k);
            }
            self.start(&mut out);
            out.push(core(json!({"type": "sse_chat", "chunk": chunk})));
            return Ok(out);
        }
        if let Some(c) = choice {
            self.start(&mut out);
            let delta = &c["delta"];
            for (key, text) in [
                ("reasoning_content", false),
                ("reasoning", false),
                ("content", true),
            ] {
                let Some(t) = delta[key].as_str().filter(|t| !t.is_empty()) else {
                    continue;
                };
                if !text {
                    self.reasoning_key.get_or_insert_with(|| key.to_owned());
                }
                let index = self.open_block(text, &mut out);
                let d = if text {
                    json!({"type": "text_delta", "text": t})
                } else {
                    json!({"type": "thinking_delta", "thinking": t})
                };
                out.push(core(
                    json!({"type": "content_block_delta", "index": index, "delta": d}),
                ));
            }
            if let Some(reason) = c["finish_reason"].as_str() {
                self.close(&mut out);
                out.push(core(
                    json!({"type": "message_delta", "delta": {"stop_reason": reason}}),
                ));
            }
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.start(&mut out);
            out.push(core(json!({"type": "message_delta", "delta": {},
                "usage": {"input_tokens": u["prompt_tokens"], "output_tokens": u["completion_tokens"]},
                "sse_usage": u})));
        }
        Ok(out)
    }

    /// One choice whose delta holds only role, content or reasoning.
    fn understood(&self, v: &Map<String, Value>) -> bool {
        let Some(choices) = v.get("choices").and_then(Value::as_array) else {
            return v.get("usage").is_some_and(Value::is_object);
        };
        let known = [
            "role",
            "content",
            "reasoning_content",
            "reasoning",
            "refusal",
        ];
        match choices.as_slice() {
            [] => v.get("usage").is_some_and(Value::is_object),
            [c] => {
                let plain = c.as_object().is_some_and(|c| {
                    c.iter().all(|(k, x)| {
                        matches!(k.as_str(), "index" | "delta" | "finish_reason")
                            || (k == "logprobs" && x.is_null())
                    })
                });
                plain
                    && c["delta"].as_object().is_some_and(|d| {
                        d.iter().all(|(k, x)| {
                            known.contains(&k.as_str()) && (k != "refusal" || x.is_null())
                        })
                    })
            }
            _ => false,
        }
    }

    fn start(&mut self, out: &mut Vec<Message>) {
        if !self.started {
            self.started = true;
            out.push(core(
                json!({"type": "message_start", "message": {"role": "assistant"}}),
            ));
        }
    }

    fn open_block(&mut self, text: bool, out: &mut Vec<Message>) -> u32 {
        match self.open {
            Some((i, t)) if t == text => return i,
            Some(_) => self.close(out),
            None => {}
        }
        let index = self.next_index;
        self.next_index += 1;
        let block = if text {
            json!({"type": "text", "text": ""})
        } else {
            json!({"type": "thinking", "thinking": ""})
        };
        out.push(core(
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        self.open = Some((index, text));
        index
    }

    fn close(&mut self, out: &mut Vec<Message>) {
        if let Some((i, _)) = self.open.take() {
            out.push(core(json!({"type": "content_block_stop", "index": i})));
        }
    }

    pub(super) fn write(&mut self, inner: &[u8]) -> Bytes {
        let Ok(v) = serde_json::from_slice::<Value>(inner) else {
            return Bytes::new();
        };
        let mut out = String::new();
        match v["type"].as_str().unwrap_or("") {
            "message_start" => {
                out += &self.chunk(json!({"role": "assistant", "content": ""}), Value::Null);
            }
            "content_block_delta" => match v.pointer("/delta/type").and_then(Value::as_str) {
                Some("text_delta") => {
                    out += &self.chunk(json!({"content": v["delta"]["text"]}), Value::Null)
                }
                Some("thinking_delta") => {
                    let key = self.reasoning_key.as_deref().unwrap_or("reasoning_content");
                    out += &self.chunk(json!({key: v["delta"]["thinking"]}), Value::Null)
                }
                _ => {}
            },
            "message_delta" => {
                if let Some(reason) = v.pointer("/delta/stop_reason").filter(|r| !r.is_null()) {
                    out += &self.chunk(json!({}), reason.clone());
                }
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    out += &self.usage(&v, u);
                }
            }
            "message_stop" => out += "data: [DONE]\n\n",
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
