//! Canonical, comparable forms of what an SDK client received.
//!
//! Every event becomes one line holding its type, block index and content, so two runs
//! compare byte-exactly on text, tool input, reasoning and event order. Left out (and
//! checked separately): usage and latency (a resumed stream reports the sum over attempts),
//! tool-use ids (random per attempt, as on Bedrock), Claude's message id, padding.

use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamError;
use aws_sdk_bedrockruntime::operation::invoke_model_with_response_stream::InvokeModelWithResponseStreamError;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::error::{ConverseStreamOutputError, ResponseStreamError};
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ContentBlockDelta, ContentBlockStart, ConversationRole, ConverseStreamOutput,
    Message, ReasoningContentBlockDelta, ResponseStream, SystemContentBlock, Tool,
    ToolConfiguration, ToolInputSchema, ToolSpecification,
};
use aws_sdk_bedrockruntime::Client;
use aws_smithy_types::Document;

/// What a streamed call produced: canonical events, usage, and how it ended.
#[derive(Debug, Default, Clone)]
pub struct Received {
    pub events: Vec<String>,
    /// Converse `metadata.usage.outputTokens` (or the invoke stream's total), if reported.
    pub output_tokens: Option<i64>,
    /// Converse `metadata.metrics.latencyMs`, if reported.
    pub latency_ms: Option<i64>,
    /// How it ended: `None` = cleanly; `Some(err)` = the error the SDK raised.
    pub error: Option<String>,
    /// The error was a modelled exception (not a transport failure).
    pub modelled_error: bool,
}

impl Received {
    /// Events carrying non-empty text (any format).
    pub fn text_events(&self) -> usize {
        self.events
            .iter()
            .filter(|e| {
                e.split_once(" text=").is_some_and(|(_, t)| !t.is_empty())
                    || serde_json::from_str::<serde_json::Value>(e).is_ok_and(|v| {
                        [
                            "/generation",
                            "/outputText",
                            "/outputs/0/text",
                            "/completion",
                            "/choices/0/message/content",
                            "/delta/text",
                            "/contentBlockDelta/delta/text",
                        ]
                        .iter()
                        .any(|p| {
                            v.pointer(p)
                                .and_then(|t| t.as_str())
                                .is_some_and(|t| !t.is_empty())
                        })
                    })
            })
            .count()
    }

    pub fn text(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| e.split_once(" text=").map(|(_, t)| t.to_owned()))
            .collect()
    }
}

#[derive(Debug, Clone, Default)]
pub struct ConverseReq {
    pub model: String,
    pub prompt: String,
    pub system: Option<String>,
    pub tools: bool,
    pub reasoning: bool,
    pub temperature: Option<f32>,
    /// `inferenceConfig.maxTokens`.
    pub max_tokens: Option<i32>,
    /// `inferenceConfig.stopSequences`.
    pub stop_sequences: Vec<String>,
}

impl ConverseReq {
    pub fn new(model: &str, prompt: impl Into<String>) -> Self {
        ConverseReq {
            model: model.into(),
            prompt: prompt.into(),
            ..Default::default()
        }
    }
}

