//! Test helpers: real-shaped Converse / Claude / Llama frames built from a reference answer,
//! a client that runs attempts through Transcript + plan + Splicer, and an independent
//! validator of what the client received (one start, ordered blocks, one terminal sequence).

use crate::eventstream::{self, Kind};
use crate::resume::*;
use aws_smithy_types::event_stream::Message;
use serde_json::{json, Value};

pub(crate) const PAD: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RefBlock {
    Text(Vec<String>),
    Tool {
        id: String,
        name: String,
        pieces: Vec<String>,
    },
    Reasoning {
        pieces: Vec<String>,
        signature: String,
    },
}

impl RefBlock {
    pub fn pieces(&self) -> &[String] {
        match self {
            RefBlock::Text(p)
            | RefBlock::Tool { pieces: p, .. }
            | RefBlock::Reasoning { pieces: p, .. } => p,
        }
    }
    pub fn text(&self) -> String {
        self.pieces().concat()
    }
}

/// The frames of core messages the EventStream formats made.
pub(crate) fn frames(msgs: Vec<Msg>) -> Vec<Message> {
    msgs.into_iter()
        .map(|m| match m {
            Msg::Frame(m) => m,
            Msg::Json(j) => panic!("an EventStream format made a JSON event: {j:?}"),
        })
        .collect()
}

pub(crate) fn pad(n: usize) -> &'static str {
    &PAD[..n % PAD.len()]
}

pub(crate) fn conv(event_type: &str, mut v: Value, n: usize) -> Message {
    v["p"] = json!(pad(n));
    eventstream::event(event_type, v.to_string())
}

/// Converse events of one block (deltas per piece), `index` as given.
pub(crate) fn converse_block(b: &RefBlock, index: u32, out: &mut Vec<Message>) {
    match b {
        RefBlock::Text(p) => {
            for t in p {
                out.push(conv(
                    "contentBlockDelta",
                    json!({"contentBlockIndex":index,"delta":{"text":t}}),
                    t.len(),
                ));
            }
        }
        RefBlock::Tool { id, name, pieces } => {
            out.push(conv(
                "contentBlockStart",
                json!({"contentBlockIndex":index,"start":{"toolUse":{"toolUseId":id,"name":name}}}),
                3,
            ));
            for t in pieces {
                out.push(conv(
                    "contentBlockDelta",
                    json!({"contentBlockIndex":index,"delta":{"toolUse":{"input":t}}}),
                    5,
                ));
            }
        }
        RefBlock::Reasoning { pieces, signature } => {
            for t in pieces {
                let d = json!({"contentBlockIndex":index,"delta":{"reasoningContent":{"text":t}}});
                out.push(conv("contentBlockDelta", d, 7));
            }
            let d = json!({"contentBlockIndex":index,"delta":{"reasoningContent":{"signature":signature}}});
            out.push(conv("contentBlockDelta", d, 2));
        }
    }
    out.push(conv(
        "contentBlockStop",
        json!({"contentBlockIndex":index}),
        9,
    ));
}

pub(crate) fn converse_tail(stop: &str, input: u64, output: u64, out: &mut Vec<Message>) {
    out.push(conv("messageStop", json!({"stopReason":stop}), 4));
    out.push(conv(
        "metadata",
        json!({"usage":{"inputTokens":input,"outputTokens":output,"totalTokens":input+output},"metrics":{"latencyMs":12}}),
        6,
    ));
}

/// A complete Converse stream for `blocks`.
pub(crate) fn converse_stream(blocks: &[RefBlock], stop: &str, input: u64) -> Vec<Message> {
    let mut out = vec![conv("messageStart", json!({"role":"assistant"}), 1)];
    for (i, b) in blocks.iter().enumerate() {
        converse_block(b, i as u32, &mut out);
    }
    let output = blocks.iter().map(|b| b.pieces().len() as u64).sum();
    converse_tail(stop, input, output, &mut out);
    out
}

pub(crate) fn claude_chunk(v: Value) -> Message {
    crate::resume::event::chunk(v)
}

