//! The OpenAI-compatible Chat Completions and Responses APIs and the Anthropic-Messages-
//! compatible API, as Bedrock serves them (`/openai/v1/chat/completions`,
//! `/openai/v1/responses`, `/anthropic/v1/messages`, and the same under `/v1/`): requests
//! parsed into the simulator's [`Prompt`], answers rendered as Server-Sent Events (with
//! `"stream": true`) or one JSON body, from the same [`Plan`] as the Bedrock operations, so
//! the same faults cut them (an "event" of a fault rule is one SSE event here).
//!
//! Shapes relied on (OpenAI API reference, Anthropic Messages streaming docs): Chat
//! Completions `chat.completion.chunk` objects, a first delta with the role, one
//! `finish_reason`, a usage chunk when `stream_options.include_usage`, then `data: [DONE]`;
//! Responses `response.*` events with `sequence_number`, ending in `response.completed`;
//! Messages `message_start` … `message_stop` with `event:` lines.

use super::plan::{Plan, Stop};
use super::render::Stream;
use super::request::{Prompt, Turn};
use super::sse_tool::{self, Events};
use super::SimError;
use bedrock_relay_wire::ops::Operation;
use bytes::Bytes;
use serde_json::{json, Value};

/// What the request asked for besides its prompt.
#[derive(Debug, Clone, Copy, Default)]
pub struct SseAsk {
    pub stream: bool,
    pub include_usage: bool,
}

/// The model, prompt and options of a request to one of these APIs.
pub fn parse(op: Operation, body: &Value) -> Result<(String, Prompt, SseAsk), SimError> {
    let model = body["model"]
        .as_str()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| SimError::Validation("model: field required".into()))?
        .to_owned();
    let mut prompt = Prompt {
        temperature: body["temperature"].as_f64(),
        ..Prompt::default()
    };
    let ask = SseAsk {
        stream: body["stream"].as_bool().unwrap_or(false),
        include_usage: body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    let limit = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| body[*k].as_u64())
            .map(|n| n as u32)
    };
    match op {
        Operation::ChatCompletions => {
            prompt.max_tokens = limit(&["max_completion_tokens", "max_tokens"]);
            for m in messages(&body["messages"])? {
                match m["role"].as_str() {
                    Some("system" | "developer") => prompt.system.push_str(&text_of(&m["content"])),
                    Some(role) => prompt.turns.push(turn(op, role, m)),
                    None => return Err(SimError::Validation("messages: role required".into())),
                }
            }
        }
        Operation::Responses => {
            prompt.max_tokens = limit(&["max_output_tokens"]);
            prompt.system = body["instructions"].as_str().unwrap_or("").to_owned();
            match &body["input"] {
                Value::String(s) => prompt.turns.push(turn(op, "user", &json!({"content": s}))),
                Value::Array(items) => {
                    for m in items {
                        prompt
                            .turns
                            .push(turn(op, m["role"].as_str().unwrap_or("user"), m));
                    }
                }
                _ => return Err(SimError::Validation("input: field required".into())),
            }
        }
        _ => {
            prompt.max_tokens = limit(&["max_tokens"]);
            prompt.system = text_of(&body["system"]);
            for m in messages(&body["messages"])? {
                prompt
                    .turns
                    .push(turn(op, m["role"].as_str().unwrap_or("user"), m));
            }
        }
    }
    prompt.tool = sse_tool::tool_of(op, body);
    if prompt.turns.is_empty() {
        return Err(SimError::Validation(
            "messages: at least one message is required".into(),
        ));
    }
    Ok((model, prompt, ask))
}

fn messages(v: &Value) -> Result<&Vec<Value>, SimError> {
    v.as_array()
        .ok_or_else(|| SimError::Validation("messages: field required".into()))
}

fn turn(op: Operation, role: &str, m: &Value) -> Turn {
    Turn {
        role: role.to_owned(),
        text: text_of(&m["content"]),
        tool_result: sse_tool::is_tool_result(op, m),
    }
}

/// A content value's text: a string, or the `text` of its parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    }
}

