//! The body of a streamed response: frames pushed by the pump through a bounded channel.
//!
//! The channel holds at most [`DEPTH`] frames, so a slow client slows the upstream read
//! (back-pressure) instead of growing a buffer. When the client goes away the receiver
//! is dropped, [`FrameSender::closed`] resolves, and the pump cancels the upstream request.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Frames buffered between the pump and the client connection.
pub const DEPTH: usize = 32;

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
