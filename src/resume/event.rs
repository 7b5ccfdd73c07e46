//! One vocabulary for every stream format: decoding a Message into an [`Event`] (message
//! start, block start/delta/stop, stop reason, usage, terminal) and rewriting its JSON
//! (block index, delta text, usage sums) into a fresh Message with the original headers.
//!
//! Converse events carry flat JSON named by `:event-type`; invoke `chunk` events carry the
//! family's JSON base64-encoded in `bytes` (Nova: Converse-shaped objects under a wrapper
//! key); the SSE APIs' events are Claude messages events' JSON as it is ([`Msg::Json`], no
//! frame around it). Unknown or malformed events decode to an empty [`Event`] and are passed
//! through.

use super::chunks;
use super::{Family, StreamFormat, Usage};
use crate::eventstream::{self, Kind};
use aws_smithy_types::event_stream::Message;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Map, Value};

/// One event inside the resume core, in the form its stream carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// An EventStream message (ConverseStream events, InvokeModel `chunk`s), headers and all.
    Frame(Message),
    /// A Claude messages event's JSON ([`StreamFormat::Messages`], the SSE APIs): an Anthropic
    /// Messages event's data as it came, or what a Chat Completions or Responses event says,
    /// read into one.
    Json(Bytes),
}

impl From<Message> for Msg {
    fn from(m: Message) -> Msg {
        Msg::Frame(m)
    }
}

/// What kind of content block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BlockKind {
    Text,
    ToolUse {
        id: String,
        name: String,
    },
    Reasoning,
    /// Any other start (e.g. Claude `redacted_thinking`), kept as its JSON.
    Other(String),
}

impl BlockKind {
    pub(crate) fn is_text(&self) -> bool {
        matches!(self, BlockKind::Text)
    }

    pub(crate) fn is_tool(&self) -> bool {
        matches!(self, BlockKind::ToolUse { .. })
    }

    /// Reasoning and unknown blocks can only be reproduced by replay.
    pub(crate) fn needs_replay(&self) -> bool {
        matches!(self, BlockKind::Reasoning | BlockKind::Other(_))
    }

    /// Same block on replay: tool-use ids may differ (Bedrock mints them per call).
    pub(crate) fn same_as(&self, other: &BlockKind) -> bool {
        match (self, other) {
            (BlockKind::ToolUse { name: a, .. }, BlockKind::ToolUse { name: b, .. }) => a == b,
            (a, b) => a == b,
        }
    }
}

/// One delta's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delta {
    Text(String),
    ToolInput(String),
    Reasoning(String),
    Signature(String),
    Redacted(String),
    /// Unknown delta variant, kept as its JSON.
    Other(String),
}

impl Delta {
    /// The appendable text of a delta, if it has one.
    pub(crate) fn text(&self) -> Option<&str> {
        match self {
            Delta::Text(t) | Delta::ToolInput(t) | Delta::Reasoning(t) => Some(t),
            _ => None,
        }
    }
}

/// A decoded stream message in format-independent terms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    /// messageStart / message_start.
    pub(crate) start: bool,
    /// Input tokens announced early (Claude message_start, Llama prompt_token_count, Titan).
    pub(crate) known_input: Option<u64>,
    pub(crate) block_start: Option<(u32, BlockKind)>,
    pub(crate) delta: Option<(u32, Delta)>,
    pub(crate) block_stop: Option<u32>,
    /// A stop reason (messageStop, Claude message_delta, a single-block final chunk).
    pub(crate) stop: Option<String>,
    /// Usage numbers carried by this message (input, output), where present.
    pub(crate) usage: Option<(Option<u64>, Option<u64>)>,
    /// Cache read / write input tokens carried by this message, where present.
    pub(crate) cache: Option<(Option<u64>, Option<u64>)>,
    /// Converse/Nova metadata, Claude message_stop, or an invoke chunk with invocation metrics.
    pub(crate) terminal: bool,
    /// Invoke streams: the decoded `bytes` of the chunk (byte-exact replay for unknown families).
    pub(crate) raw_chunk: Option<Bytes>,
    /// Exact output tokens of the attempt so far (Llama `generation_token_count`, Titan
    /// `totalOutputTextTokenCount`).
    pub(crate) running: Option<u64>,
    /// A single-text chunk shape (no blocks: one text, its stop in the last chunk).
    pub(crate) single: Option<chunks::Shape>,
    /// An event the relay forwarded without understanding it (see `Transcript::opaque`).
    pub(crate) unknown: bool,
}

