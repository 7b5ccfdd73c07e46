//! Model behaviour over raw HTTP: prefill and instructed continuation with Bedrock's
//! errors, and the native request/stream shapes of every InvokeModel family.

use crate::sim_support;

use base64::Engine as _;
use bedrock_relay_sim as sim;
use serde_json::{json, Value};
use sim_support::*;

#[tokio::test]
async fn prefill_and_instructed_continuation() {
    let sim = start().await;
    let q = "Explain sim:len=80";
    let reference = sim::reference_pieces(CLAUDE, "", &[("user", q)]);
    let text = reference.concat();
    let path = format!("/model/{CLAUDE}/converse-stream");
    // Prefill on a piece boundary: the remaining deltas are exactly the reference pieces.
    let prefill = reference[..20].concat();
    let prefill = prefill.trim_end();
    let r = send(
        sim.addr,
        "POST",
        &path,
        &[],
        &converse_body(&[("user", q), ("assistant", prefill)]),
    )
    .await;
    let deltas: Vec<String> = r
        .frames()
        .iter()
        .filter_map(|(_, v)| {
            v.pointer("/delta/text")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(format!("{prefill}{}", deltas.concat()), text);
    if prefill.len() == reference[..20].concat().len() {
        assert_eq!(deltas, reference[20..]);
    }
    let log = sim.log();
    assert_eq!(log[0].prefill.as_deref(), Some(prefill));
    // Prefill ending mid-piece: the rest of that piece comes first, then the same pieces.
    let cut = reference[..10].concat().len() + 2;
    let mid = text[..cut].trim_end();
    let r = send(
        sim.addr,
        "POST",
        &path,
        &[],
        &converse_body(&[("user", q), ("assistant", mid)]),
    )
    .await;
    let deltas: Vec<String> = r
        .frames()
        .iter()
        .filter_map(|(_, v)| {
            v.pointer("/delta/text")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(format!("{mid}{}", deltas.concat()), text);
    assert_eq!(deltas[1..], reference[11..]);

    let r = send(
        sim.addr,
        "POST",
        &path,
        &[],
        &converse_body(&[("user", q), ("assistant", "The end ")]),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("final assistant content cannot end with trailing whitespace"));
    let np = format!("/model/{NO_PREFILL}/converse");
    let r = send(
        sim.addr,
        "POST",
        &np,
        &[],
        &converse_body(&[("user", q), ("assistant", "The")]),
    )
    .await;
    assert_eq!(r.json()["message"], "This model does not support assistant message prefill. The conversation must end with a user message.");

    // Instructed continuation on a model without prefill.
    let nref = sim::reference_text(NO_PREFILL, "", &[("user", q)]);
    let delivered = nref[..nref.len() / 3].trim_end();
    // Claude 4.6+ samples by default (the reference is its first sample) and, asked to
    // continue by the relay's protocol, here repeats the anchor exactly, then the rest.
    let anchor = bedrock_relay::resume::anchor::choose(delivered).expect("an anchor");
    let ask = format!(
        "{} sim:phrase=anchor",
        bedrock_relay::resume::instruction(&anchor)
    );
    let r = send(
        sim.addr,
        "POST",
        &np,
        &[],
        &converse_body(&[("user", q), ("assistant", delivered), ("user", &ask)]),
    )
    .await;
    assert_eq!(r.status, 200);
    let answer = r.json()["output"]["message"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    let rest = &nref[delivered.len()..];
    assert!(
        answer.starts_with(&anchor.quoted)
            || answer.split_whitespace().next() == anchor.quoted.split_whitespace().next(),
        "{answer:?} starts with the anchor {:?}",
        anchor.quoted
    );
    assert!(
        answer.ends_with(rest.trim_start()),
        "{answer:?} ends with the rest"
    );
    assert_eq!(
        sim.log().last().unwrap().phrasing.as_deref(),
        Some("anchor")
    );
    assert!(sim.log().last().unwrap().continuation);
    // Prefilled and continued requests are later attempts of the same conversation.
    let claude: Vec<_> = sim
        .log()
        .into_iter()
        .filter(|e| e.model_id.as_deref() == Some(CLAUDE))
        .collect();
    assert!(claude
        .windows(2)
        .all(|w| w[0].conversation == w[1].conversation));
    assert_eq!(
        claude.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        (1..=claude.len() as u32).collect::<Vec<_>>()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn every_family_streams_and_answers_with_native_shapes() {
    let sim = start().await;
    let cases = [
        (
            CLAUDE,
            json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "messages": [{"role": "user", "content": "q"}]}),
        ),
        (
            "amazon.nova-lite-v1:0",
            json!({"messages": [{"role": "user", "content": [{"text": "q"}]}], "inferenceConfig": {"maxTokens": 10}}),
        ),
        (
            "meta.llama3-8b-instruct-v1:0",
            json!({"prompt": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nq<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", "max_gen_len": 10}),
        ),
        (
            "mistral.mistral-7b-instruct-v0:2",
            json!({"prompt": "<s>[INST] q [/INST]", "max_tokens": 10}),
        ),
        (
            "amazon.titan-text-express-v1",
            json!({"inputText": "User: q\nBot:", "textGenerationConfig": {"maxTokenCount": 10}}),
        ),
    ];
    for (model, body) in cases {
        let expected: String = sim::reference_pieces(model, "", &[("user", "q")])[..10].concat();
        let r = send(
            sim.addr,
            "POST",
            &format!("/model/{model}/invoke-with-response-stream"),
            &[],
            &body.to_string(),
        )
        .await;
        assert_eq!(
            r.header("x-amzn-bedrock-content-type").as_deref(),
            Some("application/json"),
            "{model}"
        );
        let inner: Vec<Value> = r
            .frames()
            .iter()
            .map(|(ty, v)| {
                assert_eq!(ty, "chunk");
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v["bytes"].as_str().unwrap())
                    .unwrap();
                serde_json::from_slice(&bytes).unwrap()
            })
            .collect();
        let text: String = inner
            .iter()
            .filter_map(|e| {
                e.pointer("/delta/text")
                    .or(e.pointer("/contentBlockDelta/delta/text"))
                    .or(e.get("generation"))
                    .or(e.pointer("/outputs/0/text"))
                    .or(e.get("outputText"))
                    .and_then(Value::as_str)
            })
            .collect();
        assert_eq!(text, expected, "{model}");
        let last = inner.last().unwrap();
        assert_eq!(
            last["amazon-bedrock-invocationMetrics"]["outputTokenCount"], 10,
            "{model}"
        );
        let stop = last
            .pointer("/stop_reason")
            .or(last.pointer("/outputs/0/stop_reason"))
            .or(last.get("completionReason"))
            .cloned()
            .unwrap_or(Value::Null);
        if !stop.is_null() {
            assert!(
                ["length", "LENGTH"].contains(&stop.as_str().unwrap()),
                "{model}: {stop}"
            );
        }
        let r = send(
            sim.addr,
            "POST",
            &format!("/model/{model}/invoke"),
            &[],
            &body.to_string(),
        )
        .await;
        assert_eq!(
            r.header("x-amzn-bedrock-output-token-count").as_deref(),
            Some("10"),
            "{model}"
        );
        let escaped = serde_json::to_string(&expected).unwrap();
        assert!(
            r.json()
                .to_string()
                .contains(&escaped[1..escaped.len() - 1]),
            "{model}"
        );
    }
    let claude_prefill = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 500,
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [{"type": "text", "text": "Pre"}]}]});
    let r = send(
        sim.addr,
        "POST",
        &format!("/model/{CLAUDE}/invoke"),
        &[],
        &claude_prefill.to_string(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(sim.log().last().unwrap().prefill.as_deref(), Some("Pre"));
    let count = send(sim.addr, "POST", &format!("/model/{CLAUDE}/count-tokens"), &[], &json!({"input": {"converse": {"messages": [{"role": "user", "content": [{"text": "one two three"}]}]}}}).to_string()).await;
    assert_eq!(count.json()["inputTokens"], 3);
    let g = send(
        sim.addr,
        "POST",
        "/guardrail/g1/version/1/apply",
        &[],
        r#"{"source":"INPUT","content":[]}"#,
    )
    .await;
    assert_eq!(g.json()["action"], "NONE");
    sim.shutdown().await;
}
