//! A response body from upstream, as the relay's request path reads it: hyper's, or (in unit
//! tests) a scripted one ([`Scripted`]), so the retry driver, the stream reader and the pump
//! run without sockets, in tokio's paused time.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// An error of any upstream body (hyper's, kept as the source).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body from upstream.
pub enum UpstreamBody {
    Hyper(Incoming),
    #[cfg(test)]
    Scripted(http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>),
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamBody::Hyper(body) => body.fmt(f),
            #[cfg(test)]
            UpstreamBody::Scripted(_) => f.write_str("Scripted"),
        }
    }
}

impl From<Incoming> for UpstreamBody {
    fn from(body: Incoming) -> Self {
        UpstreamBody::Hyper(body)
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BoxError::from))),
            #[cfg(test)]
            UpstreamBody::Scripted(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(body) => body.is_end_stream(),
            #[cfg(test)]
            UpstreamBody::Scripted(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Hyper(body) => body.size_hint(),
            #[cfg(test)]
            UpstreamBody::Scripted(body) => body.size_hint(),
        }
    }
}
