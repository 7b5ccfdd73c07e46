//! The relay's estimate of what Bedrock will charge a request against its model's
//! tokens-per-minute quota when it starts. What Bedrock charges (input tokens plus the whole
//! output limit times the model's burndown rate) is `bedrock_relay_wire::cost`, shared with
//! the simulator; the relay does not know the input tokens and estimates them here.

use bedrock_relay_wire::cost::{max_tokens, reservation, DEFAULT_MAX_TOKENS};
use serde_json::Value;

/// The relay's estimate of a request's input tokens: one per four bytes of its body's text
/// (the body's JSON syntax counted too, so it errs high), at least 1.
pub fn estimated_input(body: &[u8]) -> u64 {
    (body.len() as u64 / 4).max(1)
}

/// The relay's estimate of what a request body will be charged at its start.
pub fn estimate(model: &str, body: &[u8]) -> u64 {
    let max = serde_json::from_slice::<Value>(body)
        .map(|v| max_tokens(&v))
        .unwrap_or(DEFAULT_MAX_TOKENS);
    reservation(model, estimated_input(body), max)
}
