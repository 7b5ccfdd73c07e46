//! The Responses codec through the real resume core: continuous sequence numbers, one
//! response with the whole text and summed usage, the API's own end at the client's limit.

use super::{Stream, INSTRUCTED};
use crate::resume::sse::*;
use crate::resume::Strategy;
use serde_json::Value;

fn resp_event(kind: &str, mut v: Value, seq: u64) -> String {
    v["type"] = json!(kind);
    v["sequence_number"] = json!(seq);
    format!("event: {kind}\ndata: {v}\n\n")
}

/// One Responses attempt: created, a message item, `pieces` deltas, then (if `end`) the rest.
fn responses_attempt(s: &mut Stream, id: &str, pieces: &[&str], end: Option<(u64, u64)>) {
    let item = format!("msg_{id}");
    let response = json!({"id": id, "object": "response", "status": "in_progress", "output": []});
    let mut seq = 0;
    let mut ev = |s: &mut Stream, kind: &str, v: Value| {
        s.feed(&resp_event(kind, v, seq));
        seq += 1;
    };
    ev(s, "response.created", json!({"response": response}));
    ev(s, "response.in_progress", json!({"response": response}));
    ev(
        s,
        "response.output_item.added",
        json!({"output_index": 0,
        "item": {"id": item, "type": "message", "role": "assistant", "content": []}}),
    );
    ev(
        s,
        "response.content_part.added",
        json!({"item_id": item, "output_index": 0, "content_index": 0}),
    );
    for p in pieces {
        ev(
            s,
            "response.output_text.delta",
            json!({"item_id": item, "output_index": 0, "content_index": 0, "delta": p}),
        );
    }
    if let Some((input, output)) = end {
        let text = pieces.concat();
        ev(
            s,
            "response.output_text.done",
            json!({"item_id": item, "output_index": 0, "text": text}),
        );
        ev(
            s,
            "response.output_item.done",
            json!({"output_index": 0,
            "item": {"id": item, "type": "message", "content": [{"type": "output_text", "text": text}]}}),
        );
        ev(
            s,
            "response.completed",
            json!({"response": {"id": id, "object": "response", "status": "completed",
            "usage": {"input_tokens": input, "output_tokens": output, "total_tokens": input + output}}}),
        );
    }
}

#[test]
fn a_cut_response_continues_as_one_response() {
    let body = r#"{"model":"m","stream":true,"input":"Hi","max_output_tokens":40}"#;
    let mut s = Stream::new(Operation::Responses, body);
    responses_attempt(&mut s, "r1", &["Hello", " wide"], None);
    let (strategy, next) = s.resume(body, INSTRUCTED);
    assert_eq!(strategy, Strategy::Instructed);
    let input = next["input"].as_array().unwrap();
    assert_eq!(input[0], json!({"role": "user", "content": "Hi"}));
    assert_eq!(
        input[1],
        json!({"role": "assistant", "content": "Hello wide"})
    );
    assert_eq!(
        input[2]["content"],
        json!(crate::resume::instruction(
            &crate::resume::anchor::choose("Hello wide").unwrap()
        ))
    );
    assert!(next["max_output_tokens"].as_u64().unwrap() < 40);
    assert!(next.get("messages").is_none() && next.get("max_tokens").is_none());
    responses_attempt(&mut s, "r2", &["Hello", " wide", " world"], Some((20, 1)));
    assert!(s.transcript().is_complete());
    let events = s.events();
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (0..seqs.len() as u64).collect::<Vec<_>>(),
        "{}",
        s.client
    );
    let of = |t: &str| events.iter().filter(|e| e["type"] == t).collect::<Vec<_>>();
    assert_eq!(of("response.created").len(), 1);
    assert_eq!(of("response.output_item.added").len(), 1);
    let text: String = of("response.output_text.delta")
        .iter()
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello wide world");
    assert!(of("response.output_text.delta")
        .iter()
        .all(|e| e["item_id"] == "msg_r1"));
    let done = of("response.completed");
    assert_eq!(done.len(), 1);
    let r = &done[0]["response"];
    assert_eq!(r["id"], "r1");
    assert_eq!(r["output"][0]["content"][0]["text"], "Hello wide world");
    assert_eq!(r["usage"]["output_tokens"], 3, "summed over attempts");
}

#[test]
fn responses_errors_are_faults() {
    let mut s = Stream::new(Operation::Responses, "{}");
    for raw in [
        "event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"x\"}\n\n",
        "data: {\"error\":{\"type\":\"server_error\",\"message\":\"x\"}}\n\n",
        "event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":\"c\",\"message\":\"x\"}}}\n\n",
    ] {
        assert_eq!(s.error_of(raw).message, "x", "{raw}");
    }
}
#[test]
fn a_response_cut_at_its_limit_ends_incomplete() {
    let body = r#"{"model":"m","stream":true,"input":"Hi","max_output_tokens":2}"#;
    let mut s = Stream::new(Operation::Responses, body);
    responses_attempt(&mut s, "r1", &["Hello", " wide"], None);
    assert!(s.finish_at_limit(body));
    let events = s.events();
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(
        last["response"]["output"][0]["content"][0]["text"],
        "Hello wide"
    );
    assert_eq!(last["response"]["usage"]["output_tokens"], 2);
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
}
