//! Listeners and connection handling: an accept loop serving HTTP/1.1 and h2c on one port
//! (hyper-util's auto builder), and graceful shutdown: on [`Shutdown`], stop accepting
//! (the listener is closed, so new connections are refused), let in-flight requests finish
//! for up to the drain timeout, then close whatever is left.
//!
//! Hardening ([`Limits`]): a client must send its first bytes, and then each request head,
//! within the header read timeout (slowloris; the same timer bounds idle keep-alive
//! connections), and a request head may not exceed the header size limit (HTTP/1.1 answers
//! 431; HTTP/2's header list is capped the same). Each request carries the connection's
//! [`PeerAddr`](crate::inbound::PeerAddr) for per-client limits. With [`Limits::tls`] the
//! listener speaks TLS (`tls`), the protocol chosen by ALPN.
//!
//! Generic over the request handler so that tests and the admin listener use it too.

mod guard;
mod shutdown;
pub mod tls;

pub use guard::Limits;
pub use shutdown::Shutdown;

use crate::inbound::PeerAddr;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// What happened during a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainReport {
    /// Connections still open when the drain timeout ran out (closed forcibly).
    pub forced: usize,
}

/// Serve `listener` with `handler` until `shutdown`, then drain for up to `drain_timeout`.
/// Returns when every connection is closed. Default [`Limits`].
pub async fn serve<F, Fut, B>(
    listener: TcpListener,
    handler: F,
    shutdown: Shutdown,
    drain_timeout: Duration,
) -> DrainReport
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    serve_with(
        listener,
        handler,
        shutdown,
        drain_timeout,
        Limits::default(),
    )
    .await
}

/// [`serve`] with explicit listener [`Limits`].
pub async fn serve_with<F, Fut, B>(
    listener: TcpListener,
    handler: F,
    shutdown: Shutdown,
    drain_timeout: Duration,
    limits: Limits,
) -> DrainReport
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();

    loop {
        tokio::select! {
            _ = shutdown.triggered() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    let h = handler.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                let builder = builder.clone();
                let watcher = graceful.watcher();
                let stop = shutdown.clone();
                let first_bytes = limits.header_read_timeout;
                let tls = limits.tls.clone();
                conns.spawn(async move {
                    if let Some(acceptor) = tls {
                        let handshake = tokio::select! {
                            r = tokio::time::timeout(first_bytes, acceptor.accept(stream)) => r,
                            _ = stop.triggered() => return,
                        };
                        let Ok(Ok(stream)) = handshake else {
                            tracing::debug!(%peer, "TLS handshake failed or timed out; closing");
                            return;
                        };
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(&b"h2"[..]);
                        let builder = if h2 { builder.http2_only() } else { builder.http1_only() };
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
                        if let Err(e) = watcher.watch(conn.into_owned()).await {
                            tracing::debug!(%peer, error = %e, "TLS connection ended with error");
                        }
                        return;
                    }
                    // hyper-util sniffs the protocol before hyper's own header timer runs,
                    // with no deadline: a client that connects and sends nothing (or a
                    // few bytes) is closed here after the header read timeout.
                    let sniffed = tokio::select! {
                        r = tokio::time::timeout(first_bytes, guard::preface_decided(&stream)) => r,
                        _ = stop.triggered() => return,
                    };
                    if !matches!(sniffed, Ok(true)) {
                        tracing::debug!(%peer, "no request within header_read_timeout; closing");
                        return;
                    }
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, error = %e, "connection ended with error");
                    }
                });
            }
        }
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(open_connections = open, ?drain_timeout, "draining");
    let forced = tokio::select! {
        _ = graceful.shutdown() => 0,
        _ = tokio::time::sleep(drain_timeout) => {
            let n = conns.len();
            tracing::warn!(connections = n, "drain timeout; closing remaining connections");
            n
        }
    };
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    DrainReport { forced }
}

#[cfg(test)]
mod tests;
