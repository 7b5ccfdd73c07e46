//! The EventStream pump: forwards whole frames, detects faults mid-stream, and resumes.
//!
//! Phase 1 ([`FirstFrame`], run by the retry driver in `proxy::relay_request`): attempts are
//! retried invisibly until the first whole frame arrives; the client has nothing yet, so its
//! response head is held back until then. An attempt whose first frame is a retryable
//! exception is retried too; when none is left, that exception goes to the client as Bedrock
//! sent it (HTTP 200 and the frame), so throttling stays throttling.
//! Phase 2 ([`start`], a supervised task per stream): every frame goes through the
//! [`Splicer`](crate::resume::Splicer) of the current attempt and is recorded in the
//! [`Transcript`](crate::resume::Transcript) once forwarded. On a fault the resume ladder
//! (`resume`, run by the same driver) fetches the rest from a new upstream request; when that
//! is impossible the client gets the upstream's own exception or a typed
//! `modelStreamErrorException`, then a clean end — never a torn frame. If the client goes
//! away the upstream request is dropped at once. If the pump panics, the client's body ends
//! with an error (its connection is cut), never as a clean, silently short answer.

mod pump;
mod resume;
mod sse;
mod sse_events;
mod sse_pump;
mod sse_resume;

pub(super) use sse::{start as start_sse, FirstEvent, SseOpened};

use super::attempt::{read_whole, Attempts, Exchange, Failure};
use super::frames::{frame_class, FrameClass, Interruption, UpstreamFrames};
use super::outbound::Outbound;
use super::{Body, Record, Relay};
use crate::body::{self, Batch, FrameSender, BATCH_BYTES};
use crate::eventstream::Frame;
use crate::resume::StreamFormat;
use crate::retry::classify_exception;
use bytes::Bytes;
use futures_util::FutureExt;
use http::response::Parts;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use pump::Pump;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

/// Phase 1: send the request until a first whole frame arrives.
pub(super) struct FirstFrame<'a> {
    outbound: &'a Outbound,
    stall: Duration,
    /// Cap on a response that turns out not to be a stream.
    max_body: usize,
}

/// What phase 1 got.
pub(super) enum First {
    /// Not a stream after all (some agent operations answer JSON): read whole.
    Whole(Response<Bytes>),
    /// The head, the rest of the body as frames, and the first frame.
    Stream(Parts, UpstreamFrames, Frame),
}

impl<'a> FirstFrame<'a> {
    pub(super) fn new(outbound: &'a Outbound, stall: Duration, max_body: usize) -> Self {
        FirstFrame {
            outbound,
            stall,
            max_body,
        }
    }
}

impl Exchange for FirstFrame<'_> {
    type Output = First;

    fn request(&mut self) -> Result<Request<Bytes>, Failure> {
        Ok(self.outbound.request())
    }

    async fn accept(
        &mut self,
        resp: Response<Incoming>,
        within: Duration,
    ) -> Result<First, Failure> {
        let (head, body) = resp.into_parts();
        if !is_eventstream(&head.headers) {
            // Not a stream after all (some agent operations answer JSON): read it whole.
            let bytes = read_whole(body, self.max_body, within).await?;
            return Ok(First::Whole(Response::from_parts(head, bytes)));
        }
        let mut frames = UpstreamFrames::new(body, self.stall);
        match frames.next().await {
            Ok(Some(frame)) => match frame_class(&frame) {
                FrameClass::Retryable(t) => Err(Failure::Exception {
                    head: Box::new(head),
                    retry: classify_exception(&t),
                    frame,
                }),
                _ => Ok(First::Stream(head, frames, frame)),
            },
            Ok(None) => Err(fault_failure(Interruption::Truncated)),
            Err(fault) => Err(fault_failure(fault)),
        }
    }
}

/// A stream whose first frame has arrived, with everything its pump needs.
pub(super) struct Opened {
    pub head: Parts,
    pub frames: UpstreamFrames,
    pub first: Frame,
    pub outbound: Outbound,
    pub attempts: Attempts,
}

