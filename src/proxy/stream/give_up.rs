//! Why a stream the client is reading cannot go on ([`GiveUp`]): the reason its typed error
//! carries, with the cause kept.

use crate::proxy::attempt::Failure;
use crate::proxy::error::RelayError;
use crate::proxy::fault::Transport;
use crate::resume::{Divergence, Stop};

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
    #[error(transparent)]
    NotResumed(NotResumed),
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
    Transport(Transport),
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
