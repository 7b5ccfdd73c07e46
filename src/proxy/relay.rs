//! The relay's shared state ([`Relay`]: settings, signer, upstream pool, metrics, retry
//! budget, what it learned about models) and one request's record ([`Record`]: what it did,
//! for its access-log line and metrics).

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::ops;
use crate::resume::ModelCaps;
use crate::retry::{Backoff, RetryBudget};
use crate::signing::Signer;
use crate::upstream::Upstream;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Everything a request needs, shared by all connections.
pub struct Relay {
    pub settings: Arc<Settings>,
    pub signer: Signer,
    pub upstream: Upstream,
    pub metrics: Metrics,
    pub budget: RetryBudget,
    pub backoff: Backoff,
    pub models: ModelMemory,
    /// Inbound authentication, policy and per-client limits (step 1).
    pub inbound: crate::inbound::Inbound,
    /// Models whose CountTokens Bedrock refused (unsupported, or not permitted).
    pub count_refusals: CountRefusals,
    /// One admission queue per Bedrock quota, and spillover regions (`crate::admission`).
    pub admission: crate::admission::Admissions,
}

impl Relay {
    pub fn new(
        settings: Arc<Settings>,
        signer: Signer,
        upstream: Upstream,
        metrics: Metrics,
    ) -> Self {
        let inbound = crate::inbound::Inbound::new(&settings.inbound);
        // Models the policy names get usage labels of their own (`crate::usage`).
        let allowed = settings.inbound.allow_models.iter();
        metrics.usage.admit_models(allowed.map(|r| r.as_str()));
        let budget = RetryBudget::new(settings.retry_budget);
        let backoff = Backoff::new(settings.backoff_base, settings.backoff_max);
        let admission = crate::admission::build(&settings, &upstream, &metrics.registry);
        Relay {
            settings,
            signer,
            upstream,
            metrics,
            budget,
            backoff,
            models: Default::default(),
            inbound,
            count_refusals: Default::default(),
            admission,
        }
    }

    /// Which rungs of the ladder a model allows: configuration, then what was learned.
    pub(crate) fn caps(&self, model: &str) -> ModelCaps {
        let learned = self.models.prefill_forbidden(model);
        self.settings.resume.caps(model, learned)
    }
}

/// What the relay learns about models at run time: those that rejected a prefill.
///
/// Keyed by the model's base id, so `us.`, `eu.`, `global.` and ARN spellings of one model
/// share what was learned ([`model_key`]). Bounded, since model ids come from clients: at
/// [`MAX_REMEMBERED_MODELS`] the longest-unconfirmed entry makes room for the new one.
#[derive(Debug, Default)]
pub struct ModelMemory {
    no_prefill: Mutex<VecDeque<String>>,
}

/// How many models [`ModelMemory`] remembers.
pub const MAX_REMEMBERED_MODELS: usize = 1024;

impl ModelMemory {
    pub(crate) fn forbid_prefill(&self, model: &str) {
        let key = model_key(model);
        let mut models = self.no_prefill.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = models.iter().position(|m| m == key) {
            models.remove(at);
        } else if models.len() >= MAX_REMEMBERED_MODELS {
            models.pop_front();
        }
        models.push_back(key.to_owned());
    }

    pub(crate) fn prefill_forbidden(&self, model: &str) -> bool {
        let key = model_key(model);
        self.no_prefill
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|m| m == key)
    }
}

use crate::ops::model_key;

/// Models (bare ids) whose counts Bedrock refused for good: counting unsupported, or
/// `bedrock:CountTokens` not granted. Bounded: at [`MAX_REMEMBERED_MODELS`] the oldest entry goes.
#[derive(Debug, Default)]
pub struct CountRefusals {
    models: Mutex<VecDeque<String>>,
}

impl CountRefusals {
    pub(crate) fn refuse(&self, id: &str) {
        let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        if models.iter().any(|m| m == id) {
            return;
        }
        if models.len() >= MAX_REMEMBERED_MODELS {
            models.pop_front();
        }
        models.push_back(id.to_owned());
    }

    pub(crate) fn refused(&self, id: &str) -> bool {
        self.models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|m| m == id)
    }
}

/// What one request did, for its access-log line and metrics.
#[derive(Debug)]
pub struct Record {
    pub operation: ops::Operation,
    pub model: Option<String>,
    pub started: Instant,
    pub attempts: u32,
    pub resumes: u32,
    /// The strategy of the last successful resume (`prefill`, `instructed`, `replay`).
    pub strategy: Option<&'static str>,
    /// How the last continuation's output limit was decided: `counted` (CountTokens),
    /// `bounds` (from the delivered bytes), `unlimited` (the request has none).
    pub limit_count: Option<&'static str>,
    /// A stream interrupted after bytes reached the client: whether it was healed.
    pub healed: Option<bool>,
    pub bytes_out: u64,
    /// How long the request waited for its Bedrock quota (admission queue), in all.
    pub waited_ms: u64,
    /// The spillover region its last attempt went to (none: the relay's own region).
    pub region: Option<String>,
    /// Usage, healing cost, client identity and how a stream ended (`crate::usage`).
    pub ledger: crate::usage::Ledger,
    /// The request's OpenTelemetry server span (`crate::otel`); none when export is off.
    pub otel: crate::otel::RequestSpan,
}

impl Record {
    pub fn new(operation: ops::Operation, model: Option<String>) -> Self {
        Record {
            operation,
            model,
            started: Instant::now(),
            attempts: 0,
            resumes: 0,
            strategy: None,
            limit_count: None,
            healed: None,
            bytes_out: 0,
            waited_ms: 0,
            region: None,
            ledger: Default::default(),
            otel: Default::default(),
        }
    }

