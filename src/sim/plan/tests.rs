//! Tests of the simulated model's plans: prefill rules and errors, continuations, limits.

use super::*;
use crate::sim::request::Turn;

fn prompt(turns: &[(&str, &str)]) -> Prompt {
    Prompt {
        turns: turns
            .iter()
            .map(|(r, t)| Turn {
                role: r.to_string(),
                text: t.to_string(),
                tool_result: false,
            })
            .collect(),
        ..Prompt::default()
    }
}

fn re() -> Regex {
    Regex::new(super::super::DEFAULT_NO_PREFILL).unwrap()
}

const M: &str = "anthropic.claude-3-5-sonnet";

#[test]
fn prefill_continues_the_reference() {
    let full = plan(M, &prompt(&[("user", "hi sim:len=80")]), 1, 0, &re()).unwrap();
    let text = full.text();
    for cut in [1, 10, 57, text.trim_end().len() - 3] {
        let pre = text[..cut].trim_end();
        let p = plan(
            M,
            &prompt(&[("user", "hi sim:len=80"), ("assistant", pre)]),
            2,
            0,
            &re(),
        )
        .unwrap();
        assert_eq!(format!("{pre}{}", p.text()), text);
        assert_eq!(p.prefill.as_deref(), Some(pre));
    }
}

#[test]
fn prefill_errors_carry_bedrock_messages() {
    let err = |m: &str, pre: &str| {
        plan(
            m,
            &prompt(&[("user", "hi"), ("assistant", pre)]),
            1,
            0,
            &re(),
        )
        .unwrap_err()
        .to_string()
    };
    assert!(err(M, "Hello ").contains("trailing whitespace"));
    assert!(err("anthropic.claude-opus-4-6-v1", "Hello")
        .contains("does not support assistant message prefill"));
    assert!(err("us.anthropic.claude-sonnet-4-7", "Hello").contains("prefill"));
    let mut p = prompt(&[("user", "hi"), ("assistant", "Hello")]);
    p.reasoning = true;
    assert!(plan(M, &p, 1, 0, &re()).is_err());
    assert!(plan(
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        &prompt(&[("user", "hi"), ("assistant", "He")]),
        1,
        0,
        &re()
    )
    .is_ok());
}

#[test]
fn instructed_continuation_answers_the_rest_with_optional_overlap() {
    let m = "anthropic.claude-opus-4-6-v1";
    for k in 0..3 {
        let q = format!("question {k} sim:len=60 sim:overlap={k}");
        let full = plan(m, &prompt(&[("user", &q)]), 1, 0, &re())
            .unwrap()
            .text();
        let a = full[..full.len() / 2].trim_end();
        let ask = "Your previous response was cut off. Continue exactly where it stopped, without repeating anything.";
        let p = plan(
            m,
            &prompt(&[("user", &q), ("assistant", a), ("user", ask)]),
            2,
            0,
            &re(),
        )
        .unwrap();
        assert!(p.continuation);
        let got = p.text();
        let rest = &full[a.len()..];
        let repeat = gen::last_words(a, k);
        if k == 0 {
            assert_eq!(got, rest);
        } else {
            assert!(got.starts_with(repeat), "{got:?} vs {repeat:?}");
            assert_eq!(got[repeat.len()..].trim_start(), rest.trim_start());
        }
    }
}

#[test]
fn max_tokens_caps_and_tools_get_fresh_ids() {
    let mut p = prompt(&[("user", "hi")]);
    p.max_tokens = Some(5);
    let capped = plan(M, &p, 1, 0, &re()).unwrap();
    assert_eq!((capped.text.len(), capped.stop), (5, Stop::MaxTokens));
    p.max_tokens = None;
    p.tool = Some(super::super::request::Tool {
        name: "get_weather".into(),
        properties: vec![("city".into(), "string".into())],
    });
    let a = plan(M, &p, 1, 1, &re()).unwrap();
    let b = plan(M, &p, 2, 2, &re()).unwrap();
    let (ta, tb) = (a.tool.clone().unwrap(), b.tool.unwrap());
    assert_eq!(a.stop, Stop::ToolUse);
    assert_ne!(ta.id, tb.id);
    assert_eq!(ta.input, tb.input);
    assert_eq!(ta.input_pieces.concat(), ta.input);
    assert!(serde_json::from_str::<serde_json::Value>(&ta.input).is_ok());
    let text = a.text();
    p.turns.push(Turn {
        role: "assistant".into(),
        text: text[..text.len() / 2].trim_end().into(),
        tool_result: false,
    });
    let resumed = plan(M, &p, 3, 3, &re()).unwrap();
    assert_eq!(
        resumed.stop,
        Stop::ToolUse,
        "a prefilled answer still ends in the call"
    );
    assert_eq!(resumed.tool.unwrap().input, ta.input);
    p.turns.push(Turn {
        role: "user".into(),
        text: String::new(),
        tool_result: true,
    });
    assert!(plan(M, &p, 4, 4, &re()).unwrap().tool.is_none());
}
