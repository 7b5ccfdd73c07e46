//! Ending an answer whose output limit is used up, the way Bedrock ends it, instead of
//! asking the model for more: the open block closed, the limit stop reason (Converse, Claude
//! and Nova `max_tokens`, Llama and Mistral `length`, Titan `LENGTH`, Cohere `MAX_TOKENS`)
//! and the terminal events with the usage summed over attempts.
//!
//! Only where the delivered count proves the limit is reached (at least one token per
//! delta, or the exact running count). Usage in these synthesised events: output is the
//! sum of the attempts' output (exact running counts, else one token per delta), input the
//! sum of what attempts announced (Claude `message_start`, Llama, Titan; Converse announces
//! nothing before its final `metadata`, so it reports 0 there), latency the relay's wall time
//! of the attempts.

use super::chunks::Shape;
use super::event::{self, Msg};
use super::transcript::{Tally, Transcript};
use super::{limit, request, Family, StreamFormat};
use crate::eventstream;
use serde_json::{json, Value};

/// The terminal messages to send when the client's output limit is used up, `None` when it
/// is not (or the format cannot be ended by the relay: then [`super::plan`] replays).
pub fn finish_at_limit(
    format: &StreamFormat,
    original_body: &[u8],
    transcript: &Transcript,
) -> Option<Vec<Msg>> {
    let format = *format;
    if transcript.is_complete()
        || transcript.saw_message_stop()
        || transcript.opaque()
        || transcript.overflowed()
    {
        return None;
    }
    let body = request::parse(original_body).ok()?;
    let limit = limit::of(format, &body)?;
    if transcript.delivered().low < limit {
        return None;
    }
    let tallies = transcript.tallies();
    let output: u64 = tallies.iter().map(Tally::output).sum();
    let (input, cache_read, cache_write) = transcript.announced_input();
    let latency: u64 = tallies.iter().map(Tally::elapsed_ms).sum();
    let metrics = json!({"inputTokenCount": input, "outputTokenCount": output,
        "invocationLatency": latency, "firstByteLatency": 0});
    let open = transcript
        .blocks()
        .last()
        .filter(|b| !b.stopped && !transcript.single())
        .map(|b| b.index);
    let made = |inner: Value| event::made(format, inner);
    let mut out = Vec::new();
    match format {
        StreamFormat::Converse => {
            let ev = |t: &str, v: Value| Msg::Frame(eventstream::event(t, with_pad(v).to_string()));
            if let Some(i) = open {
                out.push(ev("contentBlockStop", json!({"contentBlockIndex": i})));
            }
            out.push(ev("messageStop", json!({"stopReason": "max_tokens"})));
            let mut usage = json!({"inputTokens": input, "outputTokens": output,
                "totalTokens": input + output + cache_read + cache_write});
            if cache_read + cache_write > 0 {
                usage["cacheReadInputTokens"] = json!(cache_read);
                usage["cacheWriteInputTokens"] = json!(cache_write);
            }
            out.push(ev(
                "metadata",
                json!({"usage": usage, "metrics": {"latencyMs": latency}}),
            ));
        }
        StreamFormat::Invoke(Family::Nova) if transcript.shape().is_none() => {
            if let Some(i) = open {
                out.push(made(json!({"contentBlockStop": {"contentBlockIndex": i}})));
            }
            out.push(made(json!({"messageStop": {"stopReason": "max_tokens"}})));
            out.push(made(json!({
                "metadata": {"usage": {"inputTokens": input, "outputTokens": output}},
                "amazon-bedrock-invocationMetrics": metrics})));
        }
        StreamFormat::Invoke(_) | StreamFormat::Messages
            if transcript.started() && transcript.shape().is_none() =>
        {
            // Claude messages (whatever the model id said).
            if let Some(i) = open {
                out.push(made(json!({"type": "content_block_stop", "index": i})));
            }
            out.push(made(json!({"type": "message_delta",
                "delta": {"stop_reason": "max_tokens", "stop_sequence": null},
                "usage": {"output_tokens": output}})));
            out.push(made(
                json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": metrics}),
            ));
        }
        StreamFormat::Invoke(_) | StreamFormat::Messages => {
            let mut last = single_final(transcript.shape()?, output, input)?;
            last["amazon-bedrock-invocationMetrics"] = metrics;
            out.push(made(last));
        }
    }
    Some(out)
}

fn with_pad(mut v: Value) -> Value {
    v["p"] = json!("abcdefgh");
    v
}

/// The last chunk of a single-text shape, stopped by the limit.
fn single_final(shape: Shape, output: u64, input: u64) -> Option<Value> {
    Some(match shape.text {
        "/generation" => json!({"generation": "", "prompt_token_count": null,
            "generation_token_count": output, "stop_reason": "length"}),
        "/outputText" => json!({"outputText": "", "index": 0,
            "totalOutputTextTokenCount": output, "completionReason": "LENGTH",
            "inputTextTokenCount": input}),
        "/outputs/0/text" => json!({"outputs": [{"text": "", "stop_reason": "length"}]}),
        "/choices/0/message/content" => json!({"choices": [{"index": 0,
            "message": {"role": "assistant", "content": ""}, "stop_reason": "length"}]}),
        "/choices/0/delta/content" => {
            json!({"choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "length"}]})
        }
        "/choices/0/text" => json!({"choices": [{"text": "", "stop_reason": "length"}]}),
        "/completion" => json!({"completion": "", "stop_reason": "max_tokens", "stop": null}),
        "/text" => json!({"is_finished": true, "event_type": "stream-end",
            "finish_reason": "MAX_TOKENS"}),
        _ => return None,
    })
}
