//! A resume as an [`Exchange`] for the retry driver, for any [`Wire`]: each attempt plans the
//! next rung of the ladder (the heal step's [`Heal::plan`], the core's `plan` over the wire's
//! request body) and sends its continuation request; the first one that answers with a
//! stream of the wire is the resumed stream.
//!
//! A continuation request refused with a 4xx (a prefill or instruction the model will not
//! take) closes that rung for this stream and the next attempt plans the next one (replay);
//! Bedrock's "does not support assistant message prefill" is also remembered for the model.

use super::give_up::GiveUp;
use super::reader::Events;
use super::wire::Wire;
use crate::proxy::attempt::{Exchange, Failure, Policy};
use crate::proxy::error::RelayError;
use crate::proxy::fault::Interruption;
use crate::proxy::outbound::Outbound;
use crate::proxy::Relay;
use crate::resume::{Heal, ModelCaps, Splicer, Strategy};
use crate::retry::{rejects_prefill, RetryReason};
use crate::upstream::UpstreamBody;
use bytes::Bytes;
use http::{Request, Response};
use std::time::Duration;

/// One resume of one stream: the rungs still open, the continuation in flight.
pub(super) struct Resume<'a, W: Wire> {
    relay: &'a Relay,
    outbound: &'a Outbound,
    model: &'a str,
    heal: &'a mut Heal<W::Codec>,
    stall: Duration,
    /// The strategy of the last continuation request planned.
    pub strategy: Option<Strategy>,
    splicer: Option<Splicer>,
    rungs: Rungs,
}

/// The rungs a stream's continuation requests have closed (refused with a 4xx).
#[derive(Debug, Default)]
struct Rungs {
    prefill_refused: bool,
    instructed_refused: bool,
}

impl Rungs {
    /// What the model (configuration, what was learned) and this stream still allow.
    fn caps(&self, relay: &Relay, model: &str) -> ModelCaps {
        let mut caps = relay.caps(model);
        caps.prefill &= !self.prefill_refused;
        caps.instructed &= !self.instructed_refused;
        caps
    }

    /// A continuation request (of `strategy`) failed: a 4xx closes its rung (and a prefill
    /// refusal is learned for the model), so the next attempt plans the next one; anything
    /// else is retried as the failure says.
    fn after(
        &mut self,
        relay: &Relay,
        model: &str,
        strategy: Option<Strategy>,
        failure: &Failure,
    ) -> Option<RetryReason> {
        let refused_rung = match failure {
            Failure::Status {
                response,
                retry: None,
            } if response.status().is_client_error() => Some(response),
            _ => None,
        };
        match (refused_rung, strategy) {
            (Some(response), Some(Strategy::Prefill)) => {
                if rejects_prefill(response.status(), response.body()) {
                    // Learned: this model takes no prefill.
                    relay.models.forbid_prefill(model);
                }
                self.prefill_refused = true;
            }
            (Some(_), Some(Strategy::Instructed)) => self.instructed_refused = true,
            _ => return failure.retry_reason(),
        }
        tracing::info!(model = %model, strategy = ?strategy, status = %failure_status(failure), "continuation refused: trying the next rung");
        relay
            .metrics
            .stream_resumes_total
            .with_label_values(&[strategy.map_or("none", Strategy::label), "rejected"])
            .inc();
        Some(RetryReason::InStreamError)
    }
}

impl<'a, W: Wire> Resume<'a, W> {
    pub(super) fn new(
        relay: &'a Relay,
        outbound: &'a Outbound,
        model: &'a str,
        heal: &'a mut Heal<W::Codec>,
    ) -> Self {
        Resume {
            relay,
            outbound,
            model,
            heal,
            stall: relay.settings.stall_timeout_for(model),
            strategy: None,
            splicer: None,
            rungs: Rungs::default(),
        }
    }
}

/// The resumed stream's events, and how they are spliced on.
pub(super) type Resumed<W> = (Events<<W as Wire>::Splitter, UpstreamBody>, Splicer);

impl<W: Wire> Exchange for Resume<'_, W> {
    type Output = Resumed<W>;

    fn request(&mut self) -> Result<Request<Bytes>, Failure> {
        let caps = self.rungs.caps(self.relay, self.model);
        let next = self
            .heal
            .plan(&self.outbound.body, &caps)
            .map_err(|e| Failure::Fatal(RelayError::CannotResume(e)))?;
        self.strategy = Some(next.strategy);
        self.splicer = Some(next.splicer);
        Ok(self.outbound.request_with_body(next.body))
    }

    async fn accept(
        &mut self,
        resp: Response<UpstreamBody>,
        _within: Duration,
    ) -> Result<Self::Output, Failure> {
        if !W::is_stream(resp.headers()) {
            return Err(Failure::Fatal(RelayError::NotAStream(resp.status())));
        }
        // `request` planned this attempt before it was sent.
        let splicer = self.splicer.take().expect("a planned continuation");
        Ok((Events::new(resp.into_body(), self.stall), splicer))
    }

    fn retry_reason(&mut self, failure: &Failure) -> Option<RetryReason> {
        self.rungs
            .after(self.relay, self.model, self.strategy, failure)
    }
}

/// How a resume after `fault` may run: refused once the stream has used up `max_resumes`,
/// else up to `max_attempts` attempts, the first already a retry (budget and backoff).
pub(super) fn policy(relay: &Relay, resumes: u32, fault: &Interruption) -> Result<Policy, GiveUp> {
    let settings = &relay.settings;
    if resumes >= settings.resume.max_resumes {
        return Err(GiveUp::MaxResumes(resumes));
    }
    Ok(Policy::configured(settings, Some(fault.retry_reason())))
}

fn failure_status(failure: &Failure) -> String {
    match failure {
        Failure::Status { response, .. } => response.status().to_string(),
        _ => "-".into(),
    }
}
