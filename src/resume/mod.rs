//! Resumption of interrupted model streams: what the client has, how to get the rest, and how
//! to splice it on so the client sees ONE unbroken response.
//!
//! Pure logic over decoded EventStream messages and JSON request bodies (no I/O, no tokio).
//! The stream pump (`crate::proxy::stream`) drives it through one heal step ([`Heal`]):
//!
//! ```text
//!   upstream event ──► Heal::feed ──► Splicer::accept ──► ToolHold ──► client bytes
//!                          │ Err(Stop: divergence, refusal)        │
//!                          ▼                                       ▼
//!                typed exception, end         Transcript::record (every event sent)
//!
//!   attempt failed ──► Heal::fault (a held tool call dropped)
//!                  ──► Heal::finish_at_limit(original_body)
//!                        └─ true: the client's output limit is used up; its terminal
//!                           events went out (as Bedrock ends such an answer): whole
//!                  ──► else Heal::plan(original_body, caps)
//!                        ├─ Ok(Continuation { strategy, body, splicer }): send `body`,
//!                        │    then Heal::resumed(splicer) for the new attempt's events
//!                        └─ Err(CannotResume): typed exception event, end the stream
//! ```
//!
//! Strategies (the ladder of docs/design.md): [`Strategy::Prefill`] (the delivered text as an
//! assistant prefill), [`Strategy::Instructed`] (delivered text + a user turn asking to
//! continue; the seam removes what the model repeats or adds, see `seam`), [`Strategy::Replay`] (resend the original request,
//! swallow what the client has while verifying it exactly, forward the rest; a mismatch is a
//! [`Divergence`]). When nothing was delivered yet, [`plan`] returns a `Replay` with nothing to
//! verify: a plain retry, always exact, allowed whatever the caps say.
//!
//! Buffers: the [`Transcript`] holds the content the client received, bounded by
//! [`Transcript::with_limit`] (`max_transcript_bytes`); a replay [`Splicer`] holds a copy of it
//! for verification; a prefill splicer holds only whitespace at the seam; an instructed one
//! holds a copy of the delivered text (to recognise a restarted answer) and at most 1 KiB of
//! seam look-ahead, only while a seam rule is undecided.
//!
//! ```
//! use bedrock_relay::eventstream::{self, event, Frame};
//! use bedrock_relay::resume::{EventStreamCodec, Heal, ModelCaps, Strategy, StreamFormat, Transcript};
//!
//! let format = StreamFormat::Converse;
//! let body = br#"{"messages":[{"role":"user","content":[{"text":"Hi"}]}]}"#;
//! // The heal step the pump runs: splicer, tool-call hold, transcript, for one stream.
//! let mut heal = Heal::new(EventStreamCodec { format }, Transcript::with_limit(format, 8 << 20), true);
//! let mut client: Vec<bytes::Bytes> = Vec::new();
//! let frame = |t: &str, p: &str| Frame::check(eventstream::encode(&event(t, p.to_owned()))).unwrap();
//! // First attempt: a start and one delta, then the connection resets.
//! heal.feed(frame("messageStart", r#"{"role":"assistant"}"#), &mut client).unwrap();
//! heal.feed(frame("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"text":"Hello "}}"#), &mut client).unwrap();
//! assert!(!heal.is_complete());
//! let failed = heal.fault(); // for failed_attempt_tokens_total
//! assert_eq!(failed.output, 1);
//! let caps = ModelCaps { prefill: true, instructed: false, replay: true };
//! let next = heal.plan(body, &caps).unwrap();
//! assert_eq!(next.strategy, Strategy::Prefill); // body ends with assistant "Hello"
//! heal.resumed(next.splicer);
//! // Second attempt: its messageStart is swallowed, " world" loses the space the client has.
//! for (t, p) in [("messageStart", r#"{"role":"assistant"}"#),
//!                ("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"text":" world"}}"#),
//!                ("contentBlockStop", r#"{"contentBlockIndex":0}"#),
//!                ("messageStop", r#"{"stopReason":"end_turn"}"#),
//!                ("metadata", r#"{"usage":{"inputTokens":9,"outputTokens":1,"totalTokens":10}}"#)] {
//!     heal.feed(frame(t, p), &mut client).unwrap();
//! }
//! assert!(heal.is_complete());
//! assert_eq!(heal.transcript().texts(), vec!["Hello world"]);
//! assert_eq!(client.len(), 6);
//! ```

mod accounting;
pub mod anchor;
mod chunks;
mod count;
mod event;
mod finish;
mod guard;
mod heal;
mod hold;
mod limit;
mod out;
mod plan;
mod replay;
mod request;
mod seam;
mod splice;
pub mod sse;
pub mod tokens;
mod transcript;

#[cfg(test)]
mod tests;

