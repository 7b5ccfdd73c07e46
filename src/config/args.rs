//! Command-line flags of `bedrock-relay serve`, each also readable from a
//! `BEDROCK_RELAY_*` environment variable (clap's `env`: the flag wins over the variable).
//!
//! Values stay strings here; `config::load` parses and validates them together with the
//! config file so that every problem is reported at once.

use std::path::PathBuf;

/// Flags of `bedrock-relay serve`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// TOML config file (see config/bedrock-relay.toml for every key).
    #[arg(long, env = "BEDROCK_RELAY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address the relay listens on for SDK traffic [default: 127.0.0.1:8790].
    #[arg(long, env = "BEDROCK_RELAY_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// Address of the admin listener (/metrics, /healthz, /readyz) [default: 127.0.0.1:8791].
    #[arg(long, env = "BEDROCK_RELAY_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<String>,

    /// AWS region [default: AWS_REGION, AWS_DEFAULT_REGION, then the AWS profile's region].
    #[arg(long, env = "BEDROCK_RELAY_REGION", value_name = "REGION")]
    pub region: Option<String>,

    /// Send bedrock-runtime requests here instead of the regional endpoint (http or https).
    #[arg(long, env = "BEDROCK_RELAY_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,

    /// Send bedrock-agent-runtime requests here instead of the regional endpoint.
    #[arg(long, env = "BEDROCK_RELAY_AGENT_UPSTREAM", value_name = "URL")]
    pub agent_upstream: Option<String>,

    /// Send bedrock-mantle requests (client paths under `/mantle/`) here instead of
    /// `https://bedrock-mantle.{region}.api.aws`.
    #[arg(long, env = "BEDROCK_RELAY_MANTLE_UPSTREAM", value_name = "URL")]
    pub mantle_upstream: Option<String>,

    /// Use the FIPS endpoints (can only switch FIPS on; `fips = true` in the file stays on).
    #[arg(long, env = "BEDROCK_RELAY_FIPS")]
    pub fips: bool,

    /// Longest silence tolerated inside a response before it counts as stalled [default: 300s].
    #[arg(long, env = "BEDROCK_RELAY_STALL_TIMEOUT", value_name = "DURATION")]
    pub stall_timeout: Option<String>,

    /// Attempts per request, the first included [default: 4].
    #[arg(long, env = "BEDROCK_RELAY_MAX_ATTEMPTS", value_name = "N")]
    pub max_attempts: Option<String>,

    /// Base of the exponential backoff [default: 100ms].
    #[arg(long, env = "BEDROCK_RELAY_BACKOFF_BASE", value_name = "DURATION")]
    pub backoff_base: Option<String>,

    /// Cap of the exponential backoff [default: 20s].
    #[arg(long, env = "BEDROCK_RELAY_BACKOFF_MAX", value_name = "DURATION")]
    pub backoff_max: Option<String>,

    /// Retry token bucket shared by all requests: a retry costs 5, one after a timeout 10,
    /// a success refunds 1 [default: 500].
    #[arg(long, env = "BEDROCK_RELAY_RETRY_BUDGET", value_name = "TOKENS")]
    pub retry_budget: Option<String>,

    /// Resumptions allowed per streaming response [default: 3].
    #[arg(long, env = "BEDROCK_RELAY_MAX_RESUMES", value_name = "N")]
    pub max_resumes: Option<String>,

    /// When instructed continuation is used: no-prefill (models that take no prefill, as
    /// configured or learned, plus resume.instructed_models), listed, or off [default: no-prefill].
    #[arg(long, env = "BEDROCK_RELAY_INSTRUCTED", value_name = "MODE")]
    pub instructed: Option<String>,

    /// Time box of the CountTokens call that sizes a continuation's output limit exactly;
    /// past it the limit comes from the delivered bytes; 0s: never count [default: 500ms].
    #[arg(
        long,
        env = "BEDROCK_RELAY_RESUME_COUNT_TIMEOUT",
        value_name = "DURATION"
    )]
    pub resume_count_timeout: Option<String>,

    /// Overall limit per request, resumes included [default: 15m].
    #[arg(long, env = "BEDROCK_RELAY_REQUEST_DEADLINE", value_name = "DURATION")]
    pub request_deadline: Option<String>,

    /// TCP (and TLS) connect timeout towards Bedrock [default: 3s].
    #[arg(long, env = "BEDROCK_RELAY_CONNECT_TIMEOUT", value_name = "DURATION")]
    pub connect_timeout: Option<String>,

    /// Per attempt, until the response headers of a streaming call arrive [default: 60s].
    #[arg(
        long,
        env = "BEDROCK_RELAY_FIRST_BYTE_TIMEOUT",
        value_name = "DURATION"
    )]
    pub first_byte_timeout: Option<String>,

    /// HTTP/2 towards Bedrock: auto (ALPN over TLS, h2 preferred; HTTP/1.1 over plain http),
    /// always (h2 over TLS, h2c prior knowledge over http), never (HTTP/1.1) [default: auto].
    #[arg(
        long,
        env = "BEDROCK_RELAY_UPSTREAM_HTTP2",
        value_name = "auto|always|never"
    )]
    pub upstream_http2: Option<String>,

    /// Largest request body accepted, e.g. 20MiB [default: 20MiB].
    #[arg(long, env = "BEDROCK_RELAY_MAX_REQUEST_BODY", value_name = "SIZE")]
    pub max_request_body: Option<String>,

    /// How long in-flight requests may run after SIGTERM [default: 30s].
    #[arg(long, env = "BEDROCK_RELAY_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Option<String>,

    /// Threads serving requests; 0 = one per CPU the process may use (cgroup limits
    /// count) [default: 0].
    #[arg(long, env = "BEDROCK_RELAY_WORKER_THREADS", value_name = "N")]
    pub worker_threads: Option<String>,

    /// OpenTelemetry: OTLP endpoint traces and GenAI metrics are exported to (base URL, e.g.
    /// http://127.0.0.1:4318); unset: no export [default: off].
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otel_endpoint: Option<String>,

    /// OpenTelemetry: OTLP transport, http/protobuf or grpc [default: http/protobuf].
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_name = "PROTOCOL")]
    pub otel_protocol: Option<String>,

    /// OpenTelemetry: service.name of the relay's spans and metrics [default: bedrock-relay].
    #[arg(long, env = "OTEL_SERVICE_NAME", value_name = "NAME")]
    pub otel_service_name: Option<String>,

    /// Log format: text or json [default: text].
    #[arg(long, env = "BEDROCK_RELAY_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// Log filter, e.g. info or bedrock_relay=debug [default: info; RUST_LOG wins].
    #[arg(long, env = "BEDROCK_RELAY_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Forward requests signed for other AWS services instead of rejecting them (on only).
    #[arg(long, env = "BEDROCK_RELAY_FORWARD_OTHER_SERVICES")]
    pub forward_other_services: bool,

    /// Endpoint of another AWS service the relay talks to, SERVICE=URL: `sts`, `sso` (the
    /// SSO portal), `sso-oidc` (the SDK's own credential calls), or the signing name of a
    /// service forwarded by --forward-other-services. Repeatable; the variable takes a
    /// comma-separated list [default: https://{service}.{region}.amazonaws.com].
    #[arg(
        long,
        env = "BEDROCK_RELAY_SERVICE_UPSTREAM",
        value_name = "SERVICE=URL",
        value_delimiter = ','
    )]
    pub service_upstream: Vec<String>,

    /// Serve a non-loopback address without inbound authentication (anyone who reaches the
    /// port spends your AWS credentials). Without it such a configuration exits with 64.
    #[arg(long, env = "BEDROCK_RELAY_ALLOW_UNAUTHENTICATED_NON_LOOPBACK")]
    pub allow_unauthenticated_non_loopback: bool,

    /// Longest a request may wait in the relay's queue for its Bedrock quota (instead of
    /// being throttled), retries and resumes included; 0s turns absorption off [default: 20s].
    #[arg(long, env = "BEDROCK_RELAY_THROTTLE_MAX_WAIT", value_name = "DURATION")]
    pub throttle_max_wait: Option<String>,

    /// Region a request may spill over to when its quota is saturated or its region answers
    /// 429/5xx before the first byte (repeatable, in order; the variable takes a
    /// comma-separated list; replaces the file's spillover.regions) [default: none].
    #[arg(
        long,
        env = "BEDROCK_RELAY_SPILLOVER_REGION",
        value_name = "REGION",
        value_delimiter = ','
    )]
    pub spillover_region: Vec<String>,

    /// Bedrock Runtime endpoint of a spillover region, REGION=URL (repeatable; the variable
    /// takes comma-separated pairs) [default: https://bedrock-runtime.{region}.amazonaws.com].
    #[arg(
        long,
        env = "BEDROCK_RELAY_REGION_UPSTREAM",
        value_name = "REGION=URL",
        value_delimiter = ','
    )]
    pub region_upstream: Vec<String>,

    /// Validate the configuration, print the result and exit.
    #[arg(long)]
    pub check: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn flags_parse_as_strings() {
        let cli = Cli::try_parse_from([
            "x",
            "--listen",
            "127.0.0.1:1",
            "--stall-timeout",
            "nonsense",
            "--fips",
            "--check",
            "--max-request-body",
            "1MiB",
            "--service-upstream",
            "sts=http://127.0.0.1:9000",
            "--service-upstream",
            "sso=http://127.0.0.1:9001,sso-oidc=http://127.0.0.1:9002",
        ])
        .expect("parse");
        assert_eq!(cli.serve.listen.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(cli.serve.stall_timeout.as_deref(), Some("nonsense"));
        assert!(cli.serve.fips && cli.serve.check);
        assert!(!cli.serve.forward_other_services);
        assert_eq!(cli.serve.max_request_body.as_deref(), Some("1MiB"));
        assert_eq!(
            cli.serve.service_upstream,
            [
                "sts=http://127.0.0.1:9000",
                "sso=http://127.0.0.1:9001",
                "sso-oidc=http://127.0.0.1:9002"
            ]
        );
    }

    #[test]
    fn unknown_flag_is_rejected() {
        assert!(Cli::try_parse_from(["x", "--no-such-flag"]).is_err());
    }
}
