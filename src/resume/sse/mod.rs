//! Server-Sent Events APIs (Anthropic Messages, OpenAI Chat Completions and Responses) healed
//! by the same resume core as EventStream: each API's events are read into the Claude
//! messages events the core understands ([`FORMAT`], as their JSON: [`Msg::Json`], no
//! EventStream frame around them), and what the splicer sends the client is written back as
//! the API's own events. No second resume engine.
//!
//! ```text
//!   upstream SSE event ─► SseCodec::read ─► Msg::Json ─► Splicer ─► SseCodec::write ─► client
//!   fault ─► SseCodec::plan (the core's plan on the API's body mapped to a Claude body) ─► next attempt
//! ```
//!
//! - Anthropic Messages: an event's data IS a Claude messages event; it goes into the core as
//!   it came and is written as it is (an unchanged event goes out byte for byte).
//! - Chat Completions ([`chat`]): role delta → `message_start`, content → a text block,
//!   reasoning → a thinking block, `finish_reason` → block stop + `message_delta`, the usage
//!   chunk → `message_delta` with usage (summed over attempts), `[DONE]` → `message_stop`.
//!   Written from the first attempt's chunk template (one `id`, one role delta).
//! - Responses ([`responses`]): `response.created` → `message_start`, a message item → a text
//!   block, `response.completed`/`incomplete` → `message_delta` + `message_stop`. Every event
//!   is written by the codec: continuous `sequence_number`s, the first attempt's ids, item
//!   and completed texts that hold the whole answer, summed usage.
//!
//! Tool calls (Messages `tool_use` blocks, Chat Completions `tool_calls` deltas, Responses
//! `function_call` items) are the core's tool-use blocks: held until whole
//! (`resume.hold_tool_use`), so a cut inside one is invisible. Anything else the codec does
//! not know (several choices, reasoning items, other tools) is carried as an event the core
//! does not understand: such a stream is resumed only by verified replay (ids and sequence
//! numbers aside), never continued.

mod chat;
mod responses;

use super::heal::Codec;
pub use super::heal::{Read, UpstreamError};
use super::{plan, CannotResume, Continuation, ModelCaps, Msg, Strategy, StreamFormat, Transcript};
use crate::eventstream;
use crate::ops::Operation;
use bytes::Bytes;
use serde_json::{json, Value};

/// The core format every SSE API is read into.
pub const FORMAT: StreamFormat = StreamFormat::Messages;

/// One SSE event's fields.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Fields {
    pub event: Option<String>,
    pub data: Option<String>,
}

