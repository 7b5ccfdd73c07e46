//! Choosing the rung of the resumption ladder for an interrupted stream and building the
//! next upstream request plus the [`Splicer`] that turns its frames into the client's next ones.
//!
//! Order: nothing delivered → plain retry (a `Replay` with nothing to verify, always allowed);
//! a single text block delivered, no reasoning → `Prefill` if allowed, else `Instructed` if
//! allowed; anything else (reasoning, tool use, several blocks, whitespace-only text, stop
//! already delivered, unknown invoke family) → `Replay` if allowed; otherwise [`CannotResume`].
//! Several text blocks are not continued by prefill: a prefill is one assistant message, and
//! the model would not reproduce the block structure the client already has.
//!
//! Also replay only: a stream with chunks the relay did not understand (byte-exact replay),
//! an output limit that may be used up (`limit`), delivered text ending in the start of a
//! stop sequence or containing the prompt format's turn markers (`guard`). A continuation
//! asks for at most what is left of the client's output limit.

use super::anchor;
use super::limit::{self, Room};
use super::request::{self, BodyError, Turn};
use super::seam::Seam;
use super::splice::Splicer;
use super::transcript::Transcript;
use super::{Family, ModelCaps, Strategy, StreamFormat};
use bytes::Bytes;

/// The next attempt: what to send upstream and how to splice what comes back.
#[derive(Debug)]
pub struct Continuation {
    pub strategy: Strategy,
    /// Request body for the next attempt (the original, byte-identical, for `Replay`).
    pub body: Bytes,
    pub splicer: Splicer,
}

