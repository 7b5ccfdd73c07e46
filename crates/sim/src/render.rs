//! Rendering a [`Plan`] into Bedrock's wire shapes.
//!
//! Owns the ConverseStream event frames, the InvokeModelWithResponseStream `chunk` frames
//! of each model family, and the non-streaming JSON bodies. Every stream payload carries the
//! `"p"` padding field. Frames are encoded once, up front, so the connection writer only
//! copies bytes (and the fault injector can cut them at exact positions).

use super::plan::{Plan, Stop};
use super::request::Family;
use super::styles::{self, Style};
use base64::Engine as _;
use bedrock_relay_wire::eventstream;
use bytes::Bytes;
use serde_json::{json, Value};

const PAD: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// An encoded response stream.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Encoded frames in order.
    pub frames: Vec<Bytes>,
    /// `delta[i]`: frame `i` carries generated content (the inter-token delay precedes it).
    pub delta: Vec<bool>,
    /// How many trailing frames are terminal (dropped by the `truncate` fault).
    pub terminal: usize,
}

/// Timing numbers reported in metadata and invocation metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub total_ms: u64,
    pub first_byte_ms: u64,
}

fn pad(i: usize) -> &'static str {
    &PAD[..1 + (i * 17 + 5) % PAD.len()]
}

fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

struct Builder {
    stream: Stream,
    invoke: bool,
}

impl Builder {
    fn new(invoke: bool) -> Self {
        Builder {
            stream: Stream {
                frames: Vec::new(),
                delta: Vec::new(),
                terminal: 0,
            },
            invoke,
        }
    }

    /// Push one event; `json` is the payload without its closing brace (the padding is
    /// appended here). For invoke streams `event_type` is ignored and the JSON is wrapped.
    fn push(&mut self, event_type: &str, open_json: &str, delta: bool) {
        let i = self.stream.frames.len();
        let message = if self.invoke {
            let bytes = base64::engine::general_purpose::STANDARD.encode(format!("{open_json}}}"));
            eventstream::event(
                "chunk",
                format!("{{\"bytes\":\"{bytes}\",\"p\":\"{}\"}}", pad(i)),
            )
        } else {
            eventstream::event(event_type, format!("{open_json},\"p\":\"{}\"}}", pad(i)))
        };
        self.stream.frames.push(eventstream::encode(&message));
        self.stream.delta.push(delta);
    }

    fn finish(mut self, terminal: usize) -> Stream {
        self.stream.terminal = terminal;
        self.stream
    }
}

fn converse_stop(stop: Stop) -> &'static str {
    match stop {
        Stop::EndTurn => "end_turn",
        Stop::ToolUse => "tool_use",
        Stop::MaxTokens => "max_tokens",
        Stop::Sequence => "stop_sequence",
    }
}

fn family_stop(family: Family, stop: Stop) -> &'static str {
    match (family, stop) {
        (Family::Claude | Family::Nova, s) => converse_stop(s),
        (Family::Titan, Stop::MaxTokens) => "LENGTH",
        (Family::Titan, Stop::Sequence) => "STOP_CRITERIA_MET",
        (Family::Titan, _) => "FINISH",
        (_, Stop::MaxTokens) => "length",
        _ => "stop",
    }
}

fn metrics(plan: &Plan, lat: Latency) -> String {
    let cache = match plan.cache_read {
        0 => String::new(),
        n => format!(",\"cacheReadInputTokenCount\":{n},\"cacheWriteInputTokenCount\":0"),
    };
    format!(
        "{{\"inputTokenCount\":{},\"outputTokenCount\":{},\"invocationLatency\":{},\"firstByteLatency\":{}{cache}}}",
        plan.input_tokens, plan.output_tokens, lat.total_ms, lat.first_byte_ms
    )
}

/// `usage` fields of a cache read (`sim:cache=N`), for Converse and Claude.
fn cache_usage(plan: &Plan, claude: bool) -> String {
    match (plan.cache_read, claude) {
        (0, _) => String::new(),
        (n, true) => format!(",\"cache_read_input_tokens\":{n},\"cache_creation_input_tokens\":0"),
        (n, false) => format!(",\"cacheReadInputTokens\":{n},\"cacheWriteInputTokens\":0"),
    }
}

/// ConverseStream events for a plan.
pub fn converse_stream(plan: &Plan, lat: Latency) -> Stream {
    let mut b = Builder::new(false);
    b.push("messageStart", "{\"role\":\"assistant\"", false);
    converse_blocks(&mut b, plan, |b, idx, delta| {
        b.push(
            "contentBlockDelta",
            &format!("{{\"contentBlockIndex\":{idx},\"delta\":{delta}"),
            true,
        )
    });
    b.push(
        "messageStop",
        &format!("{{\"stopReason\":\"{}\"", converse_stop(plan.stop)),
        false,
    );
    b.push(
        "metadata",
        &format!(
            "{{\"usage\":{{\"inputTokens\":{},\"outputTokens\":{},\"totalTokens\":{}{}}},\"metrics\":{{\"latencyMs\":{}}}",
            plan.input_tokens,
            plan.output_tokens,
            plan.input_tokens + plan.output_tokens + plan.cache_read,
            cache_usage(plan, false),
            lat.total_ms
        ),
        false,
    );
    b.finish(2)
}