pub async fn converse_stream(client: &Client, req: &ConverseReq) -> Received {
    let mut call = client.converse_stream().model_id(&req.model).messages(
        Message::builder()
            .role(ConversationRole::User)
            .content(ContentBlock::Text(req.prompt.clone()))
            .build()
            .unwrap(),
    );
    if let Some(s) = &req.system {
        call = call.system(SystemContentBlock::Text(s.clone()));
    }
    if req.tools {
        call = call.tool_config(tool_config());
    }
    if req.temperature.is_some() || req.max_tokens.is_some() || !req.stop_sequences.is_empty() {
        call = call.inference_config(
            aws_sdk_bedrockruntime::types::InferenceConfiguration::builder()
                .set_temperature(req.temperature)
                .set_max_tokens(req.max_tokens)
                .set_stop_sequences(
                    (!req.stop_sequences.is_empty()).then(|| req.stop_sequences.clone()),
                )
                .build(),
        );
    }
    if req.reasoning {
        call = call.additional_model_request_fields(Document::from(
            std::collections::HashMap::from([(
                "thinking".to_string(),
                Document::from(std::collections::HashMap::from([
                    ("type".to_string(), Document::from("enabled")),
                    ("budget_tokens".to_string(), Document::from(1024u64)),
                ])),
            )]),
        ));
    }
    let mut out = Received::default();
    let mut stream = match call.send().await {
        Ok(o) => o.stream,
        Err(e) => {
            out.modelled_error =
                matches!(&e, aws_sdk_bedrockruntime::error::SdkError::ServiceError(_));
            out.error = Some(format!("{:?}", e.into_service_error()));
            return out;
        }
    };
    loop {
        match stream.recv().await {
            Ok(Some(ev)) => converse_event(&mut out, ev),
            Ok(None) => break,
            Err(e) => {
                let service = e.as_service_error().map(converse_modelled).unwrap_or(false);
                out.modelled_error = service;
                out.error = Some(format!("{e:?}"));
                break;
            }
        }
    }
    out
}

#[allow(deprecated)] // `Unhandled` is exactly what we need to tell apart here.
fn converse_modelled(e: &ConverseStreamOutputError) -> bool {
    !matches!(e, ConverseStreamOutputError::Unhandled(_))
}

fn converse_event(out: &mut Received, ev: ConverseStreamOutput) {
    let line = match ev {
        ConverseStreamOutput::MessageStart(m) => format!("messageStart role={}", m.role.as_str()),
        ConverseStreamOutput::ContentBlockStart(s) => match s.start {
            Some(ContentBlockStart::ToolUse(t)) => {
                assert!(!t.tool_use_id.is_empty(), "tool use id present");
                format!("start idx={} tool={}", s.content_block_index, t.name)
            }
            other => format!("start idx={} {other:?}", s.content_block_index),
        },
        ConverseStreamOutput::ContentBlockDelta(d) => {
            let idx = d.content_block_index;
            match d.delta {
                Some(ContentBlockDelta::Text(t)) => format!("delta idx={idx} text={t}"),
                Some(ContentBlockDelta::ToolUse(t)) => format!("delta idx={idx} input={}", t.input),
                Some(ContentBlockDelta::ReasoningContent(ReasoningContentBlockDelta::Text(t))) => {
                    format!("delta idx={idx} reasoning={t}")
                }
                Some(ContentBlockDelta::ReasoningContent(
                    ReasoningContentBlockDelta::Signature(s),
                )) => {
                    format!("delta idx={idx} signature={s}")
                }
                other => format!("delta idx={idx} {other:?}"),
            }
        }
        ConverseStreamOutput::ContentBlockStop(s) => format!("stop idx={}", s.content_block_index),
        ConverseStreamOutput::MessageStop(s) => {
            format!("messageStop reason={}", s.stop_reason.as_str())
        }
        ConverseStreamOutput::Metadata(m) => {
            out.output_tokens = m.usage.map(|u| u.output_tokens as i64);
            out.latency_ms = m.metrics.map(|x| x.latency_ms);
            "metadata".to_string()
        }
        other => format!("{other:?}"),
    };
    out.events.push(line);
}

pub fn tool_config() -> ToolConfiguration {
    let schema = Document::from(std::collections::HashMap::from([(
        "type".to_string(),
        Document::from("object"),
    )]));
    ToolConfiguration::builder()
        .tools(Tool::ToolSpec(
            ToolSpecification::builder()
                .name("get_weather")
                .description("Weather for a city")
                .input_schema(ToolInputSchema::Json(schema))
                .build()
                .unwrap(),
        ))
        .build()
        .unwrap()
}

