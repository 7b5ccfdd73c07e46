//! Request bodies of every supported shape, normalised into one [`Prompt`].
//!
//! Owns the parsing of Converse bodies and of the native InvokeModel bodies of the five
//! model families (Claude, Nova, Llama, Mistral, Titan), including where each family puts a
//! prefill: a final assistant message, or the text after the family's assistant marker.

use super::SimError;
use serde_json::Value;

/// The InvokeModel body families the simulator plays, by model id (plain id, inference
/// profile such as `us.anthropic...`, or ARN); other models have no native body here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Claude,
    Nova,
    Llama,
    Mistral,
    Titan,
}

impl Family {
    pub fn of(model_id: &str) -> Option<Family> {
        [
            ("anthropic.", Family::Claude),
            ("amazon.nova", Family::Nova),
            ("meta.llama", Family::Llama),
            ("mistral.", Family::Mistral),
            ("amazon.titan-text", Family::Titan),
        ]
        .into_iter()
        .find_map(|(provider, family)| model_id.contains(provider).then_some(family))
    }
}

/// One conversation turn, text only (tool results and images reduced to a marker flag).
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// `"user"` or `"assistant"`.
    pub role: String,
    pub text: String,
    /// The turn carries a tool result (then the simulated model answers without a tool call).
    pub tool_result: bool,
}

/// The first tool of a request, enough to produce a deterministic call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    /// `(property name, JSON type)` from the input schema, in schema order.
    pub properties: Vec<(String, String)>,
}

/// A request body reduced to what generation needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompt {
    pub system: String,
    /// Every turn as sent, including a final assistant prefill.
    pub turns: Vec<Turn>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub reasoning: bool,
    /// Claude's extended thinking was enabled (`thinking.type = "enabled"`), with this
    /// `budget_tokens` if given (checked by `plan::check_thinking`).
    pub thinking_enabled: bool,
    pub thinking_budget: Option<u64>,
    pub tool: Option<Tool>,
    /// Stop sequences of the request (checked against the generated text only).
    pub stop_sequences: Vec<String>,
    /// Which of the family's APIs the body used (see `styles`).
    pub style: super::styles::Style,
}

impl Prompt {
    /// Text of the first user turn (part of the conversation identity).
    pub fn first_user_text(&self) -> &str {
        self.turns
            .iter()
            .find(|t| t.role == "user")
            .map(|t| t.text.as_str())
            .unwrap_or("")
    }

    /// All text of the request: system and every turn.
    pub fn all_text(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.system.as_str()).chain(self.turns.iter().map(|t| t.text.as_str()))
    }
}

fn bad(msg: impl Into<String>) -> SimError {
    SimError::Validation(msg.into())
}

fn as_u32(v: Option<&Value>) -> Option<u32> {
    v.and_then(Value::as_u64)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// Text of a content value: a string, or a list of blocks whose `text` fields are joined.
fn content_text(content: &Value) -> (String, bool) {
    match content {
        Value::String(s) => (s.clone(), false),
        Value::Array(blocks) => {
            let mut text = String::new();
            let mut tool_result = false;
            for b in blocks {
                if let Some(t) = b.get("text").and_then(Value::as_str) {
                    text.push_str(t);
                }
                if b.get("toolResult").is_some()
                    || b.get("type").and_then(Value::as_str) == Some("tool_result")
                {
                    tool_result = true;
                }
            }
            (text, tool_result)
        }
        _ => (String::new(), false),
    }
}

fn messages(body: &Value) -> Result<Vec<Turn>, SimError> {
    let list = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("Malformed input request: required key [messages] not found"))?;
    if list.is_empty() {
        return Err(bad("A conversation must start with a user message."));
    }
    list.iter()
        .map(|m| {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("");
            if role != "user" && role != "assistant" {
                return Err(bad(format!("Invalid role: {role}")));
            }
            let (text, tool_result) = content_text(m.get("content").unwrap_or(&Value::Null));
            Ok(Turn {
                role: role.to_owned(),
                text,
                tool_result,
            })
        })
        .collect()
}