pub use accounting::AttemptUsage;
pub use chunks::is_limit_stop;
pub use count::{count_bodies, count_model_id, output_limit, output_tokens};
pub use event::Event as Observed;
pub use event::{usage_of, Msg};
pub use finish::finish_at_limit;
pub use heal::{Codec, EventStreamCodec, Heal, Read, Stop, UpstreamError};

pub use plan::{plan, CannotResume, Continuation};
pub use request::BodyError;
pub use splice::{Divergence, Spliced, Splicer};
pub use transcript::Transcript;

use crate::ops::Operation;

pub use anchor::{instruction, Anchor, COMPLETE_MARKER};
pub use seam::SeamError;

/// How a resumable stream encodes model output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// ConverseStream: flat JSON events named by `:event-type`.
    Converse,
    /// InvokeModelWithResponseStream: `chunk` events whose base64 `bytes` hold the family's JSON.
    Invoke(Family),
    /// The SSE APIs (Anthropic Messages, and Chat Completions and Responses read into it):
    /// Claude messages events as their JSON, no frame around them; the request body is a
    /// Claude messages body.
    Messages,
}

/// Model family of an invoke stream, by model id substring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Claude,
    Nova,
    Llama,
    Mistral,
    Titan,
    /// Cohere Command / Command R (`text`, `is_finished`): replay only.
    Cohere,
    /// AI21 Jamba (chat-completion chunks): replay only.
    Ai21,
    /// DeepSeek (`choices[0].text` or chat-completion chunks): replay only.
    DeepSeek,
    /// OpenAI gpt-oss (chat-completion chunks): replay only.
    OpenAi,
    /// Qwen (chat-completion chunks): replay only.
    Qwen,
    /// Unknown model id (e.g. an application inference profile ARN): chunks are read by their
    /// shape; resumed only by replay (byte-exact when a chunk was not understood).
    Other,
}

impl Family {
    /// Family of a model id (plain id, inference-profile id such as `us.anthropic...`, or ARN).
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Family::Claude => "claude",
            Family::Nova => "nova",
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Titan => "titan",
            Family::Cohere => "cohere",
            Family::Ai21 => "ai21",
            Family::DeepSeek => "deepseek",
            Family::OpenAi => "openai",
            Family::Qwen => "qwen",
            Family::Other => "other",
        }
    }

    pub fn of(model_id: &str) -> Family {
        if model_id.contains("anthropic.") {
            Family::Claude
        } else if model_id.contains("amazon.nova") {
            Family::Nova
        } else if model_id.contains("meta.llama") {
            Family::Llama
        } else if model_id.contains("mistral.") {
            Family::Mistral
        } else if model_id.contains("amazon.titan-text") {
            Family::Titan
        } else if model_id.contains("cohere.command") {
            Family::Cohere
        } else if model_id.contains("ai21.") {
            Family::Ai21
        } else if model_id.contains("deepseek.") {
            Family::DeepSeek
        } else if model_id.contains("openai.") {
            Family::OpenAi
        } else if model_id.contains("qwen.") {
            Family::Qwen
        } else {
            Family::Other
        }
    }

    /// Families whose output is one text stream (no blocks, no message start).
    pub(crate) fn single_block(self) -> bool {
        !matches!(self, Family::Claude | Family::Nova | Family::Other)
    }
}

impl StreamFormat {
    /// The format of an operation's response, `None` when it is not a resumable stream.
    pub fn detect(op: Operation, model_id: &str) -> Option<StreamFormat> {
        match op {
            Operation::ConverseStream => Some(StreamFormat::Converse),
            Operation::InvokeModelWithResponseStream => {
                Some(StreamFormat::Invoke(Family::of(model_id)))
            }
            _ => None,
        }
    }

    pub(crate) fn single_block(self) -> bool {
        matches!(self, StreamFormat::Invoke(f) if f.single_block())
    }
}

/// The last rung: the in-stream exception the pump sends when it gives up (a
/// [`CannotResume`] or a [`Divergence`]), then it ends the stream. A modelled
/// `modelStreamErrorException` (HTTP 424 semantics), so SDKs surface a typed error instead of
/// a reset or a silently short stream.
pub fn give_up_event(reason: &str) -> aws_smithy_types::event_stream::Message {
    let body = serde_json::json!({
        "message": format!("The stream was interrupted and bedrock-relay could not resume it: {reason}"),
        "originalStatusCode": 500,
        "originalMessage": reason,
    });
    crate::eventstream::exception_with_body("modelStreamErrorException", body.to_string())
}

/// A resumption strategy (a rung of the ladder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    Prefill,
    Instructed,
    Replay,
}

impl Strategy {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Strategy::Prefill => "prefill",
            Strategy::Instructed => "instructed",
            Strategy::Replay => "replay",
        }
    }
}

/// What the model (and configuration) allows; computed by the pump per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelCaps {
    pub prefill: bool,
    pub instructed: bool,
    pub replay: bool,
}

/// Token usage (input = prompt tokens, output = generated tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input + self.output
    }
}
