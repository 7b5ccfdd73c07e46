//! The relay's Prometheus metrics, owned here and registered on an explicit
//! [`prometheus::Registry`] held by [`Metrics`] (no globals), so tests read them directly.
//! Every name is prefixed `bedrock_relay_`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// All relay metrics. Create once, share behind an `Arc`.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Client requests finished, by `operation` and HTTP `status`.
    pub requests_total: IntCounterVec,
    /// Client request duration (until the last body byte), by `operation`.
    pub request_duration_seconds: HistogramVec,
    /// Upstream attempts by `operation` and `outcome` (ok, or a retry reason label, or `error`).
    pub upstream_attempts_total: IntCounterVec,
    /// Retries by `reason` (a `RetryReason::label`).
    pub retries_total: IntCounterVec,
    /// Retries refused because the token bucket was empty.
    pub retry_budget_exhausted_total: IntCounter,
    /// Tokens left in the retry bucket.
    pub retry_budget_tokens: IntGauge,
    /// Streaming responses being relayed now.
    pub active_streams: IntGauge,
    /// Streams that broke after bytes reached the client, by `reason`.
    pub stream_interruptions_total: IntCounterVec,
    /// Streams interrupted after bytes reached the client, by model `family` and how they
    /// ended (`healed`, `failed`): the heal ratio per family.
    pub interrupted_streams_total: IntCounterVec,
    /// Resume attempts by `strategy` (retry, prefill, instructed, replay, exception) and `outcome`.
    pub stream_resumes_total: IntCounterVec,
    /// Tokens billed for attempts that failed, by `kind` (input or output).
    pub failed_attempt_tokens_total: IntCounterVec,
    /// Time from an interruption until the first byte of the resumed stream.
    pub resume_gap_seconds: Histogram,
    /// Clients that went away before their response was complete.
    pub client_disconnects_total: IntCounter,
    /// CountTokens of what a client has, before a continuation, by `outcome` (counted,
    /// unsupported, denied, timeout, error, skipped).
    pub count_tokens_total: IntCounterVec,
    /// Time a count before a continuation took (both requests, concurrent), time box included.
    pub count_tokens_seconds: Histogram,
    /// The SDK's own credential calls passed on untouched (a global `AWS_ENDPOINT_URL`), by
    /// `service` (sts, sso, sso-oidc) and the HTTP `status` the client got.
    pub credential_calls_total: IntCounterVec,
    /// Stream pumps that panicked (a bug): their clients' connections were cut.
    pub stream_panics_total: IntCounter,
    /// Always 1, labelled with the crate `version`.
    pub build_info: IntGaugeVec,
    /// Tokens by model, kind and inbound client (`bedrock_relay_tokens_total`,
    /// `bedrock_relay_heal_tokens_total`), labels bounded (see `usage`).
    pub usage: crate::usage::UsageMetrics,
    /// What the admin status page shows beyond the metrics (shared by clones).
    pub status: std::sync::Arc<crate::status::Status>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];
const GAP_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// The outcomes of `count_tokens_total`.
pub const COUNT_OUTCOMES: [&str; 6] = [
    "counted",
    "unsupported",
    "denied",
    "timeout",
    "error",
    "skipped",
];
const COUNT_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.5];

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(format!("bedrock_relay_{name}"), help)
}

impl Metrics {
    /// Upstream attempts so far: (ok, not ok).
    pub fn upstream_attempts(&self) -> (u64, u64) {
        use prometheus::core::Collector;
        let (mut ok, mut bad) = (0, 0);
        for family in self.upstream_attempts_total.collect() {
            for m in family.get_metric() {
                let n = m.get_counter().get_value() as u64;
                let is_ok = m
                    .get_label()
                    .iter()
                    .any(|l| l.name() == "outcome" && l.value() == "ok");
                if is_ok {
                    ok += n;
                } else {
                    bad += n;
                }
            }
        }
        (ok, bad)
    }

    /// What the status page reads from the metrics now.
    pub fn status_gauges(&self) -> crate::status::Gauges {
        crate::status::Gauges {
            attempts: self.upstream_attempts(),
            streams_open: self.active_streams.get(),
            retry_budget_tokens: self.retry_budget_tokens.get(),
            retry_budget_exhausted: self.retry_budget_exhausted_total.get(),
        }
    }

    /// Metrics on a fresh registry of their own.
    pub fn new() -> Self {
        Self::with_registry(Registry::new())
    }

