//! Rule-by-rule tests of Transcript + plan + Splicer on real-shaped frames.

use super::util::*;
use crate::resume::*;
use serde_json::{json, Value};

const CONVERSE: StreamFormat = StreamFormat::Converse;

fn last_message(body: &Value) -> &Value {
    body["messages"].as_array().unwrap().last().unwrap()
}

#[test]
fn detects_format_and_family_from_operation_and_model_id() {
    use crate::ops::Operation as Op;
    assert_eq!(
        StreamFormat::detect(Op::ConverseStream, "x"),
        Some(CONVERSE)
    );
    let f = |id| StreamFormat::detect(Op::InvokeModelWithResponseStream, id);
    assert_eq!(
        f("us.anthropic.claude-sonnet-4-6"),
        Some(StreamFormat::Invoke(Family::Claude))
    );
    assert_eq!(
        f("arn:aws:bedrock:us-east-1:1:inference-profile/us.meta.llama3-1-8b-instruct-v1:0"),
        Some(StreamFormat::Invoke(Family::Llama))
    );
    assert_eq!(
        f("amazon.nova-lite-v1:0"),
        Some(StreamFormat::Invoke(Family::Nova))
    );
    assert_eq!(
        f("mistral.mistral-7b-instruct-v0:2"),
        Some(StreamFormat::Invoke(Family::Mistral))
    );
    assert_eq!(
        f("amazon.titan-text-express-v1"),
        Some(StreamFormat::Invoke(Family::Titan))
    );
    assert_eq!(
        f("cohere.command-r-v1:0"),
        Some(StreamFormat::Invoke(Family::Cohere))
    );
    assert_eq!(StreamFormat::detect(Op::Converse, "x"), None);
    assert_eq!(Strategy::Instructed.label(), "instructed");
}

#[test]
fn prefill_trims_whitespace_and_the_seam_restores_it_exactly() {
    let block = texts(&["Hello", " world", ".\n\n", "Next", " line"]);
    let full = converse_stream(std::slice::from_ref(&block), "end_turn", 7);
    let mut c = Client::new(CONVERSE);
    c.feed(&full[..4]).unwrap(); // messageStart + 3 deltas
    assert!(c.transcript().forwarded_any() && !c.transcript().is_complete());
    assert_eq!(
        c.transcript().attempt_usage_estimate(),
        AttemptUsage {
            input: None,
            output: 3
        }
    );
    let (strategy, body) = c.resume(&user_body(), ALL).unwrap();
    assert_eq!(strategy, Strategy::Prefill);
    assert_eq!(
        last_message(&body),
        &json!({"role":"assistant","content":[{"text":"Hello world."}]})
    );
    // The model continues after "Hello world.", re-chunked, and reports its own usage.
    let mut cont = vec![conv("messageStart", json!({"role":"assistant"}), 2)];
    converse_block(&texts(&["\n", "\nNext", " line"]), 0, &mut cont);
    converse_tail("end_turn", 7 + 3, 3, &mut cont);
    c.feed(&cont).unwrap();
    let seen = check_converse(&c.received).unwrap();
    assert_eq!(
        seen.blocks,
        vec![("text".to_string(), "Hello world.\n\nNext line".to_string())]
    );
    // Sum over attempts: final (10 in, 3 out) + failed (10 - 3 delivered = 7 in, 3 out).
    assert_eq!(seen.usage, (17, 6, 23));
    assert_eq!(
        c.splicer().carried_usage(),
        Some(Usage {
            input: 7,
            output: 3
        })
    );
    assert!(c.transcript().is_complete());
}

#[test]
fn prefill_extends_an_original_prefill() {
    let mut c = Client::new(CONVERSE);
    let full = converse_stream(&[texts(&[" one", " two", " three"])], "end_turn", 5);
    c.feed(&full[..3]).unwrap();
    let body = json!({"messages":[{"role":"user","content":[{"text":"Count"}]},
        {"role":"assistant","content":[{"text":"Sure:"}]}]});
    let (_, body) = c.resume(body.to_string().as_bytes(), ALL).unwrap();
    assert_eq!(body["messages"].as_array().unwrap().len(), 2);
    assert_eq!(
        last_message(&body)["content"],
        json!([{"text":"Sure: one two"}])
    );
}

