//! On-demand quotas as Bedrock enforces them: per region (from the request's SigV4 scope)
//! and per model or inference-profile id, a requests-per-minute and a tokens-per-minute
//! bucket. A request is charged when it starts — one request, and its input tokens plus
//! its whole output limit (`max_tokens`, or the default) times the model's burndown rate
//! (5 for Claude 3.7 and later, 1 for others; `bedrock_relay_wire::cost`) — and the unused
//! part of the reservation is refunded when its answer ends. A request that does not fit
//! gets 429 `ThrottlingException`: "Too many requests, please wait before trying again."
//! or "Too many tokens, please wait before trying again.".
//!
//! Buckets start full and refill continuously (`rpm` / `tpm` per `window`, one minute by
//! default; a shorter window compresses time for tests and benchmarks). Zero: no limit.
//! Set by flag (`--quota-rpm`, `--quota-tpm`, `--quota-window`) or at run time (`POST
//! /_sim/quota`), which also reports what each quota charged (`GET /_sim/quota`).

use bedrock_relay_wire::cost::{self, TOO_MANY_REQUESTS, TOO_MANY_TOKENS};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The quota every region × model gets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// Requests per window; 0: unlimited.
    pub rpm: u64,
    /// Tokens per window; 0: unlimited.
    pub tpm: u64,
    /// The quota's period (Bedrock: one minute).
    #[serde(with = "humantime_serde_compat")]
    pub window: Duration,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            rpm: 0,
            tpm: 0,
            window: Duration::from_secs(60),
        }
    }
}

mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    requests: f64,
    last: Instant,
    /// Net tokens charged (after refunds), requests admitted, requests throttled.
    charged: u64,
    admitted: u64,
    throttled: u64,
}

/// What a request was charged at its start (to refund the unused part at its end).
#[derive(Debug, Clone)]
pub struct Charge {
    key: (String, String),
    pub max_tokens: u64,
    pub burndown: u64,
}

#[derive(Debug, Default)]
pub struct Quotas {
    config: Mutex<QuotaConfig>,
    buckets: Mutex<BTreeMap<(String, String), Bucket>>,
}

impl Quotas {
    pub fn new(config: QuotaConfig) -> Self {
        Quotas {
            config: Mutex::new(config),
            buckets: Mutex::default(),
        }
    }

    pub fn config(&self) -> QuotaConfig {
        *self.config.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// New limits; every bucket starts full again and the counts restart.
    pub fn set(&self, config: QuotaConfig) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Charge a request starting now, or refuse it with Bedrock's message.
    pub fn charge(
        &self,
        region: &str,
        model: &str,
        input: u64,
        max_tokens: u64,
    ) -> Result<Charge, &'static str> {
        let c = self.config();
        let burndown = cost::burndown(model);
        let key = (region.to_owned(), model.to_owned());
        let charge = Charge {
            key: key.clone(),
            max_tokens,
            burndown,
        };
        let price = cost::reservation(model, input, max_tokens) as f64;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: c.tpm as f64,
            requests: c.rpm as f64,
            last: now,
            charged: 0,
            admitted: 0,
            throttled: 0,
        });
        let dt = now.duration_since(b.last).as_secs_f64() / c.window.as_secs_f64().max(1e-3);
        b.last = now;
        b.tokens = (b.tokens + dt * c.tpm as f64).min(c.tpm as f64);
        b.requests = (b.requests + dt * c.rpm as f64).min(c.rpm as f64);
        if c.rpm > 0 && b.requests < 1.0 {
            b.throttled += 1;
            return Err(TOO_MANY_REQUESTS);
        }
        // A reservation larger than the whole quota goes when the bucket is full.
        if c.tpm > 0 && b.tokens < price.min(c.tpm as f64) {
            b.throttled += 1;
            return Err(TOO_MANY_TOKENS);
        }
        if c.rpm > 0 {
            b.requests -= 1.0;
        }
        if c.tpm > 0 {
            b.tokens -= price;
        }
        b.admitted += 1;
        b.charged += price as u64;
        Ok(charge)
    }

    /// The answer ended with `output` tokens: give back the unused reservation.
    pub fn refund(&self, charge: &Charge, output: u64) {
        let c = self.config();
        let unused = charge.max_tokens.saturating_sub(output) * charge.burndown;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = buckets.get_mut(&charge.key) {
            if c.tpm > 0 {
                b.tokens = (b.tokens + unused as f64).min(c.tpm as f64);
            }
            b.charged = b.charged.saturating_sub(unused);
        }
    }

    /// The limits and, per region and model, what was charged (net), admitted, throttled.
    pub fn report(&self) -> Value {
        let c = self.config();
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let quotas: Vec<Value> = buckets
            .iter()
            .map(|((region, model), b)| {
                json!({"region": region, "model": model, "charged_tokens": b.charged,
                       "admitted": b.admitted, "throttled": b.throttled})
            })
            .collect();
        json!({"rpm": c.rpm, "tpm": c.tpm, "window": humantime::format_duration(c.window).to_string(),
               "quotas": quotas})
    }
}

/// The region of a request's SigV4 scope (`Credential=AKID/date/REGION/service/...`), or
/// `us-east-1` for an unsigned or bearer request.
pub fn region_of(authorization: Option<&str>) -> String {
    authorization
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(2))
        .filter(|r| !r.is_empty())
        .unwrap_or("us-east-1")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservation_charged_at_start_and_refunded_at_end() {
        let q = Quotas::new(QuotaConfig {
            rpm: 0,
            tpm: 10_000,
            window: Duration::from_secs(3600),
        });
        let m = "us.anthropic.claude-sonnet-4-6-v1:0";
        // 100 input + 1000 max_tokens x 5 = 5100 reserved.
        let a = q.charge("us-east-1", m, 100, 1000).unwrap();
        assert_eq!(
            q.charge("us-east-1", m, 100, 1000).unwrap_err(),
            TOO_MANY_TOKENS,
            "4900 left < 5100"
        );
        // Another region, another model: their own quotas.
        assert!(q.charge("us-west-2", m, 100, 1000).is_ok());
        assert!(q
            .charge("us-east-1", "amazon.nova-pro-v1:0", 100, 1000)
            .is_ok());
        // 200 output used: 800 x 5 = 4000 back.
        q.refund(&a, 200);
        assert!(q.charge("us-east-1", m, 100, 1000).is_ok());
        let r = q.report();
        let east = r["quotas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["region"] == "us-east-1" && v["model"] == m)
            .unwrap()
            .clone();
        assert_eq!(east["charged_tokens"], 1100 + 5100);
        assert_eq!(east["throttled"], 1);
        let nova = q
            .charge("eu-west-1", "amazon.nova-pro-v1:0", 100, 1000)
            .unwrap();
        assert_eq!(nova.burndown, 1);
    }

    #[test]
    fn requests_per_minute() {
        let q = Quotas::new(QuotaConfig {
            rpm: 2,
            tpm: 0,
            window: Duration::from_secs(3600),
        });
        assert!(q.charge("r", "m", 1, 1).is_ok());
        assert!(q.charge("r", "m", 1, 1).is_ok());
        assert_eq!(q.charge("r", "m", 1, 1).unwrap_err(), TOO_MANY_REQUESTS);
    }

    #[test]
    fn region_from_the_scope() {
        let a = "AWS4-HMAC-SHA256 Credential=AKID/20250101/eu-west-1/bedrock/aws4_request, SignedHeaders=host, Signature=0";
        assert_eq!(region_of(Some(a)), "eu-west-1");
        assert_eq!(region_of(None), "us-east-1");
    }
}