/// Parse an SSE event's `event:` and `data:` fields (several data lines are joined by `\n`).
pub(crate) fn fields(raw: &[u8]) -> Fields {
    let text = String::from_utf8_lossy(raw);
    let mut f = Fields::default();
    for line in text.split(['\n', '\r']) {
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match name {
            "event" => f.event = Some(value.to_owned()),
            "data" => match &mut f.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => f.data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    f
}

/// A core message: the Claude messages event `inner`.
pub(crate) fn core(inner: Value) -> Msg {
    Msg::Json(Bytes::from(inner.to_string()))
}

/// Read and write one SSE API's events (state for one client stream).
#[derive(Debug)]
pub struct SseCodec {
    op: Operation,
    chat: chat::Chat,
    responses: responses::Responses,
    /// Attempts begun (the first is 1).
    attempt: u32,
}

impl SseCodec {
    /// `None`: not an SSE API the relay heals.
    pub fn new(op: Operation) -> Option<SseCodec> {
        matches!(
            op,
            Operation::AnthropicMessages | Operation::ChatCompletions | Operation::Responses
        )
        .then(|| SseCodec {
            op,
            chat: chat::Chat::default(),
            responses: responses::Responses::default(),
            attempt: 1,
        })
    }

    /// The API's request body as a Claude messages body: `messages`, and the output limit
    /// as `max_tokens` (the fields the core reads and writes).
    fn to_claude(&self, original: &[u8]) -> Bytes {
        let Ok(mut v) = serde_json::from_slice::<Value>(original) else {
            return Bytes::copy_from_slice(original);
        };
        let Some(obj) = v.as_object_mut() else {
            return Bytes::copy_from_slice(original);
        };
        match self.op {
            Operation::ChatCompletions => {
                if let Some(n) = obj.remove("max_completion_tokens") {
                    obj.insert("max_tokens".into(), n);
                }
            }
            Operation::Responses => {
                let input = match obj.remove("input") {
                    Some(Value::String(s)) => json!([{"role": "user", "content": s}]),
                    Some(other) => other,
                    None => Value::Null,
                };
                obj.insert("messages".into(), input);
                obj.remove("max_tokens");
                if let Some(n) = obj.remove("max_output_tokens") {
                    obj.insert("max_tokens".into(), n);
                }
            }
            _ => return Bytes::copy_from_slice(original),
        }
        Bytes::from(v.to_string())
    }

    /// A continuation built on [`Self::to_claude`]'s body, in the API's shape again.
    fn api_body(&self, mut v: Value) -> Value {
        let original_limit = |v: &Value| v.get("max_tokens").cloned();
        let Some(obj) = v.as_object_mut() else {
            return v;
        };
        // The turns the core added carry Claude text blocks: plain strings in these APIs.
        if let Some(Value::Array(msgs)) = obj.get_mut("messages") {
            for m in msgs.iter_mut().rev().take(2) {
                flatten_text(m);
            }
        }
        match self.op {
            Operation::ChatCompletions if self.chat.used_completion_tokens => {
                if let Some(n) = obj.remove("max_tokens") {
                    obj.insert("max_completion_tokens".into(), n);
                }
            }
            Operation::Responses => {
                let limit = original_limit(&Value::Object(obj.clone()));
                obj.remove("max_tokens");
                if let Some(n) = limit {
                    obj.insert("max_output_tokens".into(), n);
                }
                if let Some(msgs) = obj.remove("messages") {
                    obj.insert("input".into(), msgs);
                }
            }
            _ => {}
        }
        v
    }

    /// Note what the original request says that writing and mapping need.
    pub fn observe_request(&mut self, original: &[u8]) {
        if let Ok(v) = serde_json::from_slice::<Value>(original) {
            self.chat.used_completion_tokens = v.get("max_completion_tokens").is_some();
            self.chat.include_usage =
                v.pointer("/stream_options/include_usage") == Some(&json!(true));
        }
    }
}

/// A message whose content is only plain text blocks (`type` and `text`, nothing else: a
/// `cache_control` or citation is kept as it is) gets a plain string content.
fn flatten_text(m: &mut Value) {
    let Some(Value::Array(parts)) = m.get("content") else {
        return;
    };
    fn plain(p: &Value) -> Option<&str> {
        let keys = p.as_object().is_some_and(|o| o.len() == 2);
        (keys && p["type"] == "text").then(|| p["text"].as_str())?
    }
    let texts: Option<Vec<&str>> = parts.iter().map(plain).collect();
    if let Some(texts) = texts {
        m["content"] = json!(texts.concat());
    }
}

/// An SSE API's events through the heal step: an event's data is read into core messages;
/// what the hold keeps is the released event's Claude JSON ([`Codec::unchanged`]), written
/// as the API's event only when it goes out.
impl Codec for SseCodec {
    type Event = Bytes;

    fn raw(event: &Bytes) -> &Bytes {
        event
    }

    /// Read one whole upstream event.
    fn read(&mut self, raw: &Bytes) -> Result<Read, UpstreamError> {
        let f = fields(raw);
        let Some(data) = f.data else {
            return Ok(Read::Raw);
        };
        let first = self.attempt == 1;
        let msgs = match self.op {
            Operation::ChatCompletions => self.chat.read(&data, first)?,
            Operation::Responses => self.responses.read(&data, first)?,
            _ => {
                let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                if v["type"] == "error" || f.event.as_deref() == Some("error") {
                    return Err(UpstreamError {
                        kind: v
                            .pointer("/error/type")
                            .and_then(Value::as_str)
                            .unwrap_or("error")
                            .into(),
                        message: v
                            .pointer("/error/message")
                            .and_then(Value::as_str)
                            .unwrap_or(&data)
                            .into(),
                    });
                }
                // The data as it came: an unchanged event is written back byte for byte.
                vec![Msg::Json(Bytes::from(data))]
            }
        };
        Ok(Read::Messages(msgs))
    }

    /// What one message the splicer sent holds: its Claude event's JSON. This is what the
    /// tool-call hold keeps; [`Codec::write`] turns it into the client's bytes once it is
    /// released (so a held, discarded event never advances what the client was told).
    fn unchanged(&self, _event: &Bytes, msg: &Msg) -> Bytes {
        match msg {
            Msg::Json(json) => json.clone(),
            // An unchanged message is one `read` made, and it makes only JSON.
            Msg::Frame(_) => Bytes::new(),
        }
    }

    /// The SSE formats make no frames; one would be an error (the stream ends with the
    /// API's error event), never dropped silently.
    fn rewritten(&self, msg: &Msg) -> Result<Bytes, eventstream::FrameError> {
        match msg {
            Msg::Json(json) => Ok(json.clone()),
            Msg::Frame(_) => Err(eventstream::FrameError::Corrupt(
                "an EventStream frame in an SSE stream".into(),
            )),
        }
    }

    /// The client's SSE bytes for one released event (the Claude JSON the hold kept); maybe
    /// none.
    fn write(&mut self, inner: Bytes) -> Bytes {
        if inner.is_empty() {
            return Bytes::new();
        }
        match self.op {
            Operation::ChatCompletions => self.chat.write(&inner),
            Operation::Responses => self.responses.write(&inner),
            _ => {
                let kind = serde_json::from_slice::<Value>(&inner)
                    .ok()
                    .and_then(|v| v["type"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "message".into());
                let mut out = format!("event: {kind}\ndata: ").into_bytes();
                out.extend_from_slice(&inner);
                out.extend_from_slice(b"\n\n");
                Bytes::from(out)
            }
        }
    }

    /// The next rung of the ladder: the core's [`plan`] over the API's body read as a Claude
    /// messages body, its continuation written back in the API's shape. A replay resends
    /// `original` unchanged.
    fn plan(
        &self,
        original: &[u8],
        transcript: &mut Transcript,
        caps: &ModelCaps,
    ) -> Result<Continuation, CannotResume> {
        let body = self.to_claude(original);
        let mut next = plan(&FORMAT, &body, transcript, caps)?;
        if next.strategy == Strategy::Replay {
            next.body = Bytes::copy_from_slice(original);
        } else {
            let claude: Value = serde_json::from_slice(&next.body)
                .map_err(|_| CannotResume::BadRequestBody(super::BodyError::NotJson))?;
            next.body = Bytes::from(self.api_body(claude).to_string());
        }
        Ok(next)
    }

    /// [`super::finish_at_limit`] for this API's body.
    fn finish_at_limit(&self, original: &[u8], transcript: &Transcript) -> Option<Vec<Msg>> {
        super::finish_at_limit(&FORMAT, &self.to_claude(original), transcript)
    }

    /// A new upstream attempt starts (its events are read afresh).
    fn begin_attempt(&mut self) {
        self.attempt += 1;
        self.chat.begin_attempt();
        self.responses.begin_attempt();
    }

    /// The Anthropic Messages body is a Claude messages body; the OpenAI shapes are not.
    fn counted_format(&self) -> Option<StreamFormat> {
        (self.op == Operation::AnthropicMessages).then_some(FORMAT)
    }
}

#[cfg(test)]
mod tests;
