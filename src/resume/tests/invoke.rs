//! Rule tests for invoke streams (Claude, Nova, Llama, Mistral, Titan, unknown families).

use super::util::*;
use super::wire::check_claude;
use crate::resume::*;
use serde_json::{json, Value};

fn last_message(body: &Value) -> &Value {
    body["messages"].as_array().unwrap().last().unwrap()
}

#[test]
fn claude_prefill_splices_one_message_start_and_sums_usage() {
    let claude = StreamFormat::Invoke(Family::Claude);
    let full = claude_stream(&[&["Hello", " world", ". ", "Bye"]], 11);
    let mut c = Client::new(claude);
    c.feed(&full[..5]).unwrap(); // start, block start, 3 deltas
    assert_eq!(
        c.transcript().attempt_usage_estimate(),
        AttemptUsage {
            input: Some(11),
            output: 3
        }
    );
    let body = json!({"anthropic_version":"bedrock-2023-05-31","max_tokens":100,"messages":[{"role":"user","content":"hi"}]});
    let (s, next) = c.resume(body.to_string().as_bytes(), ALL).unwrap();
    assert_eq!(s, Strategy::Prefill);
    assert_eq!(
        last_message(&next)["content"],
        json!([{"type":"text","text":"Hello world."}])
    );
    c.feed(&claude_stream(&[&[" ", "Bye"]], 14)).unwrap();
    let ev = inner(&c.received);
    let types: Vec<&str> = ev.iter().map(|v| v["type"].as_str().unwrap()).collect();
    assert_eq!(types.iter().filter(|t| **t == "message_start").count(), 1);
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "content_block_start")
            .count(),
        1
    );
    let text: String = ev
        .iter()
        .filter_map(|v| v.pointer("/delta/text").and_then(Value::as_str))
        .collect();
    assert_eq!(text, "Hello world. Bye");
    assert!(ev.iter().all(|v| v.get("index").is_none_or(|i| i == 0)));
    let md = ev.iter().find(|v| v["type"] == "message_delta").unwrap();
    assert_eq!(md["usage"]["output_tokens"], 2 + 3);
    let m = &ev.last().unwrap()["amazon-bedrock-invocationMetrics"];
    assert_eq!(
        (
            m["inputTokenCount"].as_u64(),
            m["outputTokenCount"].as_u64()
        ),
        (Some(14 + 11), Some(5))
    );
    assert!(c.transcript().is_complete());
}

