//! Reading an upstream body as whole events of its wire, naming how it broke.
//!
//! Every wait is bounded by the stall timeout, with one timer per body pushed back before
//! each wait (moving a tokio timer later only records the new deadline, where a timer per
//! wait was an insert into and a removal from the timer wheel for every event). The
//! splitter holds at most one partial event; a partial event is never returned.

use super::wire::Splitter;
use crate::proxy::fault::Interruption;
use crate::upstream::BoxError;
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
    B::Error: Into<BoxError>,
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
            Some(Err(e)) => Some(Err(body_fault(&*e.into()))),
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
fn body_fault(e: &(dyn StdError + Send + Sync + 'static)) -> Interruption {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventstream::{self, event, FrameSplitter};
    use crate::proxy::testing::{body, Step};
    use crate::upstream::UpstreamBody;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    const STALL: Duration = Duration::from_secs(30);

    fn frames() -> Vec<Bytes> {
        (0..4)
            .map(|i| eventstream::encode(&event("contentBlockDelta", format!("{{\"n\":{i}}}"))))
            .collect()
    }

    fn reader(steps: Vec<Step>) -> Events<FrameSplitter, UpstreamBody> {
        Events::new(body(steps, Arc::new(AtomicUsize::new(0))), STALL)
    }

    async fn drain(
        r: &mut Events<FrameSplitter, UpstreamBody>,
    ) -> (Vec<Bytes>, Option<Interruption>) {
        let mut got = Vec::new();
        loop {
            match r.next().await {
                Ok(Some(frame)) => got.push(frame.raw),
                Ok(None) => return (got, None),
                Err(fault) => return (got, Some(fault)),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn frames_split_at_every_byte_arrive_whole_and_in_order() {
        let whole = frames().concat();
        let steps = whole
            .iter()
            .map(|b| Step::Data(Bytes::from(vec![*b])))
            .collect();
        let (got, fault) = drain(&mut reader(steps)).await;
        assert_eq!(got, frames());
        assert!(fault.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn each_way_a_body_breaks_has_its_name() {
        let f = frames();
        let half = f[1].slice(..f[1].len() / 2);
        let cases = [
            (
                vec![Step::Data(f[0].clone()), Step::Data(half)],
                "corrupt_frame",
            ),
            (vec![Step::Data(f[0].clone()), Step::Reset], "reset"),
            (vec![Step::Data(f[0].clone()), Step::Eof], "eof"),
            (vec![Step::Data(f[0].clone()), Step::Hang], "stall"),
        ];
        for (steps, label) in cases {
            let (got, fault) = drain(&mut reader(steps)).await;
            assert_eq!(
                got,
                vec![f[0].clone()],
                "{label}: the whole frame before the fault"
            );
            assert_eq!(fault.map(|f| f.label()), Some(label));
        }
        let mut corrupt = f[0].to_vec();
        corrupt[20] ^= 1;
        let (got, fault) = drain(&mut reader(vec![Step::Data(corrupt.into())])).await;
        assert!(got.is_empty());
        assert_eq!(fault.map(|f| f.label()), Some("corrupt_frame"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_is_the_stall_timeout_after_the_last_bytes_whatever_came_before() {
        let f = frames();
        let steps = vec![
            Step::Data(f[0].clone()),
            Step::Wait(STALL - Duration::from_millis(1)),
            Step::Data(f[1].clone()),
            Step::Wait(STALL - Duration::from_millis(1)),
            Step::Data(f[2].clone()),
            Step::Hang,
        ];
        let mut r = reader(steps);
        let start = tokio::time::Instant::now();
        let (got, fault) = drain(&mut r).await;
        assert_eq!(got.len(), 3, "slow frames are not a stall");
        assert_eq!(fault.map(|f| f.label()), Some("stall"));
        assert_eq!(start.elapsed(), 3 * STALL - Duration::from_millis(2));
    }

    #[tokio::test(start_paused = true)]
    async fn ready_gives_what_is_here_and_never_waits() {
        let f = frames();
        let both = [f[0].clone(), f[1].clone()].concat();
        let steps = vec![
            Step::Data(both.into()),
            Step::Wait(STALL / 2),
            Step::Data(f[2].clone()),
        ];
        let mut r = reader(steps);
        let start = tokio::time::Instant::now();
        assert_eq!(r.ready().unwrap().unwrap().unwrap().raw, f[0]);
        assert_eq!(r.ready().unwrap().unwrap().unwrap().raw, f[1]);
        assert!(r.ready().is_none(), "the next frame needs a wait");
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(r.next().await.unwrap().unwrap().raw, f[2]);
        assert!(r.next().await.unwrap().is_none());
    }
}