/// A complete Claude invoke stream of text blocks.
pub(crate) fn claude_stream(texts: &[&[&str]], input: u64) -> Vec<Message> {
    let mut out = vec![claude_chunk(
        json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",
        "model":"claude","content":[],"stop_reason":null,"usage":{"input_tokens":input,"output_tokens":1}}}),
    )];
    let mut n = 0u64;
    for (i, pieces) in texts.iter().enumerate() {
        out.push(claude_chunk(json!({"type":"content_block_start","index":i,"content_block":{"type":"text","text":""}})));
        for p in *pieces {
            n += 1;
            out.push(claude_chunk(json!({"type":"content_block_delta","index":i,"delta":{"type":"text_delta","text":p}})));
        }
        out.push(claude_chunk(json!({"type":"content_block_stop","index":i})));
    }
    out.push(claude_chunk(json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":n}})));
    out.push(claude_chunk(
        json!({"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":input,
        "outputTokenCount":n,"invocationLatency":10,"firstByteLatency":2}}),
    ));
    out
}

/// A complete Llama invoke stream.
pub(crate) fn llama_stream(pieces: &[&str], input: u64) -> Vec<Message> {
    let last = pieces.len().saturating_sub(1);
    pieces
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut v = json!({"generation":p,"prompt_token_count":if i == 0 { json!(input) } else { Value::Null },
                "generation_token_count":i+1,"stop_reason":if i == last { json!("stop") } else { Value::Null }});
            if i == last {
                v["amazon-bedrock-invocationMetrics"] = json!({"inputTokenCount":input,"outputTokenCount":pieces.len(),
                    "invocationLatency":5,"firstByteLatency":1});
            }
            claude_chunk(v)
        })
        .collect()
}

/// The client side of a request: upstream messages go through the heal step as the pump
/// runs it (framed, spliced, the tool-call hold on as by default, recorded); what the client
/// received is decoded back into messages.
pub(crate) struct Client {
    pub heal: Heal<EventStreamCodec>,
    pub received: Vec<Message>,
}

impl Client {
    pub fn new(format: StreamFormat) -> Client {
        Client::holding(format, true)
    }

    /// `hold`: `resume.hold_tool_use` (off: a cut inside a tool call reaches the client).
    pub fn holding(format: StreamFormat, hold: bool) -> Client {
        let codec = EventStreamCodec { format };
        Client {
            heal: Heal::new(codec, Transcript::new(format), hold),
            received: Vec::new(),
        }
    }

    /// Feed upstream messages (stopping early at the first divergence).
    pub fn feed(&mut self, msgs: &[Message]) -> Result<(), Divergence> {
        for m in msgs {
            let frame = eventstream::Frame::check(eventstream::encode(m)).expect("valid frame");
            let mut out: Vec<bytes::Bytes> = Vec::new();
            let fed = self.heal.feed(frame, &mut out);
            for bytes in out {
                // What the client gets must decode back (fresh CRCs on rewritten frames).
                let back = eventstream::decode(&bytes).expect("valid frame");
                assert_eq!(eventstream::encode(&back), bytes, "frames are canonical");
                self.received.push(back);
            }
            match fed {
                Ok(()) => {}
                Err(Stop::Diverged(d) | Stop::Refused(d)) => return Err(d),
                Err(other) => panic!("heal step failed: {other}"),
            }
        }
        Ok(())
    }

    /// The attempt broke; plan the next one as the pump does (a held tool call dropped).
    pub fn resume(
        &mut self,
        body: &[u8],
        caps: ModelCaps,
    ) -> Result<(Strategy, Value), CannotResume> {
        self.heal.fault();
        let c = self.heal.plan(body, &caps)?;
        self.heal.resumed(c.splicer);
        Ok((
            c.strategy,
            serde_json::from_slice(&c.body).expect("json body"),
        ))
    }

    pub fn transcript(&self) -> &Transcript {
        self.heal.transcript()
    }

    pub fn transcript_mut(&mut self) -> &mut Transcript {
        self.heal.transcript_mut()
    }

    pub fn splicer(&self) -> &Splicer {
        self.heal.splicer()
    }
}

/// A client-visible Converse stream, checked for structure. Returns (blocks, stop, usage).
#[derive(Debug, PartialEq)]
pub(crate) struct Seen {
    pub blocks: Vec<(String, String)>,
    pub stop: String,
    pub usage: (u64, u64, u64),
}

/// What a validator found wrong in the stream a client received.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Invalid(pub String);

impl From<String> for Invalid {
    fn from(s: String) -> Invalid {
        Invalid(s)
    }
}

impl From<&str> for Invalid {
    fn from(s: &str) -> Invalid {
        Invalid(s.to_owned())
    }
}

