//! bedrock-relay-sim: the Bedrock Runtime simulator (`bedrock-relay sim`) with fault
//! injection, for the relay's demo, tests and benchmarks. It stands in for Bedrock and knows
//! nothing of the relay: what both need of Bedrock's wire (operations, EventStream framing,
//! SigV4 and event-chain verification, quota cost) is `bedrock_relay_wire`.
//!
//! Public: its CLI flags ([`SimArgs`]) and [`run`], typed configuration ([`SimConfig`],
//! [`FaultRule`], [`Fault`], [`QuotaConfig`]), starting and stopping it in-process
//! ([`start`], [`SimHandle`]), its per-attempt log ([`LogEntry`]), and the answers a model
//! gives uninterrupted ([`reference_text`], [`reference_pieces`]). The rest is its own:
//! `gen` (deterministic text), `request` (body parsing), `plan` (prefill and continuation
//! rules), `sampled` (Claude 4.6+: sampled by default, sub-word tokens, how models continue
//! when asked), `phrasing` (replies to the continuation protocol's turn), `render` (wire
//! shapes), `faults` (rules), `http` (byte-exact HTTP/1.1), `h2` (h2c prior knowledge,
//! per-stream and connection-wide faults), `server` (dispatch), `wire` (responses with
//! faults cut in), `log` (per-attempt log), `quota` (on-demand quotas), `sts` (temporary
//! credentials for web identity and SAML), `bidi` (bidirectional streams), `sse` (the
//! OpenAI- and Anthropic-compatible APIs), and the error kinds it answers with
//! (`SimError`). See `docs/simulator.md`.
#![forbid(unsafe_code)]

mod bidi;
mod faults;
mod gen;
mod h2;
mod http;
mod log;
mod phrasing;
mod plan;
mod quota;
mod render;
mod request;
mod sampled;
mod server;
mod sse;
mod sse_tool;
mod sts;
mod styles;
mod wire;

pub use faults::{Fault, FaultError, FaultRule};
pub use log::LogEntry;
pub use quota::QuotaConfig;
pub use sampled::{reference_pieces, reference_pieces_at, reference_text};

use anyhow::Context as _;
use regex::Regex;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Models that reject assistant prefill by default: Claude 4.6 and later (`claude-opus-4-6`,
/// `claude-sonnet-4-7`, `claude-*-5*`), matched anywhere in the model id (ARNs, profiles).
pub(crate) const DEFAULT_NO_PREFILL: &str =
    r"(?i)anthropic\.(claude-[a-z]+-(4-(1[0-9]|[6-9])|[5-9]|[1-9][0-9])([^0-9]|$)|(claude-)?fable)";

/// Command-line flags of `bedrock-relay sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8799")]
    pub listen: SocketAddr,
    /// Access key id accepted for SigV4 (repeatable; the n-th pairs with the n-th
    /// --secret-access-key). With no keys and no bearer tokens, every request is accepted.
    #[arg(long = "access-key-id")]
    pub access_key_id: Vec<String>,
    /// Secret access key for the access key id at the same position (repeatable).
    #[arg(long = "secret-access-key")]
    pub secret_access_key: Vec<String>,
    /// Bearer token accepted in `Authorization: Bearer <token>` (repeatable).
    #[arg(long = "bearer-token")]
    pub bearer_token: Vec<String>,
    /// Fault rule in compact form, e.g. `reset_after_events:events=5@tag=t1,attempts=1`
    /// (repeatable; see docs/simulator.md).
    #[arg(long = "fault")]
    pub fault: Vec<String>,
    /// File with a list of fault rules: JSON array, or TOML `[[fault]]` tables (by extension).
    #[arg(long = "faults-file")]
    pub faults_file: Option<std::path::PathBuf>,
    /// Probability (0..=1) of a random fault on each request attempt.
    #[arg(long = "fault-rate", default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Seed for random faults (same seed and requests → same faults).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Delay before the first stream event, e.g. `250ms`.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub ttft: Duration,
    /// Delay before every content delta, e.g. `20ms`.
    #[arg(long = "inter-token", default_value = "0s", value_parser = humantime::parse_duration)]
    pub inter_token: Duration,
    /// Regex over the model id of models that reject assistant prefill; they also sample at
    /// temperature 1 unless the request sets one, and continue as real models do when asked.
    #[arg(long = "no-prefill-models", default_value = DEFAULT_NO_PREFILL)]
    pub no_prefill_models: String,
    /// Number of attempts kept by `GET /_sim/log` (oldest dropped first).
    #[arg(long = "log-capacity", default_value_t = 10_000)]
    pub log_capacity: usize,
    /// Refuse every CountTokens request with 403 AccessDeniedException (also switchable at
    /// run time: `POST /_sim/controls {"deny_count_tokens": true}`).
    #[arg(long = "deny-count-tokens")]
    pub deny_count_tokens: bool,
    /// Requests per minute (per `--quota-window`) each region × model admits, as Bedrock's
    /// on-demand quotas; 0: unlimited (also at run time: `POST /_sim/quota`).
    #[arg(long = "quota-rpm", default_value_t = 0)]
    pub quota_rpm: u64,
    /// Tokens per minute each region × model admits, charged at the start (input +
    /// max_tokens × burndown, 5 for Claude 3.7+) and refunded the unused part at the end.
    #[arg(long = "quota-tpm", default_value_t = 0)]
    pub quota_tpm: u64,
    /// The quota's period (a shorter one compresses time for tests and benchmarks).
    #[arg(long = "quota-window", default_value = "60s", value_parser = humantime::parse_duration)]
    pub quota_window: Duration,
}

