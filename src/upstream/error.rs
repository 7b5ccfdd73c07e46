//! Upstream failures, typed by kind so callers decide retryability from the kind and never
//! from message text.

use crate::retry::RetryReason;
use std::error::Error as StdError;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Broad class of an upstream failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No connection was made (refused, DNS, TLS handshake): the request never left.
    Connect,
    /// The connect attempt timed out.
    ConnectTimeout,
    /// The connection broke after the request may have been sent.
    Reset,
    /// Not retryable: a malformed request or configuration problem.
    Other,
}

#[derive(thiserror::Error, Debug)]
pub enum UpstreamError {
    #[error("cannot connect to upstream: {0}")]
    Connect(#[source] BoxError),
    #[error("connecting to upstream timed out: {0}")]
    ConnectTimeout(#[source] BoxError),
    #[error("upstream connection broke: {0}")]
    Reset(#[source] BoxError),
    #[error("upstream endpoint is invalid: {0}")]
    Endpoint(String),
    #[error("upstream {0} is the relay's own listen address (request loop)")]
    Loop(String),
    #[error("upstream request failed: {0}")]
    Other(#[source] BoxError),
}

impl UpstreamError {
    pub fn kind(&self) -> FailureKind {
        match self {
            UpstreamError::Connect(_) => FailureKind::Connect,
            UpstreamError::ConnectTimeout(_) => FailureKind::ConnectTimeout,
            UpstreamError::Reset(_) => FailureKind::Reset,
            UpstreamError::Endpoint(_) | UpstreamError::Loop(_) | UpstreamError::Other(_) => {
                FailureKind::Other
            }
        }
    }

    /// The retry reason for this failure, or `None` when retrying cannot help.
    pub fn retry_reason(&self) -> Option<RetryReason> {
        match self.kind() {
            FailureKind::Connect => Some(RetryReason::Connect),
            FailureKind::ConnectTimeout => Some(RetryReason::Timeout),
            FailureKind::Reset => Some(RetryReason::Reset),
            FailureKind::Other => None,
        }
    }

    /// Classify an error of the hyper-util legacy client.
    pub(crate) fn from_client(e: hyper_util::client::legacy::Error) -> Self {
        if e.is_connect() {
            if chain_has_timeout(&e) {
                return UpstreamError::ConnectTimeout(Box::new(e));
            }
            return UpstreamError::Connect(Box::new(e));
        }
        let user_error = source_of::<hyper::Error>(&e).is_some_and(|h| h.is_user());
        if user_error {
            UpstreamError::Other(Box::new(e))
        } else {
            UpstreamError::Reset(Box::new(e))
        }
    }
}

fn source_of<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

fn chain_has_timeout(e: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = err.source();
    }
    false
}
