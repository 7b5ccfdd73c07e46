//! Phase 2 of a Server-Sent Events stream, one task per stream: every upstream event is read
//! by the API's [`SseCodec`] into the resume core's messages, passed through the current
//! attempt's [`Splicer`], recorded in the [`Transcript`] and written back as the API's events.
//! On a fault (reset, EOF, truncation, stall, the upstream's error event) the ladder is
//! climbed ([`SseResume`], run by the retry driver) exactly as for EventStream; when it
//! cannot be, the client gets the error event its API defines, never a silent end.
//!
//! An SSE answer to an API the relay does not heal is forwarded event by event as it came.

use super::sse_events::{error_event, is_terminal, SseEvents};
use super::sse_resume::SseResume;
use super::{ActiveStream, Client};
use crate::proxy::attempt::Attempts;
use crate::proxy::frames::Interruption;
use crate::proxy::outbound::Outbound;
use crate::proxy::{Record, Relay};
use crate::resume::sse::{Read, SseCodec, FORMAT};
use crate::resume::{Splicer, ToolHold, Transcript};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::Instant;

/// What makes the stream healable: the API's codec and the core's state.
pub(super) struct Heal {
    codec: SseCodec,
    transcript: Transcript,
    splicer: Splicer,
    hold: Option<ToolHold>,
    /// The last CountTokens of what the client has (never twice for the same text).
    counted: crate::proxy::count::LastCount,
}

pub(super) struct SsePump {
    pub relay: Arc<Relay>,
    pub outbound: Outbound,
    pub record: Record,
    pub attempts: Attempts,
    pub model: String,
    pub client: Client,
    pub heal: Option<Heal>,
    pub resumes: u32,
    pub last_strategy: Option<&'static str>,
    /// The first event went into the body before the head (see [`SsePump::prime`]) but
    /// could not be queued; the task sends it first.
    pub unsent: Option<Bytes>,
    /// A stream the relay does not heal saw its API's terminal event in the first one.
    pub done: bool,
    /// The stream broke after bytes reached the client.
    pub interrupted: bool,
    pub _active: ActiveStream,
}

/// What a recovery from a fault gave.
enum Recovered {
    /// The resumed upstream stream.
    Stream(SseEvents),
    /// The relay ended the answer itself (the client's output limit is used up).
    Ended,
    ClientGone,
}

/// Why an event could not be forwarded.
enum Stop {
    /// An interruption to resume from.
    Fault(Interruption),
    /// Cannot go on: the client gets the error event with this reason.
    Fail(String),
}

impl Heal {
    pub(super) fn new(relay: &Relay, outbound: &Outbound, record: &Record) -> Option<Heal> {
        let mut codec = SseCodec::new(record.operation)?;
        codec.observe_request(&outbound.body);
        let r = &relay.settings.resume;
        Some(Heal {
            codec,
            transcript: Transcript::with_limit(FORMAT, r.max_transcript_bytes),
            splicer: Splicer::passthrough(FORMAT),
            hold: r.hold_tool_use.then(ToolHold::default),
            counted: Default::default(),
        })
    }

    /// The client's bytes for one upstream event (recorded in the transcript as released).
    fn feed(&mut self, raw: &Bytes) -> Result<Bytes, Stop> {
        let msgs = match self.codec.read(raw) {
            Ok(Read::Raw) => return Ok(raw.clone()),
            Ok(Read::Messages(msgs)) => msgs,
            Err(e) => {
                let body = serde_json::json!({"message": e.message}).to_string();
                let m = crate::eventstream::exception_with_body(&e.kind, body);
                return match crate::eventstream::Frame::check(crate::eventstream::encode(&m)) {
                    Ok(frame) => Err(Stop::Fault(Interruption::Exception {
                        exception_type: e.kind,
                        frame,
                    })),
                    Err(_) => Err(Stop::Fault(Interruption::Reset(e.message))),
                };
            }
        };
        let mut out = BytesMut::new();
        for msg in msgs {
            let spliced = self.splicer.accept(&msg).map_err(|d| {
                if d.reask {
                    Stop::Fault(Interruption::Refused(d.reason))
                } else {
                    Stop::Fail(format!(
                        "the replayed answer diverged from what was already sent ({d})"
                    ))
                }
            })?;
            for s in spliced {
                let m = s.into_message(&msg);
                let inner = SseCodec::inner(&m);
                let event = self.transcript.read(&m);
                // Held as the core event: written for the client only once released.
                for (inner, event) in ToolHold::offer_through(self.hold.as_mut(), inner, event) {
                    self.transcript.record(event);
                    out.extend_from_slice(&self.codec.write(&inner));
                }
            }
        }
        Ok(out.freeze())
    }
}

