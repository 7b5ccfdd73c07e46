//! OpenTelemetry export: one server span per client request (parented on the client's
//! `traceparent`), one client span per upstream attempt (first, retry or resume), resume
//! events naming the strategy, GenAI semantic-convention attributes, and the GenAI client
//! metrics (`gen_ai.client.token.usage`, `gen_ai.client.operation.duration`,
//! `gen_ai.client.operation.time_to_first_chunk`), all over OTLP (http/protobuf or gRPC).
//!
//! Off unless an endpoint is configured (`[otel]`, `OTEL_EXPORTER_OTLP_ENDPOINT`); then
//! [`init`] installs one process-wide exporter that the request path reaches through [`get`].
//! Export never blocks or slows a request: a finished span is offered to a bounded queue
//! (`queue`) and dropped, counted in `bedrock_relay_otel_spans_dropped_total`, when the
//! queue is full; a task on the runtime sends batches, each within the export timeout.
//! Metrics are aggregated in memory and sent by the SDK's periodic reader on its own task.
//!
//! What a span holds: operation, model id, limits, token counts, finish reasons, attempt and
//! resume counts, strategies, fault kinds, status codes and upstream host names. Never a
//! prompt, an answer, a header value other than the trace context, a key or a signature.

mod queue;
mod spans;

pub use spans::{AttemptSpans, RequestSpan, Summary};

use crate::config::{OtelSettings, OtlpProtocol};
use anyhow::Context as _;
use opentelemetry::metrics::{Histogram, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use prometheus::IntCounter;
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// `gen_ai.provider.name` of every span and data point.
pub const PROVIDER: &str = "aws.bedrock";

/// Distinct model ids kept as a metric attribute; later ones are `_OTHER`.
const MAX_MODEL_VALUES: usize = 64;

static OTEL: OnceLock<Otel> = OnceLock::new();

/// The installed exporter: tracer, instruments, and the queue's handle.
pub struct Otel {
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    instruments: Instruments,
    queue: queue::Handle,
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    models: Mutex<HashSet<String>>,
}

struct Instruments {
    token_usage: Histogram<u64>,
    duration: Histogram<f64>,
    first_chunk: Histogram<f64>,
}

/// The exporter, when [`init`] installed one.
pub fn get() -> Option<&'static Otel> {
    OTEL.get()
}

/// Counters of the export itself, on the admin listener's `/metrics`.
pub(crate) struct Counters {
    pub dropped: IntCounter,
    pub exported: IntCounter,
    pub failed: IntCounter,
}

pub(crate) fn counters() -> &'static Counters {
    static C: OnceLock<Counters> = OnceLock::new();
    C.get_or_init(|| {
        let c = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        Counters {
            dropped: c(
                "bedrock_relay_otel_spans_dropped_total",
                "finished spans dropped because the export queue was full",
            ),
            exported: c(
                "bedrock_relay_otel_spans_exported_total",
                "spans the OTLP endpoint accepted",
            ),
            failed: c(
                "bedrock_relay_otel_spans_failed_total",
                "spans whose export failed or timed out (endpoint down or slow)",
            ),
        }
    })
}

/// Put the export counters on a relay's registry (every relay of the process shares them),
/// when export is on: a relay without export has no such families.
pub fn register(registry: &prometheus::Registry) {
    if get().is_none() {
        return;
    }
    let c = counters();
    for counter in [&c.dropped, &c.exported, &c.failed] {
        // A second relay in the same registry (tests) finds them there already.
        let _ = registry.register(Box::new(counter.clone()));
    }
}

