//! Token usage per request, counted once at its end: `bedrock_relay_tokens_total{model,kind,client}`
//! (the final usage the client got, summed over attempts) and
//! `bedrock_relay_heal_tokens_total{model,kind,client}` (how much of it healing cost: the
//! failed attempts' estimated tokens plus the delivered text a continuation carried as input).
//!
//! Labels stay bounded ([`BoundedLabels`]): a model is named by its base id ([`model_key`]:
//! `us.`/`global.` prefixes and ARN paths removed, so no account id), the first
//! [`MAX_MODELS`] distinct ones seen get their own value, later ones are `other`. The client
//! label is the inbound identity (`key:<access key id>`, `token:<digest prefix>`) only when
//! inbound authentication is on, else `-`; the first [`MAX_CLIENTS`] have their own value.
//!
//! A request's [`Ledger`] (in its `Record`) gathers what the pumps learn: usage seen in the
//! events the client received ([`Seen`]), healing tokens, the fault that interrupted it and
//! how it ended.

use crate::ops::model_key;
pub use crate::resume::tokens::Tokens;
use prometheus::{IntCounterVec, Opts, Registry};
use std::collections::HashSet;
use std::sync::Mutex;

/// How many model ids get a label value of their own.
pub const MAX_MODELS: usize = 50;
/// How many inbound client identities get a label value of their own.
pub const MAX_CLIENTS: usize = 50;
/// The label value for everything past the bound.
pub const OTHER: &str = "other";
/// The client label when inbound authentication is off.
pub const NO_CLIENT: &str = "-";

/// What one request's pumps learned, for its access line, metrics and the status page.
#[derive(Debug, Default)]
pub struct Ledger {
    /// The inbound client identity, when inbound authentication is on.
    pub client: Option<String>,
    /// The final usage the client got (summed over attempts).
    pub tokens: Option<Tokens>,
    /// Tokens healing cost: failed attempts (estimated) and continuation overhead.
    pub heal: Tokens,
    /// The last fault that interrupted the stream after bytes reached the client.
    pub fault: Option<&'static str>,
    /// How a stream or session ended (`complete`, `client_gone`, `failed`; a bidirectional
    /// session: `clean`, `client_gone`, `upstream_fault`, `input_error`).
    pub end: Option<&'static str>,
    /// A bidirectional session: events client → Bedrock, Bedrock → client.
    pub events_in: Option<u64>,
    pub events_out: Option<u64>,
}

impl Ledger {
    /// A failed attempt's estimated tokens (what `failed_attempt_tokens_total` counts).
    pub fn failed_attempt(&mut self, input: u64, output: u64) {
        self.heal.input += input;
        self.heal.output += output;
    }
}

/// Label values with a bound: the first `max` distinct values are kept, the rest are `other`.
#[derive(Debug)]
pub struct BoundedLabels {
    max: usize,
    seen: Mutex<HashSet<String>>,
}

