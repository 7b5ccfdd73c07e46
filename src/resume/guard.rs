//! When pasting the delivered text into a continuation request would change what the model
//! does, so only replay (or a typed error) is honest:
//!
//! - **Stop sequences across the seam.** Text ending in a proper prefix of a stop sequence
//!   (`…EN` for `END`) becomes prompt; the model then only sees the rest (`D`) in its own
//!   output and no longer stops there.
//! - **Control strings in raw prompts.** Llama, Mistral text, Titan and legacy Claude
//!   prompts mark turns with plain strings (`<|eot_id|>`, `[INST]`, `\nUser:`,
//!   `\n\nHuman:`); delivered text containing one would start a new turn in the
//!   continuation prompt.

use super::{Family, StreamFormat};
use serde_json::Value;

/// Where each request format keeps its stop sequences.
const STOP_POINTERS: [&str; 5] = [
    "/inferenceConfig/stopSequences",
    "/stop_sequences",
    "/stop",
    "/textGenerationConfig/stopSequences",
    "/additionalModelRequestFields/stop_sequences",
];

fn stop_sequences(body: &Value) -> Vec<&str> {
    STOP_POINTERS
        .iter()
        .filter_map(|p| body.pointer(p))
        .flat_map(|v| match v {
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            Value::String(s) => vec![s.as_str()],
            _ => Vec::new(),
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// The turn markers of a prompt format (what a raw prompt would read as a new turn).
fn control_strings(format: StreamFormat, body: &Value) -> &'static [&'static str] {
    match format {
        StreamFormat::Invoke(Family::Llama) => &[
            "<|eot_id|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|eom_id|>",
        ],
        StreamFormat::Invoke(Family::Mistral) if body.get("prompt").is_some() => {
            &["[INST]", "[/INST]", "</s>", "<s>"]
        }
        StreamFormat::Invoke(Family::Titan) => &["\nUser:", "\nBot:"],
        StreamFormat::Invoke(Family::Claude) if body.get("prompt").is_some() => {
            &["\n\nHuman:", "\n\nAssistant:"]
        }
        _ => &[],
    }
}

/// Why `delivered` must not be continued by a prefill or instructed request, if it must not.
pub(crate) fn unsafe_to_continue(
    format: StreamFormat,
    body: &Value,
    delivered: &str,
) -> Option<&'static str> {
    let trimmed = delivered.trim_end();
    let partial_stop = stop_sequences(body).iter().any(|stop| {
        [delivered, trimmed].iter().any(|text| {
            (1..stop.len())
                .filter(|n| stop.is_char_boundary(*n))
                .any(|n| text.ends_with(&stop[..n]))
        })
    });
    if partial_stop {
        return Some("the delivered text ends in the beginning of a stop sequence: only replay keeps the model stopping there");
    }
    if control_strings(format, body)
        .iter()
        .any(|c| delivered.contains(c))
    {
        return Some("the delivered text contains the prompt format's turn markers: only replay keeps it one turn");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_partial_stop_sequence_at_the_end_is_unsafe() {
        let body = json!({"inferenceConfig":{"stopSequences":["END"]}});
        let f = StreamFormat::Converse;
        assert!(unsafe_to_continue(f, &body, "The EN").is_some());
        assert!(unsafe_to_continue(f, &body, "The E ").is_some());
        assert!(unsafe_to_continue(f, &body, "The ENTRY").is_none());
        assert!(unsafe_to_continue(f, &json!({}), "The EN").is_none());
        let claude = json!({"stop_sequences":["</answer>"]});
        assert!(
            unsafe_to_continue(StreamFormat::Invoke(Family::Claude), &claude, "x </ans").is_some()
        );
        let mistral = json!({"prompt":"<s>[INST] x [/INST]","stop":"##"});
        assert!(
            unsafe_to_continue(StreamFormat::Invoke(Family::Mistral), &mistral, "a #").is_some()
        );
    }

    #[test]
    fn control_strings_of_raw_prompt_formats_are_unsafe() {
        let llama = StreamFormat::Invoke(Family::Llama);
        let body = json!({"prompt":"x"});
        assert!(unsafe_to_continue(llama, &body, "use <|eot_id|> to end").is_some());
        assert!(unsafe_to_continue(llama, &body, "plain text").is_none());
        let mistral = StreamFormat::Invoke(Family::Mistral);
        assert!(unsafe_to_continue(mistral, &body, "wrap it in [INST] tags").is_some());
        let chat = json!({"messages":[]});
        assert!(unsafe_to_continue(mistral, &chat, "wrap it in [INST] tags").is_none());
        let titan = StreamFormat::Invoke(Family::Titan);
        assert!(unsafe_to_continue(titan, &json!({"inputText":"x"}), "a\nUser: b").is_some());
        assert!(unsafe_to_continue(StreamFormat::Converse, &body, "<|eot_id|>").is_none());
    }
}