impl Event {
    pub(crate) fn is_content(&self) -> bool {
        self.block_start.is_some() || self.delta.is_some() || self.block_stop.is_some()
    }
}

/// A decoded message: the event and the JSON it came from (kept for rewriting).
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    pub event: Event,
    /// Converse: the payload. Invoke: the decoded chunk JSON.
    json: Option<Value>,
    /// Invoke: the outer payload `{"bytes":..,"p":..}`.
    outer: Option<Value>,
}

/// What failed attempts add to a final usage report besides input and output tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct More {
    pub cache_read: u64,
    pub cache_write: u64,
    pub latency_ms: u64,
}

/// Changes to apply to a message.
#[derive(Debug, Clone, Default)]
pub(crate) struct Edits {
    pub index: Option<u32>,
    pub text: Option<String>,
    pub add_usage: Option<Usage>,
    pub add_more: Option<More>,
    /// Added to a single-text chunk's running output counter (a continuation's counter
    /// continues the client's instead of restarting).
    pub running_offset: Option<u64>,
}

impl Edits {
    pub(crate) fn is_empty(&self) -> bool {
        self.index.is_none()
            && self.text.is_none()
            && self.add_usage.is_none()
            && self.add_more.is_none()
            && self.running_offset.is_none()
    }
}

fn cache_of(v: &Value, read: &str, write: &str) -> Option<(Option<u64>, Option<u64>)> {
    let (r, w) = (num(v, read), num(v, write));
    (r.is_some() || w.is_some()).then_some((r, w))
}

/// The event of a message, for the transcript: what [`parse`] gives, but the most common
/// message of a stream, a text delta (Converse `contentBlockDelta`, Claude
/// `content_block_delta`), is read with a typed parse that borrows from the payload instead
/// of building a JSON tree. Anything else, or anything unexpected in a text delta (another
/// field, another type), goes through [`parse`].
pub(crate) fn observe(format: StreamFormat, msg: &Msg) -> Event {
    match msg {
        Msg::Frame(m) => event_of(format, eventstream::kind(m), m.payload()),
        Msg::Json(json) => text_delta::claude_event(json).unwrap_or_else(|| parse_json(json).event),
    }
}

/// [`observe`] for a frame as received, read in place (never decoded into a `Message`).
pub(crate) fn observe_frame(format: StreamFormat, frame: &eventstream::Frame) -> Event {
    event_of(format, frame.kind(), frame.payload())
}

fn event_of(format: StreamFormat, kind: Kind<'_>, payload: &[u8]) -> Event {
    let fast = match (format, &kind) {
        (StreamFormat::Converse, Kind::Event("contentBlockDelta")) => text_delta::converse(payload),
        (StreamFormat::Invoke(Family::Claude), Kind::Event("chunk")) => text_delta::claude(payload),
        _ => None,
    };
    fast.unwrap_or_else(|| parse_parts(format, kind, payload).event)
}

/// Typed, borrowing readers of the text delta shapes; `None` for any other shape.
mod text_delta {
    use super::{Delta, Event, B64};
    use base64::Engine;
    use bytes::Bytes;
    use serde::Deserialize;
    use std::borrow::Cow;

    #[derive(Deserialize)]
    struct Converse<'a> {
        #[serde(rename = "contentBlockIndex")]
        index: u32,
        #[serde(borrow)]
        delta: ConverseText<'a>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ConverseText<'a> {
        #[serde(borrow)]
        text: Cow<'a, str>,
    }