impl SsePump {
    /// Before the response head is returned: put what the client gets for the first event
    /// into its body, so head and first event are written at once. Returns the event when
    /// it is left to [`SsePump::run`] (an error event: the loop's business).
    pub(super) fn prime(&mut self, first: Bytes) -> Option<Bytes> {
        let bytes = match self.heal.as_mut() {
            None => {
                self.done = is_terminal(self.record.operation, &first);
                first
            }
            Some(h) => match h.feed(&first) {
                Ok(bytes) => bytes,
                Err(_) => return Some(first),
            },
        };
        if !bytes.is_empty() {
            self.client.bytes += bytes.len() as u64;
            if !self.client.tx.try_send(bytes.clone()) {
                // Not sent: the first write of the task sends it.
                self.client.bytes -= bytes.len() as u64;
                self.unsent = Some(bytes);
            }
        }
        None
    }

    /// Run the stream from its first event (`pending`: left by [`SsePump::prime`]).
    pub(super) async fn run(mut self, mut events: SseEvents, mut pending: Option<Bytes>) {
        let op = self.record.operation;
        if let Some(bytes) = self.unsent.take() {
            if !self.client.send(bytes).await {
                return self.finish("client_gone");
            }
        }
        let mut done = self.done;
        let mut fault_at: Option<Instant> = None;
        // A continuation that ignored the protocol is asked for again once per cut.
        let mut reasked = 0;
        let whole = |h: &Option<Heal>| h.as_ref().is_some_and(|h| h.transcript.is_complete());
        let failed = loop {
            // A primed first event may already have made the answer whole.
            if pending.is_none() && whole(&self.heal) {
                break None;
            }
            let next = match pending.take() {
                Some(event) => Ok(Some(event)),
                None => {
                    if !self.client.flush().await {
                        return self.finish("client_gone");
                    }
                    tokio::select! {
                        r = events.next() => r,
                        _ = self.client.tx.closed() => return self.finish("client_gone"),
                    }
                }
            };
            let fault = match (next, self.heal.as_mut()) {
                (Ok(Some(event)), None) => {
                    done |= is_terminal(op, &event);
                    if !self.client.send(event).await {
                        return self.finish("client_gone");
                    }
                    continue;
                }
                (Ok(Some(event)), Some(h)) => match h.feed(&event) {
                    Ok(bytes) => {
                        let sent = !bytes.is_empty();
                        if sent && !self.client.send(bytes).await {
                            return self.finish("client_gone");
                        }
                        // The pause the client saw: until the resumed stream's first bytes.
                        if let (true, Some(at)) = (sent, fault_at) {
                            fault_at = None;
                            let gap = at.elapsed().as_secs_f64();
                            self.relay.metrics.resume_gap_seconds.observe(gap);
                        }
                        if h.transcript.is_complete() {
                            break None;
                        }
                        continue;
                    }
                    Err(Stop::Fault(fault)) => fault,
                    Err(Stop::Fail(why)) => {
                        self.count_resume("diverged");
                        break Some(why);
                    }
                },
                (Ok(None), None) if done || !op.is_sse() => break None,
                (Err(_), None) if done => break None,
                (Ok(None), _) => Interruption::Truncated,
                (Err(fault), _) => fault,
            };
            if let Interruption::Refused(why) = &fault {
                self.count_resume("refused");
                if reasked >= super::MAX_REASKS {
                    let why = format!(
                        "the continuation did not follow the continuation protocol, {} times ({why})",
                        super::MAX_REASKS + 1
                    );
                    break Some(why);
                }
                reasked += 1;
                // Nothing of it reached the client: not a resume against max_resumes.
                self.resumes = self.resumes.saturating_sub(1);
            } else {
                reasked = 0;
            }
            super::count_interruption(&self.attempts, op, &self.model, &fault);
            self.record.ledger.fault = Some(fault.label());
            self.interrupted = true;
            if !self.client.flush().await {
                return self.finish("client_gone");
            }
            fault_at = Some(Instant::now());
            match self.recover(&fault).await {
                Ok(Recovered::Stream(next)) => events = next,
                Ok(Recovered::Ended) => break None,
                Ok(Recovered::ClientGone) => return self.finish("client_gone"),
                Err(why) => {
                    self.count_resume("failed");
                    break Some(format!("{}; {why}", fault.describe()));
                }
            }
        };
        if let Some(why) = &failed {
            let message = format!(
                "bedrock-relay: {why}. Attempts: {}, resumes: {}.",
                self.attempts.made(),
                self.resumes
            );
            tracing::warn!(operation = op.name(), model = %self.model, %message, "stream failed");
            match error_event(op, &message) {
                Some(event) => {
                    self.client.send(event).await;
                }
                None => self.client.cut = true,
            }
        }
        self.client.close().await;
        if failed.is_none() {
            self.attempts.succeeded();
            if self.resumes > 0 {
                self.count_resume("success");
            }
        }
        self.finish(if failed.is_none() {
            "complete"
        } else {
            "failed"
        });
    }