/// Typed simulator configuration.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub listen: SocketAddr,
    /// `(access key id, secret)` pairs accepted for SigV4.
    pub credentials: Vec<(String, String)>,
    pub bearer_tokens: Vec<String>,
    /// Initial fault rules (more can be added at runtime).
    pub rules: Vec<FaultRule>,
    pub fault_rate: f64,
    pub seed: u64,
    pub ttft: Duration,
    pub inter_token: Duration,
    pub no_prefill_models: Regex,
    pub log_capacity: usize,
    /// Refuse CountTokens with 403 AccessDeniedException (initial value of the run-time
    /// control `deny_count_tokens`).
    pub deny_count_tokens: bool,
    /// On-demand quotas per region × model (`quota`); zero limits: none.
    pub quota: quota::QuotaConfig,
}

impl Default for SimConfig {
    /// Loopback on a free port, no auth, no faults, no delays.
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            credentials: Vec::new(),
            bearer_tokens: Vec::new(),
            rules: Vec::new(),
            fault_rate: 0.0,
            seed: 0,
            ttft: Duration::ZERO,
            inter_token: Duration::ZERO,
            no_prefill_models: Regex::new(DEFAULT_NO_PREFILL).expect("default regex is valid"),
            log_capacity: 10_000,
            deny_count_tokens: false,
            quota: Default::default(),
        }
    }
}

impl SimConfig {
    /// Validate flags into a config; every problem is reported at once.
    pub fn from_args(args: &SimArgs) -> anyhow::Result<Self> {
        let mut problems = Vec::new();
        if args.access_key_id.len() != args.secret_access_key.len() {
            problems.push(format!(
                "{} --access-key-id but {} --secret-access-key; give them in pairs",
                args.access_key_id.len(),
                args.secret_access_key.len()
            ));
        }
        if !(0.0..=1.0).contains(&args.fault_rate) {
            problems.push(format!(
                "--fault-rate {} is not within 0..=1",
                args.fault_rate
            ));
        }
        let mut rules = Vec::new();
        for spec in &args.fault {
            match FaultRule::parse_spec(spec) {
                Ok(r) => rules.push(r),
                Err(e) => problems.push(format!("--fault {spec:?}: {e}")),
            }
        }
        if let Some(path) = &args.faults_file {
            match load_faults_file(path) {
                Ok(r) => rules.extend(r),
                Err(e) => problems.push(format!("--faults-file {}: {e:#}", path.display())),
            }
        }
        let no_prefill = Regex::new(&args.no_prefill_models)
            .map_err(|e| problems.push(format!("--no-prefill-models: {e}")))
            .ok();
        match no_prefill {
            Some(no_prefill_models) if problems.is_empty() => Ok(SimConfig {
                listen: args.listen,
                credentials: args
                    .access_key_id
                    .iter()
                    .cloned()
                    .zip(args.secret_access_key.iter().cloned())
                    .collect(),
                bearer_tokens: args.bearer_token.clone(),
                rules,
                fault_rate: args.fault_rate,
                seed: args.seed,
                ttft: args.ttft,
                inter_token: args.inter_token,
                no_prefill_models,
                log_capacity: args.log_capacity.max(1),
                deny_count_tokens: args.deny_count_tokens,
                quota: quota::QuotaConfig {
                    rpm: args.quota_rpm,
                    tpm: args.quota_tpm,
                    window: args.quota_window,
                },
            }),
            _ => anyhow::bail!(
                "invalid simulator configuration:\n  {}",
                problems.join("\n  ")
            ),
        }
    }
}

fn load_faults_file(path: &std::path::Path) -> anyhow::Result<Vec<FaultRule>> {
    let text = std::fs::read_to_string(path).context("reading")?;
    let toml = path.extension().is_some_and(|e| e == "toml");
    Ok(if toml {
        FaultRule::parse_toml_list(&text)?
    } else {
        FaultRule::parse_json_list(&text)?
    })
}

/// Errors the simulator answers with, each mapping to Bedrock's status and error type.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SimError {
    #[error("{0}")]
    Validation(String),
    #[error("The security token included in the request is invalid.")]
    UnrecognizedClient,
    #[error("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")]
    InvalidSignature,
    #[error("Missing Authentication Token")]
    MissingAuthentication,
    #[error("Invalid bearer token")]
    AccessDenied,
    /// 403 AccessDeniedException with its message (an IAM refusal).
    #[error("{0}")]
    NotAuthorized(String),
    #[error("{0}")]
    UnknownOperation(String),
    #[error("{message}")]
    Injected { status: u16, message: String },
}