/// The answer: an SSE stream of the plan's pieces, or one JSON body.
pub fn render(
    op: Operation,
    model: &str,
    id: &str,
    plan: &Plan,
    ask: SseAsk,
) -> Result<Stream, Value> {
    let text = plan.text();
    let (input, output) = (plan.input_tokens, plan.output_tokens);
    let length = plan.stop == Stop::MaxTokens;
    let mut out = Events::default();
    match op {
        Operation::ChatCompletions => {
            let finish = match plan.stop {
                Stop::MaxTokens => "length",
                Stop::ToolUse => "tool_calls",
                _ => "stop",
            };
            let usage = json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output});
            if !ask.stream {
                return Err(
                    json!({"id": id, "object": "chat.completion", "created": 0, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                    "usage": usage}),
                );
            }
            let chunk = |delta: Value, finish: Value| {
                json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            };
            out.data(
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                false,
            );
            for piece in &plan.text {
                out.data(chunk(json!({"content": piece}), Value::Null), true);
            }
            if let Some(t) = &plan.tool {
                sse_tool::chat(&mut out, &chunk, t);
            }
            let terminal_from = out.len();
            out.data(chunk(json!({}), json!(finish)), false);
            if ask.include_usage {
                out.data(json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
                                "choices": [], "usage": usage}), false);
            }
            out.raw("data: [DONE]\n\n", false);
            Ok(out.into_stream(terminal_from))
        }
        Operation::Responses => {
            let status = if length { "incomplete" } else { "completed" };
            let usage = json!({"input_tokens": input, "output_tokens": output, "total_tokens": input + output});
            let item = |t: &str| {
                json!({"id": format!("msg_{id}"), "type": "message", "role": "assistant", "status": status,
                                        "content": [{"type": "output_text", "text": t, "annotations": []}]})
            };
            let response = |status: &str, output: Value, usage: Value| {
                json!({"id": id, "object": "response",
                "created_at": 0, "model": model, "status": status, "output": output, "usage": usage})
            };
            let mut output = vec![item(&text)];
            output.extend(plan.tool.iter().map(|t| sse_tool::item(id, t, true)));
            if !ask.stream {
                return Err(response(status, json!(output), usage));
            }
            let item_id = format!("msg_{id}");
            let mut seq = 0u64;
            let mut event = |out: &mut Events, kind: &str, mut body: Value, delta: bool| {
                body["type"] = json!(kind);
                body["sequence_number"] = json!(seq);
                seq += 1;
                out.named(kind, body, delta);
            };
            event(
                &mut out,
                "response.created",
                json!({"response": response("in_progress", json!([]), Value::Null)}),
                false,
            );
            event(
                &mut out,
                "response.in_progress",
                json!({"response": response("in_progress", json!([]), Value::Null)}),
                false,
            );
            event(
                &mut out,
                "response.output_item.added",
                json!({"output_index": 0,
                "item": {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}}),
                false,
            );
            event(
                &mut out,
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []}}),
                false,
            );
            for piece in &plan.text {
                event(
                    &mut out,
                    "response.output_text.delta",
                    json!({"item_id": item_id, "output_index": 0,
                    "content_index": 0, "delta": piece}),
                    true,
                );
            }
            let mut terminal_from = out.len();
            event(
                &mut out,
                "response.output_text.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": text}),
                false,
            );
            event(
                &mut out,
                "response.content_part.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                "part": {"type": "output_text", "text": text, "annotations": []}}),
                false,
            );
            event(
                &mut out,
                "response.output_item.done",
                json!({"output_index": 0, "item": item(&text)}),
                false,
            );
            if let Some(t) = &plan.tool {
                sse_tool::responses(&mut out, &mut event, id, t);
                terminal_from = out.len();
            }
            let last = if length {
                "response.incomplete"
            } else {
                "response.completed"
            };
            event(
                &mut out,
                last,
                json!({"response": response(status, json!(output), usage)}),
                false,
            );
            Ok(out.into_stream(terminal_from))
        }
        _ => {
            let stop = match plan.stop {
                Stop::MaxTokens => "max_tokens",
                Stop::ToolUse => "tool_use",
                _ => "end_turn",
            };
            let message = |content: Value, stop: Value, out_tokens: u32| {
                json!({"id": id, "type": "message", "role": "assistant",
                "model": model, "content": content, "stop_reason": stop, "stop_sequence": null,
                "usage": {"input_tokens": input, "output_tokens": out_tokens}})
            };
            if !ask.stream {
                return Err(message(
                    json!([{"type": "text", "text": text}]),
                    json!(stop),
                    output,
                ));
            }
            out.named(
                "message_start",
                json!({"type": "message_start", "message": message(json!([]), Value::Null, 1)}),
                false,
            );
            out.named(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
                false,
            );
            for piece in &plan.text {
                out.named(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": piece}}),
                    true,
                );
            }
            let text_stop = json!({"type": "content_block_stop", "index": 0});
            let terminal_from = match &plan.tool {
                Some(t) => {
                    out.named("content_block_stop", text_stop, false);
                    sse_tool::messages(&mut out, 1, t);
                    out.len()
                }
                None => {
                    let from = out.len();
                    out.named("content_block_stop", text_stop, false);
                    from
                }
            };
            out.named("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                "usage": {"output_tokens": output}}), false);
            out.named("message_stop", json!({"type": "message_stop"}), false);
            Ok(out.into_stream(terminal_from))
        }
    }
}

/// An SSE error event in the API's shape (the `exception` fault on these paths).
pub fn error_event(op: Operation, message: &str) -> Bytes {
    let text = match op {
        Operation::AnthropicMessages => format!(
            "event: error\ndata: {}\n\n",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": message}})
        ),
        _ => format!(
            "data: {}\n\n",
            json!({"error": {"message": message, "type": "server_error"}})
        ),
    };
    Bytes::from(text)
}
