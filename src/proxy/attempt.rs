//! One request's attempts: sign and send each one, classify how it failed, and decide
//! (attempt cap, shared retry budget, deadline, backoff) whether another may follow.
//!
//! Signing happens here, innermost, so every retry and every resume is signed afresh.

use super::error::RelayError;
use super::Relay;
use crate::ops::Operation;
use crate::retry::{classify_status, RetryCost, RetryReason};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{timeout, Instant};

/// Error bodies are small; anything larger is cut here.
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// How an attempt failed.
#[derive(Debug)]
pub enum Failure {
    /// No usable HTTP response: connect error, reset, timeout, torn body.
    Transport { reason: RetryReason, detail: String },
    /// Bedrock answered with an error status (body buffered, forwarded unchanged if final).
    Status {
        response: Response<Bytes>,
        retry: Option<RetryReason>,
    },
    /// Not retryable and not Bedrock's answer.
    Fatal(RelayError),
}

impl Failure {
    pub fn retry_reason(&self) -> Option<RetryReason> {
        match self {
            Failure::Transport { reason, .. } => Some(*reason),
            Failure::Status { retry, .. } => *retry,
            Failure::Fatal(_) => None,
        }
    }

    /// What the client gets when this is the last failure: Bedrock's own error unchanged,
    /// or a Bedrock-shaped error naming what went wrong.
    pub fn into_result(self, attempts: u32) -> Result<Response<Bytes>, RelayError> {
        match self {
            Failure::Status { response, .. } => Ok(response),
            Failure::Fatal(e) => Err(e),
            Failure::Transport { reason, detail } => Err(match reason {
                RetryReason::Connect => RelayError::Connect { attempts, detail },
                RetryReason::Timeout | RetryReason::Stall => {
                    RelayError::Timeout { attempts, detail }
                }
                _ => RelayError::Reset { attempts, detail },
            }),
        }
    }
}

/// The attempt loop's state for one request.
pub struct Attempts {
    relay: Arc<Relay>,
    operation: Operation,
    made: u32,
    deadline: Instant,
    /// Signing name when the request is forwarded to another AWS service.
    service: Option<String>,
}

impl Attempts {
    pub fn new(relay: Arc<Relay>, operation: Operation) -> Self {
        let deadline = Instant::now() + relay.settings.request_deadline;
        Attempts {
            relay,
            operation,
            made: 0,
            deadline,
            service: None,
        }
    }

    /// Sign for another AWS service (forwarded requests) instead of `bedrock`.
    pub fn signing_for(mut self, service: Option<String>) -> Self {
        self.service = service;
        self
    }

    /// Attempts made so far.
    pub fn made(&self) -> u32 {
        self.made
    }

    /// Time left before the request's deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Sign and send one attempt; wait for the response head at most `head_timeout` (and
    /// never past the deadline). Error statuses come back as [`Failure::Status`].
    pub async fn send(
        &mut self,
        mut req: Request<Bytes>,
        head_timeout: Duration,
    ) -> Result<Response<Incoming>, Failure> {
        self.made += 1;
        let relay = self.relay.clone();
        let signed = match &self.service {
            None => relay.signer.sign(&mut req).await,
            Some(service) => relay.signer.sign_as(&mut req, service).await,
        };
        signed.map_err(|e| Failure::Fatal(RelayError::Signing(e.to_string())))?;
        let host = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let wait = head_timeout.min(self.remaining());
        let result = match timeout(wait, relay.upstream.send(req)).await {
            Err(_) => Err(Failure::Transport {
                reason: RetryReason::Timeout,
                detail: format!(
                    "{host}: no response headers within {}",
                    humantime::format_duration(wait)
                ),
            }),
            Ok(Err(e)) => Err(match e.retry_reason() {
                Some(reason) => Failure::Transport {
                    reason,
                    detail: format!("{host}: {e}"),
                },
                None => Failure::Fatal(RelayError::Upstream(e.to_string())),
            }),
            Ok(Ok(resp)) if resp.status().is_success() => Ok(resp),
            Ok(Ok(resp)) => Err(self.error_status(resp).await),
        };
        self.record(&result);
        result
    }

    async fn error_status(&self, resp: Response<Incoming>) -> Failure {
        let retry = classify_status(resp.status(), resp.headers());
        let (parts, body) = resp.into_parts();
        let read = timeout(
            self.remaining(),
            Limited::new(body, MAX_ERROR_BODY).collect(),
        )
        .await;
        match read {
            Ok(Ok(collected)) => Failure::Status {
                response: Response::from_parts(parts, collected.to_bytes()),
                retry,
            },
            _ => Failure::Transport {
                reason: RetryReason::Reset,
                detail: format!("error response {} ended early", parts.status),
            },
        }
    }

    fn record(&self, result: &Result<Response<Incoming>, Failure>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(Failure::Status { retry: Some(_), .. }) => "retryable_status",
            Err(Failure::Status { retry: None, .. }) => "error_status",
            Err(Failure::Transport { reason, .. }) => reason.label(),
            Err(Failure::Fatal(_)) => "fatal",
        };
        self.relay
            .metrics
            .upstream_attempts_total
            .with_label_values(&[self.operation.name(), outcome])
            .inc();
    }

    /// Record an attempt that got its head but failed later (torn body, stall, in-stream error).
    pub fn record_late_failure(&self, reason: RetryReason) {
        self.relay
            .metrics
            .upstream_attempts_total
            .with_label_values(&[self.operation.name(), reason.label()])
            .inc();
    }

    /// After a retryable failure: may another attempt be made? Checks the attempt cap
    /// (`limit`), the shared budget and the deadline, then sleeps the jittered backoff.
    pub async fn may_retry(&mut self, reason: RetryReason, limit: u32) -> bool {
        let relay = self.relay.clone();
        if self.made >= limit {
            return false;
        }
        let cost = match reason {
            RetryReason::Timeout | RetryReason::Stall => RetryCost::Timeout,
            _ => RetryCost::Retry,
        };
        let delay = relay.backoff.delay(self.made);
        if delay >= self.remaining() {
            return false;
        }
        if !relay.budget.try_acquire(cost) {
            relay.metrics.retry_budget_exhausted_total.inc();
            return false;
        }
        relay
            .metrics
            .retry_budget_tokens
            .set(relay.budget.available() as i64);
        relay
            .metrics
            .retries_total
            .with_label_values(&[reason.label()])
            .inc();
        tracing::debug!(
            reason = reason.label(),
            attempt = self.made,
            delay_ms = delay.as_millis() as u64,
            "retrying"
        );
        tokio::time::sleep(delay).await;
        true
    }

    /// The request succeeded: refund the budget.
    pub fn succeeded(&self) {
        self.relay.budget.on_success();
        self.relay
            .metrics
            .retry_budget_tokens
            .set(self.relay.budget.available() as i64);
    }
}

/// Read a whole non-streaming response body within `limit` bytes and the time left.
pub async fn read_whole(body: Incoming, limit: usize, within: Duration) -> Result<Bytes, Failure> {
    match timeout(within, Limited::new(body, limit).collect()).await {
        Err(_) => Err(Failure::Transport {
            reason: RetryReason::Timeout,
            detail: "response body did not finish in time".into(),
        }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Failure::Fatal(RelayError::ResponseTooLarge { limit }))
        }
        Ok(Err(e)) => Err(Failure::Transport {
            reason: RetryReason::Reset,
            detail: format!("response body torn: {e}"),
        }),
    }
}