impl SimError {
    /// HTTP status and the type before the colon of `x-amzn-ErrorType`.
    pub fn status_and_type(&self) -> (u16, &'static str) {
        match self {
            SimError::Validation(_) => (400, "ValidationException"),
            SimError::UnrecognizedClient => (403, "UnrecognizedClientException"),
            SimError::InvalidSignature => (403, "InvalidSignatureException"),
            SimError::MissingAuthentication => (403, "MissingAuthenticationTokenException"),
            SimError::AccessDenied | SimError::NotAuthorized(_) => (403, "AccessDeniedException"),
            SimError::UnknownOperation(_) => (404, "UnknownOperationException"),
            SimError::Injected { status, .. } => (*status, error_type_for(*status)),
        }
    }
}

/// Bedrock's error type for an injected HTTP status.
pub(crate) fn error_type_for(status: u16) -> &'static str {
    match status {
        400 => "ValidationException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        502 | 504 => "ServiceUnavailableException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    }
}

/// A running simulator.
pub struct SimHandle {
    pub addr: SocketAddr,
    state: Arc<server::State>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SimHandle {
    /// Base URL, e.g. `http://127.0.0.1:8799`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Append a fault rule (same model as `POST /_sim/faults`).
    pub fn add_rule(&self, rule: FaultRule) {
        self.state.add_rules(vec![rule]);
    }

    /// Remove every fault rule.
    pub fn clear_rules(&self) {
        self.state.clear_rules();
    }

    /// The attempt log (same as `GET /_sim/log`).
    pub fn log(&self) -> Vec<LogEntry> {
        self.state.log.entries()
    }

    /// Reset every open HTTP/2 connection with a TCP RST (same as `POST /_sim/h2/reset`),
    /// breaking all streams on it at once; returns how many connections were reset.
    pub fn reset_h2_connections(&self) -> usize {
        self.state.h2.reset_all()
    }

    /// Refuse CountTokens with 403 AccessDeniedException, or stop refusing (same as
    /// `POST /_sim/controls {"deny_count_tokens": deny}`).
    pub fn set_deny_count_tokens(&self, deny: bool) {
        self.state.set_deny_count_tokens(deny);
    }

    /// Clear the attempt log and the per-conversation attempt counters.
    pub fn clear_log(&self) {
        self.state.clear_log();
    }

    /// Stop accepting, abort open connections, and wait for the server task to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Bind `config.listen` and serve in background tasks.
pub async fn start(config: SimConfig) -> anyhow::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(server::State::new(config));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(server::serve(listener, state.clone(), stopped));
    Ok(SimHandle {
        addr,
        state,
        stop,
        task,
    })
}

/// `bedrock-relay sim`: start, log the URL, wait for ctrl-c or SIGTERM, stop.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let config = SimConfig::from_args(&args)?;
    let rules = config.rules.len();
    let handle = start(config).await?;
    tracing::info!(url = %handle.url(), rules, "bedrock simulator listening");
    wait_for_signal().await;
    tracing::info!("bedrock simulator stopping");
    handle.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn args_become_config_and_errors_are_collected() {
        let cli = Cli::parse_from([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--access-key-id",
            "AK",
            "--secret-access-key",
            "SK",
            "--fault",
            "truncate:events=3@attempts=1",
            "--ttft",
            "250ms",
            "--inter-token",
            "2ms",
        ]);
        let c = SimConfig::from_args(&cli.sim).unwrap();
        assert_eq!(c.credentials, vec![("AK".to_string(), "SK".to_string())]);
        assert_eq!(c.rules.len(), 1);
        assert_eq!(c.ttft, Duration::from_millis(250));
        assert!(c
            .no_prefill_models
            .is_match("us.anthropic.claude-opus-4-6-v1"));
        assert!(!c
            .no_prefill_models
            .is_match("anthropic.claude-3-7-sonnet-20250219-v1:0"));
        let cli = Cli::parse_from([
            "sim",
            "--access-key-id",
            "AK",
            "--fault",
            "bogus",
            "--fault-rate",
            "2",
        ]);
        let err = SimConfig::from_args(&cli.sim).unwrap_err().to_string();
        assert!(
            err.contains("pairs") && err.contains("bogus") && err.contains("fault-rate"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("faults.json");
        std::fs::write(&json, r#"[{"kind":"truncate","events":2,"tag":"j"}]"#).unwrap();
        let toml = dir.path().join("faults.toml");
        std::fs::write(
            &toml,
            "[[fault]]\nkind = \"reset_mid_body\"\noperation = \"Converse\"\n",
        )
        .unwrap();
        for (file, kind) in [(&json, "truncate"), (&toml, "reset_mid_body")] {
            let cli = Cli::parse_from(["sim", "--faults-file", file.to_str().unwrap()]);
            let c = SimConfig::from_args(&cli.sim).unwrap();
            assert_eq!(
                c.rules.iter().map(|r| r.fault.kind()).collect::<Vec<_>>(),
                [kind]
            );
        }
    }
}
