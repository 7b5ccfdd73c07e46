//! OpenAI Responses events ↔ the core's Claude events.
//!
//! Read: `response.created` → `message_start`; a `message` output item → a text block at its
//! `output_index` (`output_text.delta` its deltas, `output_item.done` its stop); a
//! `function_call` item → a tool-use block (`function_call_arguments.delta` its input deltas;
//! held until whole by `resume.hold_tool_use`);
//! `response.completed` / `response.incomplete` → `message_delta` (stop reason `end_turn` /
//! `max_tokens`, usage) then `message_stop`. `response.in_progress`, `content_part.*` and
//! `output_text.done` carry nothing new: the codec writes them itself. `error` and
//! `response.failed` are faults. Anything else (reasoning items, annotations, other tools)
//! is carried whole (`sse_responses`): replay only, verified.
//!
//! Write: every event by the codec, so the client sees one response: the first attempt's
//! response and item ids, `sequence_number`s counting from 0 without a gap, output indexes
//! as the core numbers its blocks (continuous), item texts, call arguments and the final
//! `output` holding the whole answer, usage summed over attempts.

use super::{core, UpstreamError};
use crate::resume::Msg;
use bytes::Bytes;
use serde_json::{json, Value};

#[derive(Debug, Default)]
pub(super) struct Responses {
    /// The first attempt's response object (`response.created`).
    template: Option<Value>,
    /// Next `sequence_number`.
    seq: u64,
    /// Output items written so far.
    items: Vec<Item>,
    /// The relay's own `message_delta`, until its `message_stop`.
    pending: Option<Value>,
}

/// An output item the client has (or is receiving).
#[derive(Debug)]
struct Item {
    index: u64,
    id: String,
    /// The message's text, or the call's arguments.
    text: String,
    /// A function call: its `call_id` and `name`.
    call: Option<(Value, Value)>,
}

impl Responses {
    pub(super) fn begin_attempt(&mut self) {}

    pub(super) fn read(&mut self, data: &str, first: bool) -> Result<Vec<Msg>, UpstreamError> {
        let Ok(mut v) = serde_json::from_str::<Value>(data) else {
            return Ok(vec![core(json!({"type": "sse_responses", "data": data}))]);
        };
        let kind = v["type"].as_str().unwrap_or("").to_owned();
        let index = v["output_index"].as_u64();
        let item_type = v.pointer("/item/type").and_then(Value::as_str);
        let is_message = item_type == Some("message");
        let is_call = item_type == Some("function_call");
        let error = v.get("error").filter(|e| e.is_object());
        let msgs = match kind.as_str() {
            _ if error.is_some() && kind.is_empty() => {
                let e = error.unwrap_or(&v);
                return Err(UpstreamError {
                    kind: e["type"].as_str().unwrap_or("error").into(),
                    message: e["message"].as_str().unwrap_or("upstream error").into(),
                });
            }
            "error" | "response.failed" => {
                let e = v.pointer("/response/error").unwrap_or(&v);
                return Err(UpstreamError {
                    kind: e["code"].as_str().unwrap_or(&kind).into(),
                    message: e["message"].as_str().unwrap_or("upstream error").into(),
                });
            }
            "response.created" => {
                if first && self.template.is_none() {
                    self.template = Some(v["response"].clone());
                }
                vec![core(
                    json!({"type": "message_start", "message": {"role": "assistant"}}),
                )]
            }
            "response.in_progress"
            | "response.content_part.added"
            | "response.content_part.done"
            | "response.output_text.done" => vec![],
            "response.output_item.added" if is_message => {
                vec![core(json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "text", "text": ""}, "sse_item": v["item"]["id"]}))]
            }
            "response.output_item.added" if is_call => {
                let item = &v["item"];
                vec![core(json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "tool_use", "id": item["call_id"], "name": item["name"], "input": {}},
                    "sse_item": item["id"]}))]
            }
            "response.function_call_arguments.delta" => {
                vec![core(json!({"type": "content_block_delta",
                "index": index, "delta": {"type": "input_json_delta", "partial_json": v["delta"]}}))]
            }
            "response.function_call_arguments.done" => vec![],
            "response.output_item.done" if is_call => {
                vec![core(json!({"type": "content_block_stop", "index": index}))]
            }
            "response.output_text.delta" => vec![core(json!({"type": "content_block_delta",
                "index": index, "delta": {"type": "text_delta", "text": v["delta"]}}))],
            "response.output_item.done" if is_message => {
                vec![core(json!({"type": "content_block_stop", "index": index}))]
            }
            "response.completed" | "response.incomplete" => {
                let stop = if kind == "response.completed" {
                    "end_turn"
                } else {
                    "max_tokens"
                };
                let u = &v["response"]["usage"];
                vec![
                    core(
                        json!({"type": "message_delta", "delta": {"stop_reason": stop},
                        "usage": {"input_tokens": u["input_tokens"], "output_tokens": u["output_tokens"]},
                        "sse_response": v["response"]}),
                    ),
                    core(json!({"type": "message_stop"})),
                ]
            }
            _ => {
                if let Some(o) = v.as_object_mut() {
                    o.remove("sequence_number");
                }
                vec![core(json!({"type": "sse_responses", "event": v}))]
            }
        };
        Ok(msgs)
    }
}

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
            // The relay's own end at the client's limit: written at its `message_stop`, whose
            // invocation metrics hold the input count.
            "message_delta" if v.get("sse_response").is_none() => self.pending = Some(v),
            "message_stop" => {
                if let Some(mut end) = self.pending.take() {
                    let m = &v["amazon-bedrock-invocationMetrics"];
                    end["usage"] = json!({"input_tokens": m["inputTokenCount"],
                        "output_tokens": m["outputTokenCount"]});
                    out += &self.end(&end);
                }
            }
            "message_delta" => out += &self.end(&v),
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

    /// `response.completed` (or `incomplete`) for a `message_delta` with the summed usage.
    fn end(&mut self, v: &Value) -> String {
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
        self.event(kind, json!({"response": r}))
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
