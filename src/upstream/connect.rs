//! A connector wrapper that bounds the whole connect (TCP and TLS handshake) by the
//! connect timeout; hyper-util's `HttpConnector` timeout covers TCP only, so a peer that
//! accepts and then never answers the TLS handshake would otherwise hang an attempt.
//! Each connection it makes is numbered ([`super::tagged`]).

use super::tagged::Tagged;
use http::Uri;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Debug)]
pub(crate) struct ConnectTimeout<C> {
    inner: C,
    timeout: Duration,
}

impl<C> ConnectTimeout<C> {
    pub fn new(inner: C, timeout: Duration) -> Self {
        ConnectTimeout { inner, timeout }
    }
}

impl<C> tower::Service<Uri> for ConnectTimeout<C>
where
    C: tower::Service<Uri>,
    C::Future: Send + 'static,
    C::Response: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = Tagged<C::Response>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Tagged<C::Response>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let limit = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(result) => result.map(Tagged::new).map_err(Into::into),
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connect (TCP and TLS) took longer than {limit:?}"),
                )) as BoxError),
            }
        })
    }
}
