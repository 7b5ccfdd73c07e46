//! The core's Claude events → OpenAI Responses events. Every event is written by the codec,
//! so the client sees one response: the first attempt's response and item ids,
//! `sequence_number`s counting from 0 without a gap, output indexes as the core numbers its
//! blocks (continuous), item texts, call arguments and the final `output` holding the whole
//! answer, usage summed over attempts.

use super::responses::{Item, Responses};
use bytes::Bytes;
use serde_json::{json, Value};

impl Responses {
    pub(super) fn write(&mut self, inner: &[u8]) -> Bytes {
        let Ok(v) = serde_json::from_slice::<Value>(inner) else {
            return Bytes::new();
        };
        let mut out = String::new();
        let index = v["index"].as_u64().unwrap_or(0);
        match v["type"].as_str().unwrap_or("") {
            "message_start" => {
                let r = self.response("in_progress", Value::Null);
                out += &self.event("response.created", json!({"response": r}));
                out += &self.event("response.in_progress", json!({"response": r}));
            }
            "content_block_start" => {
                let b = &v["content_block"];
                let call = (b["type"] == "tool_use").then(|| (b["id"].clone(), b["name"].clone()));
                let prefix = if call.is_some() { "fc" } else { "msg" };
                let id = match v["sse_item"].as_str() {
                    Some(id) => id.to_owned(),
                    None => format!("{prefix}_{}_{index}", self.id()),
                };
                let item = Item {
                    index,
                    id: id.clone(),
                    text: String::new(),
                    call,
                };
                let added = json!({"output_index": index, "item": item_json(&item, "in_progress")});
                out += &self.event("response.output_item.added", added);
                if item.call.is_none() {
                    out += &self.event("response.content_part.added", json!({"item_id": id, "output_index": index,
                        "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}));
                }
                self.items.push(item);
            }
            "content_block_delta" => {
                let (delta, kind) = match v["delta"]["type"].as_str() {
                    Some("input_json_delta") => (
                        v["delta"]["partial_json"].as_str(),
                        "response.function_call_arguments.delta",
                    ),
                    _ => (v["delta"]["text"].as_str(), "response.output_text.delta"),
                };
                let delta = delta.unwrap_or("");
                let it = self.item(index);
                it.text.push_str(delta);
                let mut body = json!({"item_id": it.id, "output_index": index, "delta": delta});
                if it.call.is_none() {
                    body["content_index"] = json!(0);
                }
                out += &self.event(kind, body);
            }
            "content_block_stop" => {
                let it = self.item(index);
                let (id, text, call) = (it.id.clone(), it.text.clone(), it.call.is_some());
                let done = item_json(it, "completed");
                if call {
                    out += &self.event(
                        "response.function_call_arguments.done",
                        json!({"item_id": id, "output_index": index, "arguments": text}),
                    );
                } else {
                    out += &self.event(
                        "response.output_text.done",
                        json!({"item_id": id,
                        "output_index": index, "content_index": 0, "text": text}),
                    );
                    out += &self.event("response.content_part.done", json!({"item_id": id, "output_index": index,
                        "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}}));
                }
                out += &self.event(
                    "response.output_item.done",
                    json!({"output_index": index, "item": done}),
                );
            }
            "message_delta" => {
                let incomplete = v.pointer("/delta/stop_reason") == Some(&json!("max_tokens"));
                let (kind, status) = if incomplete {
                    ("response.incomplete", "incomplete")
                } else {
                    ("response.completed", "completed")
                };
                let input = v["usage"]["input_tokens"].as_u64().unwrap_or(0);
                let output = v["usage"]["output_tokens"].as_u64().unwrap_or(0);
                let mut usage = v
                    .pointer("/sse_response/usage")
                    .cloned()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({}));
                usage["input_tokens"] = json!(input);
                usage["output_tokens"] = json!(output);
                usage["total_tokens"] = json!(input + output);
                let mut r = self.response(status, usage);
                if incomplete {
                    r["incomplete_details"] = json!({"reason": "max_output_tokens"});
                }
                out += &self.event(kind, json!({"response": r}));
            }
            "sse_responses" => match (&v["event"], &v["data"]) {
                (Value::Object(e), _) => {
                    let kind = e
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    out += &self.event(&kind, Value::Object(e.clone()));
                }
                (_, Value::String(d)) => out += &format!("data: {d}\n\n"),
                _ => {}
            },
            _ => {}
        }
        Bytes::from(out)
    }

    fn id(&self) -> String {
        let id = self.template.as_ref().and_then(|t| t["id"].as_str());
        id.unwrap_or("resp").to_owned()
    }

    /// The item at output `index` (a message is made up if the client has none there).
    fn item(&mut self, index: u64) -> &mut Item {
        let pos = match self.items.iter().position(|it| it.index == index) {
            Some(pos) => pos,
            None => {
                let id = format!("msg_{}_{index}", self.id());
                self.items.push(Item {
                    index,
                    id,
                    text: String::new(),
                    call: None,
                });
                self.items.len() - 1
            }
        };
        &mut self.items[pos]
    }

    /// The response object: the first attempt's, with this status, output and usage.
    fn response(&self, status: &str, usage: Value) -> Value {
        let mut r = self
            .template
            .clone()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({"object": "response"}));
        r["status"] = json!(status);
        let output: Vec<Value> = self
            .items
            .iter()
            .map(|it| item_json(it, "completed"))
            .collect();
        r["output"] = json!(output);
        r["usage"] = usage;
        r
    }

    fn event(&mut self, kind: &str, mut body: Value) -> String {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(self.seq);
        self.seq += 1;
        format!("event: {kind}\ndata: {body}\n\n")
    }
}

/// An output item as the API shows it; an in-progress one without its content.
fn item_json(it: &Item, status: &str) -> Value {
    let done = status == "completed";
    match &it.call {
        Some((call_id, name)) => json!({"id": it.id, "type": "function_call", "status": status,
            "call_id": call_id, "name": name, "arguments": if done { it.text.as_str() } else { "" }}),
        None if done => {
            json!({"id": it.id, "type": "message", "role": "assistant", "status": status,
            "content": [{"type": "output_text", "text": it.text, "annotations": []}]})
        }
        None => json!({"id": it.id, "type": "message", "role": "assistant", "status": status,
            "content": []}),
    }
}
