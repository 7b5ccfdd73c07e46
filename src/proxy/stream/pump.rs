//! Phase 2 of a stream, one task per stream: forward every frame through the current
//! attempt's [`Splicer`], record it in the [`Transcript`], and on a fault climb the resume
//! ladder (a [`Resume`] run by the retry driver) or end the stream with a typed exception.
//! The client going away cancels it all.

use super::resume::Resume;
use super::{ActiveStream, Client};
use crate::body::FrameSender;
use crate::eventstream::{self, Frame};
use crate::proxy::attempt::{Attempts, Failure};
use crate::proxy::frames::{frame_class, FrameClass, Interruption, UpstreamFrames};
use crate::proxy::outbound::Outbound;
use crate::proxy::{Record, Relay};
use crate::resume::{
    give_up_event, Observed, Offer, Spliced, Splicer, StreamFormat, ToolHold, Transcript,
};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;

/// Phase 2 state, owned by the stream's task.
pub(super) struct Pump {
    relay: Arc<Relay>,
    outbound: Outbound,
    record: Record,
    attempts: Attempts,
    model: String,
    client: Client,
    /// What makes the stream resumable (its format is known); `None`: frames go out as they
    /// come and a fault after the first frame ends the stream with a typed exception.
    resumable: Option<Resumable>,
    resumes: u32,
    last_strategy: Option<&'static str>,
    /// The stream broke after bytes reached the client.
    interrupted: bool,
    /// Continuations that ignored the protocol, asked for again since the last cut (at most
    /// `super::MAX_REASKS`).
    reasked: u8,
    _active: ActiveStream,
}

/// A resumable stream: what the client has, and how the current attempt is spliced on.
struct Resumable {
    format: StreamFormat,
    transcript: Transcript,
    splicer: Splicer,
    /// Tool-use blocks held until complete (`resume.hold_tool_use`).
    hold: Option<ToolHold>,
    /// The last CountTokens of what the client has (never twice for the same text).
    counted: crate::proxy::count::LastCount,
}

/// How a stream ended, for logs and metrics.
enum End {
    Complete,
    ClientGone,
    Failed,
}

/// Why a frame could not be forwarded.
enum Unforwardable {
    /// The replayed answer differs from what the client has.
    Diverged(String),
    /// An instructed continuation did not follow the protocol; nothing of it was sent.
    Refused(String),
    /// A rewritten frame cannot be encoded (an upstream header over the encoder's limits).
    Encode(String),
}

/// What a frame offered through the tool-call hold turns into.
enum Outgoing {
    Frame(Bytes),
    /// Held until its tool-use block is complete.
    Nothing,
    /// A tool-use block released whole, with each frame's event.
    Block(Vec<(Bytes, Observed)>),
}

impl Resumable {
    /// Offer a client-bound frame to the tool-call hold (when there is one); what is to go
    /// out now is recorded in the transcript.
    fn offer(&mut self, bytes: Bytes, event: Observed) -> Outgoing {
        match ToolHold::offer_through(self.hold.as_mut(), bytes, event) {
            Offer::Pass((bytes, event)) => {
                self.transcript.record(event);
                Outgoing::Frame(bytes)
            }
            Offer::Held => Outgoing::Nothing,
            Offer::Release(frames) => Outgoing::Block(frames),
        }
    }
}

// Every stream's task holds the largest state of any future it awaits, so what the common
// path awaits carries no parsed event (a few hundred bytes each), and rare paths are boxed.
impl Client {
    /// Send what the hold let out. `false`: the client has gone.
    async fn deliver(&mut self, r: &mut Resumable, out: Outgoing) -> bool {
        match out {
            Outgoing::Frame(bytes) => self.send(bytes).await,
            Outgoing::Nothing => true,
            Outgoing::Block(frames) => Box::pin(self.release(r, frames)).await,
        }
    }

    /// Send a released tool-use block, frame by frame; each is recorded as it goes out.
    async fn release(&mut self, r: &mut Resumable, frames: Vec<(Bytes, Observed)>) -> bool {
        for (bytes, event) in frames {
            r.transcript.record(event);
            if !self.send(bytes).await {
                return false;
            }
        }
        true
    }

    /// Forward one upstream event, through the splicer when resuming. `Ok(false)`: client gone.
    async fn forward(
        &mut self,
        frame: Frame,
        resumable: Option<&mut Resumable>,
    ) -> Result<bool, Unforwardable> {
        let Some(r) = resumable else {
            return Ok(self.send(frame.raw).await);
        };
        if !r.splicer.is_passthrough() {
            // Boxed: only a resumed attempt is spliced.
            return Box::pin(self.splice(frame, r)).await;
        }
        // The common case: the frame goes out as it came (once its tool call is whole).
        if r.hold.is_none() {
            r.transcript.observe_frame(&frame);
            return Ok(self.send(frame.raw).await);
        }
        let event = r.transcript.read_frame(&frame);
        let out = r.offer(frame.raw, event);
        Ok(self.deliver(r, out).await)
    }