#[test]
fn claude_replay_forwards_only_the_new_part_of_a_straddling_delta() {
    let claude = StreamFormat::Invoke(Family::Claude);
    let mut c = Client::new(claude);
    c.feed(&claude_stream(&[&["Hel"], &["x"]], 2)[..6]).unwrap(); // block 0 done, block 1 started
    c.resume(b"{\"messages\":[]}", ALL).unwrap();
    c.feed(&claude_stream(&[&["Hel"], &["xyz"]], 2)).unwrap();
    let text: Vec<String> = inner(&c.received)
        .iter()
        .filter_map(|v| {
            v.pointer("/delta/text")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, vec!["Hel", "x", "yz"]);
}

#[test]
fn llama_prefill_appends_to_the_prompt_and_strips_the_seam() {
    let llama = StreamFormat::Invoke(Family::Llama);
    let full = llama_stream(&["Once", " upon", " a ", "time"], 6);
    let mut c = Client::new(llama);
    c.feed(&full[..3]).unwrap();
    let prompt = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nStory<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
    let body = json!({"prompt":prompt,"max_gen_len":50});
    let (s, next) = c.resume(body.to_string().as_bytes(), ALL).unwrap();
    assert_eq!(s, Strategy::Prefill);
    assert_eq!(next["prompt"], format!("{prompt}Once upon a"));
    c.feed(&llama_stream(&[" ", "time"], 9)).unwrap();
    let ev = inner(&c.received);
    let text: String = ev
        .iter()
        .map(|v| v["generation"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Once upon a time");
    let last = ev.last().unwrap();
    assert_eq!(last["stop_reason"], "stop");
    assert_eq!(
        last["amazon-bedrock-invocationMetrics"]["inputTokenCount"],
        9 + 6
    );
    assert_eq!(
        last["amazon-bedrock-invocationMetrics"]["outputTokenCount"],
        2 + 3
    );
    assert!(c.transcript().is_complete());
}

#[test]
fn transcript_counts_bytes_and_unknown_families_replay_byte_exact() {
    let other = StreamFormat::Invoke(Family::Other);
    let chunks: Vec<_> = ["{\"t\":\"a\"}", "{\"t\":\"b\"}"]
        .iter()
        .map(|s| claude_chunk(serde_json::from_str(s).unwrap()))
        .collect();
    let mut c = Client::new(other);
    c.feed(&chunks[..1]).unwrap();
    assert!(c.transcript().bytes() > 0);
    assert!(c
        .resume(
            b"{}",
            ModelCaps {
                replay: false,
                ..ALL
            }
        )
        .is_err());
    c.resume(b"{}", ALL).unwrap();
    c.feed(&chunks).unwrap();
    assert_eq!(c.received, chunks);
    let mut c = Client::new(other);
    c.feed(&chunks[1..]).unwrap();
    c.resume(b"{}", ALL).unwrap();
    assert!(c.feed(&chunks).is_err());
}

fn claude_body() -> Vec<u8> {
    json!({"anthropic_version":"bedrock-2023-05-31","max_tokens":100,"messages":[{"role":"user","content":"hi"}]})
        .to_string()
        .into_bytes()
}

fn types(ev: &[Value]) -> Vec<String> {
    ev.iter()
        .map(|v| v["type"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn claude_between_blocks_renumbers_tool_use_and_resends_a_needed_block_start() {
    let claude = StreamFormat::Invoke(Family::Claude);
    let mut c = Client::new(claude);
    c.feed(&claude_stream(&[&["Checking."]], 3)[..4]).unwrap(); // start, block start, delta, stop
    assert_eq!(c.resume(&claude_body(), ALL).unwrap().0, Strategy::Prefill);
    let cont = vec![
        claude_chunk(
            json!({"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}),
        ),
        claude_chunk(
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        claude_chunk(
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" More."}}),
        ),
        claude_chunk(json!({"type":"content_block_stop","index":0})),
        claude_chunk(
            json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_9","name":"f","input":{}}}),
        ),
        claude_chunk(
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{}"}}),
        ),
        claude_chunk(json!({"type":"content_block_stop","index":1})),
        claude_chunk(
            json!({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":2}}),
        ),
        claude_chunk(json!({"type":"message_stop"})),
    ];
    c.feed(&cont).unwrap();
    let ev = inner(&c.received);
    let t = types(&ev);
    // The client's block 0 was closed: the continued text becomes block 1 (its start re-sent),
    // the tool block becomes block 2.
    let idx: Vec<(String, i64)> = ev
        .iter()
        .filter_map(|v| {
            v["index"]
                .as_i64()
                .map(|i| (v["type"].as_str().unwrap().to_owned(), i))
        })
        .collect();
    let want: Vec<(String, i64)> = [
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), *b))
    .collect();
    assert_eq!(idx, want);
    assert_eq!(t.iter().filter(|t| *t == "message_start").count(), 1);
    assert_eq!(ev[7]["content_block"]["id"], "toolu_9");
}

#[test]
fn claude_thinking_is_replayed_never_prefilled() {
    let claude = StreamFormat::Invoke(Family::Claude);
    let stream = |sig: &str| {
        vec![
            claude_chunk(
                json!({"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}),
            ),
            claude_chunk(
                json!({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}),
            ),
            claude_chunk(
                json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Hmm."}}),
            ),
            claude_chunk(
                json!({"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":sig}}),
            ),
            claude_chunk(json!({"type":"content_block_stop","index":0})),
            claude_chunk(
                json!({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}),
            ),
            claude_chunk(
                json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Yes"}}),
            ),
            claude_chunk(json!({"type":"content_block_stop","index":1})),
            claude_chunk(
                json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3}}),
            ),
            claude_chunk(json!({"type":"message_stop"})),
        ]
    };
    let mut c = Client::new(claude);
    c.feed(&stream("S1")[..3]).unwrap();
    let no_replay = ModelCaps {
        replay: false,
        ..ALL
    };
    assert_eq!(
        c.resume(&claude_body(), no_replay).unwrap_err(),
        CannotResume::ReasoningNeedsReplay
    );
    assert_eq!(c.resume(&claude_body(), ALL).unwrap().0, Strategy::Replay);
    c.feed(&stream("S1")).unwrap();
    let ev = inner(&c.received);
    assert_eq!(ev.len(), stream("S1").len());
    assert_eq!(ev[3]["delta"]["signature"], "S1");
    // Delivered signature must match on replay.
    let mut c = Client::new(claude);
    c.feed(&stream("S1")[..6]).unwrap();
    c.resume(&claude_body(), ALL).unwrap();
    assert!(c.feed(&stream("S2")).is_err());
}

fn nova(v: Value) -> aws_smithy_types::event_stream::Message {
    claude_chunk(v)
}

#[test]
fn nova_prefill_between_blocks_renumbers_and_sums_metadata_and_metrics() {
    let fmt = StreamFormat::Invoke(Family::Nova);
    let first = [
        nova(json!({"messageStart":{"role":"assistant"}})),
        nova(json!({"contentBlockDelta":{"delta":{"text":"Let me look."},"contentBlockIndex":0}})),
        nova(json!({"contentBlockStop":{"contentBlockIndex":0}})),
    ];
    let mut c = Client::new(fmt);
    c.feed(&first).unwrap();
    let body = json!({"messages":[{"role":"user","content":[{"text":"q"}]}],"inferenceConfig":{"maxTokens":90}});
    let (s, next) = c.resume(body.to_string().as_bytes(), ALL).unwrap();
    assert_eq!(s, Strategy::Prefill);
    assert_eq!(
        last_message(&next),
        &json!({"role":"assistant","content":[{"text":"Let me look."}]})
    );
    c.feed(&[
        nova(json!({"messageStart":{"role":"assistant"}})),
        nova(json!({"contentBlockStart":{"start":{"toolUse":{"toolUseId":"t2","name":"find"}},"contentBlockIndex":0}})),
        nova(json!({"contentBlockDelta":{"delta":{"toolUse":{"input":"{}"}},"contentBlockIndex":0}})),
        nova(json!({"contentBlockStop":{"contentBlockIndex":0}})),
        nova(json!({"messageStop":{"stopReason":"tool_use"}})),
        nova(json!({"metadata":{"usage":{"inputTokens":8,"outputTokens":1}},
            "amazon-bedrock-invocationMetrics":{"inputTokenCount":8,"outputTokenCount":1,"invocationLatency":3,"firstByteLatency":1}})),
    ])
    .unwrap();
    let ev = inner(&c.received);
    assert_eq!(
        ev.iter()
            .filter(|v| v.get("messageStart").is_some())
            .count(),
        1
    );
    assert_eq!(ev[3]["contentBlockStart"]["contentBlockIndex"], 1);
    assert_eq!(ev[5]["contentBlockStop"]["contentBlockIndex"], 1);
    let last = ev.last().unwrap();
    // Failed attempt: 8 - 1 delivered = 7 in, 1 out.
    assert_eq!(last["metadata"]["usage"]["inputTokens"], 15);
    assert_eq!(last["metadata"]["usage"]["outputTokens"], 2);
    assert_eq!(
        last["amazon-bedrock-invocationMetrics"]["inputTokenCount"],
        15
    );
    assert!(c.transcript().is_complete());
}

#[test]
fn mistral_and_titan_continue_their_prompt_text() {
    let metrics = json!({"inputTokenCount":4,"outputTokenCount":2,"invocationLatency":3,"firstByteLatency":1});
    // Mistral
    let fmt = StreamFormat::Invoke(Family::Mistral);
    let mut c = Client::new(fmt);
    c.feed(&[claude_chunk(
        json!({"outputs":[{"text":"Bonjour ","stop_reason":null}]}),
    )])
    .unwrap();
    let (_, next) = c
        .resume(br#"{"prompt":"<s>[INST] hi [/INST]","max_tokens":9}"#, ALL)
        .unwrap();
    assert_eq!(next["prompt"], "<s>[INST] hi [/INST]Bonjour");
    let mut last = json!({"outputs":[{"text":"monde","stop_reason":"stop"}]});
    last["amazon-bedrock-invocationMetrics"] = metrics.clone();
    c.feed(&[
        claude_chunk(json!({"outputs":[{"text":" ","stop_reason":null}]})),
        claude_chunk(last),
    ])
    .unwrap();
    let text: String = inner(&c.received)
        .iter()
        .map(|v| v["outputs"][0]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "Bonjour monde");
    assert!(c.transcript().is_complete());
    // Titan
    let fmt = StreamFormat::Invoke(Family::Titan);
    let mut c = Client::new(fmt);
    c.feed(&[claude_chunk(
        json!({"outputText":" Hello.\n","index":0,"totalOutputTextTokenCount":2,
        "completionReason":null,"inputTextTokenCount":4}),
    )])
    .unwrap();
    let (_, next) = c.resume(br#"{"inputText":"User: hi\nBot:"}"#, ALL).unwrap();
    assert_eq!(next["inputText"], "User: hi\nBot: Hello.");
    let mut last = json!({"outputText":"\nBye","index":0,"totalOutputTextTokenCount":2,"completionReason":"FINISH"});
    last["amazon-bedrock-invocationMetrics"] = metrics;
    c.feed(&[claude_chunk(last)]).unwrap();
    let ev = inner(&c.received);
    let text: String = ev
        .iter()
        .map(|v| v["outputText"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, " Hello.\nBye");
    // Failed attempt announced 4 input tokens and 2 output tokens (its exact running count,
    // not one per delta); the continuation's counter continues the client's.
    assert_eq!(ev[1]["totalOutputTextTokenCount"], 4);
    assert_eq!(
        ev[1]["amazon-bedrock-invocationMetrics"]["inputTokenCount"],
        8
    );
    assert_eq!(
        ev[1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"],
        4
    );
    assert_eq!(
        next["textGenerationConfig"]["maxTokenCount"], 510,
        "default 512 minus 2"
    );
}

#[test]
fn claude_missing_message_stop_is_replayed_with_one_message_delta() {
    let claude = StreamFormat::Invoke(Family::Claude);
    let full = claude_stream(&[&["Done", "."]], 4);
    let mut c = Client::new(claude);
    c.feed(&full[..6]).unwrap(); // through message_delta
    assert!(c.transcript().saw_message_stop());
    assert_eq!(c.resume(&claude_body(), ALL).unwrap().0, Strategy::Replay);
    c.feed(&full).unwrap();
    let seen = check_claude(&c.received).unwrap();
    assert_eq!(seen.blocks, vec![("text".to_string(), "Done.".to_string())]);
    // Failed attempt: 4 announced in, 2 deltas out.
    assert_eq!(seen.usage, (8, 4, 12));
}

#[test]
fn llama_final_chunk_that_only_repeats_the_whitespace_keeps_its_stop() {
    let llama = StreamFormat::Invoke(Family::Llama);
    let mut c = Client::new(llama);
    c.feed(&llama_stream(&["Hi", " ", "there"], 3)[..2])
        .unwrap(); // "Hi "
    let body = json!({"prompt":"<s>","max_gen_len":9});
    assert_eq!(
        c.resume(body.to_string().as_bytes(), ALL).unwrap().0,
        Strategy::Prefill
    );
    c.feed(&llama_stream(&[" "], 5)).unwrap(); // one chunk: the space, stop, metrics
    let ev = inner(&c.received);
    let text: String = ev
        .iter()
        .map(|v| v["generation"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hi ");
    assert_eq!(ev.last().unwrap()["stop_reason"], "stop");
    assert!(c.transcript().is_complete());
}