/// Why no continuation is possible; the pump sends a typed exception event instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CannotResume {
    #[error("the response is already complete")]
    AlreadyComplete,
    #[error("the original request body cannot be continued: {0}")]
    BadRequestBody(#[from] BodyError),
    #[error("an interrupted tool-use block can only be replayed, and replay is disabled")]
    ToolUseNeedsReplay,
    #[error("reasoning output can only be replayed, and replay is disabled")]
    ReasoningNeedsReplay,
    #[error("the response passed the transcript limit of {limit} bytes: it cannot be resumed")]
    TranscriptTooLarge { limit: usize },
    #[error("no resumption strategy applies: {why}")]
    NoStrategy { why: &'static str },
}

/// The client's output limit is used up: [`super::finish_at_limit`] ends the answer; when it
/// cannot, only replay knows the real end.
const LIMIT_USED_UP: &str = "the output limit is used up and the relay cannot end this format itself: only replay is possible";
const LIMIT_MAYBE: &str = "the output limit may be used up (this format reports no exact token counts): only replay can tell where the model stopped";

/// Choose a strategy and build the continuation. On success the transcript starts counting
/// a new attempt (for usage accounting); the pump must then use the returned splicer.
/// Calling `plan` again when the continuation request itself was refused before streaming
/// (e.g. 400 because the model turned out not to accept prefill) is fine: pass the updated
/// caps; the refused attempt counts no tokens.
pub fn plan(
    format: &StreamFormat,
    original_body: &[u8],
    transcript: &mut Transcript,
    caps: &ModelCaps,
) -> Result<Continuation, CannotResume> {
    let format = *format;
    if transcript.is_complete() {
        return Err(CannotResume::AlreadyComplete);
    }
    if transcript.overflowed() {
        return Err(CannotResume::TranscriptTooLarge {
            limit: transcript.limit(),
        });
    }
    let replay = |t: &mut Transcript| {
        let splicer = Splicer::replay(format, t);
        t.begin_attempt(Strategy::Replay, 0);
        Ok(Continuation {
            strategy: Strategy::Replay,
            body: Bytes::copy_from_slice(original_body),
            splicer,
        })
    };
    let no_content =
        transcript.blocks().is_empty() && !transcript.opaque() && transcript.stop().is_none();
    if no_content {
        // Plain retry: the client has at most a message start, nothing a new sample contradicts.
        return replay(transcript);
    }
    let body = request::parse(original_body);
    let limit = body.as_ref().ok().and_then(|b| limit::of(format, b));
    let room = limit::room(limit, transcript.delivered());
    let why_not = if transcript.opaque() {
        Some("the stream carried chunks the relay does not understand: only byte-exact replay is possible")
    } else if format == StreamFormat::Invoke(Family::Other) {
        Some("unknown invoke format: only replay is possible")
    } else if transcript.saw_message_stop() {
        Some("only the terminal events are missing: only replay is possible")
    } else if room == Room::UsedUp {
        Some(LIMIT_USED_UP)
    } else if room == Room::Unknown {
        Some(LIMIT_MAYBE)
    } else {
        None
    };
    if let Some(why) = why_not {
        return if caps.replay {
            replay(transcript)
        } else {
            Err(CannotResume::NoStrategy { why })
        };
    }

    let blocks = transcript.blocks();
    let wants_reasoning = body.as_ref().is_ok_and(request::wants_reasoning);
    // Text after complete reasoning (every reasoning block stopped, so signed): the client's
    // reasoning stays as it is, valid to send back; the text is continued by instruction
    // (prefill is refused with reasoning) and the new attempt's reasoning is dropped.
    let text_after_reasoning = match blocks {
        [reasoning @ .., last] if !reasoning.is_empty() && last.kind.is_text() => {
            reasoning.iter().all(|b| b.stopped && is_reasoning(&b.kind))
        }
        _ => false,
    };
    let reasoning =
        (wants_reasoning || blocks.iter().any(|b| b.kind.needs_replay())) && !text_after_reasoning;
    let open_tool = blocks
        .last()
        .is_some_and(|b| b.kind.is_tool() && !b.stopped);
    let single_text = match blocks {
        [b] if b.kind.is_text() => Some(b.text.as_str()),
        [.., b] if text_after_reasoning => Some(b.text.as_str()),
        _ => None,
    };
    let delivered = single_text.map(str::trim_end).filter(|d| !d.is_empty());
    let unsafe_text = match (&body, single_text) {
        (Ok(b), Some(text)) => super::guard::unsafe_to_continue(format, b, text),
        _ => None,
    };
    // An instructed continuation needs an anchor: the delivered text's last words, unique in
    // it (docs/continuation.md); a text that keeps repeating itself has none.
    let anchor = delivered.and_then(anchor::choose);
    let ask = anchor.as_ref().map(anchor::instruction);
    let instructed = match &ask {
        Some(ask) if caps.instructed => Some(Turn::Instructed(ask)),
        _ => None,
    };
    let turn = match delivered {
        Some(_) if reasoning || open_tool || unsafe_text.is_some() => None,
        // With reasoning in the answer or asked for, only an instructed continuation.
        Some(_) if wants_reasoning || text_after_reasoning => instructed,
        Some(_) if caps.prefill => Some(Turn::Prefill),
        Some(_) => instructed,
        _ => None,
    };
    if let (Some(turn), Some(delivered), Some(full)) = (turn, delivered, single_text) {
        let ws = &full[delivered.len()..];
        // A body we cannot extend can still be replayed unchanged.
        let next = match body.and_then(|b| request::build(format, b, delivered, turn)) {
            Ok(mut next) => {
                if let Room::Left { cap, .. } = room {
                    limit::set(format, &mut next, cap);
                    request::fit_thinking(&mut next, cap);
                }
                next
            }
            Err(_) if caps.replay => return replay(transcript),
            Err(e) => return Err(e.into()),
        };
        let (strategy, seam) = match (turn, anchor) {
            (Turn::Instructed(_), Some(anchor)) => (
                Strategy::Instructed,
                Seam::instructed(delivered, ws, anchor),
            ),
            _ => (Strategy::Prefill, Seam::prefill(ws)),
        };
        // A `max_tokens` stop at a limit the relay lowered is withheld (the pump then counts
        // and continues again) unless it is certainly the client's own: an instructed reply
        // spends part of its limit on the anchor, and a bound may be above the real count.
        let lowered = matches!(room, Room::Left { .. });
        let guard_limit = matches!(room, Room::Left { exact: false, .. })
            || (lowered && strategy == Strategy::Instructed);
        let splicer = Splicer::continuation(format, transcript, seam, guard_limit);
        let offset = transcript.exact_output().unwrap_or(0);
        transcript.begin_attempt(strategy, offset);
        return Ok(Continuation {
            strategy,
            body: Bytes::from(next.to_string()),
            splicer,
        });
    }
    if caps.replay {
        return replay(transcript);
    }
    Err(if let Some(why) = unsafe_text {
        CannotResume::NoStrategy { why }
    } else if reasoning {
        CannotResume::ReasoningNeedsReplay
    } else if open_tool {
        CannotResume::ToolUseNeedsReplay
    } else if single_text.is_none() {
        CannotResume::NoStrategy {
            why: "several content blocks delivered: only replay can continue them",
        }
    } else if delivered.is_none() {
        CannotResume::NoStrategy {
            why: "the delivered text is only whitespace: only replay is possible",
        }
    } else if caps.instructed && anchor.is_none() {
        CannotResume::NoStrategy {
            why: "the delivered text has no unique last words to anchor a continuation on: only replay is possible",
        }
    } else {
        CannotResume::NoStrategy {
            why: "the model allows neither prefill nor instructed continuation",
        }
    })
}

/// A reasoning block: Converse `reasoningContent`, Claude `thinking` or `redacted_thinking`.
fn is_reasoning(kind: &super::event::BlockKind) -> bool {
    use super::event::BlockKind;
    match kind {
        BlockKind::Reasoning => true,
        BlockKind::Other(json) => json.contains("redacted_thinking"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventstream::event;
    use serde_json::{json, Value};

    fn delivered(format: StreamFormat, msgs: &[(&str, &str)]) -> Transcript {
        let mut t = Transcript::with_limit(format, 1 << 20);
        for (kind, payload) in msgs {
            t.observe(&event(kind, payload.to_string()).into());
        }
        t
    }

    fn ask(delivered: &str) -> String {
        anchor::instruction(&anchor::choose(delivered).unwrap())
    }

    const NO_PREFILL: ModelCaps = ModelCaps {
        prefill: false,
        instructed: true,
        replay: true,
    };

    /// Everything but the messages (and the output limit), and the messages before the
    /// continuation, are as sent.
    fn assert_kept(original: &Value, next: &Value, text_block: Value, ask: Value) {
        let (mut a, mut b) = (original.clone(), next.clone());
        let msgs = b["messages"].as_array_mut().unwrap().split_off(1);
        assert_eq!(
            msgs.len(),
            2,
            "exactly an assistant turn and a user turn added"
        );
        assert_eq!(
            msgs[0],
            json!({"role": "assistant", "content": [text_block]})
        );
        assert_eq!(msgs[1]["role"], "user");
        assert_eq!(msgs[1]["content"], json!([ask]));
        // The output limit may be lowered to what is left (the splice's business).
        for v in [&mut a, &mut b] {
            v.as_object_mut().unwrap().remove("max_tokens");
            if let Some(c) = v.get_mut("inferenceConfig").and_then(Value::as_object_mut) {
                c.remove("maxTokens");
            }
        }
        assert_eq!(a, b);
    }

    #[test]
    fn instructed_continuation_keeps_the_whole_converse_request() {
        let original = json!({
            "messages": [{"role": "user", "content": [{"text": "Plan my trip"}]}],
            "system": [{"text": "Be brief."}, {"guardContent": {"text": {"text": "x"}}}],
            "inferenceConfig": {"maxTokens": 900, "temperature": 1, "topP": 0.9, "stopSequences": ["END"]},
            "toolConfig": {"tools": [{"toolSpec": {"name": "weather", "inputSchema": {"json": {"type": "object"}}}}],
                           "toolChoice": {"auto": {}}},
            "guardrailConfig": {"guardrailIdentifier": "g1", "guardrailVersion": "2", "streamProcessingMode": "async"},
            "additionalModelRequestFields": {"top_k": 40},
            "promptVariables": {"city": {"text": "Oslo"}},
            "requestMetadata": {"team": "travel"}
        });
        let mut t = delivered(
            StreamFormat::Converse,
            &[
                ("messageStart", r#"{"role":"assistant"}"#),
                (
                    "contentBlockDelta",
                    r#"{"contentBlockIndex":0,"delta":{"text":"Day one: the harbour. "}}"#,
                ),
            ],
        );
        let body = serde_json::to_vec(&original).unwrap();
        let c = plan(&StreamFormat::Converse, &body, &mut t, &NO_PREFILL).unwrap();
        assert_eq!(c.strategy, Strategy::Instructed);
        let next: Value = serde_json::from_slice(&c.body).unwrap();
        assert_kept(
            &original,
            &next,
            json!({"text": "Day one: the harbour."}),
            json!({"text": ask("Day one: the harbour.")}),
        );
    }

    #[test]
    fn instructed_continuation_keeps_the_whole_claude_messages_request() {
        let original = json!({
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 900,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "Plan my trip"}],
            "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "auto"},
            "temperature": 1,
            "top_k": 40,
            "stop_sequences": ["END"]
        });
        let format = StreamFormat::Invoke(Family::Claude);
        let chunk = |v: Value| {
            use base64::Engine as _;
            let b = base64::engine::general_purpose::STANDARD.encode(v.to_string());
            ("chunk", format!(r#"{{"bytes":"{b}"}}"#))
        };
        let msgs = [
            chunk(
                json!({"type": "message_start", "message": {"role": "assistant", "usage": {"input_tokens": 5}}}),
            ),
            chunk(
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            chunk(
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Day one of the trip"}}),
            ),
        ];
        let msgs: Vec<(&str, &str)> = msgs.iter().map(|(k, p)| (*k, p.as_str())).collect();
        let mut t = delivered(format, &msgs);
        let body = serde_json::to_vec(&original).unwrap();
        let c = plan(&format, &body, &mut t, &NO_PREFILL).unwrap();
        assert_eq!(c.strategy, Strategy::Instructed);
        let next: Value = serde_json::from_slice(&c.body).unwrap();
        assert_kept(
            &original,
            &next,
            json!({"type": "text", "text": "Day one of the trip"}),
            json!({"type": "text", "text": ask("Day one of the trip")}),
        );
    }
}
