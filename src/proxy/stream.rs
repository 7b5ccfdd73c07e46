//! The EventStream pump: forwards whole frames, detects faults mid-stream, and resumes.
//!
//! Phase 1 ([`open`]): attempts are retried invisibly until the first whole frame arrives;
//! the client has nothing yet, so its response head is held back until then.
//! Phase 2 ([`pump`], a task per stream): every frame goes through the [`Splicer`] of the
//! current attempt (none for the first) and is recorded in the [`Transcript`] once
//! forwarded. On a fault the resume ladder (see `crate::resume`) fetches the rest from a
//! new upstream request; when that is impossible the client gets the upstream's own
//! exception or a typed `modelStreamErrorException`, then a clean end — never a torn frame.
//! If the client goes away the upstream request is dropped at once.

use super::attempt::{read_whole, Attempts, Failure};
use super::body::{self, FrameSender};
use super::error::full;
use super::frames::{classify, Classified, Fault, UpstreamFrames};
use super::request::Outbound;
use super::{Body, Record, Relay};
use crate::eventstream::{self, Frame};
use crate::resume::{plan, Divergence, ModelCaps, Spliced, Splicer, StreamFormat, Transcript};
use bytes::Bytes;
use http::response::Parts;
use http::Response;
use http_body_util::BodyExt;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What the relay learns about models at run time: those that rejected a prefill.
/// Bounded: model ids come from clients.
#[derive(Debug, Default)]
pub struct ModelMemory {
    no_prefill: Mutex<HashSet<String>>,
}

const MAX_REMEMBERED_MODELS: usize = 1024;

impl ModelMemory {
    fn forbid_prefill(&self, model: &str) {
        let mut set = self.no_prefill.lock().unwrap_or_else(|p| p.into_inner());
        if set.len() < MAX_REMEMBERED_MODELS {
            set.insert(model.to_owned());
        }
    }

    fn prefill_forbidden(&self, model: &str) -> bool {
        self.no_prefill
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(model)
    }
}

impl Relay {
    /// Which rungs of the ladder a model allows: configuration, then what was learned.
    fn caps(&self, model: &str) -> ModelCaps {
        let r = &self.settings.resume;
        ModelCaps {
            prefill: r.prefill_allowed(model) && !self.models.prefill_forbidden(model),
            instructed: r.instructed_allowed(model),
            replay: r.replay,
        }
    }
}

/// Phase 1: get the first whole frame (retrying invisibly), then hand the stream to a pump.
pub async fn open(relay: Arc<Relay>, outbound: Outbound, mut record: Record) -> Response<Body> {
    let model = record.model.clone().unwrap_or_default();
    let stall = relay.settings.stall_timeout_for(&model);
    let mut attempts = Attempts::new(relay.clone(), record.operation);
    let (parts, frames, first) = loop {
        let failure = match attempts
            .send(outbound.request(), relay.settings.first_byte_timeout)
            .await
        {
            Ok(resp) if !is_eventstream(resp.headers()) => {
                // Not a stream after all (some agent operations answer JSON): read it whole.
                let (parts, body) = resp.into_parts();
                match read_whole(body, relay.settings.max_response_body, attempts.remaining()).await
                {
                    Ok(bytes) => {
                        return finish_plain(
                            &relay,
                            record,
                            &attempts,
                            Response::from_parts(parts, bytes),
                        )
                    }
                    Err(f) => f,
                }
            }
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                let mut frames = UpstreamFrames::new(body, stall);
                match frames.next().await {
                    Ok(Some(frame)) => match classify(&frame) {
                        Classified::Retryable(t) => fault_failure(Fault::Exception {
                            exception_type: t,
                            frame,
                        }),
                        _ => break (parts, frames, frame),
                    },
                    Ok(None) => fault_failure(Fault::Truncated),
                    Err(fault) => fault_failure(fault),
                }
            }
            Err(f) => f,
        };
        if let Some(reason) = failure.retry_reason() {
            if attempts
                .may_retry(reason, relay.settings.max_attempts)
                .await
            {
                continue;
            }
        }
        record.attempts = attempts.made();
        return match failure.into_result(attempts.made()) {
            Ok(resp) => finish_plain(&relay, record, &attempts, resp),
            Err(e) => super::finish_error(&relay, record, e),
        };
    };
    let (tx, rx) = body::channel();
    let mut parts: Parts = parts;
    for h in [
        http::header::CONTENT_LENGTH,
        http::header::TRANSFER_ENCODING,
        http::header::CONNECTION,
    ] {
        parts.headers.remove(h);
    }
    relay.metrics.active_streams.inc();
    let format = StreamFormat::detect(record.operation, &model);
    let pump = Pump {
        relay,
        outbound,
        record,
        attempts,
        format,
        model,
        tx,
        resumes: 0,
        last_strategy: None,
    };
    tokio::spawn(pump.run(frames, first));
    Response::from_parts(parts, rx.boxed())
}

fn is_eventstream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/vnd.amazon.eventstream"))
}

