//! The relay's settings: built-in defaults, then the TOML file, then `BEDROCK_RELAY_*`
//! environment variables and CLI flags; parsed whole, validated all at once, then typed.
//!
//! Owns [`Settings`], [`ResumeSettings`], [`ServeArgs`] and [`load`]. Nothing here talks
//! to the network; the only outside lookup is the AWS region fallback (environment and
//! AWS profile files).

mod args;
mod file;
mod inbound;
mod otel;
mod parse;
mod service_upstreams;
mod settings;
mod throttle;

pub use args::ServeArgs;
pub use inbound::InboundSettings;
#[cfg(test)]
pub use inbound::{ClientKey, Secret};
pub use otel::{OtelSettings, OtlpProtocol};
#[cfg(test)]
pub use settings::Instructed;
pub use settings::{ConfigErrors, LogFormat, ResumeSettings, Settings, UpstreamHttp2};
#[cfg(test)]
pub use throttle::SpilloverModel;
pub use throttle::{SpilloverSettings, ThrottleSettings};

use parse::{Problems, Raw};
use std::collections::HashMap;

/// Load settings: defaults, then `--config` file, then env/CLI; every problem reported at once.
pub fn load(args: &ServeArgs) -> Result<Settings, ConfigErrors> {
    load_with(args, region_from_environment)
}

/// Region fallback: `AWS_REGION`, `AWS_DEFAULT_REGION`, then the AWS profile files (via
/// aws-config, on a helper thread because its provider is async and `load` is not).
/// IMDS is not consulted: on EC2 without a configured region, pass `--region`.
fn region_from_environment() -> Option<String> {
    for var in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
        if let Ok(v) = std::env::var(var) {
            if !v.trim().is_empty() {
                return Some(v.trim().to_string());
            }
        }
    }
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async {
            use aws_config::meta::region::ProvideRegion;
            aws_config::profile::ProfileFileRegionProvider::new()
                .region()
                .await
                .map(|r| r.to_string())
        })
    })
    .join()
    .ok()
    .flatten()
}

fn cli_values(a: &ServeArgs) -> HashMap<&'static str, Raw> {
    let mut m = HashMap::new();
    let mut put = |k: &'static str, flag: &str, v: &Option<String>| {
        if let Some(v) = v {
            let env = format!(
                "BEDROCK_RELAY_{}",
                flag.to_ascii_uppercase().replace('-', "_")
            );
            m.insert(k, Raw::new(v.clone(), format!("--{flag} / {env}")));
        }
    };
    put("listen", "listen", &a.listen);
    put("admin_listen", "admin-listen", &a.admin_listen);
    put("region", "region", &a.region);
    put("upstream", "upstream", &a.upstream);
    put("agent_upstream", "agent-upstream", &a.agent_upstream);
    put("mantle_upstream", "mantle-upstream", &a.mantle_upstream);
    put("stall_timeout", "stall-timeout", &a.stall_timeout);
    put("max_attempts", "max-attempts", &a.max_attempts);
    put("backoff_base", "backoff-base", &a.backoff_base);
    put("backoff_max", "backoff-max", &a.backoff_max);
    put("max_resumes", "max-resumes", &a.max_resumes);
    put("instructed", "instructed", &a.instructed);
    put(
        "count_timeout",
        "resume-count-timeout",
        &a.resume_count_timeout,
    );
    put("retry_budget", "retry-budget", &a.retry_budget);
    put("request_deadline", "request-deadline", &a.request_deadline);
    put("connect_timeout", "connect-timeout", &a.connect_timeout);
    put(
        "first_byte_timeout",
        "first-byte-timeout",
        &a.first_byte_timeout,
    );
    put("upstream_http2", "upstream-http2", &a.upstream_http2);
    put("max_request_body", "max-request-body", &a.max_request_body);
    put("drain_timeout", "drain-timeout", &a.drain_timeout);
    put("worker_threads", "worker-threads", &a.worker_threads);
    put("log_format", "log-format", &a.log_format);
    put("log_level", "log-level", &a.log_level);
    put(
        "throttle.max_wait",
        "throttle-max-wait",
        &a.throttle_max_wait,
    );
    m
}