/// InvokeModelWithResponseStream: each chunk's model JSON, canonicalised.
#[allow(deprecated)] // `Unhandled` is exactly what we need to tell apart here.
pub async fn invoke_stream(client: &Client, model: &str, body: &serde_json::Value) -> Received {
    let call = client
        .invoke_model_with_response_stream()
        .model_id(model)
        .content_type("application/json")
        .body(Blob::new(serde_json::to_vec(body).unwrap()));
    let mut out = Received::default();
    let mut stream = match call.send().await {
        Ok(o) => o.body,
        Err(e) => {
            out.modelled_error = !matches!(
                e.as_service_error(),
                Some(InvokeModelWithResponseStreamError::Unhandled(_)) | None
            );
            out.error = Some(format!("{:?}", e.into_service_error()));
            return out;
        }
    };
    loop {
        match stream.recv().await {
            Ok(Some(ResponseStream::Chunk(part))) => {
                let bytes = part.bytes.map(|b| b.into_inner()).unwrap_or_default();
                let mut v: serde_json::Value =
                    serde_json::from_slice(&bytes).expect("chunk bytes are JSON");
                if let Some(n) = invocation_output_tokens(&v) {
                    out.output_tokens = Some(n);
                }
                scrub(&mut v);
                out.events.push(v.to_string());
            }
            Ok(Some(other)) => out.events.push(format!("{other:?}")),
            Ok(None) => break,
            Err(e) => {
                out.modelled_error = e
                    .as_service_error()
                    .is_some_and(|s| !matches!(s, ResponseStreamError::Unhandled(_)));
                out.error = Some(format!("{e:?}"));
                break;
            }
        }
    }
    out
}

fn invocation_output_tokens(v: &serde_json::Value) -> Option<i64> {
    v.get("amazon-bedrock-invocationMetrics")?
        .get("outputTokenCount")?
        .as_i64()
}

/// Drop what legitimately differs between a resumed and an uninterrupted run.
fn scrub(v: &mut serde_json::Value) {
    const VOLATILE: [&str; 9] = [
        "usage",
        "amazon-bedrock-invocationMetrics",
        "prompt_token_count",
        "generation_token_count",
        "totalOutputTextTokenCount",
        "inputTextTokenCount",
        "metrics",
        "p",
        "id",
    ];
    match v {
        serde_json::Value::Object(map) => {
            for k in VOLATILE {
                map.remove(k);
            }
            map.values_mut().for_each(scrub);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub),
        _ => {}
    }
}

/// Native invoke bodies for each family, ending in a user turn.
pub fn invoke_body(model: &str, prompt: &str) -> serde_json::Value {
    use serde_json::json;
    if model.contains("anthropic.") {
        json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 4096,
               "messages": [{"role": "user", "content": prompt}]})
    } else if model.contains("amazon.nova") {
        json!({"messages": [{"role": "user", "content": [{"text": prompt}]}], "inferenceConfig": {"maxTokens": 4096}})
    } else if model.contains("meta.llama") {
        json!({"prompt": format!("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"), "max_gen_len": 4096})
    } else if model.contains("mistral.") {
        json!({"prompt": format!("<s>[INST] {prompt} [/INST]"), "max_tokens": 4096})
    } else {
        json!({"inputText": format!("User: {prompt}\nBot:"), "textGenerationConfig": {"maxTokenCount": 4096}})
    }
}

/// Non-streaming Converse: the text of the answer.
pub async fn converse_text(client: &Client, model: &str, prompt: &str) -> Result<String, String> {
    let out = client
        .converse()
        .model_id(model)
        .messages(
            Message::builder()
                .role(ConversationRole::User)
                .content(ContentBlock::Text(prompt.into()))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .map_err(|e| format!("{:?}", e.into_service_error()))?;
    let msg = out
        .output
        .and_then(|o| o.as_message().ok().cloned())
        .expect("a message");
    Ok(msg
        .content
        .iter()
        .filter_map(|c| c.as_text().ok().cloned())
        .collect())
}

#[allow(unused)]
fn _unused(_: ConverseStreamError) {}