/// Phase 2: answer the client with the stream's head and start its pump.
pub(super) fn start(relay: Arc<Relay>, opened: Opened, record: Record) -> Response<Body> {
    let Opened {
        head,
        frames,
        first,
        outbound,
        attempts,
    } = opened;
    let (tx, rx) = body::channel();
    let model = record.model.clone().unwrap_or_default();
    let format = StreamFormat::detect(record.operation, &model);
    let mut pump = Pump::new(relay.clone(), outbound, record, attempts, format, model, tx);
    let primed = pump.prime(&first);
    tokio::spawn(supervise(relay, pump.run(frames, first, primed)));
    Response::from_parts(stream_head(head), rx.boxed())
}

/// Run a pump; a panic in it is logged and counted. Its client's body then ends with an
/// error (the pump never called `finish`), and the active-stream gauge is put right by the
/// pump's guard, which unwinding drops. A combinator, not an `async fn`: an `async fn` would
/// keep the pump's state twice in every stream's task (its argument and the awaited future).
fn supervise(
    relay: Arc<Relay>,
    pump: impl std::future::Future<Output = ()>,
) -> impl std::future::Future<Output = ()> {
    AssertUnwindSafe(pump).catch_unwind().map(move |result| {
        let Err(panic) = result else { return };
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        relay.metrics.stream_panics_total.inc();
        tracing::error!(panic = %what, "stream pump panicked: client connection cut");
    })
}

/// The client's side of a stream: what is gathered for its next write, bytes sent.
pub(super) struct Client {
    tx: FrameSender,
    /// Frames or events for the client's next write (see [`Batch`]).
    out: Batch,
    bytes: u64,
    /// The body must end with an error, not cleanly (not even an error event could be built).
    cut: bool,
}

impl Client {
    fn new(tx: FrameSender) -> Self {
        Client {
            tx,
            out: Batch::default(),
            bytes: 0,
            cut: false,
        }
    }

    /// Queue bytes for the client; written at the next [`Client::flush`], or now if the
    /// batch is full. `false`: the client has gone.
    async fn send(&mut self, bytes: Bytes) -> bool {
        self.bytes += bytes.len() as u64;
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

    /// The stream is over: what is queued goes out, and the body ends cleanly unless it
    /// was cut.
    async fn close(&mut self) {
        self.flush().await;
        if !self.cut {
            self.tx.finish();
        }
    }
}

/// Counts the stream in `active_streams` while it lives, however its task ends (a panic
/// included).
struct ActiveStream(Arc<Relay>);

impl ActiveStream {
    fn new(relay: Arc<Relay>) -> Self {
        relay.metrics.active_streams.inc();
        ActiveStream(relay)
    }
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        self.0.metrics.active_streams.dec();
    }
}

/// A stream broke after bytes reached the client: logged, counted by reason, and recorded
/// as the late failure of its attempt.
/// How many times a cut is continued again after a continuation that did not follow the
/// continuation protocol (nothing of it reached the client), before the typed error.
pub(super) const MAX_REASKS: u8 = 2;

fn count_interruption(
    attempts: &Attempts,
    operation: crate::ops::Operation,
    model: &str,
    fault: &Interruption,
) {
    tracing::info!(operation = operation.name(), model = %model, fault = %fault.describe(), "stream interrupted");
    attempts
        .relay()
        .metrics
        .stream_interruptions_total
        .with_label_values(&[fault.label()])
        .inc();
    attempts.record_late_failure(fault.retry_reason());
}

/// The response head of a stream: framing headers go (hyper frames the body itself).
fn stream_head(mut head: Parts) -> Parts {
    for h in [
        http::header::CONTENT_LENGTH,
        http::header::TRANSFER_ENCODING,
        http::header::CONNECTION,
    ] {
        head.headers.remove(h);
    }
    head
}

fn is_eventstream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/vnd.amazon.eventstream"))
}

/// A fault before anything reached the client: retried like any failure (it is counted by
/// `upstream_attempts_total` and `retries_total`, not as a stream interruption).
fn fault_failure(fault: Interruption) -> Failure {
    Failure::Transport {
        reason: fault.retry_reason(),
        detail: fault.describe(),
    }
}
