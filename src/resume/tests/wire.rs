//! Test wires for the property tests: one reference answer rendered as Converse, Claude or
//! Llama frames, and a structural check of what the client received on each.

use super::util::*;
use crate::eventstream;
use crate::resume::*;
use aws_smithy_types::event_stream::Message;
use serde_json::{json, Value};

/// The prompt the Llama wire's requests start with.
pub(crate) const LLAMA_PROMPT: &str =
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nTell me<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";

/// A wire format for the property tests: the same reference rendered as Converse or Claude.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wire {
    Converse,
    Claude,
    /// Single-block family: only the first reference block, as text.
    Llama,
}

impl Wire {
    pub fn format(self) -> StreamFormat {
        match self {
            Wire::Converse => StreamFormat::Converse,
            Wire::Claude => StreamFormat::Invoke(Family::Claude),
            Wire::Llama => StreamFormat::Invoke(Family::Llama),
        }
    }

    pub fn body(self) -> Vec<u8> {
        match self {
            Wire::Converse => user_body(),
            Wire::Claude => json!({"anthropic_version":"bedrock-2023-05-31","max_tokens":500,
                "messages":[{"role":"user","content":"Tell me"}]})
            .to_string()
            .into_bytes(),
            Wire::Llama => json!({"prompt": LLAMA_PROMPT, "max_gen_len": 500})
                .to_string()
                .into_bytes(),
        }
    }

    /// The assistant text a continuation request carries (prefill or instructed).
    pub fn assistant_text(self, body: &Value) -> String {
        if let Wire::Llama = self {
            let prompt = body["prompt"].as_str().expect("prompt");
            let tail = prompt
                .strip_prefix(LLAMA_PROMPT)
                .expect("original prompt kept");
            return tail.split("<|eot_id|>").next().unwrap_or("").to_owned();
        }
        let msgs = body["messages"].as_array().expect("messages");
        let a = msgs
            .iter()
            .rev()
            .find(|m| m["role"] == "assistant")
            .expect("assistant turn");
        a["content"][0]["text"].as_str().expect("text").to_owned()
    }

    /// Reduce a reference to what this wire can express.
    pub fn reference(self, blocks: Vec<RefBlock>) -> Vec<RefBlock> {
        match self {
            Wire::Llama => vec![RefBlock::Text(blocks[0].pieces().to_vec())],
            _ => blocks,
        }
    }

    /// The message start, where the wire has one.
    pub fn start(self, out: &mut Vec<Message>) {
        out.push(match self {
            Wire::Llama => return,
            Wire::Converse => conv("messageStart", json!({"role":"assistant"}), 3),
            Wire::Claude => claude_chunk(
                json!({"type":"message_start","message":{"id":"msg","type":"message",
                "role":"assistant","content":[],"usage":{"input_tokens":7,"output_tokens":1}}}),
            ),
        });
    }

    pub fn block(self, b: &RefBlock, index: u32, out: &mut Vec<Message>) {
        match self {
            Wire::Converse => return converse_block(b, index, out),
            Wire::Llama => {
                return out.extend(b.pieces().iter().map(|p| {
                    claude_chunk(json!({"generation":p,"prompt_token_count":null,
                        "generation_token_count":1,"stop_reason":null}))
                }))
            }
            Wire::Claude => {}
        }
        let delta =
            |d: Value| claude_chunk(json!({"type":"content_block_delta","index":index,"delta":d}));
        let start = |cb: Value| {
            claude_chunk(json!({"type":"content_block_start","index":index,"content_block":cb}))
        };
        match b {
            RefBlock::Text(p) => {
                out.push(start(json!({"type":"text","text":""})));
                out.extend(
                    p.iter()
                        .map(|t| delta(json!({"type":"text_delta","text":t}))),
                );
            }
            RefBlock::Tool { id, name, pieces } => {
                out.push(start(
                    json!({"type":"tool_use","id":id,"name":name,"input":{}}),
                ));
                out.extend(
                    pieces
                        .iter()
                        .map(|t| delta(json!({"type":"input_json_delta","partial_json":t}))),
                );
            }
            RefBlock::Reasoning { pieces, signature } => {
                out.push(start(json!({"type":"thinking","thinking":""})));
                out.extend(
                    pieces
                        .iter()
                        .map(|t| delta(json!({"type":"thinking_delta","thinking":t}))),
                );
                out.push(delta(
                    json!({"type":"signature_delta","signature":signature}),
                ));
            }
        }
        out.push(claude_chunk(
            json!({"type":"content_block_stop","index":index}),
        ));
    }

    pub fn tail(self, stop: &str, input: u64, output: u64, out: &mut Vec<Message>) {
        let metrics = json!({"inputTokenCount":input,"outputTokenCount":output,
            "invocationLatency":9,"firstByteLatency":1});
        match self {
            Wire::Converse => return converse_tail(stop, input, output, out),
            Wire::Llama => {
                return out.push(claude_chunk(
                    json!({"generation":"","prompt_token_count":null,
                    "generation_token_count":output,"stop_reason":stop,
                    "amazon-bedrock-invocationMetrics":metrics}),
                ))
            }
            Wire::Claude => {}
        }
        out.push(claude_chunk(
            json!({"type":"message_delta","delta":{"stop_reason":stop,"stop_sequence":null},
            "usage":{"output_tokens":output}}),
        ));
        out.push(claude_chunk(json!({"type":"message_stop","amazon-bedrock-invocationMetrics":{
            "inputTokenCount":input,"outputTokenCount":output,"invocationLatency":9,"firstByteLatency":1}})));
    }