    /// Forward one event of a resumed attempt through its splicer.
    async fn splice(&mut self, frame: Frame, r: &mut Resumable) -> Result<bool, Unforwardable> {
        let message = frame.message();
        let spliced = r.splicer.accept(&message).map_err(|d| {
            if d.reask {
                Unforwardable::Refused(d.reason)
            } else {
                Unforwardable::Diverged(d.to_string())
            }
        })?;
        for item in spliced {
            let (bytes, event) = match item {
                Spliced::Unchanged => (frame.raw.clone(), r.transcript.read(&message)),
                Spliced::Rewritten(m) => {
                    let bytes = eventstream::try_encode(&m)
                        .map_err(|e| Unforwardable::Encode(e.to_string()))?;
                    (bytes, r.transcript.read(&m))
                }
            };
            let out = r.offer(bytes, event);
            if !self.deliver(r, out).await {
                return Ok(false);
            }
        }
        Ok(true)
    }
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
        let limit = relay.settings.resume.max_transcript_bytes;
        let hold = relay.settings.resume.hold_tool_use;
        let resumable = format.map(|format| Resumable {
            format,
            transcript: Transcript::with_limit(format, limit),
            splicer: Splicer::passthrough(format),
            hold: hold.then(ToolHold::default),
            counted: Default::default(),
        });
        Pump {
            _active: ActiveStream::new(relay.clone()),
            relay,
            outbound,
            record,
            attempts,
            model,
            client: Client::new(tx),
            resumable,
            resumes: 0,
            last_strategy: None,
            interrupted: false,
            reasked: 0,
        }
    }

    /// Before the response head is returned: put the first frame, if it is an event, into
    /// the client's body, so the client's connection writes head and first event at once
    /// instead of waiting for this task's first turn. `true`: it is there.
    pub(super) fn prime(&mut self, first: &Frame) -> bool {
        let primed = matches!(frame_class(first), FrameClass::Event)
            && self.client.tx.try_send(first.raw.clone());
        if primed {
            self.client.bytes += first.raw.len() as u64;
        }
        primed
    }

    /// Run the stream from its first frame; `primed`: [`Pump::prime`] already sent it, it
    /// only needs recording.
    pub(super) async fn run(mut self, mut frames: UpstreamFrames, first: Frame, primed: bool) {
        let mut pending = None;
        if !primed {
            pending = Some(first);
        } else if let Some(r) = self.resumable.as_mut() {
            r.transcript.observe_frame(&first);
        }
        let mut fault_at: Option<Instant> = None;
        let end = loop {
            let next = match pending.take() {
                Some(frame) => Ok(Some(frame)),
                None => match frames.ready() {
                    Some(next) => next,
                    None => {
                        // Nothing more without waiting: what is gathered goes out now.
                        if !self.client.flush().await {
                            break End::ClientGone;
                        }
                        tokio::select! {
                            r = frames.next() => r,
                            _ = self.client.tx.closed() => break End::ClientGone,
                        }
                    }
                },
            };
            let fault = match next {
                Ok(Some(frame)) => match frame_class(&frame) {
                    FrameClass::Retryable(exception_type) => Interruption::Exception {
                        exception_type,
                        frame,
                    },
                    FrameClass::Final => {
                        // Not retryable (e.g. validationException): the client gets it unchanged.
                        self.client.send(frame.raw).await;
                        break End::Failed;
                    }
                    FrameClass::Event => {
                        match self.client.forward(frame, self.resumable.as_mut()).await {
                            Ok(true) => {
                                if let Some(at) = fault_at.take() {
                                    self.relay
                                        .metrics
                                        .resume_gap_seconds
                                        .observe(at.elapsed().as_secs_f64());
                                }
                                // Terminal events delivered: the answer is whole, whatever
                                // the upstream connection does next.
                                if self.is_complete() {
                                    break End::Complete;
                                }
                                continue;
                            }
                            Ok(false) => break End::ClientGone,
                            Err(Unforwardable::Diverged(divergence)) => {
                                self.count_resume("diverged");
                                let why = diverged(self.last_strategy, &divergence);
                                Box::pin(self.fail(None, &why)).await;
                                break End::Failed;
                            }
                            Err(Unforwardable::Refused(why))
                                if self.reasked < super::MAX_REASKS =>
                            {
                                self.count_resume("refused");
                                self.reasked += 1;
                                // Nothing of it reached the client: not a resume that counts
                                // against max_resumes.
                                self.resumes = self.resumes.saturating_sub(1);
                                Interruption::Refused(why)
                            }
                            Err(Unforwardable::Refused(why)) => {
                                self.count_resume("refused");
                                let why = format!("the continuation did not follow the continuation protocol, {} times ({why})", super::MAX_REASKS + 1);
                                Box::pin(self.fail(None, &why)).await;
                                break End::Failed;
                            }
                            Err(Unforwardable::Encode(e)) => {
                                let why = format!("an upstream event could not be re-framed ({e})");
                                Box::pin(self.fail(None, &why)).await;
                                break End::Failed;
                            }
                        }
                    }
                },
                Ok(None) if self.resumable.is_none() || self.is_complete() => break End::Complete,
                Ok(None) => Interruption::Truncated,
                Err(fault) => fault,
            };
            if !matches!(fault, Interruption::Refused(_)) {
                self.reasked = 0;
            }
            // A fault mid-stream: the client gets what it is owed, the fault is counted,
            // then the ladder is climbed.
            if !self.client.flush().await {
                break End::ClientGone;
            }
            super::count_interruption(&self.attempts, self.record.operation, &self.model, &fault);
            self.record.ledger.fault = Some(fault.label());
            self.interrupted = true;
            fault_at = Some(Instant::now());
            // A tool call the client has not received yet is dropped: the resumed answer
            // brings it again, whole.
            if let Some(hold) = self.resumable.as_mut().and_then(|r| r.hold.as_mut()) {
                hold.discard();
            }
            self.count_failed_attempt_tokens();
            // The client's output limit is used up: end the answer as Bedrock would.
            if Box::pin(self.finish_at_limit()).await {
                break End::Complete;
            }
            let client = self.client.tx.clone();
            let resumed = tokio::select! {
                // Boxed: a resume is rare, and inline its state would make every open
                // stream's task larger (4.6 KiB before).
                r = Box::pin(self.resume(&fault)) => r,
                _ = client.closed() => break End::ClientGone,
            };
            match resumed {
                Ok(next_frames) => frames = next_frames,
                Err(why) => {
                    self.count_resume("failed");
                    Box::pin(self.fail(Some(fault), &why)).await;
                    break End::Failed;
                }
            }
        };
        if !matches!(end, End::ClientGone) {
            self.client.close().await;
        }
        self.finish(end);
    }

    /// When the client's output limit is used up at a fault, send the terminal events
    /// Bedrock would have sent instead of resuming. `true`: the answer is complete.
    async fn finish_at_limit(&mut self) -> bool {
        let Some(r) = self.resumable.as_mut() else {
            return false;
        };
        let Some(end) =
            crate::resume::finish_at_limit(&r.format, &self.outbound.body, &r.transcript)
        else {
            return false;
        };
        for m in end {
            match eventstream::try_encode(&m) {
                Ok(bytes) => {
                    r.transcript.observe(&m);
                    if !self.client.send(bytes).await {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    }

    fn is_complete(&self) -> bool {
        self.resumable
            .as_ref()
            .is_some_and(|r| r.transcript.is_complete())
    }

    /// Climb the ladder until a new upstream stream is open, or say why it cannot be.
    async fn resume(&mut self, fault: &Interruption) -> Result<UpstreamFrames, String> {
        let Some(r) = self.resumable.as_mut() else {
            return Err("this stream's format cannot be resumed".into());
        };
        let policy = super::resume::policy(&self.relay, self.resumes, fault)?;
        // The continuation's limit: exact when what the client has can be counted.
        let limit_count = crate::proxy::count::before_continuation(
            &self.relay,
            &self.outbound.body,
            &self.model,
            Some(r.format),
            &mut r.transcript,
            &mut r.counted,
        )
        .await;
        let mut exchange = Resume::new(
            &self.relay,
            &self.outbound,
            &self.model,
            r.format,
            &mut r.transcript,
        );
        let result = self.attempts.drive(&mut exchange, policy).await;
        self.last_strategy = exchange.strategy.map(|s| s.label());
        match result {
            Ok((frames, splicer)) => {
                r.splicer = splicer;
                self.resumes += 1;
                self.record.strategy = self.last_strategy;
                self.record.limit_count =
                    (self.last_strategy != Some("replay")).then_some(limit_count);
                tracing::info!(model = %self.model, strategy = self.last_strategy.unwrap_or("-"), resume = self.resumes, "stream resumed");
                let (strategy, n) = (self.last_strategy, self.resumes);
                self.record
                    .otel
                    .resume(strategy, n, fault.label(), "resumed");
                Ok(frames)
            }
            Err(failure) => {
                let (strategy, n) = (self.last_strategy, self.resumes + 1);
                self.record
                    .otel
                    .resume(strategy, n, fault.label(), "failed");
                Err(why_not_resumed(failure))
            }
        }
    }

    /// End the stream with a typed exception the SDKs raise: the upstream's own retryable
    /// exception when that is what broke it, else `modelStreamErrorException`.
    async fn fail(&mut self, fault: Option<Interruption>, why: &str) {
        let what = fault
            .as_ref()
            .map(Interruption::describe)
            .unwrap_or_else(|| "stream could not be continued".into());
        tracing::warn!(model = %self.model, attempts = self.attempts.made(), resumes = self.resumes, %what, %why, "stream failed");
        let bytes = match fault {
            // The upstream's own exception, when the client's SDK models it for this
            // operation (ConverseStream has no modelTimeoutException).
            Some(Interruption::Exception {
                frame,
                exception_type,
            }) if self.record.operation != crate::ops::Operation::ConverseStream
                || exception_type != "modelTimeoutException" =>
            {
                Ok(frame.raw)
            }
            _ => eventstream::try_encode(&give_up_event(&format!(
                "{what}; {why}. Attempts: {}, resumes: {}.",
                self.attempts.made(),
                self.resumes
            ))),
        };
        match bytes {
            Ok(bytes) => {
                self.client.send(bytes).await;
            }
            // Not even the error frame can be built: leave the body unfinished, so the
            // client's connection is cut rather than ended as if complete.
            Err(e) => {
                tracing::error!(error = %e, "could not encode the give-up event");
                self.client.cut = true;
            }
        }
    }

    fn count_resume(&self, outcome: &str) {
        let strategy = self.last_strategy.unwrap_or("none");
        self.relay
            .metrics
            .stream_resumes_total
            .with_label_values(&[strategy, outcome])
            .inc();
    }

    fn count_failed_attempt_tokens(&mut self) {
        let Some(r) = &self.resumable else { return };
        let usage = r.transcript.attempt_usage_estimate();
        self.record
            .ledger
            .failed_attempt(usage.input.unwrap_or(0), usage.output);
        let m = &self.relay.metrics.failed_attempt_tokens_total;
        m.with_label_values(&["input"])
            .inc_by(usage.input.unwrap_or(0));
        m.with_label_values(&["output"]).inc_by(usage.output);
    }

    fn finish(mut self, end: End) {
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
        self.record.healed = match end {
            _ if !self.interrupted => None,
            End::Complete => Some(true),
            End::Failed => Some(false),
            End::ClientGone => None,
        };
        self.record.attempts = self.attempts.made();
        self.record.resumes = self.resumes;
        self.record.bytes_out = self.client.bytes;
        self.record.ledger.end = Some(match end {
            End::Complete => "complete",
            End::ClientGone => "client_gone",
            End::Failed => "failed",
        });
        if let Some(r) = &self.resumable {
            self.record.ledger.tokens = r.transcript.client_usage();
            self.record.otel.finish_reason(r.transcript.stop());
            if self.resumes > 0 {
                self.record.ledger.heal.input += r.transcript.continuation_overhead();
            }
        }
        let relay = self.relay.clone();
        self.record.finish(&relay, 200);
    }
}

/// What a divergence means for the client's error message: a replay that produced another
/// answer, or a continuation that restarted the answer differently.
pub(super) fn diverged(strategy: Option<&str>, divergence: &str) -> String {
    match strategy {
        Some("instructed") => format!(
            "the continuation restarted the answer and differed from what was already sent ({divergence})"
        ),
        _ => format!("the replayed answer diverged from what was already sent ({divergence})"),
    }
}

/// Why the driver could not open a resumed stream, for the client's error message.
pub(super) fn why_not_resumed(failure: Failure) -> String {
    let retryable = failure.retry_reason().is_some();
    let detail = match failure {
        Failure::Fatal(e) => return e.to_string(),
        Failure::Status { response, .. } => {
            format!("resume request refused with status {}", response.status())
        }
        Failure::Exception { frame, .. } => format!(
            "resume request answered with {}",
            match frame.kind() {
                eventstream::Kind::Exception(t) => t.to_owned(),
                _ => "an exception".into(),
            }
        ),
        Failure::Transport { detail, .. } => detail,
    };
    if retryable {
        format!(
            "{detail}; no attempt left (max_attempts, the retry budget or the request deadline)"
        )
    } else {
        detail
    }
}