impl BoundedLabels {
    pub fn new(max: usize) -> Self {
        BoundedLabels {
            max,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// Mark `value` as allowed from the start (e.g. from configuration).
    pub fn admit(&self, value: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() < self.max {
            seen.insert(value.to_owned());
        }
    }

    /// The label value for `value`: itself while within the bound, else `other`.
    pub fn label(&self, value: &str) -> String {
        if !plain(value) {
            return OTHER.into();
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(value) {
            return value.to_owned();
        }
        if seen.len() < self.max {
            seen.insert(value.to_owned());
            return value.to_owned();
        }
        OTHER.into()
    }
}

/// A value fit for a label: short, of id characters only.
fn plain(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@+".contains(&b))
}

/// The model label's source: the base model id, percent-decoded.
pub fn model_name(model: Option<&str>) -> String {
    let raw = model.unwrap_or("");
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    model_key(&decoded).to_owned()
}

/// The usage metrics, with their label bounds.
#[derive(Debug, Clone)]
pub struct UsageMetrics {
    /// `bedrock_relay_tokens_total{model,kind,client}`.
    pub tokens_total: IntCounterVec,
    /// `bedrock_relay_heal_tokens_total{model,kind,client}`.
    pub heal_tokens_total: IntCounterVec,
    models: std::sync::Arc<BoundedLabels>,
    clients: std::sync::Arc<BoundedLabels>,
}

impl UsageMetrics {
    /// Register both families on `registry`.
    ///
    /// # Panics
    /// If `registry` already holds them (a programming error).
    pub fn register(registry: &Registry) -> Self {
        let vec = |name: &str, help: &str| {
            let c = IntCounterVec::new(
                Opts::new(format!("bedrock_relay_{name}"), help),
                &["model", "kind", "client"],
            )
            .expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        UsageMetrics {
            tokens_total: vec(
                "tokens_total",
                "Tokens of finished requests as reported to the client (summed over attempts), by model, kind (input, output, cache_read, cache_write) and inbound client.",
            ),
            heal_tokens_total: vec(
                "heal_tokens_total",
                "Tokens spent on healing interrupted streams (failed attempts, estimated; continuation overhead), by model, kind and inbound client; included in tokens_total where the client's usage report sums attempts.",
            ),
            models: std::sync::Arc::new(BoundedLabels::new(MAX_MODELS)),
            clients: std::sync::Arc::new(BoundedLabels::new(MAX_CLIENTS)),
        }
    }

    /// Model ids named by the configuration (policy allow list entries that are plain ids)
    /// get label values of their own from the start.
    pub fn admit_models<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        for pattern in ids {
            // A regex that is a literal id: `^anthropic\.claude-x-v1:0$`.
            let id = pattern
                .trim_start_matches('^')
                .trim_end_matches('$')
                .replace("\\.", ".");
            if plain(&id) {
                self.models.admit(model_key(&id));
            }
        }
    }

    /// The bounded model label of `model`.
    pub fn model_label(&self, model: Option<&str>) -> String {
        self.models.label(&model_name(model))
    }

    /// The bounded client label (`-` without inbound authentication).
    pub fn client_label(&self, client: Option<&str>) -> String {
        match client {
            Some(c) => self.clients.label(c),
            None => NO_CLIENT.into(),
        }
    }

    /// Count a finished request's tokens once.
    pub fn count(&self, model: &str, client: &str, ledger: &Ledger) {
        if let Some(t) = &ledger.tokens {
            for (kind, n) in t.kinds() {
                if n > 0 {
                    self.tokens_total
                        .with_label_values(&[model, kind, client])
                        .inc_by(n);
                }
            }
        }
        for (kind, n) in ledger.heal.kinds() {
            if n > 0 {
                self.heal_tokens_total
                    .with_label_values(&[model, kind, client])
                    .inc_by(n);
            }
        }
    }
}

/// Usage of a whole (non-streaming) answer: InvokeModel's `x-amzn-bedrock-*-token-count`
/// headers, else a Converse body's `usage`.
pub fn of_whole(headers: &http::HeaderMap, body: &[u8], converse: bool) -> Option<Tokens> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let input = header("x-amzn-bedrock-input-token-count");
    let output = header("x-amzn-bedrock-output-token-count");
    if input.is_some() || output.is_some() {
        return Some(Tokens {
            input: input.unwrap_or(0),
            output: output.unwrap_or(0),
            cache_read: header("x-amzn-bedrock-cache-read-input-token-count").unwrap_or(0),
            cache_write: header("x-amzn-bedrock-cache-write-input-token-count").unwrap_or(0),
        });
    }
    if !converse {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let u = v.get("usage")?;
    let n = |k: &str| u.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    Some(Tokens {
        input: n("inputTokens"),
        output: n("outputTokens"),
        cache_read: n("cacheReadInputTokens"),
        cache_write: n("cacheWriteInputTokens"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resume::tokens::Seen;

    #[test]
    fn the_terminal_report_wins_and_early_input_fills_in() {
        let mut s = Seen::default();
        assert_eq!(s.tokens(), None);
        // Claude: message_start (input, cache), message_delta (output), message_stop (metrics).
        s.see(true, Some(12), None, Some((Some(3), Some(4))));
        s.see(false, None, Some((None, Some(40))), None);
        assert_eq!(
            s.tokens(),
            Some(Tokens {
                input: 12,
                output: 40,
                cache_read: 3,
                cache_write: 4
            })
        );
        s.see(
            false,
            None,
            Some((Some(30), Some(55))),
            Some((Some(5), None)),
        );
        assert_eq!(
            s.tokens(),
            Some(Tokens {
                input: 30,
                output: 55,
                cache_read: 5,
                cache_write: 4
            })
        );
    }

    #[test]
    fn labels_are_bounded() {
        let l = BoundedLabels::new(2);
        assert_eq!(l.label("a.b"), "a.b");
        assert_eq!(l.label("c.d"), "c.d");
        assert_eq!(l.label("e.f"), OTHER);
        assert_eq!(l.label("a.b"), "a.b");
        assert_eq!(l.label("bad value\"{}"), OTHER);
    }

    #[test]
    fn model_label_is_the_base_id_without_account() {
        let m = UsageMetrics::register(&Registry::new());
        assert_eq!(
            m.model_label(Some("us.anthropic.claude-sonnet-4-6-v1:0")),
            "anthropic.claude-sonnet-4-6-v1:0"
        );
        let arn = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.x.y-v1";
        let label = m.model_label(Some(arn));
        assert_eq!(label, "x.y-v1");
        assert!(!label.contains("123456789012"));
        assert_eq!(m.client_label(None), NO_CLIENT);
        m.admit_models([r"^vendor\.listed-v1$", "anthropic\\..*"]);
        for i in 0..MAX_MODELS + 5 {
            m.model_label(Some(&format!("vendor.m{i}")));
        }
        assert_eq!(m.model_label(Some("vendor.new")), OTHER);
        assert_eq!(m.model_label(Some("vendor.listed-v1")), "vendor.listed-v1");
    }

    #[test]
    fn counted_once_by_kind() {
        let r = Registry::new();
        let m = UsageMetrics::register(&r);
        let ledger = Ledger {
            tokens: Some(Tokens {
                input: 10,
                output: 20,
                cache_read: 0,
                cache_write: 1,
            }),
            heal: Tokens {
                input: 5,
                output: 7,
                ..Default::default()
            },
            ..Default::default()
        };
        m.count("m.x", "-", &ledger);
        let get = |v: &IntCounterVec, kind| v.with_label_values(&["m.x", kind, "-"]).get();
        assert_eq!(get(&m.tokens_total, "input"), 10);
        assert_eq!(get(&m.tokens_total, "output"), 20);
        assert_eq!(get(&m.tokens_total, "cache_write"), 1);
        assert_eq!(get(&m.heal_tokens_total, "output"), 7);
    }

    #[test]
    fn whole_answers() {
        let mut h = http::HeaderMap::new();
        h.insert("x-amzn-bedrock-input-token-count", "11".parse().unwrap());
        h.insert("x-amzn-bedrock-output-token-count", "22".parse().unwrap());
        assert_eq!(of_whole(&h, b"", false).map(|t| t.total()), Some(33));
        let body = br#"{"usage":{"inputTokens":3,"outputTokens":4,"cacheReadInputTokens":5}}"#;
        let t = of_whole(&http::HeaderMap::new(), body, true).unwrap();
        assert_eq!((t.input, t.output, t.cache_read), (3, 4, 5));
        assert_eq!(of_whole(&http::HeaderMap::new(), body, false), None);
    }
}
