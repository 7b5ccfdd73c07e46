//! The one retry driver. [`Attempts::drive`] runs an [`Exchange`] (a plain request, a
//! stream's first frame, a resume) until it yields its outcome or may not be tried again:
//! sign and send each attempt, let the exchange judge the response, classify how it failed,
//! and decide (attempt cap, shared retry budget, deadline, backoff) whether another follows.
//!
//! Signing happens here, innermost, so every retry and every resume is signed afresh. The
//! budget is charged here ([`Attempts::may_retry`]) and refunded here ([`Attempts::succeeded`]);
//! a reset of an upstream connection is charged once however many streams it carried.

use super::error::RelayError;
use super::fault::Transport;
use super::outbound::Outbound;
use super::Relay;
use crate::ops::Operation;
use crate::retry::{classify_status, RetryReason};
use crate::upstream::{ConnectionId, UpstreamBody};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{timeout, Instant};

mod gate;

/// Error bodies are small; anything larger is cut here.
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// How an attempt failed.
#[derive(Debug)]
pub enum Failure {
    /// No usable HTTP response: connect error, reset, timeout, torn body.
    Transport(Transport),
    /// Bedrock answered with an error status (body buffered, forwarded unchanged if final).
    Status {
        response: Box<Response<Bytes>>,
        retry: Option<RetryReason>,
    },
    /// A stream whose first frame was an exception (HTTP 200): forwarded as Bedrock sent
    /// it (head and frame) if final, so throttling stays throttling.
    Exception {
        head: Box<http::response::Parts>,
        exception_type: String,
        raw: Bytes,
        retry: Option<RetryReason>,
    },
    /// Not retryable and not Bedrock's answer.
    Fatal(RelayError),
}

impl Failure {
    pub fn retry_reason(&self) -> Option<RetryReason> {
        match self {
            Failure::Transport(t) => Some(t.reason()),
            Failure::Status { retry, .. } | Failure::Exception { retry, .. } => *retry,
            Failure::Fatal(_) => None,
        }
    }

    /// What the client gets when this is the last failure: Bedrock's own error unchanged,
    /// or a Bedrock-shaped error naming what went wrong.
    pub fn into_result(self, attempts: u32) -> Result<Response<Bytes>, RelayError> {
        match self {
            Failure::Status { response, .. } => Ok(*response),
            Failure::Exception { head, raw, .. } => Ok(Response::from_parts(*head, raw)),
            Failure::Fatal(e) => Err(e),
            Failure::Transport(error) => Err(match error.reason() {
                RetryReason::Connect => RelayError::Connect { attempts, error },
                RetryReason::Timeout | RetryReason::Stall => {
                    RelayError::Timeout { attempts, error }
                }
                _ => RelayError::Reset { attempts, error },
            }),
        }
    }
}

/// One kind of upstream exchange the driver may repeat.
pub trait Exchange: Send {
    type Output: Send;

    /// The next attempt's request (unsigned). An error ends the exchange with it.
    fn request(&mut self) -> Result<Request<Bytes>, Failure>;

    /// What a response head with a success status becomes, reading at most `within`: the
    /// outcome, or how the attempt failed after all (torn body, an exception as first frame).
    fn accept(
        &mut self,
        resp: Response<UpstreamBody>,
        within: Duration,
    ) -> impl Future<Output = Result<Self::Output, Failure>> + Send;

    /// Whether a failure is worth another attempt, and why; the default asks the failure.
    /// An exchange may learn from a failure here (a model that rejects prefill).
    fn retry_reason(&mut self, failure: &Failure) -> Option<RetryReason> {
        failure.retry_reason()
    }
}

/// How [`Attempts::drive`] runs one exchange.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Attempts this exchange may make.
    pub attempts: u32,
    /// How long each attempt may wait for its response head.
    pub head_timeout: Duration,
    /// The exchange starts after this failure (a stream broke): its first attempt is
    /// already a retry, paid from the budget and preceded by backoff.
    pub after: Option<RetryReason>,
}

impl Policy {
    /// The configured policy: `max_attempts` attempts, each waiting `first_byte_timeout` for
    /// its head; `after`: the failure the exchange follows, if any.
    pub fn configured(settings: &crate::config::Settings, after: Option<RetryReason>) -> Policy {
        Policy {
            attempts: settings.max_attempts,
            head_timeout: settings.first_byte_timeout,
            after,
        }
    }
}

