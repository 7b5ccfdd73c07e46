//! The `[inbound]` table: who may use the relay and what they may do.
//!
//! Owns the file schema ([`InboundFile`]), the typed [`InboundSettings`] the `inbound`
//! module enforces, and [`Secret`], a string whose `Debug` never shows its value (the
//! settings are `Debug`, and secrets must never reach a log). Secrets are read from an
//! environment variable or a file, or (discouraged) written inline.

use super::parse::{self, Problems, Raw};
use regex::Regex;
use serde::Deserialize;
use std::time::Duration;

/// Operation names accepted by `allow_operations` / `deny_operations` (as in `ops`).
pub const OPERATION_NAMES: &[&str] = &[
    "Converse",
    "ConverseStream",
    "InvokeModel",
    "InvokeModelWithResponseStream",
    "InvokeModelWithBidirectionalStream",
    "CountTokens",
    "ApplyGuardrail",
    "StartAsyncInvoke",
    "GetAsyncInvoke",
    "ListAsyncInvokes",
    "AgentRuntime",
];

/// A secret string. `Debug` prints `Secret(<redacted>)`; use [`Secret::expose`] to compare.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A client key pair the application signs with (a relay-only key, not an AWS key).
#[derive(Debug, Clone)]
pub struct ClientKey {
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

/// Inbound authentication, policy and listener limits.
#[derive(Debug, Clone)]
pub struct InboundSettings {
    /// Client SigV4 keys; a request signed with one of them is accepted.
    pub sigv4_keys: Vec<ClientKey>,
    /// Accepted `Authorization: Bearer` tokens.
    pub bearer_tokens: Vec<Secret>,
    /// Largest accepted difference between a SigV4 request's `x-amz-date` and now.
    pub max_clock_skew: Duration,
    /// When non-empty, only model ids matching one of these are served.
    pub allow_models: Vec<Regex>,
    /// Model ids matching one of these are refused (beats `allow_models`).
    pub deny_models: Vec<Regex>,
    /// When non-empty, only these operations are served.
    pub allow_operations: Vec<String>,
    /// These operations are refused (beats `allow_operations`).
    pub deny_operations: Vec<String>,
    /// Requests in flight per client (key id, token, or peer IP); 0 = unlimited.
    pub max_concurrency_per_client: u32,
    /// A client must send a request's complete head within this time (slowloris).
    pub header_read_timeout: Duration,
    /// Largest request head (HTTP/1.1 buffer; HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Listen on a non-loopback address without inbound authentication.
    pub allow_unauthenticated_non_loopback: bool,
    /// Serve TLS with these certificate and key files (reloaded when they change).
    pub tls: Option<crate::certs::TlsFiles>,
}

impl Default for InboundSettings {
    fn default() -> Self {
        InboundSettings {
            sigv4_keys: Vec::new(),
            bearer_tokens: Vec::new(),
            max_clock_skew: Duration::from_secs(15 * 60),
            allow_models: Vec::new(),
            deny_models: Vec::new(),
            allow_operations: Vec::new(),
            deny_operations: Vec::new(),
            max_concurrency_per_client: 0,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            allow_unauthenticated_non_loopback: false,
            tls: None,
        }
    }
}

impl InboundSettings {
    /// True when clients must authenticate.
    pub fn authenticates(&self) -> bool {
        !self.sigv4_keys.is_empty() || !self.bearer_tokens.is_empty()
    }
}

/// Where a secret comes from: inline, `{ env = "VAR" }` or `{ file = "/path" }`.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub(crate) enum SecretSource {
    Inline(String),
    From(SecretRef),
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretRef {
    pub env: Option<String>,
    pub file: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyFile {
    pub access_key_id: String,
    pub secret_access_key: Option<String>,
    pub secret_access_key_env: Option<String>,
    pub secret_access_key_file: Option<String>,
}

/// Schema of `[inbound]`.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct InboundFile {
    pub sigv4_keys: Option<Vec<KeyFile>>,
    pub bearer_tokens: Option<Vec<SecretSource>>,
    pub max_clock_skew: Option<String>,
    pub allow_models: Option<Vec<String>>,
    pub deny_models: Option<Vec<String>>,
    pub allow_operations: Option<Vec<String>>,
    pub deny_operations: Option<Vec<String>>,
    pub max_concurrency_per_client: Option<u64>,
    pub header_read_timeout: Option<String>,
    pub max_header_bytes: Option<super::parse::SizeValue>,
    pub allow_unauthenticated_non_loopback: Option<bool>,
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
}

/// Read one secret; the problem text names the source, never the value.
fn read_secret(
    key: &str,
    env: Option<&str>,
    file: Option<&str>,
    p: &mut Problems,
) -> Option<Secret> {
    let value = match (env, file) {
        (Some(var), None) => match std::env::var(var) {
            Ok(v) => v,
            Err(_) => {
                p.push(format!("{key}: environment variable {var} is not set"));
                return None;
            }
        },
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(v) => v,
            Err(e) => {
                p.push(format!("{key}: cannot read secret file {path}: {e}"));
                return None;
            }
        },
        _ => {
            p.push(format!("{key}: give exactly one of env or file"));
            return None;
        }
    };
    let value = value.trim();
    if value.is_empty() {
        p.push(format!("{key}: the secret is empty"));
        return None;
    }
    Some(Secret::new(value))
}