/// Reasoning, text and tool blocks in Converse shape (flat for ConverseStream).
fn converse_blocks(b: &mut Builder, plan: &Plan, delta: impl Fn(&mut Builder, usize, &str)) {
    let mut idx = 0;
    let stop = |b: &mut Builder, idx: usize| {
        b.push(
            "contentBlockStop",
            &format!("{{\"contentBlockIndex\":{idx}"),
            false,
        )
    };
    if let Some((pieces, signature)) = &plan.reasoning {
        for p in pieces {
            delta(
                b,
                idx,
                &format!("{{\"reasoningContent\":{{\"text\":{}}}}}", js(p)),
            );
        }
        delta(
            b,
            idx,
            &format!(
                "{{\"reasoningContent\":{{\"signature\":{}}}}}",
                js(signature)
            ),
        );
        stop(b, idx);
        idx += 1;
    }
    if !plan.text.is_empty() {
        for p in &plan.text {
            delta(b, idx, &format!("{{\"text\":{}}}", js(p)));
        }
        stop(b, idx);
        idx += 1;
    }
    if let Some(tool) = &plan.tool {
        b.push(
            "contentBlockStart",
            &format!(
                "{{\"contentBlockIndex\":{idx},\"start\":{{\"toolUse\":{{\"toolUseId\":{},\"name\":{}}}}}",
                js(&tool.id),
                js(&tool.name)
            ),
            false,
        );
        for p in &tool.input_pieces {
            delta(b, idx, &format!("{{\"toolUse\":{{\"input\":{}}}}}", js(p)));
        }
        stop(b, idx);
    }
}

