//! `[otel]`: OpenTelemetry export (traces and GenAI metrics over OTLP), off unless an
//! endpoint is configured. Sources, the later winning: the `[otel]` table of the file, then
//! the standard OpenTelemetry variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_SERVICE_NAME`, `OTEL_BSP_*`, ...), which are also the
//! flags' variables. `OTEL_SDK_DISABLED=true` turns export off whatever is configured.
//! The sampler (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`) and resource attributes
//! (`OTEL_RESOURCE_ATTRIBUTES`) are read by the OpenTelemetry SDK itself (`crate::otel`).

use super::parse::{self, Problems, Raw};
use serde::Deserialize;
use std::time::Duration;

/// `[otel]` in the config file.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct OtelFile {
    pub endpoint: Option<String>,
    pub protocol: Option<String>,
    pub service_name: Option<String>,
    pub batch_delay: Option<String>,
    pub max_queue_size: Option<u64>,
    pub export_timeout: Option<String>,
    pub metrics_interval: Option<String>,
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    /// `http/protobuf`: POST to `{endpoint}/v1/traces` and `/v1/metrics` (default, port 4318).
    #[default]
    HttpProtobuf,
    /// `grpc` (port 4317).
    Grpc,
}

impl OtlpProtocol {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "http/protobuf" | "http" => Ok(OtlpProtocol::HttpProtobuf),
            "grpc" => Ok(OtlpProtocol::Grpc),
            "http/json" => Err("http/json is not supported; use http/protobuf or grpc".into()),
            _ => Err("must be http/protobuf or grpc".into()),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::Grpc => "grpc",
        }
    }
}

/// Typed `[otel]` settings.
#[derive(Debug, Clone)]
pub struct OtelSettings {
    /// OTLP endpoint (base URL); `None`: export is off.
    pub endpoint: Option<http::Uri>,
    /// Full URL for traces, used as is (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
    pub traces_endpoint: Option<http::Uri>,
    /// Full URL for metrics, used as is (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`).
    pub metrics_endpoint: Option<http::Uri>,
    pub protocol: OtlpProtocol,
    /// `service.name` (default `bedrock-relay`, or `OTEL_RESOURCE_ATTRIBUTES`' own).
    pub service_name: Option<String>,
    /// How long a finished span may wait before its batch is sent (`OTEL_BSP_SCHEDULE_DELAY`).
    pub batch_delay: Duration,
    /// Finished spans waiting for export at most; beyond, spans are dropped and counted
    /// (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub max_queue_size: usize,
    /// Spans per export request (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub max_export_batch_size: usize,
    /// One export request at most (`OTEL_BSP_EXPORT_TIMEOUT`, `OTEL_EXPORTER_OTLP_TIMEOUT`).
    pub export_timeout: Duration,
    /// How often metrics are exported (`OTEL_METRIC_EXPORT_INTERVAL`).
    pub metrics_interval: Duration,
}

impl Default for OtelSettings {
    fn default() -> Self {
        OtelSettings {
            endpoint: None,
            traces_endpoint: None,
            metrics_endpoint: None,
            protocol: OtlpProtocol::HttpProtobuf,
            service_name: None,
            batch_delay: Duration::from_secs(5),
            max_queue_size: 2048,
            max_export_batch_size: 512,
            export_timeout: Duration::from_secs(10),
            metrics_interval: Duration::from_secs(60),
        }
    }
}

impl OtelSettings {
    pub fn enabled(&self) -> bool {
        self.endpoint.is_some() || self.traces_endpoint.is_some()
    }
}

