//! Tests of the simulated model's plans: prefill rules and errors, continuations, limits.

use super::*;
use crate::request::Turn;

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
    let full = plan(M, &prompt(&[("user", "hi sim:len=80")]), 1, 0, &re(), true).unwrap();
    let text = full.text();
    for cut in [1, 10, 57, text.trim_end().len() - 3] {
        let pre = text[..cut].trim_end();
        let p = plan(
            M,
            &prompt(&[("user", "hi sim:len=80"), ("assistant", pre)]),
            2,
            0,
            &re(),
            true,
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
            true,
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
    assert!(plan(M, &p, 1, 0, &re(), true).is_err());
    assert!(plan(
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        &prompt(&[("user", "hi"), ("assistant", "He")]),
        1,
        0,
        &re(),
        true
    )
    .is_ok());
}

#[test]
fn max_tokens_caps_and_tools_get_fresh_ids() {
    let mut p = prompt(&[("user", "hi")]);
    p.max_tokens = Some(5);
    let capped = plan(M, &p, 1, 0, &re(), true).unwrap();
    assert_eq!((capped.text.len(), capped.stop), (5, Stop::MaxTokens));
    p.max_tokens = None;
    p.tool = Some(super::super::request::Tool {
        name: "get_weather".into(),
        properties: vec![("city".into(), "string".into())],
    });
    let a = plan(M, &p, 1, 1, &re(), true).unwrap();
    let b = plan(M, &p, 2, 2, &re(), true).unwrap();
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
    let resumed = plan(M, &p, 3, 3, &re(), true).unwrap();
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
    assert!(plan(M, &p, 4, 4, &re(), true).unwrap().tool.is_none());
}

const SONNET_46: &str = "anthropic.claude-sonnet-4-6";

fn with_tpp(mut p: Prompt, tpp: u32) -> Prompt {
    if tpp > 1 {
        p.system = format!("sim:tpp={tpp}");
    }
    p
}

#[test]
fn a_protocol_turn_is_answered_by_a_phrasing_class_and_means_the_whole_answer() {
    use super::super::phrasing::{anchor_for, ask_for, Class};
    for model in [SONNET_46, M] {
        let mut seen = std::collections::HashSet::new();
        for i in 0..60 {
            let q = format!("question {i} sim:len=60");
            let first = plan(model, &prompt(&[("user", &q)]), 1, 0, &re(), true).unwrap();
            let full = first.text();
            let k = 5 + i % 40;
            let d = first.text[..k].concat();
            let anchor = anchor_for(&d).unwrap();
            let ask = ask_for(&anchor);
            let turns = [("user", q.as_str()), ("assistant", &d), ("user", &ask)];
            let p = plan(model, &prompt(&turns), 2, 0, &re(), true).unwrap();
            assert!(p.continuation);
            let class = Class::from_name(p.phrasing.unwrap()).unwrap();
            seen.insert(class);
            assert!(!class.for_complete());
            assert_eq!(p.intended.as_deref(), Some(full.as_str()), "{class:?}");
            assert_eq!(p.output_tokens as usize, p.text.len());
            assert_eq!(
                gen::tokens(&p.text(), model == SONNET_46),
                p.text,
                "streamed as the tokenizer splits it"
            );
            // Forced by the directive on the conversation's first instructed continuation.
            let q = format!("question {i} sim:len=60 sim:phrase=echo-sentence");
            let first = plan(model, &prompt(&[("user", &q)]), 1, 0, &re(), true).unwrap();
            let d = first.text[..k].concat();
            let ask = ask_for(&anchor_for(&d).unwrap());
            let turns = [("user", q.as_str()), ("assistant", &d), ("user", &ask)];
            let forced = plan(model, &prompt(&turns), 2, 0, &re(), true).unwrap();
            assert_eq!(forced.phrasing, Some("echo-sentence"));
            let later = plan(model, &prompt(&turns), 3, 0, &re(), false).unwrap();
            assert!(later.phrasing.is_some());
        }
        assert!(seen.len() >= 10, "{seen:?}");
        // The whole answer delivered: a complete-* reply.
        let q = "done sim:len=30 sim:phrase=complete-anchor-marker";
        let full = plan(model, &prompt(&[("user", q)]), 1, 0, &re(), true)
            .unwrap()
            .text();
        let anchor = anchor_for(&full).unwrap();
        let ask = ask_for(&anchor);
        let turns = [
            ("user", q),
            ("assistant", full.as_str()),
            ("user", ask.as_str()),
        ];
        let p = plan(model, &prompt(&turns), 2, 0, &re(), true).unwrap();
        assert_eq!(p.phrasing, Some("complete-anchor-marker"));
        assert!(p.text().ends_with("[[ANSWER COMPLETE]]"), "{:?}", p.text());
        assert_eq!(p.intended.as_deref(), Some(full.as_str()));
        let q = "done sim:len=30 sim:phrase=complete-empty";
        let full = plan(model, &prompt(&[("user", q)]), 1, 0, &re(), true)
            .unwrap()
            .text();
        let ask = ask_for(&anchor_for(&full).unwrap());
        let turns = [
            ("user", q),
            ("assistant", full.as_str()),
            ("user", ask.as_str()),
        ];
        let p = plan(model, &prompt(&turns), 2, 0, &re(), true).unwrap();
        assert!(p.text().trim().is_empty());
        assert_eq!(
            (p.stop, p.output_tokens as usize),
            (Stop::EndTurn, p.text.len())
        );
    }
}

#[test]
fn a_continuation_reply_stops_at_max_tokens_like_any_answer() {
    use super::super::phrasing::{anchor_for, ask_for};
    let q = "limit sim:len=80 sim:phrase=restart";
    let first = plan(SONNET_46, &prompt(&[("user", q)]), 1, 0, &re(), true).unwrap();
    let d = first.text[..30].concat();
    let ask = ask_for(&anchor_for(&d).unwrap());
    let mut p = prompt(&[("user", q), ("assistant", &d), ("user", &ask)]);
    p.max_tokens = Some(12);
    let capped = plan(SONNET_46, &p, 2, 0, &re(), true).unwrap();
    assert_eq!((capped.stop, capped.text.len()), (Stop::MaxTokens, 12));
    assert_eq!(capped.output_tokens, 12);
    assert!(d.starts_with(&capped.text()), "a restart: the answer again");
    assert_eq!(capped.intended, None);
}

#[test]
fn counts_are_exactly_what_streaming_the_text_billed() {
    use super::super::phrasing::{anchor_for, ask_for};
    for model in [SONNET_46, M] {
        for tpp in [1, 3] {
            for seed in 0..8 {
                let q = format!("count {seed} sim:len=70");
                let c = with_tpp(prompt(&[("user", &q)]), tpp);
                let answer = plan(model, &c, 1, 0, &re(), true).unwrap();
                let base = count(model, &c, &re());
                assert_eq!(answer.input_tokens, base, "input billed = count");
                assert_eq!(
                    answer.output_tokens as usize,
                    answer.text.len() * tpp as usize
                );
                for k in 0..=answer.text.len() {
                    let d = answer.text[..k].concat();
                    let with = with_tpp(prompt(&[("user", &q), ("assistant", &d)]), tpp);
                    assert_eq!(
                        (count(model, &with, &re()) - base) as usize,
                        k * tpp as usize,
                        "{model} tpp {tpp} seed {seed} after {k} pieces"
                    );
                }
                // A continuation reply (echo, opener, marker) counts the same way, and the
                // text the client has after a splice counts what both streams billed for it.
                let d = answer.text[..20].concat();
                let ask = ask_for(&anchor_for(&d).unwrap());
                let turns = [("user", q.as_str()), ("assistant", &d), ("user", &ask)];
                let cont = with_tpp(prompt(&turns), tpp);
                let reply = plan(model, &cont, 2, 0, &re(), seed == 0).unwrap();
                let cbase = count(model, &cont, &re());
                assert_eq!(reply.input_tokens, cbase);
                for k in 0..=reply.text.len() {
                    let r = reply.text[..k].concat();
                    let mut with = turns.to_vec();
                    with.push(("assistant", &r));
                    let n = count(model, &with_tpp(prompt(&with), tpp), &re()) - cbase;
                    assert_eq!(n as usize, k * tpp as usize, "{:?} {k}", reply.phrasing);
                }
                let rest = answer.text[20..].concat();
                for k in 0..=answer.text.len() - 20 {
                    let has = format!("{d}{}", &answer.text[20..20 + k].concat());
                    let with = with_tpp(prompt(&[("user", &q), ("assistant", &has)]), tpp);
                    let n = count(model, &with, &re()) - base;
                    assert_eq!(n as usize, (20 + k) * tpp as usize, "{rest:?}");
                }
            }
        }
    }
}

#[test]
fn extended_thinking_limits_are_refused_as_bedrock_does() {
    let mut p = prompt(&[("user", "think")]);
    p.reasoning = true;
    p.thinking_enabled = true;
    p.thinking_budget = Some(1000);
    p.max_tokens = Some(4000);
    let err = |p: &Prompt| plan(SONNET_46, p, 1, 0, &re(), true).unwrap_err();
    assert_eq!(err(&p), SimError::Validation(BUDGET_TOO_SMALL.into()));
    assert_eq!(
        err(&p).to_string(),
        "The model returned the following errors: thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
    );
    p.thinking_budget = Some(4000);
    assert_eq!(
        err(&p),
        SimError::Validation(MAX_TOKENS_UNDER_BUDGET.into())
    );
    assert!(err(&p).to_string().starts_with(
        "The model returned the following errors: `max_tokens` must be greater than `thinking.budget_tokens`."
    ));
    p.max_tokens = Some(4001);
    assert!(plan(SONNET_46, &p, 1, 0, &re(), true).is_ok());
    p.max_tokens = None;
    assert!(plan(SONNET_46, &p, 1, 0, &re(), true).is_ok());
    p.thinking_budget = None;
    assert_eq!(err(&p), SimError::Validation(BUDGET_MISSING.into()));
    // Nova's reasoning has no such budget.
    p.thinking_budget = Some(10);
    assert!(plan("amazon.nova-pro-v1:0", &p, 1, 0, &re(), true).is_ok());
    // Parsed from Converse and from the Claude body.
    let conv = serde_json::json!({"messages": [{"role": "user", "content": [{"text": "x"}]}],
        "inferenceConfig": {"maxTokens": 2000},
        "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 2000}}});
    let parsed = crate::request::parse_converse(&conv).unwrap();
    assert_eq!(
        plan(M, &parsed, 1, 0, &re(), true).unwrap_err(),
        SimError::Validation(MAX_TOKENS_UNDER_BUDGET.into())
    );
    let claude = serde_json::json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 3000,
        "thinking": {"type": "enabled", "budget_tokens": 512},
        "messages": [{"role": "user", "content": "x"}]});
    let parsed = crate::request::parse_invoke(crate::request::Family::Claude, &claude).unwrap();
    assert_eq!(
        plan(M, &parsed, 1, 0, &re(), true).unwrap_err(),
        SimError::Validation(BUDGET_TOO_SMALL.into())
    );
}