    /// Metrics registered on `registry`.
    ///
    /// # Panics
    /// If `registry` already holds metrics with these names (a programming error).
    pub fn with_registry(registry: Registry) -> Self {
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(opts(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::with_opts(opts(name, help)).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::with_opts(opts(name, help)).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let requests_total = counter_vec(
            "requests_total",
            "Client requests finished, by operation and HTTP status.",
            &["operation", "status"],
        );
        let request_duration_seconds = HistogramVec::new(
            HistogramOpts::from(opts(
                "request_duration_seconds",
                "Client request duration until the last body byte, by operation.",
            ))
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["operation"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(request_duration_seconds.clone()))
            .expect("unique metric");
        let upstream_attempts_total = counter_vec(
            "upstream_attempts_total",
            "Upstream attempts, by operation and outcome.",
            &["operation", "outcome"],
        );
        let retries_total = counter_vec("retries_total", "Retries, by reason.", &["reason"]);
        let retry_budget_exhausted_total = counter(
            "retry_budget_exhausted_total",
            "Retries refused because the retry token bucket was empty.",
        );
        let retry_budget_tokens = gauge("retry_budget_tokens", "Tokens left in the retry bucket.");
        let active_streams = gauge("active_streams", "Streaming responses being relayed now.");
        let stream_interruptions_total = counter_vec(
            "stream_interruptions_total",
            "Streams that broke after bytes reached the client, by reason.",
            &["reason"],
        );
        let interrupted_streams_total = counter_vec(
            "interrupted_streams_total",
            "Streams interrupted after bytes reached the client, by model family and outcome (healed, failed).",
            &["family", "outcome"],
        );
        let stream_resumes_total = counter_vec(
            "stream_resumes_total",
            "Resume attempts, by strategy and outcome.",
            &["strategy", "outcome"],
        );
        let failed_attempt_tokens_total = counter_vec(
            "failed_attempt_tokens_total",
            "Tokens billed for failed attempts, by kind (input or output).",
            &["kind"],
        );
        let resume_gap_seconds = Histogram::with_opts(
            HistogramOpts::from(opts(
                "resume_gap_seconds",
                "Time from a stream interruption until the first resumed event reached the client.",
            ))
            .buckets(GAP_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(resume_gap_seconds.clone()))
            .expect("unique metric");
        let stream_panics_total = counter(
            "stream_panics_total",
            "Stream pumps that panicked (a bug); their clients' connections were cut.",
        );
        let client_disconnects_total = counter(
            "client_disconnects_total",
            "Clients that went away before their response was complete.",
        );
        let count_tokens_total = counter_vec(
            "count_tokens_total",
            "CountTokens of the delivered output before a continuation, by outcome (counted, unsupported, denied, timeout, error, skipped).",
            &["outcome"],
        );
        // Every outcome from the start: a fresh relay shows zeros, not nothing.
        for outcome in COUNT_OUTCOMES {
            count_tokens_total.with_label_values(&[outcome]);
        }
        let count_tokens_seconds = Histogram::with_opts(
            HistogramOpts::from(opts(
                "count_tokens_seconds",
                "Time a CountTokens of the delivered output took before a continuation.",
            ))
            .buckets(COUNT_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(count_tokens_seconds.clone()))
            .expect("unique metric");
        let credential_calls_total = counter_vec(
            "credential_calls_total",
            "Credential calls of the SDK passed on untouched to STS or SSO, by service and HTTP status.",
            &["service", "status"],
        );
        let build_info = IntGaugeVec::new(
            opts("build_info", "Build information; always 1."),
            &["version"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(build_info.clone()))
            .expect("unique metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let usage = crate::usage::UsageMetrics::register(&registry);
        Metrics {
            registry,
            requests_total,
            request_duration_seconds,
            upstream_attempts_total,
            retries_total,
            retry_budget_exhausted_total,
            retry_budget_tokens,
            active_streams,
            stream_interruptions_total,
            stream_resumes_total,
            interrupted_streams_total,
            failed_attempt_tokens_total,
            resume_gap_seconds,
            client_disconnects_total,
            count_tokens_total,
            count_tokens_seconds,
            credential_calls_total,
            stream_panics_total,
            build_info,
            usage,
            status: Default::default(),
        }
    }

    /// Everything in the registry, in the Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_rendered() {
        let m = Metrics::new();
        m.requests_total
            .with_label_values(&["ConverseStream", "200"])
            .inc();
        m.retries_total.with_label_values(&["throttled"]).inc_by(2);
        m.retry_budget_tokens.set(495);
        m.resume_gap_seconds.observe(0.3);
        let text = m.render();
        assert!(
            text.contains(
                "bedrock_relay_requests_total{operation=\"ConverseStream\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("bedrock_relay_retries_total{reason=\"throttled\"} 2"));
        assert!(text.contains("bedrock_relay_retry_budget_tokens 495"));
        assert!(text.contains("bedrock_relay_resume_gap_seconds_count 1"));
        assert!(text.contains(&format!(
            "bedrock_relay_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("bedrock_relay_"), "{line}");
        }
    }

    #[test]
    fn two_instances_do_not_share_state() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.client_disconnects_total.inc();
        assert_eq!(a.client_disconnects_total.get(), 1);
        assert_eq!(b.client_disconnects_total.get(), 0);
    }
}
