//! The single-text chunk shapes of InvokeModelWithResponseStream, recognised by their fields
//! rather than by the model id (one family streams several shapes: Mistral's text and chat
//! APIs, Claude's messages and legacy completion API), and the JSON pointers used to rewrite
//! them.
//!
//! Shapes (decoded `bytes` of a `chunk` event), from the Bedrock model-parameter pages:
//!
//! | shape | text | stop | running output count | input count |
//! |---|---|---|---|---|
//! | Meta Llama | `generation` | `stop_reason` | `generation_token_count` | `prompt_token_count` |
//! | Amazon Titan Text | `outputText` | `completionReason` | `totalOutputTextTokenCount` | `inputTextTokenCount` |
//! | Mistral text completion | `outputs[0].text` | `outputs[0].stop_reason` | — | — |
//! | Mistral chat, AI21 Jamba, OpenAI gpt-oss, Qwen, DeepSeek (chat) | `choices[0].delta.content` or `choices[0].message.content` | `choices[0].finish_reason` / `stop_reason` | — | — |
//! | DeepSeek R1 text completion | `choices[0].text` | `choices[0].stop_reason` | — | — |
//! | Claude legacy completion | `completion` | `stop_reason` | — | — |
//! | Cohere Command / Command R | `text` (with `is_finished`) | `finish_reason` once `is_finished` | — | — |
//! | Cohere Command (generations) | `generations[0].text` | `generations[0].finish_reason` | — | — |
//!
//! Reasoning text streamed beside the answer (`choices[0].delta.reasoning_content` or
//! `reasoning`) is kept as an opaque delta: the relay only ever replays it, verified.

use serde_json::Value;

/// Where a shape keeps its text, and its running output counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// JSON pointer to the text.
    pub text: &'static str,
    /// Key (top level) of the running output-token count, if the shape has one.
    pub running: Option<&'static str>,
}

const SHAPES: [(&str, Shape); 9] = [
    (
        "/generation",
        Shape {
            text: "/generation",
            running: Some("generation_token_count"),
        },
    ),
    (
        "/outputText",
        Shape {
            text: "/outputText",
            running: Some("totalOutputTextTokenCount"),
        },
    ),
    (
        "/outputs/0",
        Shape {
            text: "/outputs/0/text",
            running: None,
        },
    ),
    (
        "/choices/0/delta",
        Shape {
            text: "/choices/0/delta/content",
            running: None,
        },
    ),
    (
        "/choices/0/message",
        Shape {
            text: "/choices/0/message/content",
            running: None,
        },
    ),
    (
        "/choices/0/text",
        Shape {
            text: "/choices/0/text",
            running: None,
        },
    ),
    (
        "/completion",
        Shape {
            text: "/completion",
            running: None,
        },
    ),
    (
        "/generations/0",
        Shape {
            text: "/generations/0/text",
            running: None,
        },
    ),
    (
        "/is_finished",
        Shape {
            text: "/text",
            running: None,
        },
    ),
];

/// The shape of a decoded chunk, if it is one of the single-text shapes.
pub(crate) fn shape_of(v: &Value) -> Option<Shape> {
    SHAPES
        .iter()
        .find(|(probe, _)| v.pointer(probe).is_some())
        .map(|(_, s)| *s)
}

fn str_at<'a>(v: &'a Value, pointers: &[&str]) -> Option<&'a str> {
    pointers
        .iter()
        .find_map(|p| v.pointer(p).and_then(Value::as_str))
}

/// What a single-text chunk says.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Single {
    pub shape: Option<Shape>,
    pub text: Option<String>,
    /// Reasoning output (no text in the chunk), as its JSON.
    pub reasoning: Option<String>,
    pub stop: Option<String>,
    /// Exact output tokens so far (Llama, Titan).
    pub running: Option<u64>,
    pub known_input: Option<u64>,
}

