//! Phase 2 of a stream, for any [`Wire`]: the pump IS the client's response body. Each time
//! the client's connection asks for more, the pump takes the upstream events that are here
//! (waiting, within the stall timeout, only when none is), passes each through the heal step
//! ([`Heal::feed`]: splicer, tool-call hold, transcript) and hands what the client gets over
//! as one chunk. On a fault the client first gets what it is owed, then the resume ladder
//! ([`Resume`], run by the retry driver) fetches the rest from a new upstream request; when
//! that is impossible the client gets the wire's typed error ([`Wire::give_up`]), then a
//! clean end — never a torn event.
//!
//! No task and no channel per stream: the client's connection polls the pump, so a slow
//! client slows the upstream read (back-pressure) and a client that goes away drops the pump
//! and with it the upstream request. If the pump panics, the body ends with an error (the
//! client's connection is cut), never as a clean, silently short answer.

use super::give_up::GiveUp;
use super::reader::Events;
use super::resume::{policy, Resume, Resumed};
use super::wire::{Class, Wire};
use crate::body::{Batch, BATCH_BYTES};
use crate::proxy::attempt::Attempts;
use crate::proxy::count::before_continuation;
use crate::proxy::fault::Interruption;
use crate::proxy::outbound::Outbound;
use crate::proxy::{Record, Relay};
use crate::resume::{Codec, Heal, Stop, Strategy};
use crate::upstream::UpstreamBody;
use bytes::Bytes;
use futures_util::Stream;
use http_body::{Body, Frame, SizeHint};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use sync_wrapper::SyncWrapper;

/// How many times a cut is continued again after a continuation that did not follow the
/// continuation protocol (nothing of it reached the client), before the typed error.
pub(crate) const MAX_REASKS: u8 = 2;

/// How a stream ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Complete,
    ClientGone,
    Failed,
}

impl End {
    fn label(self) -> &'static str {
        match self {
            End::Complete => "complete",
            End::ClientGone => "client_gone",
            End::Failed => "failed",
        }
    }
}

/// Where the pump is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    /// What is gathered goes out, then the stream ends this way.
    Ending(End),
    /// The body is over.
    Done,
}

/// What the client gets next, gathered (see [`Batch`]) and counted.
#[derive(Default)]
struct Out {
    batch: Batch,
    bytes: u64,
}

impl Extend<Bytes> for Out {
    fn extend<I: IntoIterator<Item = Bytes>>(&mut self, iter: I) {
        for bytes in iter {
            self.bytes += bytes.len() as u64;
            self.batch.push(bytes);
        }
    }
}

/// Everything one open stream holds.
pub(super) struct Pump<W: Wire> {
    wire: W,
    relay: Arc<Relay>,
    outbound: Outbound,
    record: Record,
    attempts: Attempts,
    model: String,
    events: Events<W::Splitter, UpstreamBody>,
    /// How the stream is healed; `None`: events go out as they come and a fault after the
    /// first one ends the stream with the wire's typed error.
    heal: Option<Heal<W::Codec>>,
    /// The first event, not yet passed on.
    first: Option<W::Event>,
    /// A fault to handle once what is gathered has gone out.
    fault: Option<Interruption>,
    out: Out,
    state: State,
    resumes: u32,
    last_strategy: Option<Strategy>,
    /// Continuations that ignored the protocol, asked for again since the last cut.
    reasked: u8,
    /// The stream broke after bytes reached the client.
    interrupted: bool,
    /// An unhealed stream passed its API's terminal event.
    terminal: bool,
    /// When the last fault happened, until the client's next bytes (`resume_gap_seconds`).
    fault_at: Option<Instant>,
    /// The body must end with an error, not cleanly (not even an error event could be built).
    cut: bool,
}

/// A stream whose first event has arrived, with everything its pump needs.
pub(crate) struct Opened<W: Wire> {
    pub wire: W,
    pub events: Events<W::Splitter, UpstreamBody>,
    pub first: W::Event,
    pub outbound: Outbound,
    pub attempts: Attempts,
}

