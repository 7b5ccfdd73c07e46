//! One request's way through admission, across all its attempts ([`Gate`]): which quota and
//! region each attempt goes to, how long the request waited in all (bounded by
//! `throttle.max_wait` from its first wait), and which regions answered it with a throttle
//! or a server error before the first byte (the next attempt prefers another).

use super::{cost, throttle_response, Admissions, Permit, QuotaKey, Refused};
use crate::ops::{self, Operation};
use bytes::Bytes;
use http::{Request, Response};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Default)]
pub struct Gate {
    client: String,
    deadline: Option<Instant>,
    waited: Duration,
    permit: Option<Permit>,
    region: Option<String>,
    avoid: Vec<(String, &'static str)>,
    /// Throttles absorbed (the request waited again instead of failing).
    pub absorbed: u32,
}

/// The model a request invokes (path, or the body's `model` on the OpenAI- and
/// Anthropic-compatible paths); `None` for anything that is not a model invocation.
fn invoked_model(req: &Request<Bytes>) -> Option<String> {
    let c = ops::classify(req.method(), req.uri().path());
    use Operation::*;
    match c.operation {
        Converse | ConverseStream | InvokeModel | InvokeModelWithResponseStream => {
            c.model_id.map(|m| {
                percent_encoding::percent_decode_str(&m)
                    .decode_utf8_lossy()
                    .into_owned()
            })
        }
        ChatCompletions | Responses | AnthropicMessages => {
            serde_json::from_slice::<serde_json::Value>(req.body())
                .ok()?
                .get("model")?
                .as_str()
                .map(str::to_owned)
        }
        _ => None,
    }
}

impl Gate {
    /// Requests of `client` (an inbound identity, see [`super::client_of`]).
    pub fn new(client: String) -> Self {
        Gate {
            client,
            ..Default::default()
        }
    }

    /// How long the request waited for its quotas, over all attempts.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The region the last attempt went to, when it was not the primary.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// Admit the next attempt of `req`: choose its region (the primary first, then the
    /// spillover regions, skipping those that just failed it), wait for that quota if it
    /// must, and point `req` at the region. Returns the region to sign for when it is not
    /// the primary, or Bedrock's 429 when the request cannot be admitted in time.
    /// `remaining`: time left before the request's deadline.
    pub async fn admit(
        &mut self,
        adm: &Admissions,
        req: &mut Request<Bytes>,
        remaining: Duration,
    ) -> Result<Option<String>, Response<Bytes>> {
        self.permit = None;
        if !adm.enabled() && adm.spillover.is_empty() {
            return Ok(None);
        }
        let Some(model) = invoked_model(req) else {
            return Ok(None);
        };
        let candidates = adm.spillover.candidates(&model);
        let mut order: Vec<&(String, String)> = candidates
            .iter()
            .filter(|(r, _)| !self.avoid.iter().any(|(a, _)| a == r))
            .collect();
        if order.is_empty() {
            self.avoid.clear();
            order = candidates.iter().collect();
        }
        let key = |(region, id): &(String, String)| QuotaKey {
            region: region.clone(),
            model: id.clone(),
        };
        let price = cost::estimate(&model, req.body());
        let mut chosen = None;
        for c in &order {
            if let Some(p) = adm.try_acquire(&key(c), price) {
                chosen = Some((*c, p, false));
                break;
            }
        }
        let (chosen, permit) = match chosen {
            Some((c, p, _)) => {
                adm.metrics.waited(&model, 0.0);
                (c, p)
            }
            None => {
                let c = order[0];
                let now = Instant::now();
                let deadline = *self.deadline.get_or_insert(now + adm.settings.max_wait);
                let deadline = deadline.min(now + remaining);
                let result = adm.acquire(&key(c), &self.client, price, deadline).await;
                let waited = now.elapsed();
                self.waited += waited;
                adm.metrics.waited(&model, waited.as_secs_f64());
                match result {
                    Ok(p) => (c, p),
                    Err(why) => {
                        adm.metrics.throttle(match why {
                            Refused::Full => "queue_full",
                            Refused::Timeout => "timed_out",
                        });
                        return Err(throttle_response(&key(c), self.waited, why));
                    }
                }
            }
        };
        self.permit = Some(permit);
        let (region, id_there) = chosen;
        if *region == adm.spillover.primary() {
            adm.metrics
                .region_attempts_total
                .with_label_values(&[adm.metrics.region(region), "primary"])
                .inc();
            self.region = None;
            return Ok(None);
        }
        let reason = self
            .avoid
            .iter()
            .find(|(r, _)| r == adm.spillover.primary())
            .map(|(_, why)| *why)
            .unwrap_or("saturated");
        adm.metrics
            .region_attempts_total
            .with_label_values(&[adm.metrics.region(region), reason])
            .inc();
        adm.spillover.rewrite(req, region, &model, id_there);
        self.region = Some(region.clone());
        Ok(Some(region.clone()))
    }

    fn current_region(&self, adm: &Admissions) -> String {
        self.region
            .clone()
            .unwrap_or_else(|| adm.spillover.primary().to_owned())
    }

    /// Bedrock throttled the last attempt (429, or a throttlingException as its first
    /// frame): teach its quota, and prefer another region next time.
    pub fn throttled(&mut self, adm: &Admissions, message: &str) {
        if let Some(p) = &self.permit {
            p.throttled(message);
        }
        if !adm.spillover.is_empty() {
            let r = self.current_region(adm);
            self.avoid.push((r, "throttled"));
        }
    }

    /// The last attempt's region failed before the first byte (5xx): prefer another.
    pub fn server_error(&mut self, adm: &Admissions) {
        if self.permit.is_some() && !adm.spillover.is_empty() {
            let r = self.current_region(adm);
            self.avoid.push((r, "server_error"));
        }
    }

    /// May a throttle be absorbed (the request waits again, no attempt or budget used)?
    pub fn absorb(&mut self, adm: &Admissions, remaining: Duration) -> bool {
        if self.permit.is_none() {
            return false;
        }
        let ok = adm.enabled()
            && !remaining.is_zero()
            && self.deadline.is_none_or(|d| Instant::now() < d);
        if ok {
            self.absorbed += 1;
            // From the first throttle on, the request's wait budget runs.
            self.deadline
                .get_or_insert(Instant::now() + adm.settings.max_wait);
        }
        adm.metrics.throttle(if ok { "absorbed" } else { "passed" });
        ok
    }
}