fn system_text(v: Option<&Value>) -> String {
    v.map(|s| content_text(s).0).unwrap_or_default()
}

pub(super) fn first_tool(
    tools: Option<&Value>,
    spec_key: Option<&str>,
    schema_path: &[&str],
) -> Option<Tool> {
    let first = tools?.as_array()?.first()?;
    let spec = match spec_key {
        Some(k) => first.get(k)?,
        None => first,
    };
    let name = spec.get("name")?.as_str()?.to_owned();
    let mut schema = spec;
    for key in schema_path {
        schema = schema.get(key)?;
    }
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .map(|(k, v)| {
                    let ty = v.get("type").and_then(Value::as_str).unwrap_or("string");
                    (k.clone(), ty.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Tool { name, properties })
}

/// A Converse / ConverseStream body.
pub fn parse_converse(body: &Value) -> Result<Prompt, SimError> {
    check_reasoning_signatures(body)?;
    let cfg = body.get("inferenceConfig");
    let extra = body.get("additionalModelRequestFields");
    let reasoning = extra.is_some_and(|e| {
        e.pointer("/thinking/type").and_then(Value::as_str) == Some("enabled")
            || e.get("reasoningConfig").is_some()
    });
    let thinking = extra.and_then(|e| e.get("thinking"));
    Ok(Prompt {
        system: system_text(body.get("system")),
        turns: messages(body)?,
        max_tokens: as_u32(cfg.and_then(|c| c.get("maxTokens"))),
        thinking_enabled: thinking_enabled(thinking),
        thinking_budget: thinking_budget(thinking),
        temperature: cfg
            .and_then(|c| c.get("temperature"))
            .and_then(Value::as_f64),
        reasoning,
        tool: first_tool(
            body.pointer("/toolConfig/tools"),
            Some("toolSpec"),
            &["inputSchema", "json"],
        ),
        stop_sequences: super::styles::stop_sequences(body),
        ..Prompt::default()
    })
}

fn thinking_enabled(thinking: Option<&Value>) -> bool {
    thinking.and_then(|t| t.get("type")).and_then(Value::as_str) == Some("enabled")
}

fn thinking_budget(thinking: Option<&Value>) -> Option<u64> {
    thinking
        .filter(|t| thinking_enabled(Some(t)))
        .and_then(|t| t.get("budget_tokens"))
        .and_then(Value::as_u64)
}

/// Every reasoning block sent back (`reasoningContent.reasoningText`) must carry the
/// signature the model gave its text.
fn check_reasoning_signatures(body: &Value) -> Result<(), SimError> {
    let messages = body.get("messages").and_then(Value::as_array);
    for (m, msg) in messages.into_iter().flatten().enumerate() {
        let blocks = msg.get("content").and_then(Value::as_array);
        for (b, block) in blocks.into_iter().flatten().enumerate() {
            let Some(r) = block.pointer("/reasoningContent/reasoningText") else {
                continue;
            };
            let text = r.get("text").and_then(Value::as_str).unwrap_or("");
            let signature = r.get("signature").and_then(Value::as_str).unwrap_or("");
            if signature != super::gen::reasoning_signature(text) {
                return Err(SimError::Validation(format!(
                    "messages.{m}.content.{b}: Invalid `signature` in `reasoningContent` block"
                )));
            }
        }
    }
    Ok(())
}

/// An InvokeModel body in the family's native format.
pub fn parse_invoke(family: Family, body: &Value) -> Result<Prompt, SimError> {
    let stop_sequences = super::styles::stop_sequences(body);
    let other_style = match family {
        Family::Claude if body.get("messages").is_none() => super::styles::parse(body, true),
        Family::Mistral if body.get("messages").is_some() => super::styles::parse(body, false),
        _ => None,
    };
    if let Some((style, prompt)) = other_style {
        return Ok(Prompt { style, ..prompt });
    }
    let mut prompt = parse_native(family, body)?;
    prompt.stop_sequences = stop_sequences;
    // Bedrock's documented defaults when the body sets no limit.
    if matches!(family, Family::Llama | Family::Titan) {
        prompt.max_tokens = prompt.max_tokens.or(Some(512));
    }
    Ok(prompt)
}

fn parse_native(family: Family, body: &Value) -> Result<Prompt, SimError> {
    match family {
        Family::Claude => Ok(Prompt {
            system: system_text(body.get("system")),
            turns: messages(body)?,
            max_tokens: as_u32(body.get("max_tokens")),
            temperature: body.get("temperature").and_then(Value::as_f64),
            reasoning: thinking_enabled(body.get("thinking")),
            thinking_enabled: thinking_enabled(body.get("thinking")),
            thinking_budget: thinking_budget(body.get("thinking")),
            tool: first_tool(body.get("tools"), None, &["input_schema"]),
            ..Prompt::default()
        }),
        Family::Nova => Ok(Prompt {
            system: system_text(body.get("system")),
            turns: messages(body)?,
            max_tokens: as_u32(
                body.pointer("/inferenceConfig/max_new_tokens")
                    .or(body.pointer("/inferenceConfig/maxTokens")),
            ),
            temperature: body
                .pointer("/inferenceConfig/temperature")
                .and_then(Value::as_f64),
            ..Prompt::default()
        }),
        Family::Llama => text_prompt(
            body,
            "prompt",
            as_u32(body.get("max_gen_len")),
            body.get("temperature"),
            parse_llama,
        ),
        Family::Mistral => text_prompt(
            body,
            "prompt",
            as_u32(body.get("max_tokens")),
            body.get("temperature"),
            parse_mistral,
        ),
        Family::Titan => text_prompt(
            body,
            "inputText",
            as_u32(body.pointer("/textGenerationConfig/maxTokenCount")),
            body.pointer("/textGenerationConfig/temperature"),
            parse_titan,
        ),
    }
}

fn text_prompt(
    body: &Value,
    key: &str,
    max_tokens: Option<u32>,
    temperature: Option<&Value>,
    parse: fn(&str) -> (String, Vec<Turn>),
) -> Result<Prompt, SimError> {
    let prompt = body.get(key).and_then(Value::as_str).ok_or_else(|| {
        bad(format!(
            "Malformed input request: required key [{key}] not found"
        ))
    })?;
    let (system, mut turns) = parse(prompt);
    // Whitespace after the assistant marker is formatting, not a prefill.
    if turns
        .last()
        .is_some_and(|t| t.role == "assistant" && t.text.trim().is_empty())
    {
        turns.pop();
    }
    if turns.is_empty() {
        turns.push(turn("user", prompt));
    }
    Ok(Prompt {
        system,
        turns,
        max_tokens,
        temperature: temperature.and_then(Value::as_f64),
        ..Prompt::default()
    })
}

fn turn(role: &str, text: &str) -> Turn {
    Turn {
        role: role.to_owned(),
        text: text.to_owned(),
        tool_result: false,
    }
}

/// `<|start_header_id|>ROLE<|end_header_id|>\n\nTEXT<|eot_id|>` segments; a final assistant
/// segment without `<|eot_id|>` is the prefill.
fn parse_llama(prompt: &str) -> (String, Vec<Turn>) {
    let mut system = String::new();
    let mut turns = Vec::new();
    for seg in prompt.split("<|start_header_id|>").skip(1) {
        let Some((role, rest)) = seg.split_once("<|end_header_id|>") else {
            continue;
        };
        let rest = rest.strip_prefix("\n\n").unwrap_or(rest);
        let text = rest.split("<|eot_id|>").next().unwrap_or("");
        match role {
            "system" => system.push_str(text),
            "assistant" => turns.push(turn("assistant", text)),
            _ => turns.push(turn("user", text)),
        }
    }
    (system, turns)
}

/// `<s>[INST] USER [/INST] ASSISTANT</s>[INST] ...`; text after the final `[/INST]` is the
/// prefill.
fn parse_mistral(prompt: &str) -> (String, Vec<Turn>) {
    let mut turns = Vec::new();
    for seg in prompt.split("[INST]").skip(1) {
        let (user, answer) = seg.split_once("[/INST]").unwrap_or((seg, ""));
        turns.push(turn("user", user.trim()));
        let answer = answer.split("</s>").next().unwrap_or("");
        turns.push(turn("assistant", answer));
    }
    (String::new(), turns)
}

/// `User: ...\nBot: ...` lines; text after the final `Bot:` is the prefill.
fn parse_titan(prompt: &str) -> (String, Vec<Turn>) {
    let mut turns = Vec::new();
    for (i, seg) in prompt.split("Bot:").enumerate() {
        if i > 0 {
            // Everything up to the next "User:" belongs to the bot.
            let (bot, user) = seg.split_once("User:").unwrap_or((seg, ""));
            turns.push(turn("assistant", bot));
            if !user.is_empty() {
                turns.push(turn("user", user.trim()));
            }
        } else {
            let user = seg.split_once("User:").map(|(_, u)| u).unwrap_or(seg);
            turns.push(turn("user", user.trim()));
        }
    }
    (String::new(), turns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn families_by_model_id() {
        assert_eq!(
            Family::of("arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude-x"),
            Some(Family::Claude)
        );
        assert_eq!(Family::of("amazon.nova-lite-v1:0"), Some(Family::Nova));
        assert_eq!(Family::of("meta.llama3-8b"), Some(Family::Llama));
        assert_eq!(Family::of("mistral.mistral-7b"), Some(Family::Mistral));
        assert_eq!(
            Family::of("amazon.titan-text-express-v1"),
            Some(Family::Titan)
        );
        assert_eq!(Family::of("cohere.command"), None);
    }

    #[test]
    fn converse_prefill_tools_and_reasoning() {
        let body = json!({
            "messages": [
                {"role": "user", "content": [{"text": "hi"}]},
                {"role": "assistant", "content": [{"text": "Hel"}]}
            ],
            "system": [{"text": "be brief"}],
            "inferenceConfig": {"maxTokens": 12, "temperature": 0.5},
            "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather",
                "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}}}}]},
            "additionalModelRequestFields": {"reasoningConfig": {"type": "enabled"}}
        });
        let p = parse_converse(&body).unwrap();
        assert_eq!(p.system, "be brief");
        assert_eq!(p.turns.len(), 2);
        assert_eq!(p.turns[1].text, "Hel");
        assert_eq!(p.max_tokens, Some(12));
        assert!(p.reasoning);
        let tool = p.tool.unwrap();
        assert_eq!(tool.name, "get_weather");
        assert_eq!(tool.properties, vec![("city".into(), "string".into())]);
        assert!(parse_converse(&json!({"messages": []})).is_err());
    }

    #[test]
    fn text_prompt_families_find_their_prefill() {
        let llama = json!({"prompt": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nThe river"});
        let p = parse_invoke(Family::Llama, &llama).unwrap();
        assert_eq!(p.turns.len(), 2);
        assert_eq!(p.turns[0].text, "hello");
        assert_eq!(p.turns[1].text, "The river");
        let mistral = json!({"prompt": "<s>[INST] hello [/INST]", "max_tokens": 5});
        let p = parse_invoke(Family::Mistral, &mistral).unwrap();
        assert_eq!(
            p.turns.len(),
            1,
            "empty answer after the marker is no prefill"
        );
        assert_eq!(p.max_tokens, Some(5));
        let titan = json!({"inputText": "User: hello\nBot: The"});
        let p = parse_invoke(Family::Titan, &titan).unwrap();
        assert_eq!(p.turns[0].text, "hello");
        assert_eq!(p.turns[1].text, " The");
    }
}
