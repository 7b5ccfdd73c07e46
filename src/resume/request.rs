//! Continuation request bodies: the original request plus the delivered text as an assistant
//! prefill (or, for instructed continuation, plus a user turn asking to continue), in each
//! format's own shape. Everything else in the original body is kept as sent.

use super::{Family, StreamFormat};
use serde_json::{json, Value};

/// Why a continuation body cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("request body is not a JSON object")]
    NotJson,
    #[error("request body has no `{0}`")]
    Missing(&'static str),
    #[error("unknown invoke format")]
    UnknownFormat,
}

/// Which continuation to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn<'a> {
    /// The delivered text as the final assistant turn.
    Prefill,
    /// Assistant turn with the delivered text, then a user turn with this instruction
    /// (`super::instruction`).
    Instructed(&'a str),
}

/// Parse a request body as a JSON object.
pub(crate) fn parse(body: &[u8]) -> Result<Value, BodyError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(BodyError::NotJson),
    }
}

/// Extended thinking / reasoning is requested (prefill is then refused by Bedrock, and a
/// continuation would open a new reasoning block).
pub(crate) fn wants_reasoning(body: &Value) -> bool {
    [
        "/thinking",
        "/additionalModelRequestFields/thinking",
        "/additionalModelRequestFields/reasoningConfig",
        "/additionalModelRequestFields/reasoning_config",
        "/reasoningConfig",
    ]
    .iter()
    .filter_map(|p| body.pointer(p))
    .any(|v| {
        let kind = v.get("type").and_then(Value::as_str);
        !v.is_null() && kind != Some("disabled") && v.get("enabled") != Some(&json!(false))
    })
}

/// Claude's smallest thinking budget.
pub(crate) const MIN_THINKING_BUDGET: u64 = 1024;

/// Keep a continuation's extended thinking valid under its output limit `cap`: Claude needs
/// `max_tokens` above `thinking.budget_tokens` and a budget of at least 1024. A budget at or
/// above the cap is lowered to half the cap when that is still 1024 or more, else thinking is
/// turned off for the continuation (its reasoning is dropped at the seam anyway).
pub(crate) fn fit_thinking(body: &mut Value, cap: u64) {
    for at in ["/thinking", "/additionalModelRequestFields/thinking"] {
        let Some(thinking) = body.pointer_mut(at) else {
            continue;
        };
        let Some(budget) = thinking.get("budget_tokens").and_then(Value::as_u64) else {
            continue;
        };
        if budget < cap {
            continue;
        }
        if cap / 2 >= MIN_THINKING_BUDGET {
            thinking["budget_tokens"] = json!(cap / 2);
        } else {
            *thinking = json!({"type": "disabled"});
        }
    }
}

/// The continuation body for `format`. `delivered` is already trimmed and non-empty.
pub(crate) fn build(
    format: StreamFormat,
    mut body: Value,
    delivered: &str,
    turn: Turn<'_>,
) -> Result<Value, BodyError> {
    let ask = match turn {
        Turn::Instructed(ask) => ask,
        Turn::Prefill => "",
    };
    match format {
        StreamFormat::Converse | StreamFormat::Invoke(Family::Nova) => {
            messages(&mut body, delivered, turn, false)?
        }
        StreamFormat::Invoke(Family::Claude) if body.get("messages").is_none() => {
            // Legacy text completion: `\n\nHuman: ...\n\nAssistant:` prompts.
            let add = instructed(delivered, turn, &format!("\n\nHuman: {ask}\n\nAssistant:"));
            append(&mut body, "prompt", &add)?
        }
        StreamFormat::Invoke(Family::Claude) | StreamFormat::Messages => {
            messages(&mut body, delivered, turn, true)?
        }
        StreamFormat::Invoke(Family::Llama) => {
            let tail = "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n";
            let next = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
            let add = instructed(delivered, turn, &format!("{tail}{ask}{next}"));
            append(&mut body, "prompt", &add)?
        }
        StreamFormat::Invoke(Family::Mistral) => {
            let add = instructed(delivered, turn, &format!("</s>[INST] {ask} [/INST]"));
            append(&mut body, "prompt", &add)?
        }
        StreamFormat::Invoke(Family::Titan) => {
            let add = instructed(delivered, turn, &format!("\nUser: {ask}\nBot:"));
            append(&mut body, "inputText", &add)?
        }
        StreamFormat::Invoke(_) => return Err(BodyError::UnknownFormat),
    }
    Ok(body)
}

fn instructed(delivered: &str, turn: Turn<'_>, tail: &str) -> String {
    match turn {
        Turn::Prefill => delivered.to_owned(),
        Turn::Instructed(_) => format!("{delivered}{tail}"),
    }
}

fn append(body: &mut Value, key: &'static str, add: &str) -> Result<(), BodyError> {
    let slot = body.get_mut(key).ok_or(BodyError::Missing(key))?;
    let old = slot.as_str().ok_or(BodyError::Missing(key))?;
    *slot = json!(format!("{old}{add}"));
    Ok(())
}

