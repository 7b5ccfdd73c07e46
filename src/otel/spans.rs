//! The spans of one request: [`RequestSpan`] (kind server, parented on the client's
//! `traceparent`, carried in the request's `Record` to its end) and [`AttemptSpans`] (kind
//! client, one per upstream attempt, carried by the retry driver). Both are no-ops when
//! export is off; a trace that is not sampled records no span, only the metrics.
//!
//! Attribute values are ids, counts, labels and status codes only: never request or
//! response content, header values, keys or signatures.

use super::{get, Otel, PROVIDER};
use crate::ops::Operation;
use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};
use std::borrow::Cow;
use std::time::{Duration, Instant};

/// The request's server span; `Default`: none (export off).
#[derive(Default)]
pub struct RequestSpan(Option<Box<Live>>);

struct Live {
    otel: &'static Otel,
    cx: Context,
    started: Instant,
    first_chunk: Option<Duration>,
    operation: Option<&'static str>,
    model: Option<String>,
    finish_reasons: Vec<String>,
}

impl std::fmt::Debug for RequestSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(live) => write!(
                f,
                "RequestSpan({:?})",
                live.cx.span().span_context().span_id()
            ),
            None => f.write_str("RequestSpan(off)"),
        }
    }
}

/// `gen_ai.operation.name` of a Bedrock operation: Converse and the chat-shaped APIs are
/// `chat`; InvokeModel bodies are the model's own format (`generate_content`); agents
/// `invoke_agent`; the rest are not GenAI operations.
pub fn operation_name(op: Operation) -> Option<&'static str> {
    use Operation::*;
    match op {
        Converse | ConverseStream | ChatCompletions | Responses | AnthropicMessages => Some("chat"),
        InvokeModel | InvokeModelWithResponseStream | InvokeModelWithBidirectionalStream => {
            Some("generate_content")
        }
        AgentRuntime => Some("invoke_agent"),
        _ => None,
    }
}

/// What a request did, for its span's last attributes and the GenAI metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary<'a> {
    pub status: u16,
    pub attempts: u32,
    pub resumes: u32,
    pub strategy: Option<&'a str>,
    pub waited_ms: u64,
    /// Input and output tokens the client was told (summed over attempts).
    pub tokens: Option<(u64, u64)>,
    /// An interrupted stream: healed or not.
    pub healed: Option<bool>,
    /// The last fault that interrupted the stream.
    pub fault: Option<&'a str>,
}

