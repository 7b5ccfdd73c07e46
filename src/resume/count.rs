//! Bedrock `CountTokens` requests for what a client already has (pure: no I/O).
//!
//! The output tokens of the delivered text are the difference of two counts: the
//! conversation WITH the delivered text appended as an assistant turn, and WITHOUT it
//! ([`count_bodies`], [`output_tokens`]). Both go to `POST /model/{id}/count-tokens` with the
//! bare foundation-model id ([`count_model_id`]): Bedrock counts only for those, never for an
//! inference-profile id, an ARN or an Amazon Nova model.
//!
//! The assistant turn is added as a continuation's would be (an existing final assistant
//! prefill is extended, not duplicated), with the delivered text's trailing whitespace left
//! out (Bedrock refuses a final assistant turn that ends with whitespace); [`output_tokens`]
//! adds one token for it.

use super::{Family, StreamFormat};
use serde_json::{json, Map, Value};

/// `anthropic_version` of an InvokeModel body made from an Anthropic Messages API body.
const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// Cross-region (system-defined) inference profile prefixes: `us.anthropic.claude-…`.
const PROFILE_PREFIXES: [&str; 10] = [
    "us", "us-gov", "eu", "apac", "ap", "jp", "au", "ca", "global", "sa",
];

/// The CountTokens request bodies `(with, without)` for the conversation of `original_body`
/// with `delivered` appended as an assistant turn, and without it.
///
/// Converse: the `converse` input form with the request's `messages` and `system`. Claude
/// messages invoke bodies (and Anthropic Messages API bodies, read by the SSE path in the same
/// core format): the `invokeModel` form, the body as a JSON string, made a valid InvokeModel
/// body (no `model` or `stream`, an `anthropic_version`). `None` for anything else (other
/// invoke families, Claude text completions, a body without `messages`, nothing to count).
pub fn count_bodies(
    format: StreamFormat,
    original_body: &[u8],
    delivered: &str,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let delivered = delivered.trim_end();
    if delivered.is_empty() {
        return None;
    }
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(original_body) else {
        return None;
    };
    let messages = body.get("messages")?.as_array()?;
    if messages.is_empty() {
        return None;
    }
    let mut extended = messages.clone();
    match format {
        StreamFormat::Converse => {
            append_assistant(&mut extended, delivered, false);
            let converse = |msgs: Vec<Value>| {
                let mut c = Map::new();
                c.insert("messages".into(), Value::Array(msgs));
                if let Some(system) = body.get("system") {
                    c.insert("system".into(), system.clone());
                }
                json!({"input": {"converse": c}})
            };
            Some((
                converse(extended).to_string().into_bytes(),
                converse(messages.clone()).to_string().into_bytes(),
            ))
        }
        StreamFormat::Invoke(Family::Claude) | StreamFormat::Messages => {
            append_assistant(&mut extended, delivered, true);
            let mut invoke = body.clone();
            invoke.remove("model");
            invoke.remove("stream");
            invoke
                .entry("anthropic_version")
                .or_insert_with(|| json!(ANTHROPIC_VERSION));
            let wrap = |msgs: Vec<Value>| {
                let mut b = invoke.clone();
                b.insert("messages".into(), Value::Array(msgs));
                json!({"input": {"invokeModel": {"body": Value::Object(b).to_string()}}})
            };
            Some((
                wrap(extended).to_string().into_bytes(),
                wrap(messages.clone()).to_string().into_bytes(),
            ))
        }
        StreamFormat::Invoke(_) => None,
    }
}

/// Output tokens of `delivered` from the two counts of [`count_bodies`]: their difference,
/// plus one when trailing whitespace was left out of the count (never less than one).
pub fn output_tokens(with: u64, without: u64, delivered: &str) -> u64 {
    let trimmed = u64::from(delivered.trim_end().len() != delivered.len());
    (with.saturating_sub(without) + trimmed).max(1)
}

/// The output limit of a request body of `format` (the client's, else the model default the
/// relay knows), as a continuation's limit is computed from.
pub fn output_limit(format: StreamFormat, body: &[u8]) -> Option<u64> {
    let body = serde_json::from_slice::<Value>(body).ok()?;
    super::limit::of(format, &body)
}

