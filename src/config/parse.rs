//! Parsers for the string forms of settings (durations, sizes, addresses, URLs, regexes)
//! and the collector that gathers every problem before `load` gives up.
//!
//! Every CLI flag, environment variable and config-file value reaches `config::load` as
//! text tagged with where it came from; the parsers here turn it into a typed value or
//! record one readable line in [`Problems`], so all invalid settings are reported at once.

use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// A raw setting value and where it came from (for error messages).
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pub text: String,
    pub origin: String,
}

impl Raw {
    pub fn new(text: impl Into<String>, origin: impl Into<String>) -> Self {
        Raw {
            text: text.into(),
            origin: origin.into(),
        }
    }
}

/// Every problem found so far, one line each.
#[derive(Debug, Default)]
pub(crate) struct Problems(pub Vec<String>);

impl Problems {
    pub fn push(&mut self, msg: impl Into<String>) {
        self.0.push(msg.into());
    }

    /// Parse `raw` with `f`, falling back to `default` (and recording a problem) on error.
    pub fn parse<T>(
        &mut self,
        key: &str,
        raw: Option<&Raw>,
        default: T,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        match raw {
            None => default,
            Some(r) => match f(r.text.trim()) {
                Ok(v) => v,
                Err(e) => {
                    self.push(format!("{key}: {e} (value {:?} from {})", r.text, r.origin));
                    default
                }
            },
        }
    }
}

/// `250ms`, `2s`, `15m`, `1h 30m` (humantime syntax). Zero is allowed.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration: {e}"))
}

/// Bytes: a plain integer, or an integer with a unit: B, KiB, MiB, GiB (binary) or
/// KB, MB, GB (decimal), case-insensitive, optional space (`20MiB`, `512 KiB`).
pub(crate) fn size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return Err("invalid size: expected a number of bytes like 20MiB".into());
    }
    let n: u64 = digits.parse().map_err(|e| format!("invalid size: {e}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("invalid size: unknown unit {other:?}")),
    };
    n.checked_mul(mult)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| "invalid size: too large".to_string())
}

pub(crate) fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|e| format!("invalid socket address (want IP:PORT): {e}"))
}

/// An absolute `http://` or `https://` URL with a host and no query.
pub(crate) fn upstream_uri(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("invalid URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("invalid URL: scheme must be http or https".into()),
    }
    if uri.authority().is_none() {
        return Err("invalid URL: missing host".into());
    }
    if uri.query().is_some() {
        return Err("invalid URL: must not have a query".into());
    }
    Ok(uri)
}

pub(crate) fn u32_at_least(min: u32) -> impl Fn(&str) -> Result<u32, String> {
    move |s| {
        let n: u32 = s.parse().map_err(|e| format!("invalid number: {e}"))?;
        if n < min {
            return Err(format!("must be at least {min}"));
        }
        Ok(n)
    }
}

pub(crate) fn regex(s: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(s).map_err(|e| format!("invalid regex: {e}"))
}

/// Parse a list of regexes, recording one problem per bad pattern.
pub(crate) fn regex_list(
    problems: &mut Problems,
    key: &str,
    patterns: &[String],
    origin: &str,
) -> Vec<regex::Regex> {
    let mut out = Vec::with_capacity(patterns.len());
    for p in patterns {
        match regex(p) {
            Ok(r) => out.push(r),
            Err(e) => problems.push(format!("{key}: {e} (value {p:?} from {origin})")),
        }
    }
    out
}

/// A size written either as bytes (`20971520`) or with a unit (`"20MiB"`).
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub(crate) enum SizeValue {
    Bytes(u64),
    Text(String),
}

impl SizeValue {
    pub(crate) fn text(&self) -> String {
        match self {
            SizeValue::Bytes(n) => n.to_string(),
            SizeValue::Text(s) => s.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("20MiB"), Ok(20 * 1024 * 1024));
        assert_eq!(size("512 KiB"), Ok(512 * 1024));
        assert_eq!(size("1048576"), Ok(1_048_576));
        assert_eq!(size("3mb"), Ok(3_000_000));
        assert!(size("MiB").is_err());
        assert!(size("12 parsecs").is_err());
        assert!(size("-5").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("15m"), Ok(Duration::from_secs(900)));
        assert!(duration("fast").is_err());
        assert!(duration("10").is_err());
    }

    #[test]
    fn uris() {
        assert!(upstream_uri("http://127.0.0.1:9000").is_ok());
        assert!(upstream_uri("https://bedrock-runtime.us-east-1.amazonaws.com").is_ok());
        assert!(upstream_uri("ftp://x").is_err());
        assert!(upstream_uri("/just/a/path").is_err());
        assert!(upstream_uri("http://h/?q=1").is_err());
    }

    #[test]
    fn at_least() {
        assert_eq!(u32_at_least(1)("4"), Ok(4));
        assert!(u32_at_least(1)("0").is_err());
        assert!(u32_at_least(0)("x").is_err());
    }
}