impl RequestSpan {
    /// Start the server span of a request: the client's trace context (W3C `traceparent`,
    /// `tracestate`) is its parent.
    pub fn start(headers: &HeaderMap, operation: Operation, model: Option<&str>) -> Self {
        let Some(otel) = get() else {
            return RequestSpan(None);
        };
        let parent = otel
            .propagator
            .extract(&opentelemetry_http::HeaderExtractor(headers));
        let gen_ai = operation_name(operation);
        let mut attributes = vec![
            KeyValue::new("bedrock_relay.operation", operation.name()),
            KeyValue::new("gen_ai.provider.name", PROVIDER),
        ];
        if let Some(op) = gen_ai {
            attributes.push(KeyValue::new("gen_ai.operation.name", op));
        }
        if let Some(model) = model {
            attributes.push(KeyValue::new("gen_ai.request.model", model.to_owned()));
        }
        let span = otel
            .tracer
            .span_builder(span_name(gen_ai, operation, model))
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&otel.tracer, &parent);
        // Kept when the trace is not sampled too (its span records nothing): the metrics
        // count every request.
        let cx = parent.with_span(span);
        RequestSpan(Some(Box::new(Live {
            otel,
            cx,
            started: Instant::now(),
            first_chunk: None,
            operation: gen_ai,
            model: model.map(str::to_owned),
            finish_reasons: Vec::new(),
        })))
    }

    /// The request body is read: the model (OpenAI- and Anthropic-compatible paths name it
    /// there) and the output limit (`gen_ai.request.max_tokens`). The body is parsed only
    /// when the span is recorded; nothing of its content is kept.
    pub fn request_body(&mut self, body: &[u8], model: Option<&str>) {
        let Some(live) = self.0.as_mut() else { return };
        if !live.cx.span().is_recording() {
            if live.model.is_none() {
                live.model = model.map(str::to_owned);
            }
            return;
        }
        if live.model.is_none() {
            if let Some(model) = model {
                live.model = Some(model.to_owned());
                live.cx
                    .span()
                    .set_attribute(KeyValue::new("gen_ai.request.model", model.to_owned()));
                live.cx.span().update_name(span_name(
                    live.operation,
                    Operation::Unknown,
                    model.into(),
                ));
            }
        }
        if let Some(n) = max_tokens(body) {
            live.cx
                .span()
                .set_attribute(KeyValue::new("gen_ai.request.max_tokens", n as i64));
        }
    }

    /// The first chunk of a streamed answer is on its way to the client.
    pub fn first_chunk(&mut self) {
        if let Some(live) = self.0.as_mut() {
            live.first_chunk.get_or_insert(live.started.elapsed());
        }
    }

    /// A stream's stop reason (`end_turn`, `max_tokens`, ...), as the client got it.
    pub fn finish_reason(&mut self, reason: Option<&str>) {
        if let (Some(live), Some(reason)) = (self.0.as_mut(), reason) {
            if !live.finish_reasons.iter().any(|r| r == reason) {
                live.finish_reasons.push(reason.to_owned());
            }
        }
    }

    /// A whole answer: its stop reason (Converse `stopReason`, Claude `stop_reason`), read
    /// only when the span is recorded.
    pub fn whole_response(&mut self, body: &[u8]) {
        if !self.0.as_ref().is_some_and(|l| l.cx.span().is_recording()) {
            return;
        }
        #[derive(serde::Deserialize)]
        struct Stop {
            #[serde(rename = "stopReason")]
            stop_reason: Option<String>,
            #[serde(rename = "stop_reason")]
            claude: Option<String>,
        }
        if let Ok(stop) = serde_json::from_slice::<Stop>(body) {
            let reason = stop.stop_reason.or(stop.claude);
            self.finish_reason(reason.as_deref());
        }
    }

    /// A resume after an interruption: an event on the server span naming the strategy.
    pub fn resume(&self, strategy: Option<&str>, resume: u32, interruption: &str, outcome: &str) {
        let Some(live) = self.0.as_ref() else { return };
        live.cx.span().add_event(
            "bedrock_relay.resume",
            vec![
                KeyValue::new(
                    "bedrock_relay.strategy",
                    strategy.unwrap_or("none").to_owned(),
                ),
                KeyValue::new("bedrock_relay.resume", i64::from(resume)),
                KeyValue::new("bedrock_relay.interruption", interruption.to_owned()),
                KeyValue::new("bedrock_relay.outcome", outcome.to_owned()),
            ],
        );
    }

    /// The attempt spans of this request, children of its server span.
    pub fn attempts(&self) -> AttemptSpans {
        AttemptSpans {
            parent: self
                .0
                .as_ref()
                .map(|live| (live.cx.clone(), live.operation, live.model.clone())),
            current: None,
        }
    }

    /// The request is over: the last attributes, the span ended, the GenAI metrics recorded.
    pub fn end(&self, s: &Summary<'_>) {
        let Some(live) = self.0.as_ref() else { return };
        let span = live.cx.span();
        let error = error_type(s);
        if !span.is_recording() {
            self.record_metrics(live, s, error);
            return;
        }
        let mut attributes = vec![
            KeyValue::new("http.response.status_code", i64::from(s.status)),
            KeyValue::new("bedrock_relay.attempts", i64::from(s.attempts)),
            KeyValue::new("bedrock_relay.resumes", i64::from(s.resumes)),
            KeyValue::new("bedrock_relay.waited_ms", s.waited_ms as i64),
        ];
        if let Some(strategy) = s.strategy {
            attributes.push(KeyValue::new("bedrock_relay.strategy", strategy.to_owned()));
        }
        if let Some(healed) = s.healed {
            attributes.push(KeyValue::new("bedrock_relay.healed", healed));
        }
        if let Some(fault) = s.fault {
            attributes.push(KeyValue::new("bedrock_relay.fault", fault.to_owned()));
        }
        if let Some((input, output)) = s.tokens {
            attributes.push(KeyValue::new("gen_ai.usage.input_tokens", input as i64));
            attributes.push(KeyValue::new("gen_ai.usage.output_tokens", output as i64));
        }
        if !live.finish_reasons.is_empty() {
            let reasons: Vec<StringValue> = live
                .finish_reasons
                .iter()
                .map(|r| StringValue::from(r.clone()))
                .collect();
            attributes.push(KeyValue::new(
                "gen_ai.response.finish_reasons",
                Value::Array(Array::String(reasons)),
            ));
        }
        if let Some(e) = &error {
            attributes.push(KeyValue::new("error.type", e.clone()));
            span.set_status(Status::error(e.clone()));
        }
        span.set_attributes(attributes);
        span.end();
        self.record_metrics(live, s, error);
    }

    fn record_metrics(&self, live: &Live, s: &Summary<'_>, error: Option<String>) {
        let Some(op) = live.operation else { return };
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", op),
            KeyValue::new("gen_ai.provider.name", PROVIDER),
        ];
        if let Some(model) = &live.model {
            attributes.push(KeyValue::new(
                "gen_ai.request.model",
                live.otel.model_value(model),
            ));
        }
        let i = &live.otel.instruments;
        if let Some((input, output)) = s.tokens {
            for (kind, n) in [("input", input), ("output", output)] {
                let mut a = attributes.clone();
                a.push(KeyValue::new("gen_ai.token.type", kind));
                i.token_usage.record(n, &a);
            }
        }
        if let Some(first) = live.first_chunk {
            i.first_chunk.record(first.as_secs_f64(), &attributes);
        }
        if let Some(e) = error {
            attributes.push(KeyValue::new("error.type", e));
        }
        i.duration
            .record(live.started.elapsed().as_secs_f64(), &attributes);
    }
}