/// InvokeModelWithResponseStream chunks for a plan in the family's native format.
pub fn invoke_stream(
    family: Family,
    model_id: &str,
    msg_id: &str,
    plan: &Plan,
    lat: Latency,
) -> Stream {
    let mut b = Builder::new(true);
    let stop = family_stop(family, plan.stop);
    let m = metrics(plan, lat);
    let tpp = plan.tokens_per_piece.max(1) as usize;
    if plan.style != Style::Native {
        let chunks = styles::chunks(plan.style, plan, stop);
        let n = chunks.len();
        for (i, (chunk, delta)) in chunks.into_iter().enumerate() {
            let open = &chunk[..chunk.len().saturating_sub(1)];
            if i + 1 == n {
                b.push(
                    "",
                    &format!("{open},\"amazon-bedrock-invocationMetrics\":{m}"),
                    delta,
                );
            } else {
                b.push("", open, delta);
            }
        }
        return b.finish(1);
    }
    match family {
        Family::Claude => {
            b.push("", &format!(
                "{{\"type\":\"message_start\",\"message\":{{\"id\":{},\"type\":\"message\",\"role\":\"assistant\",\"model\":{},\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{},\"output_tokens\":1{}}}}}",
                js(msg_id), js(model_id), plan.input_tokens, cache_usage(plan, true)), false);
            let mut idx = 0;
            let mut block = |b: &mut Builder, start: String, deltas: Vec<String>| {
                b.push("", &format!("{{\"type\":\"content_block_start\",\"index\":{idx},\"content_block\":{start}"), false);
                for d in deltas {
                    b.push(
                        "",
                        &format!(
                            "{{\"type\":\"content_block_delta\",\"index\":{idx},\"delta\":{d}"
                        ),
                        true,
                    );
                }
                b.push(
                    "",
                    &format!("{{\"type\":\"content_block_stop\",\"index\":{idx}"),
                    false,
                );
                idx += 1;
            };
            if let Some((pieces, sig)) = &plan.reasoning {
                let mut d: Vec<String> = pieces
                    .iter()
                    .map(|p| format!("{{\"type\":\"thinking_delta\",\"thinking\":{}}}", js(p)))
                    .collect();
                d.push(format!(
                    "{{\"type\":\"signature_delta\",\"signature\":{}}}",
                    js(sig)
                ));
                block(
                    &mut b,
                    "{\"type\":\"thinking\",\"thinking\":\"\"}".into(),
                    d,
                );
            }
            if !plan.text.is_empty() {
                let d = plan
                    .text
                    .iter()
                    .map(|p| format!("{{\"type\":\"text_delta\",\"text\":{}}}", js(p)))
                    .collect();
                block(&mut b, "{\"type\":\"text\",\"text\":\"\"}".into(), d);
            }
            if let Some(t) = &plan.tool {
                let d = t
                    .input_pieces
                    .iter()
                    .map(|p| {
                        format!(
                            "{{\"type\":\"input_json_delta\",\"partial_json\":{}}}",
                            js(p)
                        )
                    })
                    .collect();
                block(
                    &mut b,
                    format!(
                        "{{\"type\":\"tool_use\",\"id\":{},\"name\":{},\"input\":{{}}}}",
                        js(&t.id),
                        js(&t.name)
                    ),
                    d,
                );
            }
            let seq = serde_json::to_string(&plan.stop_sequence).unwrap_or_else(|_| "null".into());
            b.push("", &format!("{{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{stop}\",\"stop_sequence\":{seq}}},\"usage\":{{\"output_tokens\":{}}}", plan.output_tokens), false);
            b.push(
                "",
                &format!("{{\"type\":\"message_stop\",\"amazon-bedrock-invocationMetrics\":{m}"),
                false,
            );
            b.finish(2)
        }
        Family::Nova => {
            b.push("", "{\"messageStart\":{\"role\":\"assistant\"}", false);
            for p in &plan.text {
                b.push("", &format!("{{\"contentBlockDelta\":{{\"delta\":{{\"text\":{}}},\"contentBlockIndex\":0}}", js(p)), true);
            }
            b.push("", "{\"contentBlockStop\":{\"contentBlockIndex\":0}", false);
            b.push(
                "",
                &format!("{{\"messageStop\":{{\"stopReason\":\"{stop}\"}}"),
                false,
            );
            b.push("", &format!("{{\"metadata\":{{\"usage\":{{\"inputTokens\":{},\"outputTokens\":{}}}}},\"amazon-bedrock-invocationMetrics\":{m}", plan.input_tokens, plan.output_tokens), false);
            b.finish(2)
        }
        Family::Llama => {
            for (i, p) in plan.text.iter().enumerate() {
                let prompt = if i == 0 {
                    plan.input_tokens.to_string()
                } else {
                    "null".into()
                };
                b.push("", &format!("{{\"generation\":{},\"prompt_token_count\":{prompt},\"generation_token_count\":{},\"stop_reason\":null", js(p), (i + 1) * tpp), true);
            }
            b.push("", &format!("{{\"generation\":\"\",\"prompt_token_count\":null,\"generation_token_count\":{},\"stop_reason\":\"{stop}\",\"amazon-bedrock-invocationMetrics\":{m}", plan.text.len() * tpp), false);
            b.finish(1)
        }
        Family::Mistral => {
            for p in &plan.text {
                b.push(
                    "",
                    &format!(
                        "{{\"outputs\":[{{\"text\":{},\"stop_reason\":null}}]",
                        js(p)
                    ),
                    true,
                );
            }
            b.push("", &format!("{{\"outputs\":[{{\"text\":\"\",\"stop_reason\":\"{stop}\"}}],\"amazon-bedrock-invocationMetrics\":{m}"), false);
            b.finish(1)
        }
        Family::Titan => {
            for (i, p) in plan.text.iter().enumerate() {
                b.push("", &format!("{{\"outputText\":{},\"index\":0,\"totalOutputTextTokenCount\":{},\"completionReason\":null,\"inputTextTokenCount\":{}", js(p), (i + 1) * tpp, plan.input_tokens), true);
            }
            b.push("", &format!("{{\"outputText\":\"\",\"index\":0,\"totalOutputTextTokenCount\":{},\"completionReason\":\"{stop}\",\"inputTextTokenCount\":{},\"amazon-bedrock-invocationMetrics\":{m}", plan.text.len() * tpp, plan.input_tokens), false);
            b.finish(1)
        }
    }
}

/// The Converse (non-streaming) response body.
pub fn converse_body(plan: &Plan, lat: Latency) -> Value {
    let mut content = Vec::new();
    if let Some((pieces, sig)) = &plan.reasoning {
        content.push(json!({"reasoningContent": {"reasoningText": {"text": pieces.concat(), "signature": sig}}}));
    }
    if !plan.text.is_empty() {
        content.push(json!({"text": plan.text()}));
    }
    if let Some(t) = &plan.tool {
        let input: Value = serde_json::from_str(&t.input).unwrap_or(Value::Null);
        content.push(json!({"toolUse": {"toolUseId": t.id, "name": t.name, "input": input}}));
    }
    json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": converse_stop(plan.stop),
        "usage": {"inputTokens": plan.input_tokens, "outputTokens": plan.output_tokens,
                  "totalTokens": plan.input_tokens + plan.output_tokens},
        "metrics": {"latencyMs": lat.total_ms}
    })
}

