//! Request and response shapes beyond each family's main one, and the generation rules that
//! apply to every shape: Mistral's chat-completion API (`messages` in, `choices[0].message`
//! chunks out), Claude's legacy text-completion API (`\n\nHuman:` prompts, `completion`
//! chunks), stop sequences (checked against the generated text only, piece by piece, with no
//! hold-back: a stream may end in the first part of a stop sequence that the next piece
//! completes), and the `sim:insert=K:TEXT` directive (TEXT percent-decoded, inserted as
//! piece K of the reference: how a test makes the model write a prompt's control strings).

use super::gen;
use super::plan::{Plan, Stop};
use super::request::{Prompt, Turn};
use serde_json::{json, Value};

/// Which request/response API of the family a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Style {
    /// The family's main shape (Claude messages, Mistral text completion, ...).
    #[default]
    Native,
    /// Mistral chat completion.
    Chat,
    /// Claude legacy text completion.
    Completion,
}

fn turn(role: &str, text: &str) -> Turn {
    Turn {
        role: role.to_owned(),
        text: text.to_owned(),
        tool_result: false,
    }
}

/// Stop sequences of a request body, wherever the format keeps them.
pub fn stop_sequences(body: &Value) -> Vec<String> {
    [
        "/inferenceConfig/stopSequences",
        "/stop_sequences",
        "/stop",
        "/textGenerationConfig/stopSequences",
    ]
    .iter()
    .filter_map(|p| body.pointer(p))
    .flat_map(|v| match v {
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    })
    .filter(|s| !s.is_empty())
    .collect()
}

/// `\n\nHuman: ...\n\nAssistant: ...` turns; text after the final `Assistant:` is the prefill.
pub fn parse_completion(prompt: &str) -> Vec<Turn> {
    let mut turns = Vec::new();
    for seg in prompt.split("\n\nHuman:").skip(1) {
        let (user, answer) = seg.split_once("\n\nAssistant:").unwrap_or((seg, ""));
        turns.push(turn("user", user.trim()));
        turns.push(turn("assistant", answer));
    }
    if turns.is_empty() {
        turns.push(turn("user", prompt));
    }
    turns
}

/// Cut the generated pieces at the first stop sequence (generated text only, no hold-back).
/// Returns the stop sequence that matched.
pub fn apply_stops(text: &mut Vec<String>, stops: &[String]) -> Option<String> {
    let mut generated = String::new();
    for i in 0..text.len() {
        let before = generated.len();
        generated.push_str(&text[i]);
        let hit = stops
            .iter()
            .filter_map(|s| generated.find(s.as_str()).map(|p| (p, s)))
            .min_by_key(|(p, _)| *p);
        if let Some((pos, stop)) = hit {
            if pos > before {
                text[i] = generated[before..pos].to_owned();
                text.truncate(i + 1);
            } else {
                text.truncate(i);
            }
            return Some(stop.clone());
        }
    }
    None
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Apply `sim:insert=K:TEXT` directives found in `all_text` to reference pieces.
pub fn with_inserts(mut pieces: Vec<String>, all_text: &str) -> Vec<String> {
    if let Some((k, text)) = gen::directive(all_text, "insert").and_then(|v| v.split_once(':')) {
        if let Ok(k) = k.parse::<usize>() {
            pieces.insert(k.min(pieces.len()), percent_decode(text));
        }
    }
    pieces
}

/// The stream chunks (decoded `bytes`) of a non-native style, without the final metrics.
pub fn chunks(style: Style, plan: &Plan, stop: &str) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = plan.text.iter().map(|p| (piece(style, p), true)).collect();
    out.push((last(style, plan, stop).to_string(), false));
    out
}

fn piece(style: Style, p: &str) -> String {
    match style {
        Style::Chat => json!({"choices":[{"index":0,"message":{"role":"assistant","content":p},"stop_reason":null}]}),
        _ => json!({"completion":p,"stop_reason":null,"stop":null}),
    }
    .to_string()
}

/// The final chunk (or the whole non-streaming body with the full text).
pub fn last(style: Style, plan: &Plan, stop: &str) -> Value {
    last_with(style, plan, stop, "")
}

pub fn body(style: Style, plan: &Plan, stop: &str) -> Value {
    last_with(style, plan, stop, &plan.text())
}

fn last_with(style: Style, plan: &Plan, stop: &str, text: &str) -> Value {
    match style {
        Style::Chat => {
            json!({"choices":[{"index":0,"message":{"role":"assistant","content":text},"stop_reason":stop}]})
        }
        _ => {
            let (reason, seq) = match plan.stop {
                Stop::MaxTokens => ("max_tokens", Value::Null),
                Stop::Sequence => ("stop_sequence", json!(plan.stop_sequence)),
                _ => ("stop_sequence", json!("\n\nHuman:")),
            };
            json!({"completion":text,"stop_reason":reason,"stop":seq})
        }
    }
}

/// The style of an invoke body and, for the non-native ones, its prompt.
pub fn parse(body: &Value, claude: bool) -> Option<(Style, Prompt)> {
    let temperature = body.get("temperature").and_then(Value::as_f64);
    let max = |k: &str| {
        body.get(k)
            .and_then(Value::as_u64)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    if claude {
        let prompt = body.get("prompt").and_then(Value::as_str)?;
        let mut turns = parse_completion(prompt);
        if turns
            .last()
            .is_some_and(|t| t.role == "assistant" && t.text.trim().is_empty())
        {
            turns.pop();
        }
        return Some((
            Style::Completion,
            Prompt {
                turns,
                max_tokens: max("max_tokens_to_sample"),
                temperature,
                stop_sequences: stop_sequences(body),
                ..Prompt::default()
            },
        ));
    }
    let messages = body.get("messages").and_then(Value::as_array)?;
    let mut system = String::new();
    let mut turns = Vec::new();
    for m in messages {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let text = m.get("content").and_then(Value::as_str).unwrap_or("");
        match role {
            "system" => system.push_str(text),
            "assistant" => turns.push(turn("assistant", text)),
            _ => turns.push(turn("user", text)),
        }
    }
    Some((
        Style::Chat,
        Prompt {
            system,
            turns,
            max_tokens: max("max_tokens"),
            temperature,
            stop_sequences: stop_sequences(body),
            ..Prompt::default()
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_cut_the_generated_text_without_hold_back() {
        let mut t: Vec<String> = ["One", " two three", " four"].map(String::from).to_vec();
        assert_eq!(apply_stops(&mut t, &["three".into()]), Some("three".into()));
        assert_eq!(t, ["One", " two "]);
        let mut t: Vec<String> = ["One", " EN", "D more"].map(String::from).to_vec();
        assert_eq!(apply_stops(&mut t, &["END".into()]), Some("END".into()));
        assert_eq!(t, ["One", " EN"], "the partial match was already streamed");
        let mut t: Vec<String> = ["a", " b"].map(String::from).to_vec();
        assert_eq!(apply_stops(&mut t, &["zz".into()]), None);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn completion_prompts_and_inserts() {
        let turns = parse_completion("\n\nHuman: hi\n\nAssistant: Sure");
        assert_eq!(turns.len(), 2);
        assert_eq!(turns[1].text, " Sure");
        let p = with_inserts(
            vec!["a".into(), " b".into()],
            "x sim:insert=1:%0AUser:%20y z",
        );
        assert_eq!(p, ["a", "\nUser: y", " b"]);
    }
}