/// Install the exporter when `settings` switch export on; on the Tokio runtime. `Ok(false)`:
/// export is off. A second call keeps the first exporter.
pub fn init(settings: &OtelSettings) -> anyhow::Result<bool> {
    if !settings.enabled() {
        return Ok(false);
    }
    if OTEL.get().is_some() {
        return Ok(true);
    }
    let resource = resource(settings);
    let traces_url = signal_url(settings, settings.traces_endpoint.as_ref(), "traces");
    let metrics_url = signal_url(settings, settings.metrics_endpoint.as_ref(), "metrics");
    let (span_exporter, metric_exporter) = exporters(settings, &traces_url, &metrics_url)?;
    let (processor, queue) = queue::start(span_exporter, &resource, settings);
    let tracer_provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource.clone())
        .build();
    let scope = InstrumentationScope::builder("bedrock-relay")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let tracer = tracer_provider.tracer_with_scope(scope.clone());
    let reader =
        opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader::builder(
            metric_exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .with_interval(settings.metrics_interval)
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource)
        .build();
    let meter = meter_provider.meter_with_scope(scope);
    let instruments = Instruments {
        token_usage: meter
            .u64_histogram("gen_ai.client.token.usage")
            .with_unit("{token}")
            .with_description("Number of input and output tokens used")
            .with_boundaries(vec![
                1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
                4194304.0, 16777216.0, 67108864.0,
            ])
            .build(),
        duration: meter
            .f64_histogram("gen_ai.client.operation.duration")
            .with_unit("s")
            .with_description("GenAI operation duration")
            .with_boundaries(SECONDS.to_vec())
            .build(),
        first_chunk: meter
            .f64_histogram("gen_ai.client.operation.time_to_first_chunk")
            .with_unit("s")
            .with_description("Time to receive the first chunk in a streaming operation")
            .with_boundaries(SECONDS.to_vec())
            .build(),
    };
    let otel = Otel {
        tracer,
        propagator: TraceContextPropagator::new(),
        instruments,
        queue,
        tracer_provider,
        meter_provider,
        models: Mutex::new(HashSet::new()),
    };
    let _ = OTEL.set(otel);
    tracing::info!(
        protocol = settings.protocol.label(),
        traces = %traces_url,
        metrics = %metrics_url,
        "OpenTelemetry export on"
    );
    Ok(true)
}

/// The span and metric exporters of the configured protocol.
fn exporters(
    settings: &OtelSettings,
    traces_url: &str,
    metrics_url: &str,
) -> anyhow::Result<(
    opentelemetry_otlp::SpanExporter,
    opentelemetry_otlp::MetricExporter,
)> {
    let (traces_url, metrics_url) = (traces_url.to_owned(), metrics_url.to_owned());
    let timeout = settings.export_timeout;
    Ok(match settings.protocol {
        OtlpProtocol::HttpProtobuf => {
            let client = http_client(timeout)?;
            let spans = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client.clone())
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(traces_url.clone())
                .with_timeout(timeout)
                .build()
                .context("building the OTLP span exporter")?;
            let metrics = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(metrics_url.clone())
                .with_timeout(timeout)
                .build()
                .context("building the OTLP metric exporter")?;
            (spans, metrics)
        }
        OtlpProtocol::Grpc => {
            if traces_url.starts_with("https:") || metrics_url.starts_with("https:") {
                anyhow::bail!(
                    "OTLP over gRPC is supported on plain http:// endpoints only (a local collector); use http/protobuf for https"
                );
            }
            let spans = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(traces_url.clone())
                .with_timeout(timeout)
                .build()
                .context("building the OTLP span exporter")?;
            let metrics = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(metrics_url.clone())
                .with_timeout(timeout)
                .build()
                .context("building the OTLP metric exporter")?;
            (spans, metrics)
        }
    })
}

/// The GenAI conventions' duration buckets (seconds).
const SECONDS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// Send what is queued (spans, then metrics), each within `within`; at shutdown.
pub async fn shutdown(within: Duration) {
    let Some(otel) = get() else { return };
    otel.queue.flush(within).await;
    let meters = otel.meter_provider.clone();
    let traces = otel.tracer_provider.clone();
    // The SDK's shutdown waits synchronously for its reader task: off the runtime's threads.
    let done = tokio::task::spawn_blocking(move || {
        let _ = meters.shutdown_with_timeout(within);
        let _ = traces.shutdown_with_timeout(within);
    });
    let _ = tokio::time::timeout(within + Duration::from_secs(1), done).await;
}