impl<W: Wire> Pump<W> {
    pub(super) fn new(relay: Arc<Relay>, opened: Opened<W>, record: Record) -> Self {
        let Opened {
            wire,
            events,
            first,
            outbound,
            attempts,
        } = opened;
        let model = record.model.clone().unwrap_or_default();
        let r = &relay.settings.resume;
        let heal = wire.codec(&model, &outbound.body).map(|(codec, format)| {
            let transcript = crate::resume::Transcript::with_limit(format, r.max_transcript_bytes);
            Heal::new(codec, transcript, r.hold_tool_use)
        });
        relay.metrics.active_streams.inc();
        Pump {
            wire,
            relay,
            outbound,
            record,
            attempts,
            model,
            events,
            heal,
            first: Some(first),
            fault: None,
            out: Out::default(),
            state: State::Running,
            resumes: 0,
            last_strategy: None,
            reasked: 0,
            interrupted: false,
            terminal: false,
            fault_at: None,
            cut: false,
        }
    }

    /// The client's next chunk: `None` once the stream is over, an error when its body must
    /// be cut.
    pub(super) async fn next_chunk(&mut self) -> Option<std::io::Result<Bytes>> {
        loop {
            match self.state {
                State::Done => return None,
                State::Ending(end) => {
                    if let Some(bytes) = self.out.batch.take() {
                        return Some(Ok(bytes));
                    }
                    self.finish(end);
                    return self.cut.then(|| {
                        Err(std::io::Error::other(
                            "bedrock-relay: the stream could not be ended with an error event",
                        ))
                    });
                }
                State::Running => {}
            }
            if let Some(fault) = self.fault.take() {
                // The client gets what it is owed before the ladder is climbed.
                if let Some(bytes) = self.out.batch.take() {
                    self.fault = Some(fault);
                    return Some(Ok(bytes));
                }
                // Boxed: a fault is rare, and inline its state would make every open
                // stream larger.
                Box::pin(self.on_fault(fault)).await;
                continue;
            }
            if self.out.batch.len() >= BATCH_BYTES {
                return self.out.batch.take().map(Ok);
            }
            let next = match self.first.take() {
                Some(event) => Ok(Some(event)),
                None => match self.events.ready() {
                    Some(next) => next,
                    None => {
                        // Nothing more without waiting: what is gathered goes out now.
                        if let Some(bytes) = self.out.batch.take() {
                            return Some(Ok(bytes));
                        }
                        self.events.next().await
                    }
                },
            };
            self.step(next);
        }
    }

    /// One read of the upstream stream: an event passed on, its end, or a fault.
    fn step(&mut self, next: Result<Option<W::Event>, Interruption>) {
        let unhealed_end = self.heal.is_none() && self.wire.ends_cleanly(self.terminal);
        let event = match next {
            Ok(Some(event)) => event,
            Ok(None) if unhealed_end || self.is_complete() => {
                return self.state = State::Ending(End::Complete)
            }
            Ok(None) => return self.fault = Some(Interruption::Truncated),
            // An unhealed stream broken after its terminal event is whole.
            Err(_) if self.heal.is_none() && self.terminal => {
                return self.state = State::Ending(End::Complete)
            }
            Err(fault) => return self.fault = Some(fault),
        };
        match W::class(&event) {
            Class::Event => {}
            Class::Retryable(exception_type) => {
                let raw = W::into_raw(event);
                return self.fault = Some(Interruption::Exception {
                    exception_type,
                    raw,
                });
            }
            Class::Final => {
                // Not retryable (e.g. validationException): the client gets it unchanged.
                self.out.extend(Some(W::into_raw(event)));
                return self.state = State::Ending(End::Failed);
            }
        }
        let before = self.out.bytes;
        let fed = match self.heal.as_mut() {
            None => {
                self.terminal |= self.wire.is_terminal(&event);
                self.out.extend(Some(W::into_raw(event)));
                Ok(())
            }
            Some(heal) => heal.feed(event, &mut self.out),
        };
        if self.out.bytes > before {
            // The pause the client saw: until the resumed stream's first bytes.
            if let Some(at) = self.fault_at.take() {
                let gap = at.elapsed().as_secs_f64();
                self.relay.metrics.resume_gap_seconds.observe(gap);
            }
        }
        match fed {
            // Terminal events delivered: the answer is whole, whatever the upstream
            // connection does next.
            Ok(()) if self.is_complete() => self.state = State::Ending(End::Complete),
            Ok(()) => {}
            Err(Stop::Upstream { error, raw }) => {
                self.fault = Some(Interruption::Exception {
                    exception_type: error.kind,
                    raw,
                })
            }
            Err(Stop::Refused(d)) if self.reasked < MAX_REASKS => {
                self.count_resume("refused");
                self.reasked += 1;
                // Nothing of it reached the client: not a resume that counts against
                // max_resumes.
                self.resumes = self.resumes.saturating_sub(1);
                self.fault = Some(Interruption::Refused(d.reason));
            }
            Err(Stop::Refused(last)) => {
                self.count_resume("refused");
                let times = MAX_REASKS + 1;
                self.fail(None, GiveUp::Refused { times, last });
            }
            Err(Stop::Diverged(d)) => {
                self.count_resume("diverged");
                let why = match self.last_strategy {
                    Some(Strategy::Instructed) => GiveUp::Restarted(d),
                    _ => GiveUp::Diverged(d),
                };
                self.fail(None, why);
            }
            Err(stop @ Stop::Encode(_)) => self.fail(None, GiveUp::Heal(stop)),
        }
    }

