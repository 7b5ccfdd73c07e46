//! OpenAI Responses events ↔ the core's Claude events.
//!
//! Read: `response.created` → `message_start`; a `message` output item → a text block at its
//! `output_index` (`output_text.delta` its deltas, `output_item.done` its stop);
//! `response.completed` / `response.incomplete` → `message_delta` (stop reason `end_turn` /
//! `max_tokens`, usage) then `message_stop`. `response.in_progress`, `content_part.*` and
//! `output_text.done` carry nothing new: the codec writes them itself. `error` and
//! `response.failed` are faults. Anything else (function calls, reasoning items,
//! annotations) is carried whole (`sse_responses`): replay only, verified.
//!
//! Write: every event by the codec, so the client sees one response: the first attempt's
//! response and item ids, `sequence_number`s counting from 0 without a gap, output indexes
//! as the core numbers its blocks (continuous), texts and the final `output` holding the
//! whole answer, usage summed over attempts.

use super::{core, UpstreamError};
use aws_smithy_types::event_stream::Message;
use bytes::Bytes;
use serde_json::{json, Value};

#[derive(Debug, Default)]
pub(super) struct Responses {
    /// The first attempt's response object (`response.created`).
    template: Option<Value>,
    /// Next `sequence_number`.
    seq: u64,
    /// Message items written so far: (output index, item id, text, done).
    items: Vec<(u64, String, String, bool)>,
}

impl Responses {
    pub(super) fn begin_attempt(&mut self) {}

    pub(super) fn read(&mut self, data: &str, first: bool) -> Result<Vec<Message>, UpstreamError> {
        let Ok(mut v) = serde_json::from_str::<Value>(data) else {
            return Ok(vec![core(json!({"type": "sse_responses", "data": data}))]);
        };
        let kind = v["type"].as_str().unwrap_or("").to_owned();
        let index = v["output_index"].as_u64();
        let is_message = v.pointer("/item/type").and_then(Value::as_str) == Some("message");
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
                let id = match v["sse_item"].as_str() {
                    Some(id) => id.to_owned(),
                    None => format!("msg_{}_{index}", self.id()),
                };
                self.items.push((index, id.clone(), String::new(), false));
                out += &self.event("response.output_item.added", json!({"output_index": index,
                    "item": {"id": id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}}));
                out += &self.event("response.content_part.added", json!({"item_id": id, "output_index": index,
                    "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}));
            }
            "content_block_delta" => {
                let delta = v["delta"]["text"].as_str().unwrap_or("");
                let id = self.item(index, |text| text.push_str(delta));
                out += &self.event(
                    "response.output_text.delta",
                    json!({"item_id": id,
                    "output_index": index, "content_index": 0, "delta": delta}),
                );
            }
            "content_block_stop" => {
                let mut text = String::new();
                let id = self.item(index, |t| text = t.clone());
                if let Some(it) = self.items.iter_mut().find(|it| it.0 == index) {
                    it.3 = true;
                }
                out += &self.event(
                    "response.output_text.done",
                    json!({"item_id": id,
                    "output_index": index, "content_index": 0, "text": text}),
                );
                out += &self.event("response.content_part.done", json!({"item_id": id, "output_index": index,
                    "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}}));
                out += &self.event(
                    "response.output_item.done",
                    json!({"output_index": index,
                    "item": message_item(&id, &text)}),
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
        self.template
            .as_ref()
            .and_then(|t| t["id"].as_str())
            .unwrap_or("resp")
            .to_owned()
    }

    /// Apply `f` to the text of the item at `index`; its id.
    fn item(&mut self, index: u64, f: impl FnOnce(&mut String)) -> String {
        let pos = match self.items.iter().position(|it| it.0 == index) {
            Some(pos) => pos,
            None => {
                let id = format!("msg_{}_{index}", self.id());
                self.items.push((index, id, String::new(), false));
                self.items.len() - 1
            }
        };
        let it = &mut self.items[pos];
        f(&mut it.2);
        it.1.clone()
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
            .map(|(_, id, text, _)| message_item(id, text))
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

fn message_item(id: &str, text: &str) -> Value {
    json!({"id": id, "type": "message", "role": "assistant", "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}]})
}
