//! What Bedrock charges a request against its model's tokens-per-minute quota when it
//! starts: its input tokens plus its whole output limit times the model's burndown rate
//! (5 for Claude 3.7 and later, 1 for the others). The unused part is given back when it
//! ends. Also the messages of Bedrock's two throttling refusals. The relay's admission
//! (which estimates the input tokens itself) and the simulator's quota both price requests
//! here.

use serde_json::Value;

/// Bedrock's messages for the two quotas (`ThrottlingException`).
pub const TOO_MANY_TOKENS: &str = "Too many tokens, please wait before trying again.";
pub const TOO_MANY_REQUESTS: &str = "Too many requests, please wait before trying again.";

/// The output limit assumed when a request sets none (the quota reserves the model's
/// maximum; 4096 is the common default output limit of Bedrock's models).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Output tokens count this many times against the token quota: 5 for Claude 3.7 and later
/// (Sonnet/Opus/Haiku 4 and up, Fable), 1 for every other model. Any id shape: bare, `us.`/
/// `eu.`/`global.` profiles, ARNs.
pub fn burndown(model: &str) -> u64 {
    let m = model.to_ascii_lowercase();
    let Some(at) = m.find("anthropic.") else {
        return 1;
    };
    let rest = m[at + "anthropic.".len()..].trim_start_matches("claude-");
    if rest.starts_with("3-7") || rest.starts_with("fable") {
        return 5;
    }
    // claude-{opus,sonnet,haiku}-N...: N >= 4
    for family in ["opus-", "sonnet-", "haiku-"] {
        if let Some(v) = rest.strip_prefix(family) {
            let major: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
            return match major.parse::<u64>() {
                Ok(n) if (4..100).contains(&n) => 5,
                _ => 1,
            };
        }
    }
    1
}

/// The output limit a request body asks for, in whichever field its API uses (Converse
/// `inferenceConfig.maxTokens`, Claude `max_tokens`, Nova `max_new_tokens`, Llama
/// `max_gen_len`, Titan `maxTokenCount`, OpenAI `max_completion_tokens` /
/// `max_output_tokens`), or [`DEFAULT_MAX_TOKENS`].
pub fn max_tokens(body: &Value) -> u64 {
    const POINTERS: [&str; 9] = [
        "/inferenceConfig/maxTokens",
        "/max_tokens",
        "/inferenceConfig/max_new_tokens",
        "/max_gen_len",
        "/textGenerationConfig/maxTokenCount",
        "/max_completion_tokens",
        "/max_output_tokens",
        "/max_tokens_to_sample",
        "/maxTokens",
    ];
    POINTERS
        .iter()
        .find_map(|p| body.pointer(p).and_then(Value::as_u64))
        .unwrap_or(DEFAULT_MAX_TOKENS)
}

/// What Bedrock reserves when the request starts: input + max_tokens × burndown.
pub fn reservation(model: &str, input_tokens: u64, max_tokens: u64) -> u64 {
    input_tokens + max_tokens * burndown(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burndown_five_for_claude_3_7_and_later() {
        for m in [
            "anthropic.claude-3-7-sonnet-20250219-v1:0",
            "us.anthropic.claude-sonnet-4-6-v1:0",
            "anthropic.claude-sonnet-4-20250514-v1:0",
            "global.anthropic.claude-opus-4-1-20250805-v1:0",
            "anthropic.claude-haiku-4-5-20251001-v1:0",
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-opus-5-v1:0",
        ] {
            assert_eq!(burndown(m), 5, "{m}");
        }
        for m in [
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
            "anthropic.claude-3-5-haiku-20241022-v1:0",
            "anthropic.claude-3-haiku-20240307-v1:0",
            "amazon.nova-pro-v1:0",
            "meta.llama3-1-70b-instruct-v1:0",
        ] {
            assert_eq!(burndown(m), 1, "{m}");
        }
    }

    #[test]
    fn max_tokens_in_every_api_and_reservation() {
        let converse = serde_json::json!({"inferenceConfig": {"maxTokens": 300}});
        let claude = serde_json::json!({"max_tokens": 200});
        let nova = serde_json::json!({"inferenceConfig": {"max_new_tokens": 100}});
        assert_eq!(max_tokens(&converse), 300);
        assert_eq!(max_tokens(&claude), 200);
        assert_eq!(max_tokens(&nova), 100);
        assert_eq!(max_tokens(&serde_json::json!({})), DEFAULT_MAX_TOKENS);
        assert_eq!(
            reservation("us.anthropic.claude-sonnet-4-6-v1:0", 40, 300),
            40 + 1500
        );
        assert_eq!(reservation("amazon.nova-pro-v1:0", 40, 300), 340);
    }
}