pub(crate) fn check_converse(msgs: &[Message]) -> Result<Seen, Invalid> {
    let payload =
        |m: &Message| serde_json::from_slice::<Value>(m.payload()).map_err(|e| e.to_string());
    let types: Vec<String> = msgs
        .iter()
        .map(|m| match eventstream::kind(m) {
            Kind::Event(t) => t.to_owned(),
            k => format!("{k:?}"),
        })
        .collect();
    if types.first().map(String::as_str) != Some("messageStart") {
        return Err(Invalid(format!("first event is {:?}", types.first())));
    }
    let mut blocks: Vec<(String, String)> = Vec::new();
    let mut open: Option<u32> = None;
    let (mut stop, mut usage) = (None, None);
    for (m, t) in msgs.iter().zip(&types).skip(1) {
        let v = payload(m)?;
        if usage.is_some() {
            return Err(Invalid(format!("{t} after metadata")));
        }
        let i = v
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .map(|i| i as u32);
        match t.as_str() {
            "contentBlockStart" | "contentBlockDelta" => {
                let i = i.ok_or("no index")?;
                if open != Some(i) {
                    if open.is_some() || i as usize != blocks.len() || stop.is_some() {
                        return Err(Invalid(format!(
                            "block {i} opened while {open:?} open, {} done",
                            blocks.len()
                        )));
                    }
                    let kind = if t == "contentBlockStart" {
                        let tu = &v["start"]["toolUse"];
                        format!(
                            "tool:{}:{}",
                            tu["name"].as_str().unwrap_or(""),
                            tu["toolUseId"].as_str().unwrap_or("")
                        )
                    } else if v.pointer("/delta/text").is_some() {
                        "text".to_owned()
                    } else {
                        "reasoning".to_owned()
                    };
                    blocks.push((kind, String::new()));
                    open = Some(i);
                } else if t == "contentBlockStart" {
                    return Err(Invalid(format!("second start for {i}")));
                }
                let d = &v["delta"];
                for p in ["/text", "/toolUse/input", "/reasoningContent/text"] {
                    if let Some(s) = d.pointer(p).and_then(Value::as_str) {
                        blocks[i as usize].1.push_str(s);
                    }
                }
            }
            "contentBlockStop" => {
                if open != i {
                    return Err(Invalid(format!("stop of {i:?} while {open:?} open")));
                }
                open = None;
            }
            "messageStop" => {
                if open.is_some() || stop.is_some() {
                    return Err("messageStop with a block open or twice".into());
                }
                stop = v["stopReason"].as_str().map(str::to_owned);
            }
            "metadata" => {
                let u = &v["usage"];
                let n = |k: &str| u[k].as_u64().unwrap_or(0);
                usage = Some((n("inputTokens"), n("outputTokens"), n("totalTokens")));
            }
            other => return Err(Invalid(format!("unexpected {other}"))),
        }
    }
    Ok(Seen {
        blocks,
        stop: stop.ok_or("no messageStop")?,
        usage: usage.ok_or("no metadata")?,
    })
}

/// Decoded inner JSON of every invoke chunk.
pub(crate) fn inner(msgs: &[Message]) -> Vec<Value> {
    use base64::Engine;
    msgs.iter()
        .map(|m| {
            let v: Value = serde_json::from_slice(m.payload()).unwrap();
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v["bytes"].as_str().unwrap())
                .unwrap();
            serde_json::from_slice(&raw).unwrap()
        })
        .collect()
}

pub(crate) const ALL: ModelCaps = ModelCaps {
    prefill: true,
    instructed: true,
    replay: true,
};
pub(crate) const REPLAY_ONLY: ModelCaps = ModelCaps {
    prefill: false,
    instructed: false,
    replay: true,
};
pub(crate) const INSTRUCTED: ModelCaps = ModelCaps {
    prefill: false,
    instructed: true,
    replay: true,
};
pub(crate) const NONE: ModelCaps = ModelCaps {
    prefill: false,
    instructed: false,
    replay: false,
};

pub(crate) fn texts(pieces: &[&str]) -> RefBlock {
    RefBlock::Text(pieces.iter().map(|s| s.to_string()).collect())
}

pub(crate) fn user_body() -> Vec<u8> {
    json!({"messages":[{"role":"user","content":[{"text":"Tell me"}]}],"inferenceConfig":{"maxTokens":500}})
        .to_string()
        .into_bytes()
}
