//! Tool calls on the simulator's SSE paths, in each API's streaming shape: Chat Completions
//! `tool_calls` deltas (`finish_reason: "tool_calls"`), Anthropic Messages `tool_use` blocks
//! with `input_json_delta`s, Responses `function_call` items with
//! `response.function_call_arguments.delta` events. The call is the plan's (one per answer
//! to a conversation with tools, a fresh id per attempt, as real ids are random); each
//! argument piece is one generated "event" for the fault rules.

use super::plan::ToolCall;
use super::render::Stream;
use super::request::{first_tool, Tool};
use bedrock_relay_wire::ops::Operation;
use bytes::Bytes;
use serde_json::{json, Value};

/// The first tool a request declares, in its API's shape.
pub(super) fn tool_of(op: Operation, body: &Value) -> Option<Tool> {
    let tools = body.get("tools");
    match op {
        Operation::ChatCompletions => first_tool(tools, Some("function"), &["parameters"]),
        Operation::Responses => first_tool(tools, None, &["parameters"]),
        _ => first_tool(tools, None, &["input_schema"]),
    }
}

/// Whether a message or input item carries a tool's result (the model then answers in text).
pub(super) fn is_tool_result(op: Operation, m: &Value) -> bool {
    match op {
        Operation::ChatCompletions => m["role"] == "tool",
        Operation::Responses => m["type"] == "function_call_output",
        _ => m["content"]
            .as_array()
            .is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result")),
    }
}

/// Chat Completions: the call's deltas, built by `chunk(delta, finish_reason)`.
pub(super) fn chat(out: &mut Events, chunk: &dyn Fn(Value, Value) -> Value, t: &ToolCall) {
    let start = json!({"tool_calls": [{"index": 0, "id": t.id, "type": "function",
        "function": {"name": t.name, "arguments": ""}}]});
    out.data(chunk(start, Value::Null), false);
    for piece in &t.input_pieces {
        let d = json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]});
        out.data(chunk(d, Value::Null), true);
    }
}

/// Anthropic Messages: a `tool_use` block at `index`.
pub(super) fn messages(out: &mut Events, index: usize, t: &ToolCall) {
    out.named(
        "content_block_start",
        json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": t.id, "name": t.name, "input": {}}}),
        false,
    );
    for piece in &t.input_pieces {
        out.named(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": piece}}),
            true,
        );
    }
    out.named(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
        false,
    );
}

/// The Responses `function_call` item of `t` (`done`: with its whole arguments).
pub(super) fn item(id: &str, t: &ToolCall, done: bool) -> Value {
    let (status, arguments) = if done {
        ("completed", t.input.as_str())
    } else {
        ("in_progress", "")
    };
    json!({"id": format!("fc_{id}"), "type": "function_call", "status": status,
        "call_id": t.id, "name": t.name, "arguments": arguments})
}

/// Responses: a `function_call` item at output index 1; `event(out, type, body, delta)`
/// numbers and writes each event.
pub(super) fn responses(
    out: &mut Events,
    event: &mut dyn FnMut(&mut Events, &str, Value, bool),
    id: &str,
    t: &ToolCall,
) {
    let item_id = format!("fc_{id}");
    let added = json!({"output_index": 1, "item": item(id, t, false)});
    event(out, "response.output_item.added", added, false);
    for piece in &t.input_pieces {
        let d = json!({"item_id": item_id, "output_index": 1, "delta": piece});
        event(out, "response.function_call_arguments.delta", d, true);
    }
    let done = json!({"item_id": item_id, "output_index": 1, "arguments": t.input});
    event(out, "response.function_call_arguments.done", done, false);
    let done = json!({"output_index": 1, "item": item(id, t, true)});
    event(out, "response.output_item.done", done, false);
}

/// Events being rendered, with which of them carry generated content.
#[derive(Default)]
pub(super) struct Events {
    frames: Vec<Bytes>,
    delta: Vec<bool>,
}

impl Events {
    pub(super) fn data(&mut self, v: Value, delta: bool) {
        self.raw(&format!("data: {v}\n\n"), delta);
    }

    pub(super) fn named(&mut self, event: &str, v: Value, delta: bool) {
        self.raw(&format!("event: {event}\ndata: {v}\n\n"), delta);
    }

    pub(super) fn raw(&mut self, text: &str, delta: bool) {
        self.frames.push(Bytes::from(text.to_owned()));
        self.delta.push(delta);
    }

    pub(super) fn len(&self) -> usize {
        self.frames.len()
    }

    pub(super) fn into_stream(self, terminal_from: usize) -> Stream {
        let terminal = self.frames.len() - terminal_from;
        Stream {
            frames: self.frames,
            delta: self.delta,
            terminal,
        }
    }
}