    /// A fault mid-stream (what was gathered has gone out): counted, then the answer is
    /// ended at the client's limit, or resumed, or ended with the typed error.
    async fn on_fault(&mut self, fault: Interruption) {
        if !matches!(fault, Interruption::Refused(_)) {
            self.reasked = 0;
        }
        tracing::info!(operation = self.record.operation.name(), model = %self.model, fault = %fault, "stream interrupted");
        let reason = fault.retry_reason();
        self.relay
            .metrics
            .stream_interruptions_total
            .with_label_values(&[fault.label()])
            .inc();
        self.attempts.record_late_failure(reason);
        self.record.ledger.fault = Some(fault.label());
        self.interrupted = true;
        self.fault_at = Some(Instant::now());
        let Some(heal) = self.heal.as_mut() else {
            self.count_resume("failed");
            return self.fail(Some(fault), GiveUp::NotResumable);
        };
        // A tool call the client has not received yet is dropped: the resumed answer
        // brings it again, whole.
        let usage = heal.fault();
        let input = usage.input.unwrap_or(0);
        self.record.ledger.failed_attempt(input, usage.output);
        let m = &self.relay.metrics.failed_attempt_tokens_total;
        m.with_label_values(&["input"]).inc_by(input);
        m.with_label_values(&["output"]).inc_by(usage.output);
        // The client's output limit is used up: end the answer as Bedrock would.
        match heal.finish_at_limit(&self.outbound.body, &mut self.out) {
            Ok(true) => return self.state = State::Ending(End::Complete),
            Ok(false) => {}
            Err(stop) => return self.fail(None, GiveUp::Heal(stop)),
        }
        match self.resume(&fault).await {
            Ok((events, splicer)) => {
                self.events = events;
                if let Some(heal) = self.heal.as_mut() {
                    heal.resumed(splicer);
                }
            }
            Err(why) => {
                self.count_resume("failed");
                self.fail(Some(fault), why);
            }
        }
    }

    /// Climb the ladder until a new upstream stream is open, or say why it cannot be.
    async fn resume(&mut self, fault: &Interruption) -> Result<Resumed<W>, GiveUp> {
        let heal = self.heal.as_mut().ok_or(GiveUp::NotResumable)?;
        let policy = policy(&self.relay, self.resumes, fault)?;
        // The continuation's limit: exact when what the client has can be counted.
        let limit_count = before_continuation(
            &self.relay,
            &self.outbound.body,
            &self.model,
            heal.codec().counted_format(),
            heal.transcript_mut(),
        )
        .await;
        let mut exchange = Resume::<W>::new(&self.relay, &self.outbound, &self.model, heal);
        let result = self.attempts.drive(&mut exchange, policy).await;
        self.last_strategy = exchange.strategy;
        let (strategy, label) = (self.last_strategy.map(Strategy::label), fault.label());
        match result {
            Ok(resumed) => {
                self.resumes += 1;
                self.record.strategy = strategy;
                let replay = self.last_strategy == Some(Strategy::Replay);
                self.record.limit_count = (!replay).then_some(limit_count);
                tracing::info!(model = %self.model, strategy = strategy.unwrap_or("-"), resume = self.resumes, "stream resumed");
                self.record
                    .otel
                    .resume(strategy, self.resumes, label, "resumed");
                Ok(resumed)
            }
            Err(failure) => {
                let n = self.resumes + 1;
                self.record.otel.resume(strategy, n, label, "failed");
                Err(GiveUp::not_resumed(failure))
            }
        }
    }