    /// After a fault: a resumed stream, the answer ended at the client's limit, or why
    /// there is none.
    async fn recover(&mut self, fault: &Interruption) -> Result<Recovered, String> {
        let Some(h) = self.heal.as_mut() else {
            return Err("this stream cannot be resumed".into());
        };
        // A tool call the client has not received is dropped: the resumed answer brings it.
        if let Some(hold) = h.hold.as_mut() {
            hold.discard();
        }
        let usage = h.transcript.attempt_usage_estimate();
        let m = &self.relay.metrics.failed_attempt_tokens_total;
        m.with_label_values(&["input"])
            .inc_by(usage.input.unwrap_or(0));
        m.with_label_values(&["output"]).inc_by(usage.output);
        self.record
            .ledger
            .failed_attempt(usage.input.unwrap_or(0), usage.output);
        if let Some(end) = h.codec.finish_at_limit(&self.outbound.body, &h.transcript) {
            for msg in end {
                let bytes = h.codec.write(&SseCodec::inner(&msg));
                h.transcript.observe(&msg);
                if !self.client.send(bytes).await {
                    return Ok(Recovered::ClientGone);
                }
            }
            return Ok(Recovered::Ended);
        }
        let policy = super::resume::policy(&self.relay, self.resumes, fault)?;
        // The continuation's limit: exact when what the client has can be counted (the
        // Anthropic Messages body is a Claude messages body; the OpenAI shapes are not).
        let counted_format =
            (self.record.operation == crate::ops::Operation::AnthropicMessages).then_some(FORMAT);
        let limit_count = crate::proxy::count::before_continuation(
            &self.relay,
            &self.outbound.body,
            &self.model,
            counted_format,
            &mut h.transcript,
            &mut h.counted,
        )
        .await;
        let mut exchange = SseResume::new(
            &self.relay,
            &self.outbound,
            &self.model,
            &mut h.codec,
            &mut h.transcript,
        );
        let client = self.client.tx.clone();
        let result = tokio::select! {
            r = Box::pin(self.attempts.drive(&mut exchange, policy)) => r,
            _ = client.closed() => return Ok(Recovered::ClientGone),
        };
        self.last_strategy = exchange.strategy.map(|s| s.label());
        match result {
            Ok((events, splicer)) => {
                h.splicer = splicer;
                self.resumes += 1;
                self.record.strategy = self.last_strategy;
                self.record.limit_count =
                    (self.last_strategy != Some("replay")).then_some(limit_count);
                tracing::info!(model = %self.model, strategy = self.last_strategy.unwrap_or("-"), resume = self.resumes, "stream resumed");
                let (strategy, n) = (self.last_strategy, self.resumes);
                self.record
                    .otel
                    .resume(strategy, n, fault.label(), "resumed");
                Ok(Recovered::Stream(events))
            }
            Err(failure) => {
                let (strategy, n) = (self.last_strategy, self.resumes + 1);
                self.record
                    .otel
                    .resume(strategy, n, fault.label(), "failed");
                Err(super::pump::why_not_resumed(failure))
            }
        }
    }

    fn count_resume(&self, outcome: &str) {
        self.relay
            .metrics
            .stream_resumes_total
            .with_label_values(&[self.last_strategy.unwrap_or("none"), outcome])
            .inc();
    }

    fn finish(mut self, end: &str) {
        if end == "client_gone" {
            self.relay.metrics.client_disconnects_total.inc();
        }
        self.record.healed = match end {
            _ if !self.interrupted => None,
            "complete" => Some(true),
            "failed" => Some(false),
            _ => None,
        };
        self.record.attempts = self.attempts.made();
        self.record.resumes = self.resumes;
        self.record.bytes_out = self.client.bytes;
        self.record.ledger.end = Some(match end {
            "complete" => "complete",
            "failed" => "failed",
            "client_gone" => "client_gone",
            _ => "other",
        });
        if let Some(h) = &self.heal {
            self.record.ledger.tokens = h.transcript.client_usage();
            self.record.otel.finish_reason(h.transcript.stop());
            if self.resumes > 0 {
                self.record.ledger.heal.input += h.transcript.continuation_overhead();
            }
        }
        let relay = self.relay.clone();
        self.record.finish(&relay, 200);
    }
}