/// `service.name` from the settings (flag, `OTEL_SERVICE_NAME`, file), else from
/// `OTEL_RESOURCE_ATTRIBUTES`, else `bedrock-relay`; the SDK adds the other attributes of
/// `OTEL_RESOURCE_ATTRIBUTES` and its own.
fn resource(settings: &OtelSettings) -> Resource {
    let mut builder = Resource::builder();
    let in_attributes = std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| {
        v.split(',')
            .any(|kv| kv.trim().starts_with("service.name="))
    });
    match &settings.service_name {
        Some(name) => builder = builder.with_service_name(name.clone()),
        None if in_attributes => {}
        None => builder = builder.with_service_name("bedrock-relay"),
    }
    builder
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The URL a signal is sent to: its own endpoint as given, else for http/protobuf the base
/// endpoint plus `/v1/{signal}`, for gRPC the base endpoint.
fn signal_url(settings: &OtelSettings, own: Option<&http::Uri>, signal: &str) -> String {
    if let Some(own) = own {
        return own.to_string();
    }
    let base = settings
        .endpoint
        .as_ref()
        .map(|u| u.to_string())
        .unwrap_or_default();
    match settings.protocol {
        OtlpProtocol::HttpProtobuf => format!("{}/v1/{signal}", base.trim_end_matches('/')),
        OtlpProtocol::Grpc => base,
    }
}

type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// hyper with the relay's rustls (aws-lc-rs): plain http for a sidecar collector, https
/// with the system's roots (webpki roots when there are none).
fn http_client(
    timeout: Duration,
) -> anyhow::Result<opentelemetry_http::hyper::HyperClient<Connector>> {
    use hyper_rustls::HttpsConnectorBuilder;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeout.min(Duration::from_secs(3))));
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder =
        match HttpsConnectorBuilder::new().with_provider_and_native_roots(provider.clone()) {
            Ok(b) => b,
            Err(_) => HttpsConnectorBuilder::new()
                .with_provider_and_webpki_roots(provider)
                .context("TLS setup for the OTLP exporter")?,
        };
    let connector = builder.https_or_http().enable_http1().wrap_connector(http);
    Ok(opentelemetry_http::hyper::HyperClient::new(
        connector, timeout, None,
    ))
}

impl Otel {
    /// A model id as a metric attribute: the first [`MAX_MODEL_VALUES`] distinct ids, then
    /// `_OTHER` (model ids come from clients).
    fn model_value(&self, model: &str) -> String {
        let mut seen = self.models.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(model) {
            return model.to_owned();
        }
        if seen.len() < MAX_MODEL_VALUES {
            seen.insert(model.to_owned());
            return model.to_owned();
        }
        "_OTHER".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_urls_per_protocol() {
        let mut s = OtelSettings {
            endpoint: Some("http://collector:4318".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(
            signal_url(&s, None, "traces"),
            "http://collector:4318/v1/traces"
        );
        let own: http::Uri = "http://other:1/custom".parse().unwrap();
        assert_eq!(
            signal_url(&s, Some(&own), "traces"),
            "http://other:1/custom"
        );
        s.protocol = OtlpProtocol::Grpc;
        s.endpoint = Some("http://collector:4317".parse().unwrap());
        assert_eq!(signal_url(&s, None, "metrics"), "http://collector:4317/");
    }

    /// The protocol setting selects the transport: gRPC builds tonic exporters, the default
    /// http/protobuf ones (on the runtime: tonic's channel is lazy, nothing connects here).
    #[tokio::test]
    async fn protocol_selects_the_exporter() {
        let mut s = OtelSettings {
            endpoint: Some("http://127.0.0.1:9".parse().unwrap()),
            protocol: OtlpProtocol::Grpc,
            ..Default::default()
        };
        let (spans, metrics) = exporters(&s, "http://127.0.0.1:9", "http://127.0.0.1:9").unwrap();
        let described = format!("{spans:?} {metrics:?}");
        assert!(described.contains("Tonic"), "{described}");
        assert!(
            exporters(&s, "https://c:4317", "https://c:4317").is_err(),
            "gRPC over TLS is refused"
        );
        s.protocol = OtlpProtocol::HttpProtobuf;
        let (spans, metrics) = exporters(
            &s,
            "http://127.0.0.1:9/v1/traces",
            "http://127.0.0.1:9/v1/metrics",
        )
        .unwrap();
        let described = format!("{spans:?} {metrics:?}");
        assert!(described.contains("Http"), "{described}");
        assert!(!described.contains("Tonic"), "{described}");
        assert!(http_client(Duration::from_secs(1)).is_ok());
    }
}
