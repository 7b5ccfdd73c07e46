//! Phase 2 of a stream, one task per stream: forward every frame through the current
//! attempt's [`Splicer`], record it in the [`Transcript`], and on a fault climb the resume
//! ladder or end the stream with a typed exception. The client going away cancels it all.

use super::{is_eventstream, rejects_prefill};
use crate::eventstream::{self, Frame};
use crate::proxy::attempt::{Attempts, Failure};
use crate::proxy::body::{Batch, FrameSender, BATCH_BYTES};
use crate::proxy::frames::{classify, Classified, Fault, UpstreamFrames};
use crate::proxy::request::Outbound;
use crate::proxy::{Record, Relay};
use crate::resume::{plan, Divergence, Spliced, Splicer, StreamFormat, Transcript};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;

/// Phase 2 state, owned by the stream's task.
pub(super) struct Pump {
    relay: Arc<Relay>,
    outbound: Outbound,
    record: Record,
    attempts: Attempts,
    format: Option<StreamFormat>,
    model: String,
    tx: FrameSender,
    /// Frames for the client's next write (see [`Batch`]).
    out: Batch,
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
    pub(super) fn new(
        relay: Arc<Relay>,
        outbound: Outbound,
        record: Record,
        attempts: Attempts,
        format: Option<StreamFormat>,
        model: String,
        tx: FrameSender,
    ) -> Self {
        Pump {
            relay,
            outbound,
            record,
            attempts,
            format,
            model,
            tx,
            out: Batch::default(),
            resumes: 0,
            last_strategy: None,
        }
    }

    /// Before the response head is returned: put the first frame, if it is an event, into
    /// the client's body, so the client's connection writes head and first event at once
    /// instead of waiting for this task's first turn. `true`: it is there.
    pub(super) fn prime(&mut self, first: &Frame) -> bool {
        let primed =
            matches!(classify(first), Classified::Event) && self.tx.try_send(first.raw.clone());
        if primed {
            self.record.bytes_out += first.raw.len() as u64;
        }
        primed
    }

    /// Run the stream from its first frame; `primed`: [`Pump::prime`] already sent it, it
    /// only needs recording.
    pub(super) async fn run(mut self, mut frames: UpstreamFrames, first: Frame, primed: bool) {
        let limit = self.relay.settings.resume.max_transcript_bytes;
        let mut transcript = self.format.map(|f| Transcript::with_limit(f, limit));
        let mut splicer = self.format.map(Splicer::passthrough);
        let mut pending = None;
        if !primed {
            pending = Some(first);
        } else if let Some(t) = transcript.as_mut() {
            t.observe_frame(&first);
        }
        let mut fault_at: Option<Instant> = None;
        let end = loop {
            let next = match pending.take() {
                Some(frame) => Ok(Some(frame)),
                None => match frames.ready() {
                    Some(next) => next,
                    None => {
                        // Nothing more without waiting: what is gathered goes out now.
                        if !self.flush().await {
                            break End::ClientGone;
                        }
                        tokio::select! {
                            r = frames.next() => r,
                            _ = self.tx.closed() => break End::ClientGone,
                        }
                    }
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
            // A fault mid-stream: the client gets what it is owed, the fault is counted,
            // then the ladder is climbed.
            if !self.flush().await {
                break End::ClientGone;
            }
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
            // The client's output limit is used up: end the answer as Bedrock would.
            let limit_end = self
                .format
                .zip(transcript.as_ref())
                .and_then(|(f, t)| crate::resume::finish_at_limit(&f, &self.outbound.body, t));
            if let Some(end) = limit_end {
                for m in end {
                    if let Some(t) = transcript.as_mut() {
                        t.observe(&m);
                    }
                    self.send(eventstream::encode(&m)).await;
                }
                break End::Complete;
            }
            let client = self.tx.clone();
            let resumed = tokio::select! {
                // Boxed: a resume is rare, and inline its state would make every open
                // stream's task larger (4.6 KiB before).
                r = Box::pin(self.resume(&fault, transcript.as_mut())) => r,
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
        if !matches!(end, End::ClientGone) {
            self.flush().await;
        }
        self.finish(end);
    }

    /// Forward one upstream event (through the splicer, if resuming). `Ok(false)`: client gone.
    async fn forward(
        &mut self,
        frame: Frame,
        splicer: Option<&mut Splicer>,
        transcript: &mut Option<Transcript>,
    ) -> Result<bool, Divergence> {
        let Some(splicer) = splicer.filter(|s| !s.is_passthrough()) else {
            // The common case: the frame goes out as it came.
            if let Some(t) = transcript.as_mut() {
                t.observe_frame(&frame);
            }
            return Ok(self.send(frame.raw).await);
        };
        let message = frame.message();
        for item in splicer.accept(&message)? {
            let bytes = match item {
                Spliced::Unchanged => {
                    if let Some(t) = transcript.as_mut() {
                        t.observe(&message);
                    }
                    frame.raw.clone()
                }
                Spliced::Rewritten(m) => {
                    if let Some(t) = transcript.as_mut() {
                        t.observe(&m);
                    }
                    eventstream::encode(&m)
                }
            };
            if !self.send(bytes).await {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Queue bytes for the client; written at the next [`Pump::flush`], or now if the batch
    /// is full. `false`: the client has gone.
    async fn send(&mut self, bytes: Bytes) -> bool {
        self.record.bytes_out += bytes.len() as u64;
        self.out.push(bytes);
        self.out.len() < BATCH_BYTES || self.flush().await
    }

    /// Write what is queued. `false`: the client has gone.
    async fn flush(&mut self) -> bool {
        match self.out.take() {
            Some(bytes) => self.tx.send(bytes).await,
            None => true,
        }
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