/// The flags (whose variables are the standard ones) and the other standard variables.
pub(crate) struct OtelSources<'a> {
    pub endpoint: &'a Option<String>,
    pub protocol: &'a Option<String>,
    pub service_name: &'a Option<String>,
    /// Any other variable, by name (the process environment; injectable in tests).
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// Merge the file's `[otel]` table with the flags and the standard variables.
pub(crate) fn resolve(
    file: Option<&OtelFile>,
    origin: &str,
    src: &OtelSources<'_>,
    p: &mut Problems,
) -> OtelSettings {
    let d = OtelSettings::default();
    let f = file.cloned().unwrap_or_default();
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    // The later source wins: file, then flag / standard variable.
    let pick = |key: &str, file: Option<String>, var: &str, flag: Option<String>| -> Option<Raw> {
        let from_var = flag.or_else(|| (src.env)(var).filter(|s| !s.trim().is_empty()));
        match from_var {
            Some(v) => Some(Raw::new(v, var)),
            None => file.map(|v| Raw::new(v, format!("otel.{key} in {origin}"))),
        }
    };
    let uri = |t: &str| otlp_uri(t).map(Some);
    let endpoint = pick(
        "endpoint",
        f.endpoint.clone(),
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        nonempty(src.endpoint),
    );
    let signal = |var: &str| {
        (src.env)(var)
            .filter(|s| !s.trim().is_empty())
            .map(|v| Raw::new(v, var))
    };
    let traces = signal("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let metrics = signal("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
    let protocol = pick(
        "protocol",
        f.protocol.clone(),
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        nonempty(src.protocol),
    );
    let service = pick(
        "service_name",
        f.service_name.clone(),
        "OTEL_SERVICE_NAME",
        nonempty(src.service_name),
    );
    // OTEL_BSP_* and OTEL_METRIC_EXPORT_INTERVAL are milliseconds; the file takes durations.
    let millis = |t: &str| {
        t.trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| "must be a number of milliseconds".to_string())
    };
    let ms_or_file =
        |var: &str, key: &str, file: Option<String>, p: &mut Problems, d| match signal(var) {
            Some(raw) => p.parse(var, Some(&raw), d, millis),
            None => p.parse(
                &format!("otel.{key}"),
                file.map(|v| Raw::new(v, origin)).as_ref(),
                d,
                parse::duration,
            ),
        };
    let count = |var: &str, file: Option<u64>, p: &mut Problems, d: usize| -> usize {
        let raw = signal(var).or_else(|| file.map(|n| Raw::new(n.to_string(), origin)));
        p.parse(var, raw.as_ref(), d as u32, parse::u32_at_least(1)) as usize
    };
    let mut s = OtelSettings {
        endpoint: p.parse("otel.endpoint", endpoint.as_ref(), None, uri),
        traces_endpoint: p.parse(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            traces.as_ref(),
            None,
            uri,
        ),
        metrics_endpoint: p.parse(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            metrics.as_ref(),
            None,
            uri,
        ),
        protocol: p.parse(
            "otel.protocol",
            protocol.as_ref(),
            d.protocol,
            OtlpProtocol::parse,
        ),
        service_name: service.map(|r| r.text.trim().to_string()),
        batch_delay: ms_or_file(
            "OTEL_BSP_SCHEDULE_DELAY",
            "batch_delay",
            f.batch_delay.clone(),
            p,
            d.batch_delay,
        ),
        max_queue_size: count(
            "OTEL_BSP_MAX_QUEUE_SIZE",
            f.max_queue_size,
            p,
            d.max_queue_size,
        ),
        max_export_batch_size: count(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            None,
            p,
            d.max_export_batch_size,
        ),
        export_timeout: ms_or_file(
            "OTEL_BSP_EXPORT_TIMEOUT",
            "export_timeout",
            f.export_timeout.clone(),
            p,
            d.export_timeout,
        ),
        metrics_interval: ms_or_file(
            "OTEL_METRIC_EXPORT_INTERVAL",
            "metrics_interval",
            f.metrics_interval.clone(),
            p,
            d.metrics_interval,
        ),
    };
    if s.batch_delay.is_zero() {
        p.push("otel.batch_delay: must be greater than zero");
    }
    if s.metrics_interval.is_zero() {
        p.push("otel.metrics_interval: must be greater than zero");
    }
    let disabled =
        (src.env)("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if disabled {
        s.endpoint = None;
        s.traces_endpoint = None;
        s.metrics_endpoint = None;
    }
    s
}

/// An OTLP endpoint: an absolute http or https URL.
fn otlp_uri(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text.trim().parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.authority().is_some() => Ok(uri),
        _ => Err("must be an http:// or https:// URL with a host".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve_with(
        file: Option<&OtelFile>,
        flags: [Option<&str>; 3],
        vars: &[(&str, &str)],
    ) -> (OtelSettings, Vec<String>) {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |k: &str| vars.get(k).cloned();
        let [endpoint, protocol, service_name] = flags.map(|f| f.map(str::to_string));
        let mut p = Problems::default();
        let s = resolve(
            file,
            "t.toml",
            &OtelSources {
                endpoint: &endpoint,
                protocol: &protocol,
                service_name: &service_name,
                env: &env,
            },
            &mut p,
        );
        (s, p.0)
    }

    #[test]
    fn off_by_default() {
        let (s, p) = resolve_with(None, [None, None, None], &[]);
        assert!(p.is_empty(), "{p:?}");
        assert!(!s.enabled());
        assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
    }

    #[test]
    fn standard_variables_switch_it_on_and_select_grpc() {
        let (s, p) = resolve_with(
            None,
            [Some("http://collector:4317"), Some("grpc"), Some("svc")],
            &[("OTEL_BSP_SCHEDULE_DELAY", "200")],
        );
        assert!(p.is_empty(), "{p:?}");
        assert!(s.enabled());
        assert_eq!(s.protocol, OtlpProtocol::Grpc);
        assert_eq!(s.service_name.as_deref(), Some("svc"));
        assert_eq!(s.batch_delay, Duration::from_millis(200));
        let (s, _) = resolve_with(
            None,
            [Some("http://c:4318"), Some("http/protobuf"), None],
            &[],
        );
        assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
    }

    #[test]
    fn file_then_variables() {
        let file = OtelFile {
            endpoint: Some("http://from-file:4318".into()),
            protocol: Some("grpc".into()),
            batch_delay: Some("1s".into()),
            max_queue_size: Some(10),
            ..Default::default()
        };
        let (s, p) = resolve_with(Some(&file), [None, None, None], &[]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(s.endpoint.unwrap().host(), Some("from-file"));
        assert_eq!(s.protocol, OtlpProtocol::Grpc);
        assert_eq!(s.batch_delay, Duration::from_secs(1));
        assert_eq!(s.max_queue_size, 10);
        let (s, _) = resolve_with(
            Some(&file),
            [Some("http://from-var:4318"), Some("http/protobuf"), None],
            &[],
        );
        assert_eq!(s.endpoint.unwrap().host(), Some("from-var"));
        assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
    }

    #[test]
    fn problems_reported_and_sdk_disabled_wins() {
        let (_, p) = resolve_with(
            None,
            [Some("collector:4318"), Some("http/json"), None],
            &[("OTEL_BSP_SCHEDULE_DELAY", "5s")],
        );
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p.iter().any(|l| l.contains("http/json")), "{p:?}");
        let (s, p) = resolve_with(
            None,
            [Some("http://c:4318"), None, None],
            &[("OTEL_SDK_DISABLED", "true")],
        );
        assert!(p.is_empty() && !s.enabled());
    }
}