/// A fault before anything reached the client: retried like any failure (it is counted by
/// `upstream_attempts_total` and `retries_total`, not as a stream interruption).
fn fault_failure(fault: Fault) -> Failure {
    Failure::Transport {
        reason: fault.retry_reason(),
        detail: fault.describe(),
    }
}

fn finish_plain(
    relay: &Relay,
    mut record: Record,
    attempts: &Attempts,
    resp: Response<Bytes>,
) -> Response<Body> {
    if resp.status().is_success() {
        attempts.succeeded();
    }
    record.attempts = attempts.made();
    record.bytes_out = resp.body().len() as u64;
    let status = resp.status().as_u16();
    record.finish(relay, status);
    let (parts, bytes) = resp.into_parts();
    Response::from_parts(parts, full(bytes))
}

/// Phase 2 state, owned by the stream's task.
struct Pump {
    relay: Arc<Relay>,
    outbound: Outbound,
    record: Record,
    attempts: Attempts,
    format: Option<StreamFormat>,
    model: String,
    tx: FrameSender,
    resumes: u32,
    last_strategy: Option<&'static str>,
}

/// How a stream ended, for logs and metrics.
enum End {
    Complete,
    ClientGone,
    Failed,
}

impl Pump {
    async fn run(mut self, mut frames: UpstreamFrames, first: Frame) {
        let limit = self.relay.settings.resume.max_transcript_bytes;
        let mut transcript = self.format.map(|f| Transcript::with_limit(f, limit));
        let mut splicer = self.format.map(Splicer::passthrough);
        let mut pending = Some(first);
        let mut fault_at: Option<Instant> = None;
        let end = loop {
            let next = match pending.take() {
                Some(frame) => Ok(Some(frame)),
                None => tokio::select! {
                    r = frames.next() => r,
                    _ = self.tx.closed() => break End::ClientGone,
                },
            };
            let fault = match next {
                Ok(Some(frame)) => match classify(&frame) {
                    Classified::Retryable(t) => Fault::Exception {
                        exception_type: t,
                        frame,
                    },
                    Classified::Final => {
                        // Not retryable (e.g. validationException): the client gets it unchanged.
                        self.send(frame.raw).await;
                        break End::Failed;
                    }
                    Classified::Event => {
                        match self.forward(frame, splicer.as_mut(), &mut transcript).await {
                            Ok(true) => {
                                if let Some(at) = fault_at.take() {
                                    self.relay
                                        .metrics
                                        .resume_gap_seconds
                                        .observe(at.elapsed().as_secs_f64());
                                }
                                // Terminal events delivered: the answer is whole, whatever
                                // the upstream connection does next.
                                if transcript.as_ref().is_some_and(|t| t.is_complete()) {
                                    break End::Complete;
                                }
                                continue;
                            }
                            Ok(false) => break End::ClientGone,
                            Err(divergence) => {
                                self.count_resume("diverged");
                                self.fail(None, &format!("the replayed answer diverged from what was already sent ({divergence})")).await;
                                break End::Failed;
                            }
                        }
                    }
                },
                Ok(None) if transcript.as_ref().is_none_or(|t| t.is_complete()) => {
                    break End::Complete
                }
                Ok(None) => Fault::Truncated,
                Err(fault) => fault,
            };
            // A fault mid-stream: count it, then climb the ladder.
            tracing::info!(operation = self.record.operation.name(), model = %self.model, fault = %fault.describe(), "stream interrupted");
            self.relay
                .metrics
                .stream_interruptions_total
                .with_label_values(&[fault.label()])
                .inc();
            self.attempts.record_late_failure(fault.retry_reason());
            fault_at = Some(Instant::now());
            if let Some(t) = &transcript {
                self.count_failed_attempt_tokens(t);
            }
            let client = self.tx.clone();
            let resumed = tokio::select! {
                r = self.resume(&fault, transcript.as_mut()) => r,
                _ = client.closed() => break End::ClientGone,
            };
            match resumed {
                Ok((next_frames, next_splicer)) => {
                    frames = next_frames;
                    splicer = Some(next_splicer);
                }
                Err(why) => {
                    self.count_resume("failed");
                    self.fail(Some(fault), &why).await;
                    break End::Failed;
                }
            }
        };
        self.finish(end);
    }