/// The InvokeModel (non-streaming) response body in the family's native format.
pub fn invoke_body(family: Family, model_id: &str, msg_id: &str, plan: &Plan) -> Value {
    let stop = family_stop(family, plan.stop);
    if plan.style != Style::Native {
        return styles::body(plan.style, plan, stop);
    }
    let text = plan.text();
    match family {
        Family::Claude => {
            let mut content = Vec::new();
            if let Some((pieces, sig)) = &plan.reasoning {
                content.push(
                    json!({"type": "thinking", "thinking": pieces.concat(), "signature": sig}),
                );
            }
            if !text.is_empty() {
                content.push(json!({"type": "text", "text": text}));
            }
            if let Some(t) = &plan.tool {
                let input: Value = serde_json::from_str(&t.input).unwrap_or(Value::Null);
                content
                    .push(json!({"type": "tool_use", "id": t.id, "name": t.name, "input": input}));
            }
            json!({"id": msg_id, "type": "message", "role": "assistant", "model": model_id,
                   "content": content, "stop_reason": stop, "stop_sequence": null,
                   "usage": {"input_tokens": plan.input_tokens, "output_tokens": plan.output_tokens}})
        }
        Family::Nova => json!({
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": stop,
            "usage": {"inputTokens": plan.input_tokens, "outputTokens": plan.output_tokens,
                      "totalTokens": plan.input_tokens + plan.output_tokens}
        }),
        Family::Llama => json!({"generation": text, "prompt_token_count": plan.input_tokens,
                                "generation_token_count": plan.output_tokens, "stop_reason": stop}),
        Family::Mistral => json!({"outputs": [{"text": text, "stop_reason": stop}]}),
        Family::Titan => json!({"inputTextTokenCount": plan.input_tokens,
            "results": [{"tokenCount": plan.output_tokens, "outputText": text, "completionReason": stop}]}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bedrock_relay_wire::eventstream::{decode, header_str};

    fn plan() -> Plan {
        Plan {
            reasoning: Some((vec!["Think".into(), " hard".into()], "sig1".into())),
            text: vec!["Hello".into(), " \"world\".\n\n".into()],
            tool: None,
            stop: Stop::EndTurn,
            input_tokens: 3,
            output_tokens: 5,
            prefill: None,
            continuation: false,
            phrasing: None,
            intended: None,
            stop_sequence: None,
            style: Style::Native,
            tokens_per_piece: 1,
            cache_read: 0,
        }
    }

    fn payloads(s: &Stream) -> Vec<(String, Value)> {
        s.frames
            .iter()
            .map(|f| {
                let m = decode(f).unwrap();
                let ty = header_str(&m, ":event-type").unwrap().to_owned();
                (ty, serde_json::from_slice(m.payload()).unwrap())
            })
            .collect()
    }

    #[test]
    fn converse_stream_has_padding_reasoning_then_text() {
        let s = converse_stream(&plan(), Latency::default());
        let p = payloads(&s);
        let types: Vec<&str> = p.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            types,
            [
                "messageStart",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockStop",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockStop",
                "messageStop",
                "metadata"
            ]
        );
        assert!(p
            .iter()
            .all(|(_, v)| v["p"].as_str().is_some_and(|x| PAD.starts_with(x))));
        assert_eq!(p[3].1["delta"]["reasoningContent"]["signature"], "sig1");
        assert_eq!(p[6].1["delta"]["text"], " \"world\".\n\n");
        assert_eq!(p[6].1["contentBlockIndex"], 1);
        assert_eq!(p[9].1["usage"]["totalTokens"], 8);
        assert_eq!(s.terminal, 2);
        assert_eq!(s.delta.iter().filter(|d| **d).count(), 5);
    }

    #[test]
    fn invoke_chunks_decode_to_family_events() {
        for family in [
            Family::Claude,
            Family::Nova,
            Family::Llama,
            Family::Mistral,
            Family::Titan,
        ] {
            let mut pl = plan();
            pl.reasoning = None;
            let s = invoke_stream(family, "m", "msg", &pl, Latency::default());
            let inner: Vec<Value> = payloads(&s)
                .into_iter()
                .map(|(t, v)| {
                    assert_eq!(t, "chunk");
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(v["bytes"].as_str().unwrap())
                        .unwrap();
                    serde_json::from_slice(&raw).unwrap()
                })
                .collect();
            let last = inner.last().unwrap();
            assert!(
                last.get("amazon-bedrock-invocationMetrics").is_some(),
                "{family:?}"
            );
            let text: String = inner
                .iter()
                .filter_map(|e| {
                    e.pointer("/delta/text")
                        .or(e.pointer("/contentBlockDelta/delta/text"))
                        .or(e.get("generation"))
                        .or(e.pointer("/outputs/0/text"))
                        .or(e.get("outputText"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect();
            assert_eq!(text, "Hello \"world\".\n\n", "{family:?}");
        }
    }
}
