//! The driver's side of admission (`crate::admission`): every attempt waits for its quota
//! (and may be pointed at a spillover region) before it is signed; a throttle is taught to
//! the quota and absorbed (the request waits again) while the request's wait budget lasts.

use super::{Attempts, Failure};
use crate::retry::RetryReason;
use bytes::Bytes;
use http::Request;

impl Attempts {
    /// Queue under this inbound identity (fairness is per client, then FIFO).
    pub fn for_client(mut self, client: String) -> Self {
        self.gate = crate::admission::Gate::new(client);
        self
    }

    /// How long this request waited for its quota in all, and the spillover region of its
    /// last attempt: for the access log.
    pub fn note(&self, record: &mut crate::proxy::Record) {
        record.waited_ms = self.gate.waited().as_millis() as u64;
        record.region = self.gate.region().map(str::to_owned);
    }

    /// Admit the next attempt: `Ok(Some(region))` to sign it for a spillover region.
    pub(super) async fn admit(
        &mut self,
        req: &mut Request<Bytes>,
    ) -> Result<Option<String>, Failure> {
        if self.service.is_some() {
            return Ok(None);
        }
        let relay = self.relay.clone();
        let remaining = self.remaining();
        self.gate
            .admit(&relay.admission, req, remaining)
            .await
            .map_err(|response| Failure::Status {
                response: Box::new(response),
                retry: None,
            })
    }

    /// Teach the quota what Bedrock answered before the first byte.
    pub(super) fn observe(&mut self, failure: &Failure) {
        let relay = self.relay.clone();
        let adm = &relay.admission;
        match failure {
            Failure::Status {
                response,
                retry: Some(RetryReason::Throttled),
            } => {
                let body = String::from_utf8_lossy(response.body());
                self.gate.throttled(adm, &body);
            }
            Failure::Exception {
                raw,
                retry: Some(RetryReason::Throttled),
                ..
            } => {
                let payload = String::from_utf8_lossy(raw);
                self.gate.throttled(adm, &payload);
            }
            Failure::Status { response, .. } if response.status().is_server_error() => {
                self.gate.server_error(adm)
            }
            _ => {}
        }
    }

    /// Absorb a throttle: the request goes back to its quota's queue instead of retrying.
    pub(super) fn absorb(&mut self, reason: RetryReason) -> bool {
        if reason != RetryReason::Throttled {
            return false;
        }
        let relay = self.relay.clone();
        let remaining = self.remaining();
        self.gate.absorb(&relay.admission, remaining)
    }
}
