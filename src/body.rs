//! Response bodies the relay sends to its clients: [`Body`], a whole one ([`full`]), and a
//! streamed one, frames pushed by the pump through a bounded channel ([`channel`]).
//!
//! The channel holds at most [`DEPTH`] frames, so a slow client slows the upstream read
//! (back-pressure) instead of growing a buffer. When the client goes away the receiver
//! is dropped, [`FrameSender::closed`] resolves, and the pump cancels the upstream request.
//! Each item is a [`Batch`] of whole frames.
//!
//! A streamed body ends cleanly only when the pump says so ([`FrameSender::finish`]). If
//! every sender is dropped without it (the pump panicked or was cancelled), the body ends
//! with an error, so the client's connection is cut instead of a silently short answer
//! looking complete.

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Body type of every response the relay sends to its clients.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A complete body.
pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Frames buffered between the pump and the client connection.
pub(crate) const DEPTH: usize = 32;

/// A write to the client is sent when nothing more is ready upstream or when this many
/// bytes are gathered, whichever comes first.
pub(crate) const BATCH_BYTES: usize = 64 * 1024;

/// Frames gathered for the client's next write: frames that arrive together leave together
/// (one channel send, one HTTP chunk, one socket write). A single frame is passed on as it
/// came, without a copy.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    one: Option<Bytes>,
    many: BytesMut,
}

impl Batch {
    pub fn push(&mut self, bytes: Bytes) {
        if self.many.is_empty() {
            match self.one.take() {
                None => {
                    self.one = Some(bytes);
                    return;
                }
                Some(first) => self.many.extend_from_slice(&first),
            }
        }
        self.many.extend_from_slice(&bytes);
    }

    pub fn len(&self) -> usize {
        self.one.as_ref().map_or(self.many.len(), Bytes::len)
    }

    /// Everything gathered, leaving the batch empty.
    pub fn take(&mut self) -> Option<Bytes> {
        self.one
            .take()
            .or_else(|| (!self.many.is_empty()).then(|| self.many.split().freeze()))
    }
}

/// The pump's end.
#[derive(Clone)]
pub struct FrameSender {
    tx: mpsc::Sender<Bytes>,
    finished: Arc<AtomicBool>,
}

/// The client's end, a `http_body::Body`.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    finished: Arc<AtomicBool>,
}

pub fn channel() -> (FrameSender, ChannelBody) {
    let (tx, rx) = mpsc::channel(DEPTH);
    let finished = Arc::new(AtomicBool::new(false));
    (
        FrameSender {
            tx,
            finished: finished.clone(),
        },
        ChannelBody { rx, finished },
    )
}

impl FrameSender {
    /// The stream is complete (or ended with its typed exception): once every sender is
    /// gone, the client's body ends cleanly. Without this call it ends with an error.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Release);
    }

    /// Queue bytes for the client; `false` if the client has gone.
    pub async fn send(&self, bytes: Bytes) -> bool {
        self.tx.send(bytes).await.is_ok()
    }

    /// Queue bytes without waiting; `false` if the channel is full or the client has gone.
    pub fn try_send(&self, bytes: Bytes) -> bool {
        self.tx.try_send(bytes).is_ok()
    }

    /// Resolves when the client has gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|opt| match opt {
            Some(b) => Some(Ok(Frame::data(b))),
            None if self.finished.load(Ordering::Acquire) => None,
            None => Some(Err(std::io::Error::other(
                "bedrock-relay: the stream ended without finishing",
            ))),
        })
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_passes_one_frame_on_and_joins_several_in_order() {
        let mut b = Batch::default();
        assert!(b.take().is_none());
        let one = Bytes::from_static(b"first");
        b.push(one.clone());
        assert_eq!(b.len(), 5);
        let taken = b.take().unwrap();
        assert_eq!(taken.as_ptr(), one.as_ptr(), "a lone frame is not copied");
        assert_eq!(b.len(), 0);
        for part in ["a", "bc", "def"] {
            b.push(Bytes::from(part));
        }
        assert_eq!(b.len(), 6);
        assert_eq!(&b.take().unwrap()[..], b"abcdef");
        assert!(b.take().is_none());
        b.push(Bytes::from_static(b"again"));
        assert_eq!(&b.take().unwrap()[..], b"again");
    }

    async fn drain(body: ChannelBody) -> (Vec<u8>, Option<std::io::Error>) {
        let mut body = std::pin::pin!(body);
        let mut got = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            match frame {
                Ok(f) => got.extend_from_slice(&f.into_data().unwrap()),
                Err(e) => return (got, Some(e)),
            }
        }
        (got, None)
    }

    #[tokio::test]
    async fn a_body_ends_cleanly_only_when_finished() {
        let (tx, rx) = channel();
        assert!(tx.send(Bytes::from_static(b"one")).await);
        tx.finish();
        drop(tx);
        let (got, err) = drain(rx).await;
        assert_eq!(got, b"one");
        assert!(err.is_none());

        // A sender dropped without finish (a panicking pump): the body ends in an error.
        let (tx, rx) = channel();
        let other = tx.clone();
        assert!(tx.send(Bytes::from_static(b"part")).await);
        drop(tx);
        drop(other);
        let (got, err) = drain(rx).await;
        assert_eq!(got, b"part");
        assert!(err.is_some(), "an unfinished stream must not end cleanly");
    }
}
