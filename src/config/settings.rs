//! The typed settings the rest of the relay reads ([`Settings`], [`ResumeSettings`]) and
//! their built-in defaults. Produced only by `config::load` (or `Default` in tests).

use super::inbound::InboundSettings;
use super::throttle::ThrottleSettings;
use crate::resume::ModelCaps;
use regex::Regex;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

const MIB: usize = 1024 * 1024;

/// Every problem found in the configuration. `Display` lists one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Which HTTP version the relay speaks to Bedrock (`upstream_http2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamHttp2 {
    /// ALPN over TLS (h2 preferred, HTTP/1.1 fallback); HTTP/1.1 over plain http.
    #[default]
    Auto,
    /// h2 only: over TLS by ALPN, over plain http with prior knowledge (h2c).
    Always,
    /// HTTP/1.1 only.
    Never,
}

impl UpstreamHttp2 {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(UpstreamHttp2::Auto),
            "always" => Ok(UpstreamHttp2::Always),
            "never" => Ok(UpstreamHttp2::Never),
            _ => Err("must be auto, always or never".into()),
        }
    }
}

/// How broken streams may be resumed (see docs/design.md, "Continuing a model's output").
#[derive(Debug, Clone)]
pub struct ResumeSettings {
    /// Resumptions allowed per streaming response (default 3).
    pub max_resumes: u32,
    /// Models that accept an assistant prefill.
    pub prefill_models: Vec<Regex>,
    /// Models that reject prefill; overrides `prefill_models`.
    pub no_prefill_models: Vec<Regex>,
    /// When instructed continuation is used (default: for models that take no prefill).
    pub instructed: Instructed,
    /// Models where instructed continuation may be used besides those that take no prefill.
    pub instructed_models: Vec<Regex>,
    /// Whether replay-with-verification may be used (default true).
    pub replay: bool,
    /// Tool-use blocks reach the client whole, once complete (default true); false: their
    /// input is forwarded as it streams (a cut inside one is then healed by replay only).
    pub hold_tool_use: bool,
    /// Cap on the bytes of delivered output kept per stream for resumption (default 8 MiB).
    pub max_transcript_bytes: usize,
    /// Time box of the CountTokens call that sizes a continuation's output limit exactly
    /// (default 500ms); past it the limit comes from the delivered bytes. Zero: never count.
    pub count_timeout: Duration,
}

impl ResumeSettings {
    /// True when `model_id` accepts prefill: matches `prefill_models`, not `no_prefill_models`.
    pub fn prefill_allowed(&self, model_id: &str) -> bool {
        !self.no_prefill_models.iter().any(|r| r.is_match(model_id))
            && self.prefill_models.iter().any(|r| r.is_match(model_id))
    }

    /// True when instructed continuation may be used for `model_id`; `learned_no_prefill`:
    /// the model rejected a prefill at run time.
    pub fn instructed_allowed(&self, model_id: &str, learned_no_prefill: bool) -> bool {
        let listed = self.instructed_models.iter().any(|r| r.is_match(model_id));
        match self.instructed {
            Instructed::Off => false,
            Instructed::Listed => listed,
            Instructed::NoPrefill => {
                listed
                    || learned_no_prefill
                    || self.no_prefill_models.iter().any(|r| r.is_match(model_id))
            }
        }
    }

    /// The rungs of the ladder `model_id` allows; `learned_no_prefill`: it rejected a
    /// prefill at run time (the relay remembers that).
    pub fn caps(&self, model_id: &str, learned_no_prefill: bool) -> ModelCaps {
        ModelCaps {
            prefill: self.prefill_allowed(model_id) && !learned_no_prefill,
            instructed: self.instructed_allowed(model_id, learned_no_prefill),
            replay: self.replay,
        }
    }
}

/// When instructed continuation ("continue exactly where you stopped") is used
/// (`resume.instructed`, `--instructed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Instructed {
    /// For models that take no prefill (`no_prefill_models`, or learned from Bedrock's
    /// rejection at run time) and for `instructed_models`.
    #[default]
    NoPrefill,
    /// Only for `instructed_models`.
    Listed,
    /// Never: such streams are replayed (exact only at temperature 0) or end typed.
    Off,
}

impl Instructed {
    pub(crate) fn parse(s: &str) -> Result<Instructed, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "no-prefill" | "no_prefill" => Ok(Instructed::NoPrefill),
            "listed" => Ok(Instructed::Listed),
            "off" | "false" | "none" => Ok(Instructed::Off),
            _ => Err("must be no-prefill, listed or off".into()),
        }
    }
}

fn default_regexes(patterns: &[&str]) -> Vec<Regex> {
    patterns.iter().filter_map(|p| Regex::new(p).ok()).collect()
}