    #[derive(Deserialize)]
    struct Chunk<'a> {
        #[serde(borrow)]
        bytes: Cow<'a, str>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Claude<'a> {
        #[serde(rename = "type")]
        kind: Cow<'a, str>,
        index: u32,
        #[serde(borrow)]
        delta: ClaudeText<'a>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ClaudeText<'a> {
        #[serde(rename = "type")]
        kind: Cow<'a, str>,
        #[serde(borrow)]
        text: Cow<'a, str>,
    }

    fn text(index: u32, text: Cow<'_, str>) -> Event {
        Event {
            delta: Some((index, Delta::Text(text.into_owned()))),
            ..Event::default()
        }
    }

    pub(super) fn converse(payload: &[u8]) -> Option<Event> {
        let p: Converse = serde_json::from_slice(payload).ok()?;
        Some(text(p.index, p.delta.text))
    }

    pub(super) fn claude(payload: &[u8]) -> Option<Event> {
        let chunk: Chunk = serde_json::from_slice(payload).ok()?;
        let raw = B64.decode(chunk.bytes.as_bytes()).ok()?;
        claude_event(&Bytes::from(raw))
    }

    /// A Claude messages event's JSON (a chunk's decoded `bytes`, or an SSE event's data).
    pub(super) fn claude_event(raw: &Bytes) -> Option<Event> {
        let p: Claude = serde_json::from_slice(raw).ok()?;
        if p.kind != "content_block_delta" || p.delta.kind != "text_delta" {
            return None;
        }
        let mut ev = text(p.index, p.delta.text);
        ev.raw_chunk = Some(raw.clone());
        Some(ev)
    }
}

/// Decode a message. Exceptions, errors and undecodable events yield an empty event.
pub(crate) fn parse(format: StreamFormat, msg: &Msg) -> Parsed {
    match msg {
        Msg::Frame(m) => parse_parts(format, eventstream::kind(m), m.payload()),
        Msg::Json(json) => parse_json(json),
    }
}

/// A Claude messages event's JSON (an SSE API's), or an invoke chunk's decoded `bytes`.
fn parse_json(raw: &Bytes) -> Parsed {
    let mut event = Event {
        raw_chunk: Some(raw.clone()),
        ..Event::default()
    };
    let Ok(inner) = serde_json::from_slice::<Value>(raw) else {
        event.unknown = true;
        return Parsed {
            event,
            json: None,
            outer: None,
        };
    };
    invoke(&inner, &mut event);
    Parsed {
        event,
        json: Some(inner),
        outer: None,
    }
}

/// [`parse`] from a message's kind and payload, the only parts it reads.
fn parse_parts(format: StreamFormat, kind: Kind<'_>, payload: &[u8]) -> Parsed {
    let mut event = Event::default();
    let empty = |event| Parsed {
        event,
        json: None,
        outer: None,
    };
    let Kind::Event(event_type) = kind else {
        return empty(event);
    };
    let Ok(payload) = serde_json::from_slice::<Value>(payload) else {
        event.unknown = true;
        return empty(event);
    };
    match format {
        StreamFormat::Converse => {
            converse(event_type, &payload, &mut event);
            Parsed {
                event,
                json: Some(payload),
                outer: None,
            }
        }
        StreamFormat::Invoke(_) | StreamFormat::Messages => {
            let Some(raw) = payload
                .get("bytes")
                .and_then(Value::as_str)
                .and_then(|b| B64.decode(b).ok())
            else {
                event.unknown = true;
                return empty(event);
            };
            let mut parsed = parse_json(&Bytes::from(raw));
            // Rewriting puts the edited JSON back into this payload (when there is JSON).
            parsed.outer = parsed.json.is_some().then_some(payload);
            parsed
        }
    }
}

const NOVA_KEYS: [&str; 6] = [
    "messageStart",
    "contentBlockStart",
    "contentBlockDelta",
    "contentBlockStop",
    "messageStop",
    "metadata",
];
const METRICS: &str = "amazon-bedrock-invocationMetrics";

fn idx(v: &Value, key: &str) -> Option<u32> {
    v.get(key)?.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn num(v: &Value, key: &str) -> Option<u64> {
    v.get(key)?.as_u64()
}

fn string(v: &Value, key: &str) -> Option<String> {
    v.get(key)?.as_str().map(str::to_owned)
}

fn converse(event_type: &str, v: &Value, ev: &mut Event) {
    match event_type {
        "messageStart" => ev.start = true,
        "contentBlockStart" => {
            let start = v.get("start").cloned().unwrap_or(Value::Null);
            let kind = match start.get("toolUse") {
                Some(tu) => BlockKind::ToolUse {
                    id: string(tu, "toolUseId").unwrap_or_default(),
                    name: string(tu, "name").unwrap_or_default(),
                },
                None => BlockKind::Other(start.to_string()),
            };
            ev.block_start = idx(v, "contentBlockIndex").map(|i| (i, kind));
        }
        "contentBlockDelta" => {
            let d = v.get("delta").cloned().unwrap_or(Value::Null);
            let delta = if let Some(t) = d.get("text").and_then(Value::as_str) {
                Delta::Text(t.to_owned())
            } else if let Some(t) = d.pointer("/toolUse/input").and_then(Value::as_str) {
                Delta::ToolInput(t.to_owned())
            } else if let Some(rc) = d.get("reasoningContent") {
                if let Some(t) = rc.get("text").and_then(Value::as_str) {
                    Delta::Reasoning(t.to_owned())
                } else if let Some(s) = rc.get("signature").and_then(Value::as_str) {
                    Delta::Signature(s.to_owned())
                } else {
                    Delta::Redacted(rc.get("redactedContent").unwrap_or(rc).to_string())
                }
            } else {
                Delta::Other(d.to_string())
            };
            ev.delta = idx(v, "contentBlockIndex").map(|i| (i, delta));
        }
        "contentBlockStop" => ev.block_stop = idx(v, "contentBlockIndex"),
        "messageStop" => ev.stop = Some(string(v, "stopReason").unwrap_or_default()),
        "metadata" => {
            ev.terminal = true;
            let u = v.get("usage").cloned().unwrap_or(Value::Null);
            ev.usage = Some((num(&u, "inputTokens"), num(&u, "outputTokens")));
            ev.cache = cache_of(&u, "cacheReadInputTokens", "cacheWriteInputTokens");
        }
        _ => ev.unknown = true,
    }
}

fn metrics(inner: &Value, ev: &mut Event) {
    if let Some(m) = inner.get(METRICS) {
        ev.terminal = true;
        if ev.usage.is_none() {
            ev.usage = Some((num(m, "inputTokenCount"), num(m, "outputTokenCount")));
        }
        if ev.cache.is_none() {
            ev.cache = cache_of(m, "cacheReadInputTokenCount", "cacheWriteInputTokenCount");
        }
    }
}

/// An invoke chunk's JSON (or an SSE API's event), read by its shape, whatever the model id
/// said: Claude messages events carry `type`, Nova wraps Converse events, the rest are
/// single-text shapes (`chunks`). Anything else is `unknown`, unless it only carries
/// invocation metrics.
fn invoke(v: &Value, ev: &mut Event) {
    let known = if v.get("type").is_some_and(Value::is_string) {
        claude(v, ev);
        !ev.unknown
    } else if let Some(key) = NOVA_KEYS.iter().find(|k| v.get(**k).is_some()) {
        converse(key, &v[*key], ev);
        !ev.unknown
    } else {
        single(v, ev)
    };
    metrics(v, ev);
    ev.unknown = !known && !ev.terminal;
}

/// A single-text chunk (`chunks`) into `ev`; `false` when it is none of their shapes.
fn single(v: &Value, ev: &mut Event) -> bool {
    let Some(c) = chunks::read(v) else {
        return false;
    };
    ev.single = c.shape;
    ev.delta = match (c.text, c.reasoning) {
        (Some(t), _) => Some((0, Delta::Text(t))),
        (None, Some(r)) => Some((0, Delta::Other(r))),
        (None, None) => None,
    };
    ev.stop = c.stop;
    if c.running.is_some() {
        ev.running = c.running;
    }
    ev.known_input = c.known_input;
    true
}

fn claude(v: &Value, ev: &mut Event) {
    match v.get("type").and_then(Value::as_str).unwrap_or("") {
        "message_start" => {
            ev.start = true;
            ev.known_input = v
                .pointer("/message/usage/input_tokens")
                .and_then(Value::as_u64);
            let u = v.pointer("/message/usage").unwrap_or(&Value::Null);
            ev.cache = cache_of(u, "cache_read_input_tokens", "cache_creation_input_tokens");
        }
        "content_block_start" => {
            let cb = v.get("content_block").cloned().unwrap_or(Value::Null);
            let kind = match cb.get("type").and_then(Value::as_str).unwrap_or("") {
                "text" => BlockKind::Text,
                "thinking" => BlockKind::Reasoning,
                "tool_use" => BlockKind::ToolUse {
                    id: string(&cb, "id").unwrap_or_default(),
                    name: string(&cb, "name").unwrap_or_default(),
                },
                _ => BlockKind::Other(cb.to_string()),
            };
            ev.block_start = idx(v, "index").map(|i| (i, kind));
        }
        "content_block_delta" => {
            let d = v.get("delta").cloned().unwrap_or(Value::Null);
            let s = |k| string(&d, k).unwrap_or_default();
            let delta = match d.get("type").and_then(Value::as_str).unwrap_or("") {
                "text_delta" => Delta::Text(s("text")),
                "input_json_delta" => Delta::ToolInput(s("partial_json")),
                "thinking_delta" => Delta::Reasoning(s("thinking")),
                "signature_delta" => Delta::Signature(s("signature")),
                _ => Delta::Other(d.to_string()),
            };
            ev.delta = idx(v, "index").map(|i| (i, delta));
        }
        "content_block_stop" => ev.block_stop = idx(v, "index"),
        "message_delta" => {
            ev.stop = v
                .pointer("/delta/stop_reason")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let u = v.get("usage").cloned().unwrap_or(Value::Null);
            ev.usage = Some((num(&u, "input_tokens"), num(&u, "output_tokens")));
            ev.cache = cache_of(&u, "cache_read_input_tokens", "cache_creation_input_tokens");
        }
        "message_stop" => ev.terminal = true,
        "ping" => {}
        _ => ev.unknown = true,
    }
}

fn add(v: &mut Value, key: &str, n: u64) {
    if let Some(old) = v.get(key).and_then(Value::as_u64) {
        v[key] = json!(old.saturating_add(n));
    }
}

/// Apply `edits` to a parsed message; `None` when the message has no JSON to edit.
pub(crate) fn rewrite(
    format: StreamFormat,
    msg: &Msg,
    parsed: &Parsed,
    edits: &Edits,
) -> Option<Msg> {
    let mut json = parsed.json.clone()?;
    match format {
        StreamFormat::Converse => edit_converse(&mut json, edits),
        StreamFormat::Invoke(_) | StreamFormat::Messages => {
            if let Some(key) = NOVA_KEYS.iter().find(|k| json.get(**k).is_some()) {
                edit_converse(&mut json[*key], edits);
            } else if json.get("type").is_some_and(Value::is_string) {
                edit_claude(&mut json, edits);
            } else if let Some(shape) = chunks::shape_of(&json) {
                if let (Some(t), Some(slot)) = (&edits.text, json.pointer_mut(shape.text)) {
                    *slot = json!(t);
                }
                if let (Some(n), Some(key)) = (edits.running_offset, shape.running) {
                    add(&mut json, key, n);
                }
            } else {
                return None;
            }
            edit_metrics(&mut json, edits);
        }
    }
    let msg = match msg {
        Msg::Json(_) => return Some(Msg::Json(Bytes::from(json.to_string()))),
        Msg::Frame(m) => m,
    };
    Some(Msg::Frame(match (format, &parsed.outer) {
        (StreamFormat::Converse, _) => eventstream::with_payload(msg, json.to_string()),
        (_, Some(outer)) => {
            let mut outer = outer.clone();
            outer["bytes"] = json!(B64.encode(json.to_string()));
            eventstream::with_payload(msg, outer.to_string())
        }
        (_, None) => return None,
    }))
}

fn edit_converse(v: &mut Value, edits: &Edits) {
    if let (Some(i), Some(slot)) = (edits.index, v.get_mut("contentBlockIndex")) {
        *slot = json!(i);
    }
    if let Some(t) = &edits.text {
        for path in [
            "/delta/text",
            "/delta/toolUse/input",
            "/delta/reasoningContent/text",
        ] {
            if let Some(slot) = v.pointer_mut(path) {
                *slot = json!(t);
                break;
            }
        }
    }
    let more = edits.add_more.unwrap_or_default();
    if let (Some(u), Some(usage)) = (edits.add_usage, v.get_mut("usage")) {
        add(usage, "inputTokens", u.input);
        add(usage, "outputTokens", u.output);
        add(
            usage,
            "totalTokens",
            u.total() + more.cache_read + more.cache_write,
        );
        add_or_insert(usage, "cacheReadInputTokens", more.cache_read);
        add_or_insert(usage, "cacheWriteInputTokens", more.cache_write);
    }
    if let (Some(_), Some(m)) = (edits.add_usage, v.get_mut("metrics")) {
        add(m, "latencyMs", more.latency_ms);
    }
}

/// Add `n` to `v[key]`, creating the field when `n > 0` and it is missing.
fn add_or_insert(v: &mut Value, key: &str, n: u64) {
    if v.get(key).is_some() {
        add(v, key, n);
    } else if n > 0 && v.is_object() {
        v[key] = json!(n);
    }
}

fn edit_claude(v: &mut Value, edits: &Edits) {
    if let (Some(i), Some(slot)) = (edits.index, v.get_mut("index")) {
        *slot = json!(i);
    }
    if let Some(t) = &edits.text {
        for path in ["/delta/text", "/delta/partial_json", "/delta/thinking"] {
            if let Some(slot) = v.pointer_mut(path) {
                *slot = json!(t);
                break;
            }
        }
    }
    if let (Some(u), Some(usage)) = (edits.add_usage, v.get_mut("usage")) {
        let more = edits.add_more.unwrap_or_default();
        add(usage, "input_tokens", u.input);
        add(usage, "output_tokens", u.output);
        add(usage, "cache_read_input_tokens", more.cache_read);
        add(usage, "cache_creation_input_tokens", more.cache_write);
    }
}

fn edit_metrics(v: &mut Value, edits: &Edits) {
    if let (Some(u), Some(m)) = (edits.add_usage, v.get_mut(METRICS)) {
        let more = edits.add_more.unwrap_or_default();
        add(m, "inputTokenCount", u.input);
        add(m, "outputTokenCount", u.output);
        add(m, "invocationLatency", more.latency_ms);
        add_or_insert(m, "cacheReadInputTokenCount", more.cache_read);
        add_or_insert(m, "cacheWriteInputTokenCount", more.cache_write);
    }
}

/// A block-stop event for `index` (used to close a block the continuation never closed).
pub(crate) fn block_stop(format: StreamFormat, index: u32) -> Option<Msg> {
    let p = |m: &mut Map<String, Value>| {
        m.insert("p".into(), json!("abcdefgh"));
    };
    match format {
        StreamFormat::Converse => {
            let mut m = Map::new();
            m.insert("contentBlockIndex".into(), json!(index));
            p(&mut m);
            Some(Msg::Frame(eventstream::event(
                "contentBlockStop",
                Value::Object(m).to_string(),
            )))
        }
        StreamFormat::Invoke(Family::Claude) | StreamFormat::Messages => Some(made(
            format,
            json!({"type":"content_block_stop","index":index}),
        )),
        StreamFormat::Invoke(Family::Nova) => Some(made(
            format,
            json!({"contentBlockStop":{"contentBlockIndex":index}}),
        )),
        StreamFormat::Invoke(_) => None,
    }
}

/// An event the relay makes, holding the family's JSON `inner`: an invoke `chunk`, or for
/// [`StreamFormat::Messages`] the JSON itself. (Converse events are made by their names.)
pub(crate) fn made(format: StreamFormat, inner: Value) -> Msg {
    match format {
        StreamFormat::Messages => Msg::Json(Bytes::from(inner.to_string())),
        _ => Msg::Frame(chunk(inner)),
    }
}

/// An invoke `chunk` event holding `inner`.
pub(crate) fn chunk(inner: Value) -> Message {
    let payload = json!({"bytes": B64.encode(inner.to_string()), "p": "abcdefgh"});
    eventstream::event("chunk", payload.to_string())
}

/// The final usage a message reports: Converse/Nova `metadata`, or an invoke chunk's
/// `amazon-bedrock-invocationMetrics` (Claude `message_stop`, the last chunk of the others).
/// `None` for every other message. After splicing, this is the sum over attempts.
pub fn usage_of(format: StreamFormat, msg: &Msg) -> Option<Usage> {
    let ev = parse(format, msg).event;
    if !ev.terminal {
        return None;
    }
    let (input, output) = ev.usage?;
    Some(Usage {
        input: input.unwrap_or(0),
        output: output.unwrap_or(0),
    })
}

#[cfg(test)]
mod observe_tests {
    use super::*;
    use proptest::prelude::*;

    /// JSON values for a field: the right shape and several wrong ones.
    fn index() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            (0u32..5).prop_map(|i| Some(json!(i))),
            Just(Some(json!(1u64 << 33))),
            Just(Some(json!(-1))),
            Just(Some(json!(1.0))),
            Just(Some(json!("0"))),
            Just(Some(Value::Null)),
            Just(None),
        ]
    }