    /// Forward one upstream event (through the splicer, if resuming). `Ok(false)`: client gone.
    async fn forward(
        &mut self,
        frame: Frame,
        splicer: Option<&mut Splicer>,
        transcript: &mut Option<Transcript>,
    ) -> Result<bool, Divergence> {
        let items = match splicer {
            None => vec![Spliced::Unchanged],
            Some(s) => s.accept(&frame.message)?,
        };
        for item in items {
            let (bytes, message) = match item {
                Spliced::Unchanged => (frame.raw.clone(), frame.message.clone()),
                Spliced::Rewritten(m) => (eventstream::encode(&m), m),
            };
            if let Some(t) = transcript.as_mut() {
                t.observe(&message);
            }
            if !self.send(bytes).await {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn send(&mut self, bytes: Bytes) -> bool {
        self.record.bytes_out += bytes.len() as u64;
        self.tx.send(bytes).await
    }

    /// Climb the ladder until a new upstream stream is open, or say why it cannot be.
    async fn resume(
        &mut self,
        fault: &Fault,
        transcript: Option<&mut Transcript>,
    ) -> Result<(UpstreamFrames, Splicer), String> {
        let Some((format, transcript)) = self.format.zip(transcript) else {
            return Err("this stream's format cannot be resumed".into());
        };
        let relay = self.relay.clone();
        let mut reason = fault.retry_reason();
        loop {
            if self.resumes >= relay.settings.resume.max_resumes {
                return Err(format!(
                    "gave up after {} resume(s) (max_resumes)",
                    self.resumes
                ));
            }
            if !self.attempts.may_retry(reason, u32::MAX).await {
                return Err("the retry budget or the request deadline is exhausted".into());
            }
            self.resumes += 1;
            let caps = relay.caps(&self.model);
            let continuation =
                plan(&format, &self.outbound.body, transcript, &caps).map_err(|e| e.to_string())?;
            let strategy = continuation.strategy.label();
            self.last_strategy = Some(strategy);
            let req = self.outbound.request_with_body(continuation.body);
            let stall = relay.settings.stall_timeout_for(&self.model);
            match self
                .attempts
                .send(req, relay.settings.first_byte_timeout)
                .await
            {
                Ok(resp) if is_eventstream(resp.headers()) => {
                    tracing::info!(model = %self.model, strategy, resume = self.resumes, "stream resumed");
                    return Ok((
                        UpstreamFrames::new(resp.into_body(), stall),
                        continuation.splicer,
                    ));
                }
                Ok(resp) => {
                    return Err(format!(
                        "resume request answered {} without a stream",
                        resp.status()
                    ))
                }
                Err(Failure::Status { response, .. }) if rejects_prefill(&response) => {
                    // Learned: this model takes no prefill. Plan again without it.
                    relay.models.forbid_prefill(&self.model);
                    self.count_resume("rejected");
                    reason = crate::retry::RetryReason::InStreamError;
                }
                Err(failure) => match failure.retry_reason() {
                    Some(r) => reason = r,
                    None => {
                        let detail = match failure.into_result(self.attempts.made()) {
                            Ok(resp) => {
                                format!("resume request refused with status {}", resp.status())
                            }
                            Err(e) => e.to_string(),
                        };
                        return Err(detail);
                    }
                },
            }
        }
    }

    /// End the stream with a typed exception the SDKs raise: the upstream's own retryable
    /// exception when that is what broke it, else `modelStreamErrorException`.
    async fn fail(&mut self, fault: Option<Fault>, why: &str) {
        let what = fault
            .as_ref()
            .map(Fault::describe)
            .unwrap_or_else(|| "stream could not be continued".into());
        tracing::warn!(model = %self.model, attempts = self.attempts.made(), resumes = self.resumes, %what, %why, "stream failed");
        let bytes = match fault {
            // The upstream's own exception, when the client's SDK models it for this
            // operation (ConverseStream has no modelTimeoutException).
            Some(Fault::Exception {
                frame,
                exception_type,
            }) if self.record.operation != crate::ops::Operation::ConverseStream
                || exception_type != "modelTimeoutException" =>
            {
                frame.raw
            }
            _ => {
                let message = format!(
                    "bedrock-relay: {what}; {why}. Attempts: {}, resumes: {}.",
                    self.attempts.made(),
                    self.resumes
                );
                let body = serde_json::json!({
                    "message": message,
                    "originalStatusCode": 502,
                    "originalMessage": what,
                });
                eventstream::encode(&eventstream::exception_with_body(
                    "modelStreamErrorException",
                    body.to_string(),
                ))
            }
        };
        self.send(bytes).await;
    }

    fn count_resume(&self, outcome: &str) {
        let strategy = self.last_strategy.unwrap_or("none");
        self.relay
            .metrics
            .stream_resumes_total
            .with_label_values(&[strategy, outcome])
            .inc();
    }

    fn count_failed_attempt_tokens(&self, transcript: &Transcript) {
        let usage = transcript.attempt_usage_estimate();
        let m = &self.relay.metrics.failed_attempt_tokens_total;
        m.with_label_values(&["input"])
            .inc_by(usage.input.unwrap_or(0));
        m.with_label_values(&["output"]).inc_by(usage.output);
    }

    fn finish(mut self, end: End) {
        self.relay.metrics.active_streams.dec();
        match end {
            End::Complete => {
                self.attempts.succeeded();
                if self.resumes > 0 {
                    self.count_resume("success");
                }
            }
            End::ClientGone => {
                self.relay.metrics.client_disconnects_total.inc();
                tracing::info!(model = %self.model, "client went away: upstream request cancelled");
            }
            End::Failed => {}
        }
        self.record.attempts = self.attempts.made();
        self.record.resumes = self.resumes;
        let relay = self.relay.clone();
        self.record.finish(&relay, 200);
    }
}

/// Bedrock's answer to a prefill for a model that takes none.
fn rejects_prefill(resp: &Response<Bytes>) -> bool {
    resp.status() == http::StatusCode::BAD_REQUEST
        && std::str::from_utf8(resp.body())
            .is_ok_and(|b| b.contains("does not support assistant message prefill"))
}