#[test]
fn fault_between_blocks_renumbers_the_continuation_after_the_client_blocks() {
    let tool = RefBlock::Tool {
        id: "tooluse_a".into(),
        name: "get_weather".into(),
        pieces: vec!["{\"city\":".into(), "\"Paris\"}".into()],
    };
    let full = converse_stream(&[texts(&["Let me check. "]), tool], "tool_use", 9);
    for empty_text_first in [false, true] {
        let mut c = Client::new(CONVERSE);
        c.feed(&full[..3]).unwrap(); // start, delta, stop of block 0
        let (strategy, body) = c.resume(&user_body(), ALL).unwrap();
        assert_eq!(strategy, Strategy::Prefill);
        assert_eq!(last_message(&body)["content"][0]["text"], "Let me check.");
        let mut cont = vec![conv("messageStart", json!({"role":"assistant"}), 2)];
        let mut next = 0;
        if empty_text_first {
            converse_block(&texts(&[" "]), 0, &mut cont); // only the remembered whitespace
            next = 1;
        }
        let tool2 = RefBlock::Tool {
            id: "tooluse_b".into(),
            name: "get_weather".into(),
            pieces: vec!["{\"city\":\"Paris\"}".into()],
        };
        converse_block(&tool2, next, &mut cont);
        converse_tail("tool_use", 12, 2, &mut cont);
        c.feed(&cont).unwrap();
        let seen = check_converse(&c.received).unwrap();
        assert_eq!(seen.blocks[0], ("text".into(), "Let me check. ".into()));
        assert_eq!(
            seen.blocks[1],
            (
                "tool:get_weather:tooluse_b".into(),
                "{\"city\":\"Paris\"}".into()
            )
        );
        assert_eq!(seen.blocks.len(), 2);
        assert_eq!(seen.stop, "tool_use");
    }
}

#[test]
fn continuation_without_content_closes_the_open_block_and_ends() {
    let full = converse_stream(&[texts(&["All", " done."])], "end_turn", 4);
    let mut c = Client::new(CONVERSE);
    c.feed(&full[..3]).unwrap(); // both deltas, block still open
    c.resume(&user_body(), ALL).unwrap();
    let mut cont = vec![conv("messageStart", json!({"role":"assistant"}), 2)];
    cont.push(conv(
        "contentBlockDelta",
        json!({"contentBlockIndex":0,"delta":{"text":""}}),
        1,
    ));
    converse_tail("end_turn", 6, 0, &mut cont);
    c.feed(&cont).unwrap();
    let seen = check_converse(&c.received).unwrap();
    assert_eq!(seen.blocks, vec![("text".into(), "All done.".into())]);
    // No empty delta reached the client.
    assert_eq!(c.received.len(), 3 + 1 + 2);
}

#[test]
fn interrupted_tool_use_is_replayed_keeping_the_client_tool_id() {
    let tool = |id: &str| RefBlock::Tool {
        id: id.into(),
        name: "calc".into(),
        pieces: vec!["{\"a\":".into(), "1,".into(), "\"b\":2}".into()],
    };
    let first = converse_stream(&[tool("tooluse_1")], "tool_use", 3);
    // With the tool-call hold off (`resume.hold_tool_use = false`), the client has half a call.
    let mut c = Client::holding(CONVERSE, false);
    c.feed(&first[..4]).unwrap(); // start, tool start, two input pieces
    let err = plan(
        &CONVERSE,
        &user_body(),
        &mut c.transcript().clone(),
        &ModelCaps {
            replay: false,
            ..ALL
        },
    )
    .unwrap_err();
    assert_eq!(err, CannotResume::ToolUseNeedsReplay);
    let (strategy, body) = c.resume(&user_body(), ALL).unwrap();
    assert_eq!(strategy, Strategy::Replay);
    assert_eq!(body, serde_json::from_slice::<Value>(&user_body()).unwrap());
    // Replay: a new tool id (tolerated), input re-chunked differently.
    let replay = converse_stream(
        &[RefBlock::Tool {
            id: "tooluse_2".into(),
            name: "calc".into(),
            pieces: vec!["{\"a\":1".into(), ",\"b\":2}".into()],
        }],
        "tool_use",
        3,
    );
    c.feed(&replay).unwrap();
    let seen = check_converse(&c.received).unwrap();
    assert_eq!(
        seen.blocks,
        vec![("tool:calc:tooluse_1".into(), "{\"a\":1,\"b\":2}".into())]
    );
    // Failed attempt: 3 in (same request), 2 deltas out; final 3 in, 2 out.
    assert_eq!(seen.usage, (6, 4, 10));
}