    fn object(fields: Vec<(&str, Option<Value>)>) -> Value {
        Value::Object(
            fields
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
                .collect(),
        )
    }

    fn converse_delta() -> impl Strategy<Value = Value> {
        let text = any::<String>();
        prop_oneof![
            4 => text.prop_map(|t| json!({ "text": t })),
            1 => text.prop_map(|t| json!({ "text": t, "extra": 1 })),
            1 => text.prop_map(|t| json!({ "toolUse": { "input": t } })),
            1 => Just(json!({ "text": null })),
            1 => Just(json!("text")),
        ]
    }

    fn claude_delta() -> impl Strategy<Value = Value> {
        let text = any::<String>();
        prop_oneof![
            4 => text.prop_map(|t| json!({ "type": "text_delta", "text": t })),
            1 => text.prop_map(|t| json!({ "type": "input_json_delta", "partial_json": t })),
            1 => text.prop_map(|t| json!({ "type": "thinking_delta", "text": t })),
            1 => text.prop_map(|t| json!({ "type": "text_delta", "text": t, "x": 1 })),
            1 => Just(json!({ "text": "no type" })),
        ]
    }

    fn padding() -> impl Strategy<Value = Option<Value>> {
        prop::option::of("[a-z]{0,12}".prop_map(Value::from))
    }