/// [`load`] with an injectable region fallback (tests must not depend on the environment).
pub(crate) fn load_with(
    args: &ServeArgs,
    region_fallback: impl FnOnce() -> Option<String>,
) -> Result<Settings, ConfigErrors> {
    let mut p = Problems::default();
    let (file, origin) = match &args.config {
        Some(path) => (
            file::read(path, &mut p),
            format!("config file {}", path.display()),
        ),
        None => (file::FileConfig::default(), String::new()),
    };
    let mut raw = file.raw_values(&origin);
    raw.extend(cli_values(args));
    let mut s = build(&raw, &mut p);

    s.fips = args.fips || file.fips.unwrap_or(false);
    s.forward_other_services =
        args.forward_other_services || file.forward_other_services.unwrap_or(false);

    for o in file.stall_timeouts.iter().flatten() {
        let re = p.parse(
            "stall_timeouts.model",
            Some(&Raw::new(&o.model, &origin)),
            None,
            |t| parse::regex(t).map(Some),
        );
        let d = p.parse(
            "stall_timeouts.timeout",
            Some(&Raw::new(&o.timeout, &origin)),
            None,
            |t| parse::duration(t).map(Some),
        );
        if let (Some(re), Some(d)) = (re, d) {
            s.stall_timeouts.push((re, d));
        }
    }
    let r = file.resume.clone().unwrap_or_default();
    let key = |k: &str| format!("resume.{k}");
    if let Some(v) = &r.prefill_models {
        s.resume.prefill_models = parse::regex_list(&mut p, &key("prefill_models"), v, &origin);
    }
    if let Some(v) = &r.no_prefill_models {
        s.resume.no_prefill_models =
            parse::regex_list(&mut p, &key("no_prefill_models"), v, &origin);
    }
    if let Some(v) = &r.instructed_models {
        s.resume.instructed_models =
            parse::regex_list(&mut p, &key("instructed_models"), v, &origin);
    }
    if let Some(b) = r.replay {
        s.resume.replay = b;
    }
    if let Some(b) = r.hold_tool_use {
        s.resume.hold_tool_use = b;
    }
    s.service_upstreams = service_upstreams::resolve(
        file.service_upstreams.as_ref(),
        &origin,
        &args.service_upstream,
        &mut p,
    );
    s.spillover = throttle::resolve(
        file.spillover.as_ref(),
        file.region_upstreams.as_ref(),
        &origin,
        &args.spillover_region,
        &args.region_upstream,
        &mut p,
    );
    s.inbound = inbound::resolve(
        file.inbound.as_ref(),
        &origin,
        args.allow_unauthenticated_non_loopback,
        &mut p,
    );

    match raw.get("region") {
        Some(r) if !r.text.trim().is_empty() => s.region = r.text.trim().to_string(),
        Some(r) => p.push(format!("region: must not be empty (from {})", r.origin)),
        None => match region_fallback() {
            Some(r) => s.region = r,
            None => p.push(
                "region: not set; pass --region, set region in the config file, or set AWS_REGION",
            ),
        },
    }
    let env = |k: &str| std::env::var(k).ok();
    s.otel = otel::resolve(
        file.otel.as_ref(),
        &origin,
        &otel::OtelSources {
            endpoint: &args.otel_endpoint,
            protocol: &args.otel_protocol,
            service_name: &args.otel_service_name,
            env: &env,
        },
        &mut p,
    );
    cross_checks(&s, &mut p);
    inbound::check_exposure(s.listen, &s.inbound, &mut p);
    if p.0.is_empty() {
        Ok(s)
    } else {
        Err(ConfigErrors(p.0))
    }
}

