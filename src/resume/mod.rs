//! Resumption of interrupted model streams: what the client has, how to get the rest, and how
//! to splice it on so the client sees ONE unbroken response.
//!
//! Pure logic over decoded EventStream messages and JSON request bodies (no I/O, no tokio).
//! The stream pump (`crate::proxy`) drives it:
//!
//! ```text
//!   upstream frame ──► [Splicer::accept] ──► Vec<Spliced> ──► client
//!                                                      │
//!                                   Transcript::observe ◄┘ (every message actually forwarded)
//!   failure ──► plan(format, original_body, &mut transcript, caps)
//!                 ├─ Ok(Continuation { strategy, body, splicer }) → send `body`, feed the new
//!                 │   attempt's frames through `splicer`
//!                 └─ Err(CannotResume) → send a typed exception event, end the stream
//! ```
//!
//! The first attempt needs a splicer too: [`Splicer::passthrough`] forwards everything
//! unchanged. Strategies (the ladder of DESIGN.md): [`Strategy::Prefill`] (the delivered text as
//! an assistant prefill), [`Strategy::Instructed`] (delivered text + a user turn asking to
//! continue; the seam overlap is removed), [`Strategy::Replay`] (resend the original request,
//! swallow what the client has while verifying it byte for byte, forward the rest; a mismatch is
//! a [`Divergence`]). When nothing was forwarded yet, [`plan`] returns a `Replay` with nothing to
//! verify: a plain retry, always exact, allowed whatever the caps say.
//!
//! Ownership of buffers: the [`Transcript`] holds the text the client received (bounded by the
//! pump through [`Transcript::bytes`] against `max_transcript_bytes`); a [`Splicer`] holds a copy
//! of it for verification (replay) or at most ~200 bytes of seam look-ahead (instructed).

mod event;
mod plan;
mod replay;
mod request;
mod seam;
mod splice;
mod transcript;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_invoke;
#[cfg(test)]
mod testutil;

pub use event::usage_of;
pub use plan::{plan, CannotResume, Continuation};
pub use splice::{Divergence, Spliced, Splicer};
pub use transcript::{AttemptUsage, Transcript};

use crate::ops::Operation;

/// The text of the user turn added by [`Strategy::Instructed`].
pub const CONTINUE_INSTRUCTION: &str =
    "Your previous response was cut off. Continue exactly where it stopped, without repeating anything.";

/// How a resumable stream encodes model output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// ConverseStream: flat JSON events named by `:event-type`.
    Converse,
    /// InvokeModelWithResponseStream: `chunk` events whose base64 `bytes` hold the family's JSON.
    Invoke(Family),
}

/// Model family of an invoke stream, by model id substring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Claude,
    Nova,
    Llama,
    Mistral,
    Titan,
    /// Unknown invoke format: only plain retry, or replay verified chunk by chunk (byte-exact).
    Other,
}

impl Family {
    /// Family of a model id (plain id, inference-profile id such as `us.anthropic...`, or ARN).
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
        } else {
            Family::Other
        }
    }

    /// Families whose output is one text stream (no blocks, no message start).
    pub(crate) fn single_block(self) -> bool {
        matches!(self, Family::Llama | Family::Mistral | Family::Titan)
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