    pub fn stream(self, blocks: &[RefBlock], stop: &str, input: u64) -> Vec<Message> {
        let mut out = Vec::new();
        self.start(&mut out);
        for (i, b) in blocks.iter().enumerate() {
            self.block(b, i as u32, &mut out);
        }
        let output = blocks.iter().map(|b| b.pieces().len() as u64).sum();
        self.tail(stop, input, output, &mut out);
        out
    }

    /// The message carries a content delta.
    pub fn is_delta(self, m: &Message) -> bool {
        match self {
            Wire::Converse => {
                eventstream::header_str(m, ":event-type") == Some("contentBlockDelta")
            }
            Wire::Claude => inner(std::slice::from_ref(m))[0]["type"] == "content_block_delta",
            Wire::Llama => inner(std::slice::from_ref(m))[0]["generation"] != "",
        }
    }

    pub fn check(self, msgs: &[Message]) -> Result<Seen, Invalid> {
        match self {
            Wire::Converse => check_converse(msgs),
            Wire::Claude => check_claude(msgs),
            Wire::Llama => check_llama(msgs),
        }
    }
}

/// A client-visible Claude stream, checked for structure (same shape of result as Converse).
pub(crate) fn check_claude(msgs: &[Message]) -> Result<Seen, Invalid> {
    let ev = inner(msgs);
    if ev.first().map(|v| v["type"].clone()) != Some(json!("message_start")) {
        return Err("first event is not message_start".into());
    }
    let mut blocks: Vec<(String, String)> = Vec::new();
    let mut open: Option<u64> = None;
    let (mut stop, mut usage) = (None, None);
    for v in &ev[1..] {
        if usage.is_some() {
            return Err("event after message_stop".into());
        }
        let i = v["index"].as_u64();
        match v["type"].as_str().unwrap_or("") {
            "content_block_start" => {
                if open.is_some() || i != Some(blocks.len() as u64) || stop.is_some() {
                    return Err(Invalid(format!(
                        "start {i:?} while {open:?} open, {} done",
                        blocks.len()
                    )));
                }
                let cb = &v["content_block"];
                let kind = match cb["type"].as_str().unwrap_or("") {
                    "tool_use" => format!(
                        "tool:{}:{}",
                        cb["name"].as_str().unwrap_or(""),
                        cb["id"].as_str().unwrap_or("")
                    ),
                    "thinking" => "reasoning".to_owned(),
                    t => t.to_owned(),
                };
                blocks.push((kind, String::new()));
                open = i;
            }
            "content_block_delta" => {
                if open != i || i.is_none() {
                    return Err(Invalid(format!("delta for {i:?} while {open:?} open")));
                }
                for k in ["text", "partial_json", "thinking"] {
                    if let Some(s) = v["delta"][k].as_str() {
                        blocks.last_mut().ok_or("no block")?.1.push_str(s);
                    }
                }
            }
            "content_block_stop" => {
                if open != i || i.is_none() {
                    return Err(Invalid(format!("stop of {i:?} while {open:?} open")));
                }
                open = None;
            }
            "message_delta" => {
                if open.is_some() || stop.is_some() {
                    return Err("message_delta with a block open or twice".into());
                }
                stop = v["delta"]["stop_reason"].as_str().map(str::to_owned);
            }
            "message_stop" => {
                let m = &v["amazon-bedrock-invocationMetrics"];
                let (a, b) = (
                    m["inputTokenCount"].as_u64().unwrap_or(0),
                    m["outputTokenCount"].as_u64().unwrap_or(0),
                );
                usage = Some((a, b, a + b));
            }
            other => return Err(Invalid(format!("unexpected {other}"))),
        }
    }
    Ok(Seen {
        blocks,
        stop: stop.ok_or("no stop")?,
        usage: usage.ok_or("no message_stop")?,
    })
}

/// A client-visible Llama stream: text chunks, then one final chunk with stop and metrics.
pub(crate) fn check_llama(msgs: &[Message]) -> Result<Seen, Invalid> {
    let ev = inner(msgs);
    let (last, body) = ev.split_last().ok_or("empty stream")?;
    if body
        .iter()
        .any(|v| !v["stop_reason"].is_null() || v.get("amazon-bedrock-invocationMetrics").is_some())
    {
        return Err("stop or metrics before the last chunk".into());
    }
    let text: String = ev
        .iter()
        .map(|v| v["generation"].as_str().unwrap_or(""))
        .collect();
    let m = &last["amazon-bedrock-invocationMetrics"];
    let (a, b) = (
        m["inputTokenCount"].as_u64().ok_or("no metrics")?,
        m["outputTokenCount"].as_u64().unwrap_or(0),
    );
    Ok(Seen {
        blocks: vec![("text".to_owned(), text)],
        stop: last["stop_reason"].as_str().ok_or("no stop")?.to_owned(),
        usage: (a, b, a + b),
    })
}