/// Messages API (Converse, Nova, Claude): extend a final assistant prefill or add one.
fn messages(
    body: &mut Value,
    delivered: &str,
    turn: Turn<'_>,
    claude: bool,
) -> Result<(), BodyError> {
    let msgs = body
        .get_mut("messages")
        .and_then(Value::as_array_mut)
        .ok_or(BodyError::Missing("messages"))?;
    let text_block = |t: &str| {
        if claude {
            json!({"type": "text", "text": t})
        } else {
            json!({"text": t})
        }
    };
    let last_is_assistant = msgs
        .last()
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        == Some("assistant");
    if last_is_assistant {
        // The original already ends with a prefill P: the delivered text continues P.
        let last = msgs.last_mut().ok_or(BodyError::Missing("messages"))?;
        extend_assistant(last, delivered, &text_block);
    } else {
        msgs.push(json!({"role": "assistant", "content": [text_block(delivered)]}));
    }
    if let Turn::Instructed(ask) = turn {
        msgs.push(json!({"role": "user", "content": [text_block(ask)]}));
    }
    Ok(())
}

/// Extend a final assistant turn with `delivered` (a string content, or its last text block).
pub(crate) fn extend_assistant(
    msg: &mut Value,
    delivered: &str,
    text_block: &dyn Fn(&str) -> Value,
) {
    match msg.get_mut("content") {
        Some(Value::String(s)) => s.push_str(delivered),
        Some(Value::Array(blocks)) => {
            let last_text = blocks
                .last_mut()
                .and_then(|b| b.get_mut("text"))
                .filter(|t| t.is_string());
            match last_text {
                Some(t) => {
                    let joined = format!("{}{delivered}", t.as_str().unwrap_or_default());
                    *t = json!(joined);
                }
                None => blocks.push(text_block(delivered)),
            }
        }
        _ => msg["content"] = json!([text_block(delivered)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(extra: Value) -> Value {
        let mut v = json!({"messages":[{"role":"user","content":[{"text":"Hi"}]}],"inferenceConfig":{"maxTokens":50}});
        if let Value::Object(m) = extra {
            for (k, x) in m {
                v[k] = x;
            }
        }
        v
    }

    #[test]
    fn converse_prefill_appends_an_assistant_turn_and_keeps_the_rest() {
        let b = build(
            StreamFormat::Converse,
            conv(json!({})),
            "Hello",
            Turn::Prefill,
        )
        .unwrap();
        assert_eq!(
            b["messages"][1],
            json!({"role":"assistant","content":[{"text":"Hello"}]})
        );
        assert_eq!(b["messages"].as_array().unwrap().len(), 2);
        assert_eq!(b["inferenceConfig"]["maxTokens"], 50);
    }

    #[test]
    fn existing_prefill_is_extended_not_duplicated() {
        let mut body = conv(json!({}));
        body["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({"role":"assistant","content":[{"text":"Sure:"}]}));
        let b = build(StreamFormat::Converse, body, " one", Turn::Prefill).unwrap();
        assert_eq!(b["messages"][1]["content"], json!([{"text":"Sure: one"}]));
        let claude = json!({"anthropic_version":"bedrock-2023-05-31","max_tokens":9,
            "messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Sure:"}]});
        let b = build(
            StreamFormat::Invoke(Family::Claude),
            claude,
            " one",
            Turn::Prefill,
        )
        .unwrap();
        assert_eq!(b["messages"][1]["content"], json!("Sure: one"));
    }

    #[test]
    fn instructed_adds_the_assistant_text_then_the_user_instruction() {
        let claude = json!({"messages":[{"role":"user","content":"Hi"}]});
        let b = build(
            StreamFormat::Invoke(Family::Claude),
            claude,
            "Part",
            Turn::Instructed("Please go on."),
        )
        .unwrap();
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[1],
            json!({"role":"assistant","content":[{"type":"text","text":"Part"}]})
        );
        assert_eq!(m[2]["role"], "user");
        assert_eq!(m[2]["content"][0]["text"], "Please go on.");
    }

    #[test]
    fn prompt_families_append_to_their_prompt() {
        let llama = json!({"prompt":"<|begin_of_text|>x<|start_header_id|>assistant<|end_header_id|>\n\n","max_gen_len":5});
        let b = build(
            StreamFormat::Invoke(Family::Llama),
            llama,
            "Yes",
            Turn::Prefill,
        )
        .unwrap();
        assert!(b["prompt"]
            .as_str()
            .unwrap()
            .ends_with("<|end_header_id|>\n\nYes"));
        let titan = json!({"inputText":"User: hi\nBot:"});
        let b = build(
            StreamFormat::Invoke(Family::Titan),
            titan,
            " Hel",
            Turn::Prefill,
        )
        .unwrap();
        assert_eq!(b["inputText"], "User: hi\nBot: Hel");
        let mistral = json!({"prompt":"<s>[INST] hi [/INST]"});
        let b = build(
            StreamFormat::Invoke(Family::Mistral),
            mistral,
            "Ok",
            Turn::Instructed("Please go on."),
        )
        .unwrap();
        assert!(b["prompt"]
            .as_str()
            .unwrap()
            .starts_with("<s>[INST] hi [/INST]Ok</s>[INST] "));
        assert_eq!(
            build(
                StreamFormat::Invoke(Family::Titan),
                json!({}),
                "x",
                Turn::Prefill
            ),
            Err(BodyError::Missing("inputText"))
        );
    }

    #[test]
    fn detects_reasoning_requests() {
        assert!(wants_reasoning(
            &json!({"thinking":{"type":"enabled","budget_tokens":1024}})
        ));
        assert!(wants_reasoning(
            &json!({"additionalModelRequestFields":{"reasoningConfig":{"type":"enabled"}}})
        ));
        assert!(!wants_reasoning(&json!({"thinking":{"type":"disabled"}})));
        assert!(!wants_reasoning(&conv(json!({}))));
    }
}
