//! The body of a streamed response: frames pushed by the pump through a bounded channel.
//!
//! The channel holds at most [`DEPTH`] frames, so a slow client slows the upstream read
//! (back-pressure) instead of growing a buffer. When the client goes away the receiver
//! is dropped, [`FrameSender::closed`] resolves, and the pump cancels the upstream request.
//! Each item is a [`Batch`] of whole frames.

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Frames buffered between the pump and the client connection.
pub const DEPTH: usize = 32;

/// A write to the client is sent when nothing more is ready upstream or when this many
/// bytes are gathered, whichever comes first.
pub const BATCH_BYTES: usize = 64 * 1024;

/// Frames gathered for the client's next write: frames that arrive together leave together
/// (one channel send, one HTTP chunk, one socket write). A single frame is passed on as it
/// came, without a copy.
#[derive(Debug, Default)]
pub struct Batch {
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
pub struct FrameSender(mpsc::Sender<Bytes>);

/// The client's end, a `http_body::Body`.
pub struct ChannelBody(mpsc::Receiver<Bytes>);

pub fn channel() -> (FrameSender, ChannelBody) {
    let (tx, rx) = mpsc::channel(DEPTH);
    (FrameSender(tx), ChannelBody(rx))
}

impl FrameSender {
    /// Queue bytes for the client; `false` if the client has gone.
    pub async fn send(&self, bytes: Bytes) -> bool {
        self.0.send(bytes).await.is_ok()
    }

    /// Queue bytes without waiting; `false` if the channel is full or the client has gone.
    pub fn try_send(&self, bytes: Bytes) -> bool {
        self.0.try_send(bytes).is_ok()
    }

    /// Resolves when the client has gone.
    pub async fn closed(&self) {
        self.0.closed().await
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|opt| opt.map(|b| Ok(Frame::data(b))))
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
}