#[test]
fn replay_that_differs_from_the_delivered_content_is_a_divergence() {
    let first = converse_stream(
        &[texts(&["Alpha", " beta"]), texts(&[" gamma"])],
        "end_turn",
        3,
    );
    let mut c = Client::new(CONVERSE);
    c.feed(&first[..5]).unwrap(); // block 0 done, block 1 started
    let (strategy, _) = c.resume(&user_body(), ALL).unwrap();
    assert_eq!(strategy, Strategy::Replay, "several blocks: replay");
    let mut other = c.transcript().clone();
    let other_replay = converse_stream(&[texts(&["Alpha", " bets"])], "end_turn", 3);
    let err = c.feed(&other_replay).unwrap_err();
    assert_eq!(err.block, Some(0));
    // A replay that ends the block early also diverges.
    let mut c2 = Client::new(CONVERSE);
    c2.feed(&first[..5]).unwrap();
    c2.resume(&user_body(), ALL).unwrap();
    let short = converse_stream(&[texts(&["Alpha"]), texts(&[" gamma"])], "end_turn", 3);
    assert!(c2.feed(&short).is_err());
    // And no strategy when replay is off.
    let e = plan(&CONVERSE, &user_body(), &mut other, &NONE).unwrap_err();
    assert!(matches!(e, CannotResume::NoStrategy { .. }), "{e}");
}

#[test]
fn reasoning_is_replayed_and_a_delivered_signature_must_match() {
    let r = |sig: &str| RefBlock::Reasoning {
        pieces: vec!["Think".into(), "ing.".into()],
        signature: sig.into(),
    };
    let first = converse_stream(&[r("SIG1"), texts(&["Answer", " here"])], "end_turn", 3);
    // Cut mid reasoning text: replay; the new signature was never delivered, so it is forwarded.
    let mut c = Client::new(CONVERSE);
    c.feed(&first[..2]).unwrap();
    assert_eq!(
        c.resume(
            &user_body(),
            ModelCaps {
                replay: false,
                ..ALL
            }
        )
        .unwrap_err(),
        CannotResume::ReasoningNeedsReplay
    );
    assert_eq!(c.resume(&user_body(), ALL).unwrap().0, Strategy::Replay);
    c.feed(&converse_stream(
        &[r("SIG2"), texts(&["Answer", " here"])],
        "end_turn",
        3,
    ))
    .unwrap();
    let seen = check_converse(&c.received).unwrap();
    assert_eq!(seen.blocks[0], ("reasoning".into(), "Thinking.".into()));
    assert_eq!(seen.blocks[1].1, "Answer here");
    // Cut after the signature: a different one on replay diverges, the same one is swallowed.
    for (sig, ok) in [("SIG1", true), ("SIG2", false)] {
        let mut c = Client::new(CONVERSE);
        c.feed(&first[..5]).unwrap(); // start, 2 texts, signature, stop
        c.resume(&user_body(), ALL).unwrap();
        let res = c.feed(&converse_stream(
            &[r(sig), texts(&["Answer", " here"])],
            "end_turn",
            3,
        ));
        assert_eq!(res.is_ok(), ok, "{res:?}");
        if ok {
            assert_eq!(
                check_converse(&c.received).unwrap().blocks[1].1,
                "Answer here"
            );
        }
    }
}

#[test]
fn reasoning_request_forbids_prefill_even_before_a_reasoning_block() {
    let mut c = Client::new(CONVERSE);
    c.feed(&converse_stream(&[texts(&["Hi", " there"])], "end_turn", 1)[..2])
        .unwrap();
    let body = json!({"messages":[{"role":"user","content":[{"text":"q"}]}],
        "additionalModelRequestFields":{"thinking":{"type":"enabled","budget_tokens":1024}}});
    let (s, _) = c.resume(body.to_string().as_bytes(), ALL).unwrap();
    assert_eq!(s, Strategy::Replay);
}

