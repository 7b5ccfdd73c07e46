//! Reading an upstream body as whole events of its wire, naming how it broke.
//!
//! Every wait is bounded by the stall timeout, with one timer per body pushed back before
//! each wait (moving a tokio timer later only records the new deadline, where a timer per
//! wait was an insert into and a removal from the timer wheel for every event). The
//! splitter holds at most one partial event; a partial event is never returned.

use super::fault::Interruption;
use super::wire::Splitter;
use bytes::Bytes;
use futures_util::FutureExt;
use http_body::Body;
use http_body_util::BodyExt;
use std::error::Error as StdError;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// A stall timeout too large to add to the clock: never.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// Whole events from one upstream response body.
pub(crate) struct Events<S, B> {
    body: B,
    splitter: S,
    stall: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S, B> Events<S, B>
where
    S: Splitter,
    B: Body<Data = Bytes> + Unpin,
    B::Error: StdError + 'static,
{
    pub(crate) fn new(body: B, stall: Duration) -> Self {
        Events {
            body,
            splitter: S::default(),
            stall,
            timer: None,
        }
    }

    /// The next whole event; `Ok(None)` at a clean end of the body.
    pub(crate) async fn next(&mut self) -> Result<Option<S::Event>, Interruption> {
        loop {
            if let Some(event) = self.splitter.next()? {
                return Ok(Some(event));
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

    /// The next whole event if one is here without waiting (already split, or in body data
    /// the connection has already read); `None` if getting it would mean waiting. Lets the
    /// pump pass on everything that is here as one write.
    pub(crate) fn ready(&mut self) -> Option<Result<Option<S::Event>, Interruption>> {
        loop {
            match self.splitter.next() {
                Ok(Some(event)) => return Some(Ok(Some(event))),
                Ok(None) => {}
                Err(fault) => return Some(Err(fault)),
            }
            let read = self.body.frame().now_or_never()?;
            if let Some(end) = self.take(read) {
                return Some(end);
            }
        }
    }

    /// Take one read of the body: data goes to the splitter (`None`: read on); the body's
    /// end or error ends the stream.
    fn take(
        &mut self,
        read: Option<Result<http_body::Frame<Bytes>, B::Error>>,
    ) -> Option<Result<Option<S::Event>, Interruption>> {
        match read {
            None => Some(self.splitter.end().map(|()| None)),
            Some(Err(e)) => Some(Err(body_fault(&e))),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    self.splitter.push(&data);
                }
                None
            }
        }
    }
}

/// How a body read failed: the connection closed before the body was complete (no chunked
/// terminator, an `UnexpectedEof`), or broke.
fn body_fault(e: &(dyn StdError + 'static)) -> Interruption {
    let eof = e
        .downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_incomplete_message)
        || e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof);
    if eof {
        Interruption::Eof(e.to_string())
    } else {
        Interruption::Reset(e.to_string())
    }
}
