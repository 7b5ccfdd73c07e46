//! Upstream connection ids: every connection the client opens is numbered, and each
//! response carries its connection's [`ConnectionId`] in its extensions (hyper-util copies
//! `Connected::extra` into every response on that connection).
//!
//! Why: over h2 hundreds of streams share one connection, and one reset of it breaks all of
//! them at once. The retry budget charges such a failure once per connection
//! (`RetryBudget::first_failure_of`), not once per stream, so a single reset cannot drain it.

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

/// The number of the upstream connection a response came on (unique in the process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u64);

static NEXT: AtomicU64 = AtomicU64::new(1);

impl ConnectionId {
    pub(crate) fn fresh() -> Self {
        ConnectionId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

pin_project_lite::pin_project! {
    /// A connection's IO with its id attached to what it reports as `Connected`.
    pub struct Tagged<T> {
        #[pin]
        inner: T,
        id: ConnectionId,
    }
}

impl<T> Tagged<T> {
    pub(crate) fn new(inner: T) -> Self {
        Tagged {
            inner,
            id: ConnectionId::fresh(),
        }
    }
}

impl<T: Connection> Connection for Tagged<T> {
    fn connected(&self) -> Connected {
        self.inner.connected().extra(self.id)
    }
}

impl<T: Read> Read for Tagged<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: Write> Write for Tagged<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
}