/// `error.type`: the HTTP status class the client got, or a stream that could not be healed.
fn error_type(s: &Summary<'_>) -> Option<String> {
    if s.status >= 400 {
        return Some(s.status.to_string());
    }
    (s.healed == Some(false)).then(|| "stream_not_healed".to_owned())
}

/// `{gen_ai.operation.name} {gen_ai.request.model}` (the GenAI convention), else the
/// relay's operation name.
fn span_name(gen_ai: Option<&str>, operation: Operation, model: Option<&str>) -> Cow<'static, str> {
    match (gen_ai, model) {
        (Some(op), Some(model)) => format!("{op} {model}").into(),
        (Some(op), None) => op.to_owned().into(),
        (None, _) => operation.name().into(),
    }
}

/// The request's output limit, in whichever field its format puts it. Typed: the rest of
/// the body (the prompt) is skipped by the parser, never built into values.
fn max_tokens(body: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Limits {
        #[serde(rename = "inferenceConfig")]
        inference: Option<Inference>,
        #[serde(rename = "textGenerationConfig")]
        text_generation: Option<TextGeneration>,
        max_tokens: Option<u64>,
        max_completion_tokens: Option<u64>,
        max_output_tokens: Option<u64>,
        max_tokens_to_sample: Option<u64>,
        max_gen_len: Option<u64>,
    }
    #[derive(serde::Deserialize)]
    struct Inference {
        #[serde(rename = "maxTokens")]
        max_tokens: Option<u64>,
        max_new_tokens: Option<u64>,
    }
    #[derive(serde::Deserialize)]
    struct TextGeneration {
        #[serde(rename = "maxTokenCount")]
        max_token_count: Option<u64>,
    }
    let l: Limits = serde_json::from_slice(body).ok()?;
    let inference = l.inference.as_ref();
    inference
        .and_then(|i| i.max_tokens)
        .or(l.max_tokens)
        .or(l.max_completion_tokens)
        .or(l.max_output_tokens)
        .or(l.max_tokens_to_sample)
        .or(l.max_gen_len)
        .or(l.text_generation.and_then(|t| t.max_token_count))
        .or(inference.and_then(|i| i.max_new_tokens))
}

