//! How an attempt failed to give a usable answer ([`Transport`]) and how an upstream stream
//! broke ([`Interruption`]), whatever its wire: named for logs, metrics and the client's
//! error message, classified for the retry driver, with their causes kept.

use crate::retry::{classify_exception, RetryReason};
use crate::upstream::{BoxError, UpstreamError};
use bytes::Bytes;
use std::time::Duration;

/// Why an attempt got no usable response, with its cause.
#[derive(Debug, thiserror::Error)]
pub enum Transport {
    #[error("{host}: no response headers within {}", humantime::format_duration(*.wait))]
    HeadTimeout { host: String, wait: Duration },
    #[error("{host}: {source}")]
    Send {
        host: String,
        reason: RetryReason,
        source: UpstreamError,
    },
    #[error("response body did not finish in time")]
    BodyTimeout,
    #[error("response body torn: {0}")]
    BodyTorn(#[source] BoxError),
    #[error("error response {0} ended early")]
    ErrorBodyEnded(http::StatusCode),
    /// A stream broke before anything of it reached the client.
    #[error(transparent)]
    Stream(Interruption),
}

impl Transport {
    /// How the failure is retried (and counted).
    pub fn reason(&self) -> RetryReason {
        match self {
            Transport::HeadTimeout { .. } | Transport::BodyTimeout => RetryReason::Timeout,
            Transport::Send { reason, .. } => *reason,
            Transport::BodyTorn(_) | Transport::ErrorBodyEnded(_) => RetryReason::Reset,
            Transport::Stream(fault) => fault.retry_reason(),
        }
    }
}

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