#[test]
fn instructed_continuation_removes_the_echoed_words() {
    let full = converse_stream(
        &[texts(&["The", " quick", " brown", " fox", " jumps."])],
        "end_turn",
        5,
    );
    let mut c = Client::new(CONVERSE);
    c.feed(&full[..4]).unwrap();
    let (strategy, body) = c.resume(&user_body(), INSTRUCTED).unwrap();
    assert_eq!(strategy, Strategy::Instructed);
    let msgs = body["messages"].as_array().unwrap();
    assert_eq!(
        msgs[1],
        json!({"role":"assistant","content":[{"text":"The quick brown"}]})
    );
    assert_eq!(
        msgs[2],
        json!({"role":"user","content":[{"text":crate::resume::instruction(&crate::resume::anchor::choose("The quick brown").unwrap())}]})
    );
    let mut cont = vec![conv("messageStart", json!({"role":"assistant"}), 2)];
    converse_block(
        &texts(&["The", " quick", " brown", " fox", " jumps."]),
        0,
        &mut cont,
    );
    converse_tail("end_turn", 20, 4, &mut cont);
    c.feed(&cont).unwrap();
    let seen = check_converse(&c.received).unwrap();
    assert_eq!(
        seen.blocks,
        vec![("text".into(), "The quick brown fox jumps.".into())]
    );
}