    /// Log the access line and count the request. Called once, when the response is done
    /// (for streams: when the stream ends).
    pub fn finish(self, relay: &Relay, status: u16) {
        let op = self.operation.name();
        let secs = self.started.elapsed().as_secs_f64();
        relay
            .metrics
            .requests_total
            .with_label_values(&[op, &status.to_string()])
            .inc();
        relay
            .metrics
            .request_duration_seconds
            .with_label_values(&[op])
            .observe(secs);
        if let Some(healed) = self.healed {
            let family = crate::resume::Family::of(self.model.as_deref().unwrap_or("")).label();
            let outcome = if healed { "healed" } else { "failed" };
            relay
                .metrics
                .interrupted_streams_total
                .with_label_values(&[family, outcome])
                .inc();
        }
        let usage = &relay.metrics.usage;
        let model_label = usage.model_label(self.model.as_deref());
        let client_label = usage.client_label(self.ledger.client.as_deref());
        usage.count(&model_label, &client_label, &self.ledger);
        let ended = crate::status::Ended {
            operation: self.operation.name(),
            model: &model_label,
            status,
            secs,
            healed: self.healed,
            strategy: self.strategy,
            resumes: self.resumes,
            end: self.ledger.end,
            fault: self.ledger.fault,
            tokens: self.ledger.tokens,
            heal: self.ledger.heal,
        };
        let metrics = &relay.metrics;
        metrics
            .status
            .finished(&ended, || metrics.upstream_attempts());
        self.otel.end(&crate::otel::Summary {
            status,
            attempts: self.attempts,
            resumes: self.resumes,
            strategy: self.strategy,
            waited_ms: self.waited_ms,
            tokens: self.ledger.tokens.map(|t| (t.input, t.output)),
            healed: self.healed,
            fault: self.ledger.fault,
        });
        tracing::info!(
            target: "bedrock_relay::access",
            operation = op,
            model = self.model.as_deref().unwrap_or("-"),
            status,
            attempts = self.attempts,
            resumes = self.resumes,
            strategy = self.strategy.unwrap_or("-"),
            limit_count = self.limit_count.unwrap_or("-"),
            duration_ms = (secs * 1000.0) as u64,
            bytes = self.bytes_out,
            waited_ms = self.waited_ms,
            region = self.region.as_deref().unwrap_or("-"),
            input_tokens = self.ledger.tokens.map(|t| t.input),
            output_tokens = self.ledger.tokens.map(|t| t.output),
            end = self.ledger.end,
            fault = self.ledger.fault,
            events_in = self.ledger.events_in,
            events_out = self.ledger.events_out,
            "request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_remembered_within_a_bound() {
        let r = CountRefusals::default();
        r.refuse("anthropic.claude-x-v1:0");
        r.refuse("anthropic.claude-x-v1:0");
        assert!(r.refused("anthropic.claude-x-v1:0"));
        assert!(!r.refused("anthropic.claude-y-v1:0"));
        for i in 0..MAX_REMEMBERED_MODELS + 5 {
            r.refuse(&format!("vendor.model-{i}"));
        }
        assert_eq!(r.models.lock().unwrap().len(), MAX_REMEMBERED_MODELS);
        assert!(
            !r.refused("anthropic.claude-x-v1:0"),
            "the oldest made room"
        );
        assert!(r.refused(&format!("vendor.model-{}", MAX_REMEMBERED_MODELS + 4)));
    }

    #[test]
    fn one_model_under_every_spelling() {
        let base = "anthropic.claude-sonnet-4-6-v1:0";
        for spelling in [
            base,
            "us.anthropic.claude-sonnet-4-6-v1:0",
            "eu.anthropic.claude-sonnet-4-6-v1:0",
            "global.anthropic.claude-sonnet-4-6-v1:0",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-6-v1:0",
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-sonnet-4-6-v1:0",
        ] {
            assert_eq!(model_key(spelling), base, "{spelling}");
        }
        assert_eq!(
            model_key("meta.llama3-1-70b-instruct-v1:0"),
            "meta.llama3-1-70b-instruct-v1:0"
        );
        assert_eq!(
            model_key("arn:aws:bedrock:us-east-1:1:application-inference-profile/abc123"),
            "abc123"
        );
    }

    #[test]
    fn learned_once_known_under_every_spelling() {
        let m = ModelMemory::default();
        m.forbid_prefill("us.anthropic.claude-opus-5-v1:0");
        assert!(m.prefill_forbidden("global.anthropic.claude-opus-5-v1:0"));
        assert!(m.prefill_forbidden("anthropic.claude-opus-5-v1:0"));
        assert!(!m.prefill_forbidden("anthropic.claude-3-5-sonnet-20240620-v1:0"));
    }

    #[test]
    fn memory_stays_bounded_and_keeps_learning() {
        let m = ModelMemory::default();
        for i in 0..MAX_REMEMBERED_MODELS + 10 {
            m.forbid_prefill(&format!("vendor.model-{i}"));
        }
        let last = format!("vendor.model-{}", MAX_REMEMBERED_MODELS + 9);
        assert!(m.prefill_forbidden(&last), "still learning when full");
        assert!(
            !m.prefill_forbidden("vendor.model-0"),
            "the oldest made room"
        );
        assert_eq!(m.no_prefill.lock().unwrap().len(), MAX_REMEMBERED_MODELS);
    }
}