    /// End the stream with the wire's typed error (the upstream's own exception when that
    /// is what broke it and the client's SDK models it), or cut it when none can be built.
    fn fail(&mut self, fault: Option<Interruption>, why: GiveUp) {
        let what = fault
            .as_ref()
            .map(Interruption::describe)
            .unwrap_or_else(|| "stream could not be continued".into());
        let message = format!(
            "{what}; {why}. Attempts: {}, resumes: {}.",
            self.attempts.made(),
            self.resumes
        );
        tracing::warn!(operation = self.record.operation.name(), model = %self.model, %message, "stream failed");
        match self.wire.give_up(fault, &message) {
            Some(bytes) => self.out.extend(Some(bytes)),
            None => self.cut = true,
        }
        self.state = State::Ending(End::Failed);
    }

    fn is_complete(&self) -> bool {
        self.heal.as_ref().is_some_and(Heal::is_complete)
    }

    fn count_resume(&self, outcome: &str) {
        let strategy = self.last_strategy.map_or("none", Strategy::label);
        self.relay
            .metrics
            .stream_resumes_total
            .with_label_values(&[strategy, outcome])
            .inc();
    }

    /// Count and log the stream's end, once: the body is over.
    fn finish(&mut self, end: End) {
        if std::mem::replace(&mut self.state, State::Done) == State::Done {
            return;
        }
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
        let op = self.record.operation;
        let mut record = std::mem::replace(&mut self.record, Record::new(op, None));
        record.healed = match end {
            _ if !self.interrupted => None,
            End::Complete => Some(true),
            End::Failed => Some(false),
            End::ClientGone => None,
        };
        record.attempts = self.attempts.made();
        record.resumes = self.resumes;
        record.bytes_out = self.out.bytes;
        record.ledger.end = Some(end.label());
        if let Some(heal) = &self.heal {
            let transcript = heal.transcript();
            record.ledger.tokens = transcript.client_usage();
            record.otel.finish_reason(transcript.stop());
            if self.resumes > 0 {
                record.ledger.heal.input += transcript.continuation_overhead();
            }
        }
        record.finish(&self.relay, 200);
    }
}

impl<W: Wire> Drop for Pump<W> {
    /// The client's connection dropped the body before its end: the client went away (or
    /// the pump panicked, and its body was cut).
    fn drop(&mut self) {
        let end = match std::thread::panicking() {
            true => End::Failed,
            false => End::ClientGone,
        };
        self.finish(end);
    }
}

pin_project_lite::pin_project! {
    /// The pump as a response body: polled by the client's connection; a panic inside it is
    /// caught, logged and counted, and cuts the body.
    pub(super) struct PumpBody<S> {
        #[pin]
        chunks: SyncWrapper<S>,
        relay: Arc<Relay>,
        done: bool,
    }
}

impl<S> PumpBody<S> {
    pub(super) fn new(chunks: S, relay: Arc<Relay>) -> Self {
        PumpBody {
            chunks: SyncWrapper::new(chunks),
            relay,
            done: false,
        }
    }
}

impl<S> Body for PumpBody<S>
where
    S: Stream<Item = std::io::Result<Bytes>>,
{
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        let chunks = this.chunks.get_pin_mut();
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| chunks.poll_next(cx)));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(Some(Ok(bytes)))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Ok(Poll::Ready(Some(Err(e)))) => {
                *this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Ok(Poll::Ready(None)) => {
                *this.done = true;
                Poll::Ready(None)
            }
            Err(panic) => {
                *this.done = true;
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                this.relay.metrics.stream_panics_total.inc();
                tracing::error!(panic = %what, "stream pump panicked: client connection cut");
                Poll::Ready(Some(Err(std::io::Error::other(
                    "bedrock-relay: the stream ended without finishing",
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