/// Parse every scalar setting present in `raw` over the defaults.
fn build(raw: &HashMap<&'static str, Raw>, p: &mut Problems) -> Settings {
    let d = Settings::default();
    let g = |k: &str| raw.get(k);
    let some_uri = |t: &str| parse::upstream_uri(t).map(Some);
    let log_format = |t: &str| match t.to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("must be text or json".to_string()),
    };
    let log_level = |t: &str| {
        tracing_subscriber::EnvFilter::try_new(t)
            .map(|_| t.to_string())
            .map_err(|e| format!("invalid log filter: {e}"))
    };
    let resume = ResumeSettings {
        max_resumes: p.parse("max_resumes", g("max_resumes"), 3, parse::u32_at_least(0)),
        instructed: p.parse(
            "instructed",
            g("instructed"),
            d.resume.instructed,
            settings::Instructed::parse,
        ),
        max_transcript_bytes: p.parse(
            "max_transcript_bytes",
            g("max_transcript_bytes"),
            d.resume.max_transcript_bytes,
            parse::size,
        ),
        count_timeout: p.parse(
            "count_timeout",
            g("count_timeout"),
            d.resume.count_timeout,
            parse::duration,
        ),
        ..ResumeSettings::default()
    };
    Settings {
        listen: p.parse("listen", g("listen"), d.listen, parse::socket_addr),
        admin_listen: p.parse(
            "admin_listen",
            g("admin_listen"),
            d.admin_listen,
            parse::socket_addr,
        ),
        region: String::new(),
        upstream: p.parse("upstream", g("upstream"), None, some_uri),
        agent_upstream: p.parse("agent_upstream", g("agent_upstream"), None, some_uri),
        mantle_upstream: p.parse("mantle_upstream", g("mantle_upstream"), None, some_uri),
        fips: false,
        stall_timeout: p.parse(
            "stall_timeout",
            g("stall_timeout"),
            d.stall_timeout,
            parse::duration,
        ),
        stall_timeouts: Vec::new(),
        max_attempts: p.parse(
            "max_attempts",
            g("max_attempts"),
            d.max_attempts,
            parse::u32_at_least(1),
        ),
        backoff_base: p.parse(
            "backoff_base",
            g("backoff_base"),
            d.backoff_base,
            parse::duration,
        ),
        backoff_max: p.parse(
            "backoff_max",
            g("backoff_max"),
            d.backoff_max,
            parse::duration,
        ),
        retry_budget: p.parse(
            "retry_budget",
            g("retry_budget"),
            d.retry_budget,
            parse::u32_at_least(0),
        ),
        request_deadline: p.parse(
            "request_deadline",
            g("request_deadline"),
            d.request_deadline,
            parse::duration,
        ),
        connect_timeout: p.parse(
            "connect_timeout",
            g("connect_timeout"),
            d.connect_timeout,
            parse::duration,
        ),
        first_byte_timeout: p.parse(
            "first_byte_timeout",
            g("first_byte_timeout"),
            d.first_byte_timeout,
            parse::duration,
        ),
        pool_idle_timeout: p.parse(
            "pool_idle_timeout",
            g("pool_idle_timeout"),
            d.pool_idle_timeout,
            parse::duration,
        ),
        upstream_http2: p.parse(
            "upstream_http2",
            g("upstream_http2"),
            d.upstream_http2,
            UpstreamHttp2::parse,
        ),
        max_request_body: p.parse(
            "max_request_body",
            g("max_request_body"),
            d.max_request_body,
            parse::size,
        ),
        max_response_body: p.parse(
            "max_response_body",
            g("max_response_body"),
            d.max_response_body,
            parse::size,
        ),
        drain_timeout: p.parse(
            "drain_timeout",
            g("drain_timeout"),
            d.drain_timeout,
            parse::duration,
        ),
        worker_threads: p.parse(
            "worker_threads",
            g("worker_threads"),
            d.worker_threads,
            parse::u32_at_least(0),
        ),
        log_format: p.parse("log_format", g("log_format"), d.log_format, log_format),
        log_level: p.parse("log_level", g("log_level"), d.log_level.clone(), log_level),
        forward_other_services: false,
        service_upstreams: Default::default(),
        resume,
        inbound: Default::default(),
        otel: Default::default(),
        throttle: ThrottleSettings {
            max_wait: p.parse(
                "throttle.max_wait",
                g("throttle.max_wait"),
                d.throttle.max_wait,
                parse::duration,
            ),
            max_waiters: p.parse(
                "throttle.max_waiters",
                g("throttle.max_waiters"),
                d.throttle.max_waiters as u32,
                parse::u32_at_least(1),
            ) as usize,
        },
        spillover: Default::default(),
    }
}

/// Checks that involve more than one setting.
fn cross_checks(s: &Settings, p: &mut Problems) {
    if s.backoff_base > s.backoff_max {
        p.push(format!(
            "backoff_base ({:?}) must not exceed backoff_max ({:?})",
            s.backoff_base, s.backoff_max
        ));
    }
    if s.listen == s.admin_listen && s.listen.port() != 0 {
        p.push(format!(
            "listen and admin_listen are the same address {}",
            s.listen
        ));
    }
    for (name, d) in [
        ("stall_timeout", s.stall_timeout),
        ("request_deadline", s.request_deadline),
        ("connect_timeout", s.connect_timeout),
        ("first_byte_timeout", s.first_byte_timeout),
    ] {
        if d.is_zero() {
            p.push(format!("{name}: must be greater than zero"));
        }
    }
    if s.max_request_body == 0 {
        p.push("max_request_body: must be greater than zero");
    }
}

#[cfg(test)]
mod tests;
