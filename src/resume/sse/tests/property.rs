//! Property test: whatever the upstream sends, the SSE codecs (read, splice, write, plan,
//! end at the limit) never panic.

use super::{Stream, PREFILL};
use crate::resume::sse::*;

/// JSON-ish event data: real field names with random values, or random text.
fn odd_data() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let value = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z\\[\\]{}\":,]{0,12}".prop_map(|s| json!(s)),
        Just(json!([])),
        Just(json!({})),
        Just(json!([{"index": 0, "delta": {"content": "x"}}])),
    ];
    let keys = prop_oneof![
        Just("type"),
        Just("choices"),
        Just("usage"),
        Just("error"),
        Just("delta"),
        Just("index"),
        Just("output_index"),
        Just("item"),
        Just("response"),
        Just("message"),
    ];
    let kinds = prop_oneof![
        Just("message_start"),
        Just("content_block_start"),
        Just("content_block_delta"),
        Just("message_delta"),
        Just("message_stop"),
        Just("response.created"),
        Just("response.output_item.added"),
        Just("response.output_text.delta"),
        Just("response.completed"),
        Just("error"),
    ];
    prop_oneof![
        (kinds, proptest::collection::vec((keys, value), 0..5)).prop_map(|(kind, fields)| {
            let mut v = json!({"type": kind});
            for (k, x) in fields {
                v[k] = x;
            }
            v.to_string()
        }),
        "[ -~]{0,40}",
        Just("[DONE]".to_owned()),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Whatever the upstream sends, reading, splicing, writing and planning never panic.
    #[test]
    fn no_upstream_event_panics_the_codecs(events in proptest::collection::vec(odd_data(), 1..12)) {
        for op in [Operation::AnthropicMessages, Operation::ChatCompletions, Operation::Responses] {
            let body = r#"{"model":"m","max_tokens":9,"input":"x","messages":[{"role":"user","content":"x"}]}"#;
            let mut s = Stream::new(op, body);
            for (i, data) in events.iter().enumerate() {
                let raw = format!("event: e\ndata: {data}\n\n");
                let _ = s.try_feed(&raw);
                if i == events.len() / 2 {
                    s.heal.fault();
                    let _ = s.heal.finish_at_limit(body.as_bytes(), &mut Vec::new());
                    if let Ok(next) = s.heal.plan(body.as_bytes(), &PREFILL) {
                        s.heal.resumed(next.splicer);
                    }
                }
            }
        }
    }
}
