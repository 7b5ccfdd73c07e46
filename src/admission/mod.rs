//! Admission: one queue per Bedrock quota, and spillover to other regions.
//!
//! A quota is a region × model-or-profile id ([`QuotaKey`]). Every attempt of a model
//! invocation (first attempts, retries and resumes alike: `Attempts::send` asks here) is
//! priced as Bedrock will price it when it starts ([`cost`]: estimated input + max_tokens ×
//! the model's burndown) and admitted by that quota's [`limiter::Limiter`], whose rate is
//! learned from the throttles Bedrock sends. A request that would be throttled waits
//! instead, fair across clients ([`fair`]), each at most `throttle.max_wait` in all; one that
//! cannot be admitted in time gets Bedrock's own 429 `ThrottlingException`, naming the wait.
//! A throttle Bedrock sends anyway is absorbed: the request waits again (no retry budget, no
//! attempt used). With spillover regions, a saturated quota or a region that answered 429 or
//! 5xx before the first byte sends the request, re-signed, to the next region serving the
//! model ([`Spillover`]); never a region-bound model id (an ARN: provisioned throughput,
//! custom and imported models, application profiles).

pub mod cost;
mod fair;
pub mod limiter;
mod metrics;
pub mod spillover;

pub use crate::config::ThrottleSettings;
pub use metrics::AdmissionMetrics;
pub use spillover::Spillover;

use bytes::Bytes;
use fair::Fair;
use http::Response;
use limiter::Limiter;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Quotas remembered at most (model ids come from clients); idle ones are forgotten first.
const MAX_QUOTAS: usize = 1024;

/// Bedrock's messages for the two quotas.
pub use bedrock_relay_wire::cost::TOO_MANY_TOKENS;

/// One on-demand quota: a region and a model or inference-profile id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuotaKey {
    pub region: String,
    pub model: String,
}

struct Waiter {
    cost: f64,
    tx: oneshot::Sender<()>,
}

struct QuotaState {
    tokens: Limiter,
    requests: Limiter,
    queue: Fair<Waiter>,
    pump: bool,
    last_used: Instant,
}

struct Quota {
    key: QuotaKey,
    state: Mutex<QuotaState>,
}

impl Quota {
    fn lock(&self) -> std::sync::MutexGuard<'_, QuotaState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl QuotaState {
    fn refill(&mut self, now: Instant) {
        let saturated = !self.queue.is_empty();
        self.tokens.refill(now, saturated);
        self.requests.refill(now, saturated);
    }

    fn wait_for(&self, cost: f64) -> Duration {
        self.tokens.wait_for(cost).max(self.requests.wait_for(1.0))
    }

