//! The TOML config file: its schema (every key optional, unknown keys rejected) and the
//! conversion of its values into tagged raw strings for `config::load`.
//!
//! See `config/bedrock-relay.toml` for a commented example holding every default.

use super::parse::{Problems, Raw, SizeValue};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// One per-model stall timeout: the first entry whose regex matches the model id wins.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct StallOverride {
    pub model: String,
    pub timeout: String,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResumeFile {
    pub max_resumes: Option<u64>,
    pub prefill_models: Option<Vec<String>>,
    pub no_prefill_models: Option<Vec<String>>,
    pub instructed: Option<String>,
    pub instructed_models: Option<Vec<String>>,
    pub replay: Option<bool>,
    pub hold_tool_use: Option<bool>,
    pub max_transcript_bytes: Option<SizeValue>,
    pub count_timeout: Option<String>,
}

/// Schema of the config file.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub region: Option<String>,
    pub upstream: Option<String>,
    pub agent_upstream: Option<String>,
    pub mantle_upstream: Option<String>,
    pub fips: Option<bool>,
    pub stall_timeout: Option<String>,
    pub stall_timeouts: Option<Vec<StallOverride>>,
    pub max_attempts: Option<u64>,
    pub backoff_base: Option<String>,
    pub backoff_max: Option<String>,
    pub retry_budget: Option<u64>,
    pub request_deadline: Option<String>,
    pub connect_timeout: Option<String>,
    pub first_byte_timeout: Option<String>,
    pub pool_idle_timeout: Option<String>,
    pub upstream_http2: Option<String>,
    pub max_request_body: Option<SizeValue>,
    pub max_response_body: Option<SizeValue>,
    pub drain_timeout: Option<String>,
    pub worker_threads: Option<u64>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub forward_other_services: Option<bool>,
    /// `[service_upstreams]`: `service = "URL"`, validated by `service_upstreams::resolve`.
    pub service_upstreams: Option<HashMap<String, String>>,
    pub resume: Option<ResumeFile>,
    /// `[otel]`: OpenTelemetry export, resolved by `otel::resolve`.
    pub otel: Option<super::otel::OtelFile>,
    pub inbound: Option<super::inbound::InboundFile>,
    pub throttle: Option<super::throttle::ThrottleFile>,
    pub spillover: Option<super::throttle::SpilloverFile>,
    /// `[region_upstreams]`: `"us-west-2" = "URL"`, validated by `throttle::resolve`.
    pub region_upstreams: Option<HashMap<String, String>>,
}

/// Read and parse the file; problems (unreadable, bad TOML, unknown key) are recorded and
/// an empty config is returned so that the other sources are still validated.
pub(crate) fn read(path: &Path, problems: &mut Problems) -> FileConfig {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!("config file {}: cannot read: {e}", path.display()));
            return FileConfig::default();
        }
    };
    parse(&text, &path.display().to_string(), problems)
}

pub(crate) fn parse(text: &str, name: &str, problems: &mut Problems) -> FileConfig {
    match toml::from_str::<FileConfig>(text) {
        Ok(c) => c,
        Err(e) => {
            let msg = e.message().trim().to_string();
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            problems.push(format!("config file {name}: {msg}{at}"));
            FileConfig::default()
        }
    }
}

impl FileConfig {
    /// The scalar settings as tagged strings, keyed by setting name.
    pub(crate) fn raw_values(&self, origin: &str) -> HashMap<&'static str, Raw> {
        let mut m = HashMap::new();
        let mut put = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                m.insert(k, Raw::new(v, origin));
            }
        };
        put("listen", self.listen.clone());
        put("admin_listen", self.admin_listen.clone());
        put("region", self.region.clone());
        put("upstream", self.upstream.clone());
        put("agent_upstream", self.agent_upstream.clone());
        put("mantle_upstream", self.mantle_upstream.clone());
        put("stall_timeout", self.stall_timeout.clone());
        put("max_attempts", self.max_attempts.map(|n| n.to_string()));
        put("backoff_base", self.backoff_base.clone());
        put("backoff_max", self.backoff_max.clone());
        put("retry_budget", self.retry_budget.map(|n| n.to_string()));
        put("request_deadline", self.request_deadline.clone());
        put("connect_timeout", self.connect_timeout.clone());
        put("first_byte_timeout", self.first_byte_timeout.clone());
        put("pool_idle_timeout", self.pool_idle_timeout.clone());
        put("upstream_http2", self.upstream_http2.clone());
        put(
            "max_request_body",
            self.max_request_body.as_ref().map(SizeValue::text),
        );
        put(
            "max_response_body",
            self.max_response_body.as_ref().map(SizeValue::text),
        );
        put("drain_timeout", self.drain_timeout.clone());
        put("worker_threads", self.worker_threads.map(|n| n.to_string()));
        put("log_format", self.log_format.clone());
        put("log_level", self.log_level.clone());
        let r = self.resume.clone().unwrap_or_default();
        put("max_resumes", r.max_resumes.map(|n| n.to_string()));
        put("instructed", r.instructed.clone());
        put(
            "max_transcript_bytes",
            r.max_transcript_bytes.as_ref().map(SizeValue::text),
        );
        put("count_timeout", r.count_timeout.clone());
        let t = self.throttle.clone().unwrap_or_default();
        put("throttle.max_wait", t.max_wait.clone());
        put("throttle.max_waiters", t.max_waiters.map(|n| n.to_string()));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_reported_with_line() {
        let mut p = Problems::default();
        parse(
            "listen = \"127.0.0.1:1\"\nlisten_port = 5\n",
            "t.toml",
            &mut p,
        );
        assert_eq!(p.0.len(), 1, "{:?}", p.0);
        assert!(
            p.0[0].contains("listen_port") && p.0[0].contains("line 2"),
            "{}",
            p.0[0]
        );
    }

    #[test]
    fn unknown_key_in_resume_table() {
        let mut p = Problems::default();
        parse("[resume]\nreplayy = true\n", "t.toml", &mut p);
        assert!(p.0[0].contains("replayy"), "{:?}", p.0);
    }

    #[test]
    fn sizes_as_int_or_text() {
        let mut p = Problems::default();
        let c = parse(
            "max_request_body = 1024\nmax_response_body = \"2MiB\"\n",
            "t",
            &mut p,
        );
        assert!(p.0.is_empty());
        let raw = c.raw_values("file");
        assert_eq!(raw["max_request_body"].text, "1024");
        assert_eq!(raw["max_response_body"].text, "2MiB");
    }

    #[test]
    fn unreadable_file() {
        let mut p = Problems::default();
        read(Path::new("/nonexistent/dir/relay.toml"), &mut p);
        assert!(p.0[0].contains("cannot read"), "{:?}", p.0);
    }
}