/// The bare foundation-model id CountTokens takes for a model id as a client spells it: a
/// cross-region profile prefix is dropped (`us.anthropic.claude…` → `anthropic.claude…`), the
/// id is taken out of a foundation-model or system-defined inference-profile ARN. `None` for
/// application inference profiles, provisioned, custom and imported models (no way to know
/// the model behind them), Amazon Nova (not countable), and anything that is not an id.
pub fn count_model_id(model: &str) -> Option<String> {
    let model = model.trim();
    let id = match model.strip_prefix("arn:") {
        Some(rest) => {
            // partition:service:region:account:type/id (the id may contain `:`).
            let mut parts = rest.splitn(5, ':');
            let (_partition, service) = (parts.next()?, parts.next()?);
            let (_region, _account, resource) = (parts.next()?, parts.next()?, parts.next()?);
            if service != "bedrock" {
                return None;
            }
            match resource.split_once('/')? {
                ("foundation-model" | "inference-profile", id) => id,
                _ => return None,
            }
        }
        None => model,
    };
    let id = match id.split_once('.') {
        Some((geo, rest)) if PROFILE_PREFIXES.contains(&geo) && rest.contains('.') => rest,
        _ => id,
    };
    let valid = id.contains('.')
        && !id.starts_with('.')
        && !id.ends_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
    if !valid || id.starts_with("amazon.nova") {
        return None;
    }
    Some(id.to_owned())
}