#[test]
fn whitespace_only_or_several_text_blocks_are_replayed() {
    let full = converse_stream(&[texts(&["\n\n", "Hi"])], "end_turn", 1);
    let mut c = Client::new(CONVERSE);
    c.feed(&full[..2]).unwrap();
    assert_eq!(c.resume(&user_body(), ALL).unwrap().0, Strategy::Replay);
    let mut c = Client::new(CONVERSE);
    c.feed(&full[..2]).unwrap();
    let e = c
        .resume(
            &user_body(),
            ModelCaps {
                replay: false,
                ..ALL
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("whitespace"), "{e}");
    let full = converse_stream(&[texts(&["A"]), texts(&["B", "C"])], "end_turn", 1);
    let mut c = Client::new(CONVERSE);
    c.feed(&full[..5]).unwrap();
    let e = c
        .resume(
            &user_body(),
            ModelCaps {
                replay: false,
                ..ALL
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("several"), "{e}");
}

#[test]
fn nothing_delivered_is_a_plain_retry_and_start_only_swallows_the_new_start() {
    let full = converse_stream(&[texts(&["Hi"])], "end_turn", 1);
    let mut c = Client::new(CONVERSE);
    assert!(!c.transcript().forwarded_any());
    assert_eq!(c.resume(&user_body(), NONE).unwrap().0, Strategy::Replay);
    c.feed(&full).unwrap();
    assert_eq!(c.received.len(), full.len());
    let mut c = Client::new(CONVERSE);
    c.feed(&full[..1]).unwrap();
    c.resume(&user_body(), NONE).unwrap();
    c.feed(&full).unwrap();
    assert_eq!(check_converse(&c.received).unwrap().blocks[0].1, "Hi");
    assert_eq!(
        c.resume(&user_body(), ALL).unwrap_err(),
        CannotResume::AlreadyComplete
    );
}

#[test]
fn missing_metadata_after_message_stop_is_replayed_with_summed_usage() {
    let full = converse_stream(&[texts(&["Done", "."])], "end_turn", 4);
    let mut c = Client::new(CONVERSE);
    c.feed(&full[..5]).unwrap(); // up to messageStop
    assert!(c.transcript().saw_message_stop());
    assert!(c
        .resume(
            &user_body(),
            ModelCaps {
                replay: false,
                ..ALL
            }
        )
        .is_err());
    assert_eq!(c.resume(&user_body(), ALL).unwrap().0, Strategy::Replay);
    c.feed(&full).unwrap();
    let seen = check_converse(&c.received).unwrap();
    assert_eq!(seen.usage, (8, 4, 12));
    assert_eq!(
        usage_of(CONVERSE, &c.received.last().unwrap().clone().into()),
        Some(Usage {
            input: 8,
            output: 4
        })
    );
    // A replay with another stop reason diverges.
    let mut c = Client::new(CONVERSE);
    c.feed(&full[..5]).unwrap();
    c.resume(&user_body(), ALL).unwrap();
    assert!(c
        .feed(&converse_stream(&[texts(&["Done", "."])], "max_tokens", 4))
        .is_err());
}

#[test]
fn transcript_past_its_limit_drops_content_and_refuses_to_resume() {
    let full = converse_stream(
        &[texts(&["0123456789", "abcdefghij", "more"])],
        "end_turn",
        1,
    );
    let mut t = Transcript::with_limit(CONVERSE, 15);
    for m in &full[..2] {
        t.observe(&m.clone().into());
    }
    assert!(!t.overflowed());
    assert_eq!(t.bytes(), 10);
    t.observe(&full[2].clone().into());
    assert!(t.overflowed());
    assert_eq!(t.bytes(), 20);
    assert_eq!(t.texts(), vec![""]);
    let e = plan(&CONVERSE, &user_body(), &mut t, &ALL).unwrap_err();
    assert_eq!(e, CannotResume::TranscriptTooLarge { limit: 15 });
    for m in &full[3..] {
        t.observe(&m.clone().into());
    }
    assert!(t.is_complete());
}

#[test]
fn pump_types_can_move_between_tasks() {
    fn send<T: Send + 'static>() {}
    send::<Transcript>();
    send::<Splicer>();
    send::<Continuation>();
    send::<CannotResume>();
    send::<Divergence>();
}

#[test]
fn replanning_after_a_refused_continuation_uses_the_new_caps() {
    let full = converse_stream(&[texts(&["Some", " text"])], "end_turn", 4);
    let mut c = Client::new(CONVERSE);
    c.feed(&full[..3]).unwrap();
    assert_eq!(c.resume(&user_body(), ALL).unwrap().0, Strategy::Prefill);
    // Bedrock answered 400 (no prefill for this model): plan again without prefill.
    let (s, _) = c
        .resume(
            &user_body(),
            ModelCaps {
                prefill: false,
                ..ALL
            },
        )
        .unwrap();
    assert_eq!(s, Strategy::Instructed);
    let mut cont = vec![conv("messageStart", json!({"role":"assistant"}), 2)];
    converse_block(&texts(&["Some text", " more."]), 0, &mut cont);
    converse_tail("end_turn", 10, 1, &mut cont);
    c.feed(&cont).unwrap();
    let seen = check_converse(&c.received).unwrap();
    assert_eq!(seen.blocks[0].1, "Some text more.");
    // Only the first attempt is carried: 10 - 2 delivered = 8 in, 2 out.
    assert_eq!(seen.usage, (18, 3, 21));
}

#[test]
fn a_body_that_cannot_be_extended_falls_back_to_replay() {
    let full = converse_stream(&[texts(&["Some", " text"])], "end_turn", 4);
    let mut c = Client::new(CONVERSE);
    c.feed(&full[..3]).unwrap();
    let e = plan(
        &CONVERSE,
        b"not json",
        &mut c.transcript().clone(),
        &ModelCaps {
            replay: false,
            ..ALL
        },
    )
    .unwrap_err();
    assert!(matches!(e, CannotResume::BadRequestBody(_)), "{e}");
    let e = plan(
        &CONVERSE,
        b"{}",
        &mut c.transcript().clone(),
        &ModelCaps {
            replay: false,
            ..ALL
        },
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the original request body cannot be continued: request body has no `messages`"
    );
    let next = plan(&CONVERSE, b"{}", c.transcript_mut(), &ALL).unwrap();
    assert_eq!(
        (next.strategy, &next.body[..]),
        (Strategy::Replay, &b"{}"[..])
    );
}

#[test]
fn giving_up_is_a_modelled_stream_exception() {
    use crate::eventstream::{kind, Kind};
    let m = give_up_event(&CannotResume::ToolUseNeedsReplay.to_string());
    assert_eq!(kind(&m), Kind::Exception("modelStreamErrorException"));
    let v: Value = serde_json::from_slice(m.payload()).unwrap();
    assert!(v["message"].as_str().unwrap().contains("tool-use"));
    assert_eq!(v["originalStatusCode"], 500);
}