/// The attempt loop's state for one request: attempts made, budget tokens taken, deadline.
pub struct Attempts {
    relay: Arc<Relay>,
    operation: Operation,
    made: u32,
    /// Budget tokens this request's retries took; given back if it succeeds.
    spent: u32,
    deadline: Instant,
    /// Signing name when the request is forwarded to another AWS service.
    service: Option<String>,
    /// The upstream connection of the last attempt's response, if it got one.
    connection: Option<ConnectionId>,
    /// Admission per Bedrock quota and spillover (`crate::admission`; `gate.rs`).
    gate: crate::admission::Gate,
    /// One OpenTelemetry span per attempt (`crate::otel`); none when export is off.
    trace: crate::otel::AttemptSpans,
}

impl Attempts {
    pub fn new(relay: Arc<Relay>, operation: Operation) -> Self {
        let deadline = Instant::now() + relay.settings.request_deadline;
        Attempts {
            relay,
            operation,
            made: 0,
            spent: 0,
            deadline,
            service: None,
            connection: None,
            gate: Default::default(),
            trace: Default::default(),
        }
    }

    /// Run `exchange` until it yields its outcome, or return the last failure when no
    /// further attempt is allowed. The only retry loop of the relay.
    pub async fn drive<E: Exchange>(
        &mut self,
        exchange: &mut E,
        policy: Policy,
    ) -> Result<E::Output, Failure> {
        let mut first = self.made;
        let cap = |made: u32, first: u32| made.saturating_sub(first) >= policy.attempts;
        if let Some(reason) = policy.after {
            if !self.may_retry(reason, cap(self.made, first)).await {
                return Err(Failure::Fatal(RelayError::Exhausted));
            }
        }
        loop {
            let failure = match self.send(exchange.request()?, policy.head_timeout).await {
                Ok(resp) => match exchange.accept(resp, self.remaining()).await {
                    Ok(outcome) => return Ok(outcome),
                    Err(failure) => failure,
                },
                Err(failure) => failure,
            };
            self.observe(&failure);
            match exchange.retry_reason(&failure) {
                // A throttle absorbed: the request waits in its quota's queue again.
                Some(reason) if self.absorb(reason) => first += 1,
                Some(reason) if self.may_retry(reason, cap(self.made, first)).await => continue,
                _ => return Err(failure),
            }
        }
    }

    /// Sign for another AWS service (forwarded requests) instead of `bedrock`.
    pub fn signing_for(mut self, service: Option<String>) -> Self {
        self.service = service;
        self
    }

    /// Give each attempt a span, child of the request's server span.
    pub fn traced(mut self, span: &crate::otel::RequestSpan) -> Self {
        self.trace = span.attempts();
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
    ) -> Result<Response<UpstreamBody>, Failure> {
        let region = self.admit(&mut req).await?;
        self.made += 1;
        self.connection = None;
        let relay = self.relay.clone();
        let signed = match (&self.service, region) {
            (None, Some(region)) => relay.signer.sign_in_region(&mut req, &region).await,
            (None, None) => relay.signer.sign(&mut req).await,
            (Some(service), _) => relay.signer.sign_as(&mut req, service).await,
        };
        signed.map_err(|e| Failure::Fatal(RelayError::Signing(e)))?;
        let host = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        self.trace.begin(self.made, &host);
        let wait = head_timeout.min(self.remaining());
        let result = match timeout(wait, relay.upstream.send(req)).await {
            Err(_) => Err(Failure::Transport(Transport::HeadTimeout { host, wait })),
            Ok(Err(e)) => Err(match e.retry_reason() {
                Some(reason) => Failure::Transport(Transport::Send {
                    host,
                    reason,
                    source: e,
                }),
                None => Failure::Fatal(RelayError::Upstream(e)),
            }),
            Ok(Ok(resp)) if resp.status().is_success() => Ok(resp),
            Ok(Ok(resp)) => Err(self.error_status(resp).await),
        };
        self.connection = result
            .as_ref()
            .ok()
            .and_then(|r| r.extensions().get::<ConnectionId>().copied());
        self.record(&result);
        result
    }

    async fn error_status(&self, resp: Response<UpstreamBody>) -> Failure {
        let retry = classify_status(resp.status(), resp.headers());
        let (parts, body) = resp.into_parts();
        let read = timeout(
            self.remaining(),
            Limited::new(body, MAX_ERROR_BODY).collect(),
        )
        .await;
        match read {
            Ok(Ok(collected)) => Failure::Status {
                response: Box::new(Response::from_parts(parts, collected.to_bytes())),
                retry,
            },
            _ => Failure::Transport(Transport::ErrorBodyEnded(parts.status)),
        }
    }