fn operations(key: &str, names: &[String], p: &mut Problems) -> Vec<String> {
    for n in names {
        if !OPERATION_NAMES.contains(&n.as_str()) {
            p.push(format!(
                "{key}: unknown operation {n:?} (one of {})",
                OPERATION_NAMES.join(", ")
            ));
        }
    }
    names.to_vec()
}

/// Type the `[inbound]` table (absent → defaults), recording every problem.
pub(crate) fn resolve(
    file: Option<&InboundFile>,
    origin: &str,
    allow_flag: bool,
    p: &mut Problems,
) -> InboundSettings {
    let d = InboundSettings::default();
    let f = file.cloned().unwrap_or_default();
    let key = |k: &str| format!("inbound.{k}");
    let mut s = InboundSettings {
        allow_unauthenticated_non_loopback: allow_flag
            || f.allow_unauthenticated_non_loopback.unwrap_or(false),
        ..d.clone()
    };
    for (i, k) in f.sigv4_keys.iter().flatten().enumerate() {
        let name = key(&format!("sigv4_keys[{i}]"));
        if k.access_key_id.trim().is_empty() {
            p.push(format!("{name}: access_key_id must not be empty"));
        }
        let secret = match &k.secret_access_key {
            Some(v) if k.secret_access_key_env.is_none() && k.secret_access_key_file.is_none() => {
                Some(Secret::new(v.trim()))
            }
            Some(_) => {
                p.push(format!("{name}: give one of secret_access_key, secret_access_key_env, secret_access_key_file"));
                None
            }
            None => read_secret(
                &name,
                k.secret_access_key_env.as_deref(),
                k.secret_access_key_file.as_deref(),
                p,
            ),
        };
        if let Some(secret) = secret.filter(|s| !s.expose().is_empty()) {
            s.sigv4_keys.push(ClientKey {
                access_key_id: k.access_key_id.trim().to_string(),
                secret_access_key: secret,
            });
        }
    }
    for (i, t) in f.bearer_tokens.iter().flatten().enumerate() {
        let name = key(&format!("bearer_tokens[{i}]"));
        let secret = match t {
            SecretSource::Inline(v) if !v.trim().is_empty() => Some(Secret::new(v.trim())),
            SecretSource::Inline(_) => {
                p.push(format!("{name}: the token is empty"));
                None
            }
            SecretSource::From(r) => read_secret(&name, r.env.as_deref(), r.file.as_deref(), p),
        };
        s.bearer_tokens.extend(secret);
    }
    let raw = |v: &Option<String>| v.as_ref().map(|t| Raw::new(t, origin));
    s.max_clock_skew = p.parse(
        &key("max_clock_skew"),
        raw(&f.max_clock_skew).as_ref(),
        d.max_clock_skew,
        parse::duration,
    );
    s.header_read_timeout = p.parse(
        &key("header_read_timeout"),
        raw(&f.header_read_timeout).as_ref(),
        d.header_read_timeout,
        parse::duration,
    );
    let header_bytes = f
        .max_header_bytes
        .as_ref()
        .map(|v| Raw::new(v.text(), origin));
    s.max_header_bytes = p.parse(
        &key("max_header_bytes"),
        header_bytes.as_ref(),
        d.max_header_bytes,
        parse::size,
    );
    if s.max_header_bytes < 8192 {
        p.push(format!(
            "{}: must be at least 8KiB",
            key("max_header_bytes")
        ));
    }
    if s.header_read_timeout.is_zero() {
        p.push(format!(
            "{}: must be greater than zero",
            key("header_read_timeout")
        ));
    }
    if let Some(n) = f.max_concurrency_per_client {
        match u32::try_from(n) {
            Ok(n) => s.max_concurrency_per_client = n,
            Err(_) => p.push(format!("{}: too large", key("max_concurrency_per_client"))),
        }
    }
    if let Some(v) = &f.allow_models {
        s.allow_models = parse::regex_list(p, &key("allow_models"), v, origin);
    }
    if let Some(v) = &f.deny_models {
        s.deny_models = parse::regex_list(p, &key("deny_models"), v, origin);
    }
    if let Some(v) = &f.allow_operations {
        s.allow_operations = operations(&key("allow_operations"), v, p);
    }
    if let Some(v) = &f.deny_operations {
        s.deny_operations = operations(&key("deny_operations"), v, p);
    }
    match (&f.tls_cert_file, &f.tls_key_file) {
        (None, None) => {}
        (Some(cert), Some(key_file)) => {
            let files = crate::certs::TlsFiles {
                cert: cert.into(),
                key: key_file.into(),
            };
            match crate::certs::load_pair(&files) {
                Ok(_) => s.tls = Some(files),
                Err(e) => p.push(format!("{}: {e}", key("tls_cert_file"))),
            }
        }
        _ => p.push(format!(
            "{}: tls_cert_file and tls_key_file go together",
            key("tls_cert_file")
        )),
    }
    s
}

/// Safe default: a non-loopback listener needs inbound authentication or the loud opt-in.
pub(crate) fn check_exposure(listen: std::net::SocketAddr, s: &InboundSettings, p: &mut Problems) {
    if !listen.ip().is_loopback() && !s.authenticates() && !s.allow_unauthenticated_non_loopback {
        p.push(format!(
            "listen: {listen} is not a loopback address and no inbound authentication is configured; \
             anyone who can reach it could spend your AWS credentials. Configure [inbound] sigv4_keys \
             or bearer_tokens, listen on 127.0.0.1, or pass --allow-unauthenticated-non-loopback \
             (inbound.allow_unauthenticated_non_loopback = true) if you really mean it"
        ));
    }
}

#[cfg(test)]
mod tests;
