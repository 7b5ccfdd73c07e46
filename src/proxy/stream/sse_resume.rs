//! A resume of a Server-Sent Events stream as an [`Exchange`] for the retry driver: the SSE
//! twin of [`super::resume::Resume`]. Each attempt plans the next rung with the API's codec
//! ([`SseCodec::plan`], the core's `plan` over the API's body) and sends its continuation;
//! the first one that answers with an event stream is the resumed stream.
//!
//! A continuation refused with a 4xx closes that rung for this stream (the next attempt plans
//! the next one, replay last); Bedrock's "does not support assistant message prefill" is
//! remembered for the model, as on the EventStream path.

use super::sse_events::{is_sse, SseEvents};
use crate::proxy::attempt::{Exchange, Failure};
use crate::proxy::error::RelayError;
use crate::proxy::outbound::Outbound;
use crate::proxy::Relay;
use crate::resume::sse::SseCodec;
use crate::resume::{Splicer, Strategy, Transcript};
use crate::retry::{rejects_prefill, RetryReason};
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use std::time::Duration;

/// One resume of one SSE stream: the rungs still open, the continuation in flight.
pub(super) struct SseResume<'a> {
    pub relay: &'a Relay,
    pub outbound: &'a Outbound,
    pub model: &'a str,
    pub codec: &'a mut SseCodec,
    pub transcript: &'a mut Transcript,
    pub stall: Duration,
    /// The strategy of the last continuation request planned.
    pub strategy: Option<Strategy>,
    splicer: Option<Splicer>,
    prefill_refused: bool,
    instructed_refused: bool,
}

impl<'a> SseResume<'a> {
    pub(super) fn new(
        relay: &'a Relay,
        outbound: &'a Outbound,
        model: &'a str,
        codec: &'a mut SseCodec,
        transcript: &'a mut Transcript,
    ) -> Self {
        SseResume {
            relay,
            outbound,
            model,
            codec,
            transcript,
            stall: relay.settings.stall_timeout_for(model),
            strategy: None,
            splicer: None,
            prefill_refused: false,
            instructed_refused: false,
        }
    }
}

impl Exchange for SseResume<'_> {
    type Output = (SseEvents, Splicer);

    fn request(&mut self) -> Result<Request<Bytes>, Failure> {
        let mut caps = self.relay.caps(self.model);
        caps.prefill &= !self.prefill_refused;
        caps.instructed &= !self.instructed_refused;
        let next = self
            .codec
            .plan(&self.outbound.body, self.transcript, &caps)
            .map_err(|e| cannot(e.to_string()))?;
        self.strategy = Some(next.strategy);
        self.splicer = Some(next.splicer);
        Ok(self.outbound.request_with_body(next.body))
    }

    async fn accept(
        &mut self,
        resp: Response<Incoming>,
        _within: Duration,
    ) -> Result<Self::Output, Failure> {
        if !is_sse(resp.headers()) {
            return Err(cannot(format!(
                "resume request answered {} without an event stream",
                resp.status()
            )));
        }
        let splicer = self
            .splicer
            .take()
            .ok_or_else(|| cannot("no plan".into()))?;
        self.codec.begin_attempt();
        Ok((SseEvents::new(resp.into_body(), self.stall), splicer))
    }

    fn retry_reason(&mut self, failure: &Failure) -> Option<RetryReason> {
        let refused = match failure {
            Failure::Status {
                response,
                retry: None,
            } if response.status().is_client_error() => Some(response),
            _ => None,
        };
        match (refused, self.strategy) {
            (Some(response), Some(Strategy::Prefill)) => {
                if rejects_prefill(response.status(), response.body()) {
                    self.relay.models.forbid_prefill(self.model);
                }
                self.prefill_refused = true;
            }
            (Some(_), Some(Strategy::Instructed)) => self.instructed_refused = true,
            _ => return failure.retry_reason(),
        }
        tracing::info!(model = %self.model, strategy = ?self.strategy, "continuation refused: trying the next rung");
        self.relay
            .metrics
            .stream_resumes_total
            .with_label_values(&[self.strategy.map_or("none", Strategy::label), "rejected"])
            .inc();
        Some(RetryReason::InStreamError)
    }
}

fn cannot(why: String) -> Failure {
    Failure::Fatal(RelayError::CannotResume(why))
}