/// The delivered text as the final assistant turn: a final assistant prefill is extended
/// (as the continuation body does it), else an assistant turn is added.
fn append_assistant(msgs: &mut Vec<Value>, delivered: &str, claude: bool) {
    let text_block = |t: &str| {
        if claude {
            json!({"type": "text", "text": t})
        } else {
            json!({"text": t})
        }
    };
    let last = msgs
        .last_mut()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"));
    let Some(last) = last else {
        msgs.push(json!({"role": "assistant", "content": [text_block(delivered)]}));
        return;
    };
    super::request::extend_assistant(last, delivered, &text_block);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    fn invoke_body(v: &Value) -> Value {
        let s = v
            .pointer("/input/invokeModel/body")
            .unwrap()
            .as_str()
            .unwrap();
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn converse_counts_messages_and_system_with_and_without_the_delivered_turn() {
        let body = json!({
            "messages": [{"role": "user", "content": [{"text": "Hi"}]}],
            "system": [{"text": "Be brief."}],
            "inferenceConfig": {"maxTokens": 50},
            "toolConfig": {"tools": []}
        });
        let (with, without) = count_bodies(
            StreamFormat::Converse,
            body.to_string().as_bytes(),
            "Hello there \n",
        )
        .unwrap();
        let (with, without) = (parse(&with), parse(&without));
        assert_eq!(
            with,
            json!({"input": {"converse": {
                "messages": [
                    {"role": "user", "content": [{"text": "Hi"}]},
                    {"role": "assistant", "content": [{"text": "Hello there"}]}
                ],
                "system": [{"text": "Be brief."}]
            }}})
        );
        assert_eq!(
            without,
            json!({"input": {"converse": {
                "messages": [{"role": "user", "content": [{"text": "Hi"}]}],
                "system": [{"text": "Be brief."}]
            }}})
        );
        // No system: none is sent.
        let body = json!({"messages": [{"role": "user", "content": [{"text": "Hi"}]}]});
        let (_, without) =
            count_bodies(StreamFormat::Converse, body.to_string().as_bytes(), "x").unwrap();
        assert!(parse(&without).pointer("/input/converse/system").is_none());
    }

    #[test]
    fn an_assistant_prefill_is_extended_not_duplicated() {
        let body = json!({"messages": [
            {"role": "user", "content": [{"text": "Hi"}]},
            {"role": "assistant", "content": [{"text": "Sure:"}]}
        ]});
        let (with, without) =
            count_bodies(StreamFormat::Converse, body.to_string().as_bytes(), " one").unwrap();
        let with = parse(&with);
        assert_eq!(
            with.pointer("/input/converse/messages/1/content").unwrap(),
            &json!([{"text": "Sure: one"}])
        );
        assert_eq!(
            with.pointer("/input/converse/messages")
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            parse(&without).pointer("/input/converse/messages/1/content"),
            Some(&json!([{"text": "Sure:"}]))
        );
        let claude = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 9,
            "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure:"}]});
        let (with, _) = count_bodies(
            StreamFormat::Invoke(Family::Claude),
            claude.to_string().as_bytes(),
            " one",
        )
        .unwrap();
        assert_eq!(
            invoke_body(&parse(&with))["messages"][1]["content"],
            "Sure: one"
        );
    }

    #[test]
    fn claude_invoke_bodies_go_as_a_string_and_become_valid_invoke_bodies() {
        let claude = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
            "system": "Be brief.", "messages": [{"role": "user", "content": "Hi"}]});
        let (with, without) = count_bodies(
            StreamFormat::Invoke(Family::Claude),
            claude.to_string().as_bytes(),
            "Part",
        )
        .unwrap();
        let with = invoke_body(&parse(&with));
        assert_eq!(
            with["messages"][1],
            json!({"role": "assistant", "content": [{"type": "text", "text": "Part"}]})
        );
        assert_eq!(with["system"], "Be brief.");
        assert_eq!(with["max_tokens"], 100);
        assert_eq!(invoke_body(&parse(&without)), claude);
        // An Anthropic Messages API body (the SSE path): no model, no stream, a version.
        let messages_api = json!({"model": "anthropic.claude-sonnet-4-5-20250929-v1:0",
            "stream": true, "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]});
        let (_, without) = count_bodies(
            crate::resume::sse::FORMAT,
            messages_api.to_string().as_bytes(),
            "Part",
        )
        .unwrap();
        let without = invoke_body(&parse(&without));
        assert_eq!(
            without,
            json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
                "messages": [{"role": "user", "content": "Hi"}]})
        );
    }

    #[test]
    fn anything_else_is_not_counted() {
        let claude_text =
            json!({"prompt": "\n\nHuman: hi\n\nAssistant:", "max_tokens_to_sample": 9});
        let llama = json!({"prompt": "hi", "max_gen_len": 9});
        let msgs = json!({"messages": [{"role": "user", "content": [{"text": "Hi"}]}]});
        for (format, body, delivered) in [
            (
                StreamFormat::Invoke(Family::Claude),
                claude_text.to_string(),
                "x",
            ),
            (StreamFormat::Invoke(Family::Llama), llama.to_string(), "x"),
            (StreamFormat::Invoke(Family::Nova), msgs.to_string(), "x"),
            (StreamFormat::Invoke(Family::Other), msgs.to_string(), "x"),
            (StreamFormat::Converse, msgs.to_string(), "  \n"),
            (StreamFormat::Converse, "not json".into(), "x"),
            (StreamFormat::Converse, r#"{"messages":[]}"#.into(), "x"),
            (StreamFormat::Converse, "[1]".into(), "x"),
        ] {
            assert_eq!(
                count_bodies(format, body.as_bytes(), delivered),
                None,
                "{format:?} {body}"
            );
        }
    }

    #[test]
    fn output_tokens_are_the_difference() {
        assert_eq!(output_tokens(130, 30, "text"), 100);
        assert_eq!(
            output_tokens(130, 30, "text \n"),
            101,
            "whitespace left out"
        );
        assert_eq!(output_tokens(30, 30, "x"), 1, "never less than one");
        assert_eq!(output_tokens(10, 30, "x"), 1);
    }

    #[test]
    fn output_limits_are_read_per_format() {
        let conv = json!({"inferenceConfig": {"maxTokens": 20}});
        assert_eq!(
            output_limit(StreamFormat::Converse, conv.to_string().as_bytes()),
            Some(20)
        );
        assert_eq!(output_limit(StreamFormat::Converse, b"{}"), None);
        assert_eq!(
            output_limit(crate::resume::sse::FORMAT, br#"{"max_tokens":7}"#),
            Some(7)
        );
        assert_eq!(output_limit(StreamFormat::Converse, b"nope"), None);
    }

    #[test]
    fn model_ids_become_bare_foundation_model_ids() {
        let base = "anthropic.claude-sonnet-4-6-v1:0";
        for spelling in [
            base,
            "us.anthropic.claude-sonnet-4-6-v1:0",
            "eu.anthropic.claude-sonnet-4-6-v1:0",
            "apac.anthropic.claude-sonnet-4-6-v1:0",
            "global.anthropic.claude-sonnet-4-6-v1:0",
            "jp.anthropic.claude-sonnet-4-6-v1:0",
            "au.anthropic.claude-sonnet-4-6-v1:0",
            "ca.anthropic.claude-sonnet-4-6-v1:0",
            "us-gov.anthropic.claude-sonnet-4-6-v1:0",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-6-v1:0",
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-sonnet-4-6-v1:0",
            "arn:aws-us-gov:bedrock:us-gov-west-1::foundation-model/anthropic.claude-sonnet-4-6-v1:0",
        ] {
            assert_eq!(count_model_id(spelling).as_deref(), Some(base), "{spelling}");
        }
        assert_eq!(
            count_model_id("meta.llama3-1-70b-instruct-v1:0").as_deref(),
            Some("meta.llama3-1-70b-instruct-v1:0")
        );
        for not_countable in [
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123",
            "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123",
            "arn:aws:bedrock:us-east-1:123456789012:custom-model/anthropic.claude-v2/abc",
            "arn:aws:bedrock:us-east-1:123456789012:imported-model/abc123",
            "arn:aws:sagemaker:us-east-1:123456789012:endpoint/x.y",
            "amazon.nova-pro-v1:0",
            "us.amazon.nova-lite-v1:0",
            "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-micro-v1:0",
            "",
            "no-dot",
            "anthropic.claude/../../x",
            "us.",
        ] {
            assert_eq!(count_model_id(not_countable), None, "{not_countable}");
        }
    }
}