    proptest! {
        #[test]
        fn observe_agrees_with_parse_on_converse_deltas(
            i in index(), delta in converse_delta(), p in padding(),
            event_type in prop_oneof![4 => Just("contentBlockDelta"), 1 => Just("contentBlockStart")],
        ) {
            let payload = object(vec![("contentBlockIndex", i), ("delta", Some(delta)), ("p", p)]);
            let msg = Msg::Frame(eventstream::event(event_type, payload.to_string()));
            prop_assert_eq!(observe(StreamFormat::Converse, &msg), parse(StreamFormat::Converse, &msg).event);
        }

        #[test]
        fn observe_agrees_with_parse_on_claude_chunks(
            kind in prop_oneof![4 => Just("content_block_delta"), 1 => Just("content_block_start")],
            i in index(), delta in claude_delta(), p in padding(), metrics in any::<bool>(),
        ) {
            let metrics = metrics.then(|| json!({ "inputTokenCount": 3, "outputTokenCount": 4 }));
            let inner = object(vec![
                ("type", Some(json!(kind))),
                ("index", i),
                ("delta", Some(delta)),
                (METRICS, metrics),
            ]);
            let outer = object(vec![("bytes", Some(json!(B64.encode(inner.to_string())))), ("p", p)]);
            let format = StreamFormat::Invoke(Family::Claude);
            let msg = Msg::Frame(eventstream::event("chunk", outer.to_string()));
            prop_assert_eq!(observe(format, &msg), parse(format, &msg).event);
            // The same event as an SSE API's JSON.
            let json = Msg::Json(Bytes::from(inner.to_string()));
            prop_assert_eq!(observe(StreamFormat::Messages, &json), parse(StreamFormat::Messages, &json).event);
            prop_assert_eq!(parse(StreamFormat::Messages, &json).event, parse(format, &msg).event);
        }
    }

    #[test]
    fn plain_text_deltas_take_the_typed_path() {
        let converse =
            json!({ "contentBlockIndex": 2, "delta": { "text": "a \"quoted\" é" }, "p": "abc" });
        let ev = text_delta::converse(converse.to_string().as_bytes()).expect("typed path");
        assert_eq!(ev.delta, Some((2, Delta::Text("a \"quoted\" é".into()))));
        let inner = json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": "hi" } });
        let outer = json!({ "bytes": B64.encode(inner.to_string()), "p": "xyz" });
        let ev = text_delta::claude(outer.to_string().as_bytes()).expect("typed path");
        assert_eq!(ev.delta, Some((0, Delta::Text("hi".into()))));
        assert_eq!(ev.raw_chunk.as_deref(), Some(inner.to_string().as_bytes()));
    }
}
