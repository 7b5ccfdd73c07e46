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
    pub count_refusals: super::count::CountRefusals,
}

impl Relay {
    pub fn new(
        settings: Arc<Settings>,
        signer: Signer,
        upstream: Upstream,
        metrics: Metrics,
    ) -> Self {
        let inbound = crate::inbound::Inbound::new(&settings.inbound);
        let budget = RetryBudget::new(settings.retry_budget);
        let backoff = Backoff::new(settings.backoff_base, settings.backoff_max);
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

/// Cross-region inference profile prefixes (`us.anthropic.claude-...`).
const GEO_PREFIXES: [&str; 9] = [
    "us", "us-gov", "eu", "apac", "ap", "jp", "au", "ca", "global",
];

/// The base model id of a model id as clients spell it: the resource name of an ARN
/// (`arn:aws:bedrock:...:inference-profile/us.x.y` → `us.x.y`), without a geographic
/// inference-profile prefix (`us.x.y` → `x.y`).
pub fn model_key(model: &str) -> &str {
    let id = match model.strip_prefix("arn:") {
        Some(_) => model.rsplit('/').next().unwrap_or(model),
        None => model,
    };
    match id.split_once('.') {
        Some((geo, rest)) if GEO_PREFIXES.contains(&geo) && rest.contains('.') => rest,
        _ => id,
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
            "request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