/// One client span per upstream attempt, children of the request's server span; the
/// current one ends when the next attempt starts or the request's attempts are dropped.
#[derive(Default)]
pub struct AttemptSpans {
    parent: Option<(Context, Option<&'static str>, Option<String>)>,
    current: Option<Context>,
}

impl AttemptSpans {
    /// Attempt `n` is about to be sent to `host`.
    pub fn begin(&mut self, n: u32, host: &str) {
        let Some((parent, op, model)) = &self.parent else {
            return;
        };
        // A request whose span is not sampled gets no attempt spans either.
        if !parent.span().is_recording() {
            return;
        }
        let Some(otel) = get() else { return };
        if let Some(previous) = self.current.take() {
            previous.span().end();
        }
        let mut attributes = vec![
            KeyValue::new("bedrock_relay.attempt", i64::from(n)),
            KeyValue::new("gen_ai.provider.name", PROVIDER),
            KeyValue::new("server.address", host.to_owned()),
        ];
        if let Some(op) = op {
            attributes.push(KeyValue::new("gen_ai.operation.name", *op));
        }
        if let Some(model) = model {
            attributes.push(KeyValue::new("gen_ai.request.model", model.clone()));
        }
        let name = match (op, model) {
            (Some(op), Some(model)) => format!("{op} {model}"),
            _ => "bedrock attempt".to_owned(),
        };
        let span = otel
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&otel.tracer, parent);
        self.current = Some(parent.with_span(span));
    }

    /// How the attempt's response began: `outcome` is the attempt metric's label.
    pub fn outcome(&self, outcome: &str, status: Option<u16>) {
        let Some(cx) = &self.current else { return };
        let span = cx.span();
        span.set_attribute(KeyValue::new("bedrock_relay.outcome", outcome.to_owned()));
        if let Some(status) = status {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        if outcome != "ok" {
            span.set_attribute(KeyValue::new("error.type", outcome.to_owned()));
            span.set_status(Status::error(outcome.to_owned()));
        }
    }

    /// The attempt got its head but broke later (torn body, stall, in-stream exception).
    pub fn late_failure(&self, reason: &str) {
        let Some(cx) = &self.current else { return };
        let span = cx.span();
        span.set_attribute(KeyValue::new("bedrock_relay.outcome", reason.to_owned()));
        span.set_attribute(KeyValue::new("error.type", reason.to_owned()));
        span.set_status(Status::error(reason.to_owned()));
        span.add_event(
            "bedrock_relay.interrupted",
            vec![KeyValue::new("bedrock_relay.reason", reason.to_owned())],
        );
    }
}

impl Drop for AttemptSpans {
    fn drop(&mut self) {
        if let Some(cx) = self.current.take() {
            cx.span().end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_in_every_format() {
        for (body, n) in [
            (r#"{"inferenceConfig":{"maxTokens":12}}"#, Some(12)),
            (r#"{"max_tokens":7,"messages":[]}"#, Some(7)),
            (r#"{"max_completion_tokens":9}"#, Some(9)),
            (r#"{"textGenerationConfig":{"maxTokenCount":3}}"#, Some(3)),
            (r#"{"messages":[]}"#, None),
            ("not json", None),
        ] {
            assert_eq!(max_tokens(body.as_bytes()), n, "{body}");
        }
    }

    #[test]
    fn off_is_a_no_op() {
        let mut span = RequestSpan::start(&HeaderMap::new(), Operation::ConverseStream, None);
        span.request_body(br#"{"inferenceConfig":{"maxTokens":1}}"#, Some("m"));
        span.first_chunk();
        span.resume(Some("prefill"), 1, "reset", "resumed");
        let mut attempts = span.attempts();
        attempts.begin(1, "h");
        attempts.outcome("ok", Some(200));
        span.end(&Summary::default());
        assert!(format!("{span:?}").contains("off"));
    }

    #[test]
    fn names_follow_the_conventions() {
        assert_eq!(operation_name(Operation::ConverseStream), Some("chat"));
        assert_eq!(
            operation_name(Operation::InvokeModel),
            Some("generate_content")
        );
        assert_eq!(operation_name(Operation::CountTokens), None);
        assert_eq!(
            span_name(Some("chat"), Operation::Converse, Some("m")),
            "chat m"
        );
        assert_eq!(
            span_name(None, Operation::CountTokens, Some("m")),
            "CountTokens"
        );
    }
}
