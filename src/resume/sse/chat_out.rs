//! The core's Claude events → OpenAI Chat Completions chunks, every one from the first
//! attempt's chunk template (`id`, `created`, `model`, …), so the client sees one
//! completion: one role delta, continuous content, tool calls numbered from 0 in the order
//! the client receives them, one `finish_reason`, one usage chunk (the summed counts), one
//! `[DONE]`.

use super::chat::Chat;
use bytes::Bytes;
use serde_json::{json, Value};

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
