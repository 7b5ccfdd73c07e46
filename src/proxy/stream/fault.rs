//! How an upstream stream broke ([`Interruption`]), whatever its wire: named for logs,
//! metrics and the client's error message, and classified for the retry driver.

use crate::proxy::attempt::Failure;
use crate::proxy::error::RelayError;
use crate::resume::{Divergence, Stop};
use crate::retry::{classify_exception, RetryReason};
use bytes::Bytes;
use std::time::Duration;

/// How an upstream stream broke.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.describe())]
pub enum Interruption {
    /// Connection reset or another transport error mid-body.
    Reset(String),
    /// The connection closed without finishing the HTTP body (no chunked terminator).
    Eof(String),
    /// The HTTP body ended cleanly but the stream's terminal events never came.
    Truncated,
    /// A frame failed its checksum or framing, or the body ended inside a frame.
    Corrupt(String),
    /// Nothing arrived within the stall timeout.
    Stall(Duration),
    /// A retryable in-stream exception or error event; its bytes are kept to forward if
    /// resumption fails (where the wire forwards the upstream's own).
    Exception { exception_type: String, raw: Bytes },
    /// An instructed continuation did not follow the continuation protocol (nothing of it
    /// reached the client): asked once more.
    Refused(String),
}

impl Interruption {
    /// Metric label (`bedrock_relay_stream_interruptions_total{reason}`).
    pub fn label(&self) -> &'static str {
        match self {
            Interruption::Reset(_) => "reset",
            Interruption::Eof(_) => "eof",
            Interruption::Truncated => "truncated",
            Interruption::Corrupt(_) => "corrupt_frame",
            Interruption::Stall(_) => "stall",
            Interruption::Exception { .. } => "exception",
            Interruption::Refused(_) => "continuation_refused",
        }
    }

    pub fn retry_reason(&self) -> RetryReason {
        match self {
            Interruption::Reset(_) | Interruption::Eof(_) => RetryReason::Reset,
            Interruption::Truncated => RetryReason::Truncated,
            Interruption::Corrupt(_) => RetryReason::CorruptFrame,
            Interruption::Stall(_) => RetryReason::Stall,
            Interruption::Exception { exception_type, .. } => {
                classify_exception(exception_type).unwrap_or(RetryReason::InStreamError)
            }
            Interruption::Refused(_) => RetryReason::InStreamError,
        }
    }

    /// What happened, for logs and the client's error message.
    pub fn describe(&self) -> String {
        match self {
            Interruption::Reset(e) => format!("connection to Bedrock reset mid-stream ({e})"),
            Interruption::Eof(e) => format!("connection to Bedrock closed mid-stream ({e})"),
            Interruption::Truncated => "Bedrock's stream ended before its terminal events".into(),
            Interruption::Corrupt(e) => format!("corrupt stream from Bedrock ({e})"),
            Interruption::Stall(d) => format!(
                "no event from Bedrock for {}",
                humantime::format_duration(*d)
            ),
            Interruption::Exception { exception_type, .. } => {
                format!("Bedrock sent {exception_type} mid-stream")
            }
            Interruption::Refused(e) => {
                format!("the continuation did not follow the continuation protocol ({e})")
            }
        }
    }
}

/// Why a stream the client is reading cannot go on: the reason its typed error carries.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GiveUp {
    #[error("this stream's format cannot be resumed")]
    NotResumable,
    #[error("gave up after {0} resume(s) (max_resumes)")]
    MaxResumes(u32),
    #[error("the replayed answer diverged from what was already sent ({0})")]
    Diverged(#[source] Divergence),
    #[error("the continuation restarted the answer and differed from what was already sent ({0})")]
    Restarted(#[source] Divergence),
    #[error("the continuation did not follow the continuation protocol, {times} times ({})", .last.reason)]
    Refused { times: u8, last: Divergence },
    #[error(transparent)]
    Heal(Stop),
    /// No resumed stream could be opened.
    #[error("{0}")]
    NotResumed(#[source] NotResumed),
    /// A retryable failure, and no attempt was left.
    #[error("{0}; no attempt left (max_attempts, the retry budget or the request deadline)")]
    Exhausted(#[source] NotResumed),
}

/// Why the retry driver could not open a resumed stream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotResumed {
    #[error("resume request refused with status {0}")]
    Status(http::StatusCode),
    #[error("resume request answered with {0}")]
    Exception(String),
    #[error(transparent)]
    Relay(RelayError),
    #[error(transparent)]
    Transport(crate::proxy::attempt::Transport),
}

impl GiveUp {
    /// The last failure of a resume's attempts.
    pub(crate) fn not_resumed(failure: Failure) -> GiveUp {
        let retryable = failure.retry_reason().is_some();
        let why = match failure {
            Failure::Fatal(e) => NotResumed::Relay(e),
            Failure::Status { response, .. } => NotResumed::Status(response.status()),
            Failure::Exception { exception_type, .. } => NotResumed::Exception(exception_type),
            Failure::Transport(t) => NotResumed::Transport(t),
        };
        match retryable {
            true => GiveUp::Exhausted(why),
            false => GiveUp::NotResumed(why),
        }
    }
}
