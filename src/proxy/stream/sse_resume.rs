//! A resume of a Server-Sent Events stream as an [`Exchange`] for the retry driver: the SSE
//! twin of [`super::resume::Resume`]. Each attempt plans the next rung with the API's codec
//! ([`SseCodec::plan`], the core's `plan` over the API's body) and sends its continuation;
//! the first one that answers with an event stream is the resumed stream.
//!
//! A continuation refused with a 4xx closes that rung for this stream (the next attempt plans
//! the next one, replay last); Bedrock's "does not support assistant message prefill" is
//! remembered for the model, as on the EventStream path.

use super::resume::{cannot, Rungs};
use super::sse_events::{is_sse, SseEvents};
use crate::proxy::attempt::{Exchange, Failure};
use crate::proxy::outbound::Outbound;
use crate::proxy::Relay;
use crate::resume::sse::SseCodec;
use crate::resume::{Splicer, Strategy, Transcript};
use crate::retry::RetryReason;
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
    rungs: Rungs,
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
            rungs: Rungs::default(),
        }
    }
}

impl Exchange for SseResume<'_> {
    type Output = (SseEvents, Splicer);

    fn request(&mut self) -> Result<Request<Bytes>, Failure> {
        let caps = self.rungs.caps(self.relay, self.model);
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
        self.rungs
            .after(self.relay, self.model, self.strategy, failure)
    }
}