    fn take(&mut self, cost: f64, now: Instant) {
        self.tokens.take(cost, now);
        self.requests.take(1.0, now);
        self.last_used = now;
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_waiters` requests already wait for this quota.
    Full,
    /// It waited as long as it may.
    Timeout,
}

/// An admitted attempt: tell the quota how Bedrock answered it.
pub struct Permit {
    quota: Arc<Quota>,
    metrics: AdmissionMetrics,
}

impl Permit {
    /// Bedrock throttled it; `message` says which quota (requests or tokens).
    pub fn throttled(&self, message: &str) {
        let now = Instant::now();
        let mut s = self.quota.lock();
        if message.contains("requests") {
            s.requests.throttled(now);
        } else {
            s.tokens.throttled(now);
        }
        self.metrics.rate(&self.quota.key, s.tokens.rate());
    }
}

/// Every quota the relay has seen, and how requests wait for them.
pub struct Admissions {
    pub settings: ThrottleSettings,
    pub spillover: Spillover,
    quotas: Mutex<HashMap<QuotaKey, Arc<Quota>>>,
    pub metrics: AdmissionMetrics,
}

impl Admissions {
    pub fn new(
        settings: ThrottleSettings,
        spillover: Spillover,
        metrics: AdmissionMetrics,
    ) -> Self {
        Admissions {
            settings,
            spillover,
            quotas: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Absorption on (`max_wait` above zero).
    pub fn enabled(&self) -> bool {
        !self.settings.max_wait.is_zero()
    }

    fn quota(&self, key: &QuotaKey) -> Arc<Quota> {
        let mut quotas = self.quotas.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = quotas.get(key) {
            return q.clone();
        }
        if quotas.len() >= MAX_QUOTAS {
            // Forget the longest-idle quota nobody waits for.
            let idle = quotas
                .iter()
                .filter(|(_, q)| q.lock().queue.is_empty())
                .min_by_key(|(_, q)| q.lock().last_used)
                .map(|(k, _)| k.clone());
            if let Some(k) = idle {
                quotas.remove(&k);
            }
        }
        let now = Instant::now();
        // A quota of the same model in another region (spillover) starts from what that
        // one taught, instead of learning from a storm of throttles.
        let sibling = quotas
            .iter()
            .find(|(k, _)| k.model == key.model && k.region != key.region)
            .map(|(_, q)| {
                let s = q.lock();
                (s.tokens.rate(), s.requests.rate())
            });
        let limiter = |rate: Option<f64>| match rate {
            Some(r) => Limiter::seeded(now, r),
            None => Limiter::new(now),
        };
        let (tokens, requests) = sibling.unwrap_or((None, None));
        let q = Arc::new(Quota {
            key: key.clone(),
            state: Mutex::new(QuotaState {
                tokens: limiter(tokens),
                requests: limiter(requests),
                queue: Fair::default(),
                pump: false,
                last_used: now,
            }),
        });
        quotas.insert(key.clone(), q.clone());
        q
    }

    /// Admit now if the quota has room and nobody waits; never waits.
    pub fn try_acquire(&self, key: &QuotaKey, cost: u64) -> Option<Permit> {
        let quota = self.quota(key);
        let now = Instant::now();
        {
            let mut s = quota.lock();
            s.refill(now);
            if self.enabled() && (!s.queue.is_empty() || !s.wait_for(cost as f64).is_zero()) {
                return None;
            }
            s.take(cost as f64, now);
        }
        self.metrics.admitted(key, cost);
        Some(self.permit(quota))
    }

    fn permit(&self, quota: Arc<Quota>) -> Permit {
        Permit {
            quota,
            metrics: self.metrics.clone(),
        }
    }

    /// Admit `cost` on `key` for `client`, waiting (fairly) until `deadline` at most.
    pub async fn acquire(
        &self,
        key: &QuotaKey,
        client: &str,
        cost: u64,
        deadline: Instant,
    ) -> Result<Permit, Refused> {
        if let Some(p) = self.try_acquire(key, cost) {
            return Ok(p);
        }
        let quota = self.quota(key);
        let (tx, rx) = oneshot::channel();
        {
            let mut s = quota.lock();
            if s.queue.len() >= self.settings.max_waiters {
                return Err(Refused::Full);
            }
            s.queue.push(
                client,
                Waiter {
                    cost: cost as f64,
                    tx,
                },
            );
            if !s.pump {
                s.pump = true;
                tokio::spawn(pump(quota.clone(), self.metrics.clone()));
            }
        }
        let family = crate::resume::Family::of(&key.model).label();
        self.metrics.queue_depth.with_label_values(&[family]).inc();
        let result = tokio::time::timeout_at(deadline, rx).await;
        self.metrics.queue_depth.with_label_values(&[family]).dec();
        match result {
            Ok(Ok(())) => {
                self.metrics.admitted(key, cost);
                Ok(self.permit(quota))
            }
            _ => {
                // It stopped waiting: out of the queue now, not when the pump looks next.
                quota.lock().queue.retain(|w| !w.tx.is_closed());
                Err(Refused::Timeout)
            }
        }
    }

    /// Requests waiting for `key` now.
    #[cfg(test)]
    pub fn waiting(&self, key: &QuotaKey) -> usize {
        self.quota(key).lock().queue.len()
    }
}

/// Releases a quota's waiters one by one as its buckets allow; ends when none wait.
async fn pump(quota: Arc<Quota>, metrics: AdmissionMetrics) {
    loop {
        let wait = {
            let mut s = quota.lock();
            let now = Instant::now();
            s.refill(now);
            s.queue.retain(|w| !w.tx.is_closed());
            let Some(cost) = s.queue.front().map(|w| w.cost) else {
                s.pump = false;
                return;
            };
            let wait = s.wait_for(cost);
            if wait.is_zero() {
                let w = s.queue.pop().expect("front exists");
                s.take(cost, now);
                if w.tx.send(()).is_err() {
                    // It stopped waiting just now: give its cost back.
                    s.tokens.give_back(cost);
                    s.requests.give_back(1.0);
                }
                continue;
            }
            wait
        };
        metrics.rate_of(&quota);
        tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
    }
}

/// The inbound identity a request is queued under: the client's SigV4 access key id, a
/// digest of its bearer token, or `-`.
pub fn client_of(headers: &http::HeaderMap) -> String {
    let Some(auth) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return "-".into();
    };
    if let Some(at) = auth.find("Credential=") {
        let rest = &auth[at + "Credential=".len()..];
        return rest.split('/').next().unwrap_or("-").to_owned();
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    auth.hash(&mut h);
    format!("bearer:{:08x}", h.finish() >> 32)
}

/// Bedrock's 429 for a request the relay could not admit in time.
pub fn throttle_response(key: &QuotaKey, waited: Duration, why: Refused) -> Response<Bytes> {
    let why = match why {
        Refused::Full => "too many requests already wait for it".to_string(),
        Refused::Timeout => format!(
            "waited {} for it (throttle.max_wait)",
            humantime::format_duration(Duration::from_millis(waited.as_millis() as u64))
        ),
    };
    let message = format!(
        "{TOO_MANY_TOKENS} (bedrock-relay held this request for the quota of {} in {}: {why})",
        key.model, key.region
    );
    let body = serde_json::json!({ "message": message }).to_string();
    Response::builder()
        .status(429)
        .header("content-type", "application/json")
        .header(
            "x-amzn-ErrorType",
            "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
        )
        .body(Bytes::from(body))
        .expect("valid response")
}

pub mod gate;
pub use gate::Gate;

#[cfg(test)]
mod tests;

/// The relay's admission state from its settings: metrics on `registry`, spillover
/// endpoints derived from `upstream`'s primary.
pub(crate) fn build(
    settings: &crate::config::Settings,
    upstream: &crate::upstream::Upstream,
    registry: &prometheus::Registry,
) -> Admissions {
    let regions = Spillover::label_regions(&settings.region, &settings.spillover);
    let metrics = AdmissionMetrics::new(registry, regions);
    let base = upstream.base(crate::ops::Route::Runtime).clone();
    let spillover = Spillover::new(
        &settings.region,
        base,
        settings.fips,
        settings.spillover.clone(),
    )
    .unwrap_or_else(|e| {
        tracing::error!(error = %e, "spillover regions unusable; spillover is off");
        Spillover::default()
    });
    Admissions::new(settings.throttle.clone(), spillover, metrics)
}