    fn record(&self, result: &Result<Response<UpstreamBody>, Failure>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(Failure::Status { retry: Some(_), .. }) => "retryable_status",
            Err(Failure::Status { retry: None, .. }) => "error_status",
            Err(Failure::Exception { .. }) => "exception",
            Err(Failure::Transport(t)) => t.reason().label(),
            Err(Failure::Fatal(_)) => "fatal",
        };
        let status = match result {
            Ok(resp) => Some(resp.status().as_u16()),
            Err(Failure::Status { response, .. }) => Some(response.status().as_u16()),
            _ => None,
        };
        self.trace.outcome(outcome, status);
        self.relay
            .metrics
            .upstream_attempts_total
            .with_label_values(&[self.operation.name(), outcome])
            .inc();
    }

    /// Record an attempt that got its head but failed later (torn body, stall, in-stream error).
    pub fn record_late_failure(&self, reason: RetryReason) {
        self.trace.late_failure(reason.label());
        self.relay
            .metrics
            .upstream_attempts_total
            .with_label_values(&[self.operation.name(), reason.label()])
            .inc();
    }

    /// After a retryable failure: may another attempt be made? Checks the attempt cap
    /// (`capped`: the exchange's attempts are used up), the shared budget and the deadline,
    /// then sleeps the jittered backoff.
    async fn may_retry(&mut self, reason: RetryReason, capped: bool) -> bool {
        let relay = self.relay.clone();
        if capped {
            return false;
        }
        let cost = reason.cost();
        let delay = relay.backoff.delay(self.made);
        if delay >= self.remaining() {
            return false;
        }
        // A connection that broke under many streams at once: paid for by its first stream.
        let paid = reason == RetryReason::Reset
            && self.connection.is_some_and(|c| {
                !relay
                    .budget
                    .first_failure_of(c.0, std::time::Instant::now())
            });
        if !paid {
            if !relay.budget.try_acquire(cost) {
                relay.metrics.retry_budget_exhausted_total.inc();
                return false;
            }
            self.spent += cost.tokens();
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

    /// The request succeeded: give back what its retries took from the budget (1 token
    /// when it never retried), as the AWS SDKs' standard mode does.
    pub fn succeeded(&mut self) {
        match std::mem::take(&mut self.spent) {
            0 => self.relay.budget.on_success(),
            spent => self.relay.budget.release(spent),
        }
        self.relay
            .metrics
            .retry_budget_tokens
            .set(self.relay.budget.available() as i64);
    }
}

/// Read a whole non-streaming response body within `limit` bytes and the time left.
pub async fn read_whole(
    body: UpstreamBody,
    limit: usize,
    within: Duration,
) -> Result<Bytes, Failure> {
    match timeout(within, Limited::new(body, limit).collect()).await {
        Err(_) => Err(Failure::Transport(Transport::BodyTimeout)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Failure::Fatal(RelayError::ResponseTooLarge { limit }))
        }
        Ok(Err(e)) => Err(Failure::Transport(Transport::BodyTorn(e))),
    }
}

/// A response with its whole body, at most `limit` bytes, read within `within`.
pub async fn whole_response(
    resp: Response<UpstreamBody>,
    limit: usize,
    within: Duration,
) -> Result<Response<Bytes>, Failure> {
    let (parts, body) = resp.into_parts();
    let bytes = read_whole(body, limit, within).await?;
    Ok(Response::from_parts(parts, bytes))
}

/// A request whose response is read whole (every operation but the streams).
pub struct Whole<'a> {
    outbound: &'a Outbound,
    limit: usize,
}

impl<'a> Whole<'a> {
    /// Resend `outbound` until its whole body, at most `limit` bytes, has arrived.
    pub fn new(outbound: &'a Outbound, limit: usize) -> Self {
        Whole { outbound, limit }
    }
}

impl Exchange for Whole<'_> {
    type Output = Response<Bytes>;

    fn request(&mut self) -> Result<Request<Bytes>, Failure> {
        Ok(self.outbound.request())
    }

    async fn accept(
        &mut self,
        resp: Response<UpstreamBody>,
        within: Duration,
    ) -> Result<Response<Bytes>, Failure> {
        whole_response(resp, self.limit, within).await
    }
}

#[cfg(test)]
mod tests;
