//! The admission queue's metrics, registered on the relay's registry. Labels are bounded:
//! `family` (a fixed list of model families), `region` (the configured primary and
//! spillover regions; any other is `other`), `outcome` and `reason` words.

use super::QuotaKey;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

const WAIT_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
];

#[derive(Clone)]
pub struct AdmissionMetrics {
    /// Requests waiting for a quota now, by model `family`.
    pub queue_depth: IntGaugeVec,
    /// How long admitted or refused requests waited, by model `family`.
    pub wait_seconds: HistogramVec,
    /// Estimated tokens admitted (what Bedrock reserves at the start), by `region`, `family`.
    pub admitted_tokens_total: IntCounterVec,
    /// The learned admitted rate, tokens per second, by `region`, `family`.
    pub quota_rate: GaugeVec,
    /// Throttles: `absorbed` (the request waited again), `passed` (to the client),
    /// `timed_out` / `queue_full` (the relay's own 429).
    pub throttles_total: IntCounterVec,
    /// Attempts admitted, by the `region` they went to and `reason`: `primary` (the relay's
    /// own region), or a spillover (`saturated`, `throttled`, `server_error`).
    pub region_attempts_total: IntCounterVec,
    regions: Vec<String>,
}

impl AdmissionMetrics {
    /// Register on `registry`; `regions`: the primary and spillover regions (label values).
    pub fn new(registry: &Registry, regions: Vec<String>) -> Self {
        let o = |n: &str, h: &str| Opts::new(format!("bedrock_relay_{n}"), h);
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("unique metric");
        };
        let queue_depth = IntGaugeVec::new(
            o(
                "admission_queue_depth",
                "Requests waiting for a Bedrock quota, by model family.",
            ),
            &["family"],
        )
        .expect("valid metric");
        let wait_seconds = HistogramVec::new(
            HistogramOpts::from(o(
                "admission_wait_seconds",
                "Time requests waited for a Bedrock quota, by model family.",
            ))
            .buckets(WAIT_BUCKETS.to_vec()),
            &["family"],
        )
        .expect("valid metric");
        let admitted_tokens_total = IntCounterVec::new(
            o(
                "admitted_tokens_total",
                "Tokens admitted towards Bedrock quotas (input + max_tokens x burndown), by region and model family.",
            ),
            &["region", "family"],
        )
        .expect("valid metric");
        let quota_rate = GaugeVec::new(
            o(
                "quota_rate_tokens_per_second",
                "Token rate the relay learned each quota admits, by region and model family.",
            ),
            &["region", "family"],
        )
        .expect("valid metric");
        let throttles_total = IntCounterVec::new(
            o(
                "throttles_total",
                "Throttles: absorbed (the request waited again), passed (to the client), timed_out and queue_full (the relay's own 429).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let region_attempts_total = IntCounterVec::new(
            o(
                "region_attempts_total",
                "Attempts admitted, by the region they went to and reason: primary, or a spillover (saturated, throttled, server_error).",
            ),
            &["region", "reason"],
        )
        .expect("valid metric");
        reg(Box::new(queue_depth.clone()));
        reg(Box::new(wait_seconds.clone()));
        reg(Box::new(admitted_tokens_total.clone()));
        reg(Box::new(quota_rate.clone()));
        reg(Box::new(throttles_total.clone()));
        reg(Box::new(region_attempts_total.clone()));
        // Every family's queue shows, empty, from the start.
        for family in [
            "claude", "nova", "llama", "mistral", "titan", "cohere", "ai21", "deepseek", "openai",
            "qwen", "other",
        ] {
            queue_depth.with_label_values(&[family]).set(0);
        }
        AdmissionMetrics {
            queue_depth,
            wait_seconds,
            admitted_tokens_total,
            quota_rate,
            throttles_total,
            region_attempts_total,
            regions,
        }
    }

    /// A bounded region label.
    pub fn region<'a>(&'a self, region: &'a str) -> &'a str {
        if self.regions.iter().any(|r| r == region) {
            region
        } else {
            "other"
        }
    }

    pub(super) fn admitted(&self, key: &QuotaKey, cost: u64) {
        let family = crate::resume::Family::of(&key.model).label();
        self.admitted_tokens_total
            .with_label_values(&[self.region(&key.region), family])
            .inc_by(cost);
    }

    pub(super) fn rate(&self, key: &QuotaKey, rate: Option<f64>) {
        if let Some(rate) = rate {
            let family = crate::resume::Family::of(&key.model).label();
            self.quota_rate
                .with_label_values(&[self.region(&key.region), family])
                .set(rate);
        }
    }

    pub(super) fn rate_of(&self, quota: &super::Quota) {
        let rate = quota.lock().tokens.rate();
        self.rate(&quota.key, rate);
    }

    pub fn throttle(&self, outcome: &str) {
        self.throttles_total.with_label_values(&[outcome]).inc();
    }

    pub fn waited(&self, model: &str, secs: f64) {
        let family = crate::resume::Family::of(model).label();
        self.wait_seconds.with_label_values(&[family]).observe(secs);
    }
}
