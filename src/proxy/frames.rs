//! Reading an upstream EventStream body as whole frames, and naming how it broke.
//!
//! Every read waits at most the stall timeout. The splitter holds at most one partial
//! frame (bounded by `eventstream::MAX_FRAME_LEN`); a partial frame is never forwarded.

use crate::eventstream::{self, Frame, FrameSplitter};
use crate::retry::{classify_exception, RetryReason};
use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// A stall timeout too large to add to the clock: never.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// How an upstream stream broke.
#[derive(Debug)]
pub enum Interruption {
    /// Connection reset or another transport error mid-body.
    Reset(String),
    /// The connection closed without finishing the HTTP body (no chunked terminator).
    Eof(String),
    /// The HTTP body ended cleanly but the stream's terminal events never came.
    Truncated,
    /// A frame failed its checksum or framing, or the body ended inside a frame.
    Corrupt(String),
    /// Nothing arrived within the stall timeout.
    Stall(Duration),
    /// A retryable in-stream exception; the frame is kept to forward if resumption fails.
    Exception {
        exception_type: String,
        frame: Frame,
    },
    /// An instructed continuation did not follow the continuation protocol (nothing of it
    /// reached the client): asked once more.
    Refused(String),
}

impl Interruption {
    /// Metric label (`bedrock_relay_stream_interruptions_total{reason}`).
    pub fn label(&self) -> &'static str {
        match self {
            Interruption::Reset(_) => "reset",
            Interruption::Eof(_) => "eof",
            Interruption::Truncated => "truncated",
            Interruption::Corrupt(_) => "corrupt_frame",
            Interruption::Stall(_) => "stall",
            Interruption::Exception { .. } => "exception",
            Interruption::Refused(_) => "continuation_refused",
        }
    }

    pub fn retry_reason(&self) -> RetryReason {
        match self {
            Interruption::Reset(_) | Interruption::Eof(_) => RetryReason::Reset,
            Interruption::Truncated => RetryReason::Truncated,
            Interruption::Corrupt(_) => RetryReason::CorruptFrame,
            Interruption::Stall(_) => RetryReason::Stall,
            Interruption::Exception { exception_type, .. } => {
                classify_exception(exception_type).unwrap_or(RetryReason::InStreamError)
            }
            Interruption::Refused(_) => RetryReason::InStreamError,
        }
    }

    /// What happened, for logs and the client's error message.
    pub fn describe(&self) -> String {
        match self {
            Interruption::Reset(e) => format!("connection to Bedrock reset mid-stream ({e})"),
            Interruption::Eof(e) => format!("connection to Bedrock closed mid-stream ({e})"),
            Interruption::Truncated => "Bedrock's stream ended before its terminal events".into(),
            Interruption::Corrupt(e) => format!("corrupt EventStream frame from Bedrock ({e})"),
            Interruption::Stall(d) => format!(
                "no event from Bedrock for {}",
                humantime::format_duration(*d)
            ),
            Interruption::Exception { exception_type, .. } => {
                format!("Bedrock sent {exception_type} mid-stream")
            }
            Interruption::Refused(e) => {
                format!("the continuation did not follow the continuation protocol ({e})")
            }
        }
    }
}

/// A frame's meaning for the pump.
pub enum FrameClass {
    /// A normal event.
    Event,
    /// A retryable in-stream exception (see [`classify_exception`]).
    Retryable(String),
    /// A non-retryable exception or unmodelled error: forwarded unchanged, then the stream ends.
    Final,
}

pub fn frame_class(frame: &Frame) -> FrameClass {
    match frame.kind() {
        eventstream::Kind::Event(_) => FrameClass::Event,
        eventstream::Kind::Exception(t) if classify_exception(t).is_some() => {
            FrameClass::Retryable(t.to_owned())
        }
        _ => FrameClass::Final,
    }
}

/// Whole frames from one upstream response body.
pub struct UpstreamFrames {
    body: Incoming,
    splitter: FrameSplitter,
    stall: Duration,
    /// One stall timer for the body, pushed back before each wait: moving a tokio timer
    /// later only records the new deadline, where a timer per wait was an insert into and
    /// a removal from the timer wheel for every frame.
    timer: Option<Pin<Box<Sleep>>>,
}

impl UpstreamFrames {
    pub fn new(body: Incoming, stall: Duration) -> Self {
        UpstreamFrames {
            body,
            splitter: FrameSplitter::new(),
            stall,
            timer: None,
        }
    }

    /// The next whole frame; `Ok(None)` at a clean end of the body.
    pub async fn next(&mut self) -> Result<Option<Frame>, Interruption> {
        loop {
            if let Some(frame) = self.buffered()? {
                return Ok(Some(frame));
            }
            let now = Instant::now();
            let deadline = now.checked_add(self.stall).unwrap_or(now + FAR_FUTURE);
            let timer = match &mut self.timer {
                Some(timer) => {
                    timer.as_mut().reset(deadline);
                    timer
                }
                none => none.insert(Box::pin(tokio::time::sleep_until(deadline))),
            };
            let read = tokio::select! {
                biased;
                read = self.body.frame() => read,
                () = timer.as_mut() => return Err(Interruption::Stall(self.stall)),
            };
            if let Some(end) = self.take(read) {
                return end;
            }
        }
    }

    /// The next whole frame if one is here without waiting (already buffered, or in body
    /// data the connection has already read); `None` if getting it would mean waiting.
    /// Lets the pump forward everything that is here as one write.
    pub fn ready(&mut self) -> Option<Result<Option<Frame>, Interruption>> {
        loop {
            match self.buffered() {
                Ok(Some(frame)) => return Some(Ok(Some(frame))),
                Ok(None) => {}
                Err(fault) => return Some(Err(fault)),
            }
            let read = self.body.frame().now_or_never()?;
            if let Some(end) = self.take(read) {
                return Some(end);
            }
        }
    }

    fn buffered(&mut self) -> Result<Option<Frame>, Interruption> {
        self.splitter
            .next_frame()
            .map_err(|e| Interruption::Corrupt(e.to_string()))
    }

    /// Take one read of the body: data goes to the splitter (`None`: read on); the body's
    /// end or error ends the stream.
    fn take(
        &mut self,
        read: Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>,
    ) -> Option<Result<Option<Frame>, Interruption>> {
        match read {
            None if self.splitter.pending() > 0 => Some(Err(Interruption::Corrupt(format!(
                "body ended inside a frame ({} bytes)",
                self.splitter.pending()
            )))),
            None => Some(Ok(None)),
            Some(Err(e)) if e.is_incomplete_message() => {
                Some(Err(Interruption::Eof(e.to_string())))
            }
            Some(Err(e)) => Some(Err(Interruption::Reset(e.to_string()))),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    self.splitter.push(&data);
                }
                None
            }
        }
    }
}
