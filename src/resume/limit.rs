//! The client's output limit across a seam: where each request format keeps it, the model
//! default the relay assumes when it is absent, and how much a continuation may ask for.
//!
//! Delivered output is counted exactly where the stream reports running counts (Llama
//! `generation_token_count`, Titan `totalOutputTextTokenCount`). Elsewhere the relay only
//! has bounds: at least one token per content delta, at most one token per byte of delivered
//! content (every token of a byte-level tokenizer decodes to at least one byte). A
//! continuation asks for the limit minus the upper bound, so the spliced answer can never
//! exceed the client's limit; when that bound leaves nothing, only replay (which repeats the
//! original request, limit included) can tell where the model would have stopped.

use super::{Family, StreamFormat};
use serde_json::{json, Value};

/// Documented defaults where the model applies a limit the client did not send:
/// Meta Llama `max_gen_len` 512, Amazon Titan Text `maxTokenCount` 512.
fn default_limit(format: StreamFormat) -> Option<u64> {
    match format {
        StreamFormat::Invoke(Family::Llama | Family::Titan) => Some(512),
        _ => None,
    }
}

/// JSON pointers of the output limit, the first one present wins; the first is written when
/// none is present (only for formats with a default).
fn pointers(format: StreamFormat, body: &Value) -> &'static [&'static str] {
    match format {
        StreamFormat::Converse => &["/inferenceConfig/maxTokens"],
        StreamFormat::Invoke(Family::Claude) if body.get("messages").is_none() => {
            &["/max_tokens_to_sample", "/max_tokens"]
        }
        StreamFormat::Invoke(Family::Claude) | StreamFormat::Messages => &["/max_tokens"],
        StreamFormat::Invoke(Family::Nova) => &[
            "/inferenceConfig/max_new_tokens",
            "/inferenceConfig/maxTokens",
        ],
        StreamFormat::Invoke(Family::Llama) => &["/max_gen_len"],
        StreamFormat::Invoke(Family::Titan) => &["/textGenerationConfig/maxTokenCount"],
        StreamFormat::Invoke(_) => &["/max_completion_tokens", "/max_tokens"],
    }
}

/// The output limit of a request: the client's, else the model default the relay knows.
pub(crate) fn of(format: StreamFormat, body: &Value) -> Option<u64> {
    pointers(format, body)
        .iter()
        .find_map(|p| body.pointer(p).and_then(Value::as_u64))
        .or_else(|| default_limit(format))
}

/// Write `n` as the output limit of a continuation body (the client's own key, or the
/// family's key when the client relied on the default).
pub(crate) fn set(format: StreamFormat, body: &mut Value, n: u64) {
    let ptrs = pointers(format, body);
    let at = ptrs
        .iter()
        .find(|p| body.pointer(p).is_some())
        .or(ptrs.first())
        .copied();
    let Some(at) = at else { return };
    let mut slot = &mut *body;
    for key in at.split('/').skip(1) {
        if !slot.is_object() {
            *slot = json!({});
        }
        slot = match slot.as_object_mut() {
            Some(map) => map.entry(key.to_owned()).or_insert(Value::Null),
            None => return,
        };
    }
    *slot = json!(n);
}

/// What the client has of its limit, as far as the stream tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivered {
    /// At least this many output tokens were delivered.
    pub low: u64,
    /// At most this many.
    pub high: u64,
}

/// What a continuation may do under the limit `limit`, given what was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Room {
    /// No limit known: ask as the client did.
    Unbounded,
    /// The limit is certainly used up: end the answer as Bedrock would.
    UsedUp,
    /// The limit may be used up (the counts are only bounds): only replay can tell.
    Unknown,
    /// Ask for at most `cap` more; `exact` when a `max_tokens` stop at `cap` is the client's
    /// own limit (otherwise it may be the relay's conservative bound).
    Left { cap: u64, exact: bool },
}

pub(crate) fn room(limit: Option<u64>, d: Delivered) -> Room {
    let Some(limit) = limit else {
        return Room::Unbounded;
    };
    if d.low >= limit {
        Room::UsedUp
    } else if d.high >= limit {
        Room::Unknown
    } else {
        let cap = limit - d.high;
        Room::Left {
            cap,
            exact: cap == limit - d.low,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_read_and_written_in_each_format() {
        let conv = json!({"inferenceConfig":{"maxTokens":20}});
        assert_eq!(of(StreamFormat::Converse, &conv), Some(20));
        assert_eq!(of(StreamFormat::Converse, &json!({})), None);
        let llama = StreamFormat::Invoke(Family::Llama);
        assert_eq!(of(llama, &json!({"prompt":"x"})), Some(512));
        let mut b = json!({"prompt":"x"});
        set(llama, &mut b, 7);
        assert_eq!(b["max_gen_len"], 7);
        let titan = StreamFormat::Invoke(Family::Titan);
        let mut b = json!({"inputText":"x"});
        set(titan, &mut b, 9);
        assert_eq!(b["textGenerationConfig"]["maxTokenCount"], 9);
        let nova = StreamFormat::Invoke(Family::Nova);
        let mut b = json!({"inferenceConfig":{"max_new_tokens":30}});
        set(nova, &mut b, 3);
        assert_eq!(of(nova, &b), Some(3));
        let claude = StreamFormat::Invoke(Family::Claude);
        let mut legacy = json!({"prompt":"\n\nHuman: hi\n\nAssistant:","max_tokens_to_sample":40});
        set(claude, &mut legacy, 4);
        assert_eq!(legacy["max_tokens_to_sample"], 4);
        let oai = StreamFormat::Invoke(Family::OpenAi);
        let mut b = json!({"messages":[],"max_completion_tokens":50});
        set(oai, &mut b, 5);
        assert_eq!(of(oai, &b), Some(5));
    }

    #[test]
    fn room_is_bounded_by_the_upper_count() {
        let d = |low, high| Delivered { low, high };
        assert_eq!(room(None, d(5, 50)), Room::Unbounded);
        assert_eq!(room(Some(20), d(20, 90)), Room::UsedUp);
        assert_eq!(room(Some(20), d(10, 60)), Room::Unknown);
        assert_eq!(
            room(Some(100), d(10, 60)),
            Room::Left {
                cap: 40,
                exact: false
            }
        );
        assert_eq!(
            room(Some(20), d(12, 12)),
            Room::Left {
                cap: 8,
                exact: true
            }
        );
    }
}