/// Read a single-text chunk; `None` when `v` has none of the shapes.
pub(crate) fn read(v: &Value) -> Option<Single> {
    let shape = shape_of(v)?;
    let mut ev = Single {
        shape: Some(shape),
        ..Single::default()
    };
    ev.text = v
        .pointer(shape.text)
        .and_then(Value::as_str)
        .map(str::to_owned);
    if ev.text.is_none() {
        ev.reasoning = [
            "/choices/0/delta/reasoning_content",
            "/choices/0/delta/reasoning",
        ]
        .iter()
        .find_map(|p| v.pointer(p).filter(|r| !r.is_null()))
        .map(Value::to_string);
    }
    let finished = v.get("is_finished").and_then(Value::as_bool);
    ev.stop = match finished {
        Some(false) => None,
        Some(true) => Some(
            str_at(v, &["/finish_reason"])
                .unwrap_or("COMPLETE")
                .to_owned(),
        ),
        None => str_at(
            v,
            &[
                "/stop_reason",
                "/completionReason",
                "/outputs/0/stop_reason",
                "/choices/0/finish_reason",
                "/choices/0/stop_reason",
                "/generations/0/finish_reason",
            ],
        )
        .map(str::to_owned),
    };
    if let Some(key) = shape.running {
        ev.running = v.get(key).and_then(Value::as_u64);
    }
    ev.known_input = ["prompt_token_count", "inputTextTokenCount"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_u64));
    Some(ev)
}

/// Stop reasons that mean "the output limit was reached", in every format.
pub fn is_limit_stop(reason: &str) -> bool {
    matches!(reason, "max_tokens" | "length" | "LENGTH" | "MAX_TOKENS")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(v: Value) -> Single {
        read(&v).unwrap_or_else(|| panic!("{v}"))
    }

    #[test]
    fn every_documented_shape_yields_its_text_and_stop() {
        let text = |e: &Single| e.text.clone().expect("a text");
        let cases = [
            (
                json!({"generation":"a","generation_token_count":3,"stop_reason":null,"prompt_token_count":9}),
                None,
            ),
            (
                json!({"outputText":"a","totalOutputTextTokenCount":3,"completionReason":"LENGTH","inputTextTokenCount":9}),
                Some("LENGTH"),
            ),
            (
                json!({"outputs":[{"text":"a","stop_reason":"length"}]}),
                Some("length"),
            ),
            (
                json!({"choices":[{"index":0,"message":{"role":"assistant","content":"a"},"stop_reason":null}]}),
                None,
            ),
            (
                json!({"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}),
                Some("stop"),
            ),
            (
                json!({"choices":[{"text":"a","stop_reason":"length"}]}),
                Some("length"),
            ),
            (
                json!({"completion":"a","stop_reason":"stop_sequence","stop":"\n\nHuman:"}),
                Some("stop_sequence"),
            ),
            (
                json!({"is_finished":false,"event_type":"text-generation","text":"a"}),
                None,
            ),
            (
                json!({"generations":[{"text":"a","finish_reason":"MAX_TOKENS"}]}),
                Some("MAX_TOKENS"),
            ),
        ];
        for (v, stop) in cases {
            let e = ev(v.clone());
            assert_eq!(text(&e), "a", "{v}");
            assert_eq!(e.stop.as_deref(), stop, "{v}");
            assert!(e.shape.is_some());
        }
        let e = ev(json!({"generation":"a","generation_token_count":3,"prompt_token_count":9}));
        assert_eq!((e.running, e.known_input), (Some(3), Some(9)));
        let e =
            ev(json!({"is_finished":true,"event_type":"stream-end","finish_reason":"COMPLETE"}));
        assert_eq!(e.stop.as_deref(), Some("COMPLETE"));
        let e = ev(json!({"choices":[{"index":0,"delta":{"reasoning_content":"hm"}}]}));
        assert!(e.text.is_none() && e.reasoning.is_some());
        assert!(read(&json!({"t":"x"})).is_none());
        assert!(is_limit_stop("LENGTH") && is_limit_stop("max_tokens") && !is_limit_stop("stop"));
    }
}