pub(crate) const DEFAULT_PREFILL: &[&str] = &[
    r"anthropic\.",
    r"amazon\.nova",
    r"meta\.llama",
    r"mistral\.",
    r"amazon\.titan-text",
];
/// Claude 4.6 and later (4.6 … 4.19, 5 … 99, the Fable family), matched anywhere in the id so
/// that `us.`/`eu.`/`apac.`/`global.` profiles and ARNs match too; the version must end at a
/// non-digit so `claude-sonnet-4-20250514` (Sonnet 4) and `claude-3-5-sonnet` do not.
pub(crate) const DEFAULT_NO_PREFILL: &[&str] = &[
    r"(?i)anthropic\.claude-(opus|sonnet|haiku)-4-(1[0-9]|[6-9])([^0-9]|$)",
    r"(?i)anthropic\.claude-(opus|sonnet|haiku)-([5-9]|[1-9][0-9])([^0-9]|$)",
    r"(?i)anthropic\.(claude-)?fable",
];

impl Default for ResumeSettings {
    fn default() -> Self {
        ResumeSettings {
            max_resumes: 3,
            prefill_models: default_regexes(DEFAULT_PREFILL),
            no_prefill_models: default_regexes(DEFAULT_NO_PREFILL),
            instructed: Instructed::NoPrefill,
            instructed_models: Vec::new(),
            replay: true,
            hold_tool_use: true,
            max_transcript_bytes: 8 * MIB,
            count_timeout: Duration::from_millis(500),
        }
    }
}

/// Typed, validated settings. `Default` holds the built-in defaults with region `us-east-1`
/// (handy for tests; `load` never invents a region).
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub region: String,
    /// Endpoint override for bedrock-runtime (tests: the simulator over http).
    pub upstream: Option<http::Uri>,
    /// Endpoint override for bedrock-agent-runtime.
    pub agent_upstream: Option<http::Uri>,
    /// Endpoint override for bedrock-mantle (client paths under `/mantle/`).
    pub mantle_upstream: Option<http::Uri>,
    pub fips: bool,
    /// Longest silence inside a response body before it counts as stalled. Also the
    /// whole-response limit of non-streaming calls (non-stream Converse may take minutes,
    /// so `first_byte_timeout` does not apply to them).
    pub stall_timeout: Duration,
    /// Per-model overrides of `stall_timeout`: first matching regex wins.
    pub stall_timeouts: Vec<(Regex, Duration)>,
    /// Attempts per request, first included.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Retry token-bucket capacity.
    pub retry_budget: u32,
    /// Overall per request, resumes included.
    pub request_deadline: Duration,
    pub connect_timeout: Duration,
    /// Per attempt of a streaming call, until response headers.
    pub first_byte_timeout: Duration,
    pub pool_idle_timeout: Duration,
    /// HTTP/2 towards the upstreams (default: by ALPN over TLS).
    pub upstream_http2: UpstreamHttp2,
    pub max_request_body: usize,
    /// Non-streaming responses are buffered whole, up to this size.
    pub max_response_body: usize,
    pub drain_timeout: Duration,
    /// Runtime worker threads; 0: one per CPU available to the process.
    pub worker_threads: u32,
    pub log_format: LogFormat,
    /// tracing filter directive; `RUST_LOG` wins when set.
    pub log_level: String,
    pub forward_other_services: bool,
    /// Endpoint overrides of other AWS services by key (`sts`, `sso`, `sso-oidc`, or a
    /// signing name); others go to `https://{service}.{region}.amazonaws.com`.
    pub service_upstreams: BTreeMap<String, http::Uri>,
    pub resume: ResumeSettings,
    /// Inbound authentication, policy and listener limits (`[inbound]`).
    pub inbound: InboundSettings,
    /// OpenTelemetry export (`[otel]`, the standard `OTEL_*` variables); off by default.
    pub otel: super::OtelSettings,
    /// The admission queue per Bedrock quota (`[throttle]`).
    pub throttle: ThrottleSettings,
    /// Other regions requests may go to (`[spillover]`, `[region_upstreams]`).
    pub spillover: super::SpilloverSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8790)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 8791)),
            region: "us-east-1".into(),
            upstream: None,
            agent_upstream: None,
            mantle_upstream: None,
            fips: false,
            stall_timeout: Duration::from_secs(300),
            stall_timeouts: Vec::new(),
            max_attempts: 4,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(20),
            retry_budget: 500,
            request_deadline: Duration::from_secs(15 * 60),
            connect_timeout: Duration::from_secs(3),
            first_byte_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(60),
            upstream_http2: UpstreamHttp2::Auto,
            max_request_body: 20 * MIB,
            max_response_body: 64 * MIB,
            drain_timeout: Duration::from_secs(30),
            worker_threads: 0,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            forward_other_services: false,
            service_upstreams: BTreeMap::new(),
            resume: ResumeSettings::default(),
            inbound: InboundSettings::default(),
            otel: Default::default(),
            throttle: Default::default(),
            spillover: Default::default(),
        }
    }
}

impl Settings {
    /// The stall timeout for `model_id`: the first matching per-model override, else the default.
    pub fn stall_timeout_for(&self, model_id: &str) -> Duration {
        self.stall_timeouts
            .iter()
            .find(|(r, _)| r.is_match(model_id))
            .map(|(_, d)| *d)
            .unwrap_or(self.stall_timeout)
    }
}
