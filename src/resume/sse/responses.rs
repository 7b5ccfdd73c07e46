//! OpenAI Responses events → the core's Claude events (the writing back is in
//! `responses_out`).
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

use super::{core, UpstreamError};
use aws_smithy_types::event_stream::Message;
use serde_json::{json, Value};

#[derive(Debug, Default)]
pub(super) struct Responses {
    /// The first attempt's response object (`response.created`).
    pub(super) template: Option<Value>,
    /// Next `sequence_number`.
    pub(super) seq: u64,
    /// Output items written so far.
    pub(super) items: Vec<Item>,
}

/// An output item the client has (or is receiving).
#[derive(Debug)]
pub(super) struct Item {
    pub index: u64,
    pub id: String,
    /// The message's text, or the call's arguments.
    pub text: String,
    /// A function call: its `call_id` and `name`.
    pub call: Option<(Value, Value)>,
}

impl Responses {
    pub(super) fn begin_attempt(&mut self) {}

    pub(super) fn read(&mut self, data: &str, first: bool) -> Result<Vec<Message>, UpstreamError> {
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
