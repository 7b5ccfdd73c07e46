//! Listeners and connection handling: an accept loop serving HTTP/1.1 and h2c on one port
//! (told apart by the h2 preface, or by ALPN under TLS, then served by hyper's own HTTP/1.1
//! or HTTP/2 server), and graceful shutdown: on [`Shutdown`], stop accepting (the listener
//! is closed, so new connections are refused), let in-flight requests finish for up to the
//! drain timeout, then close whatever is left.
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
use guard::Protocol;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::rt::bounds::Http2ServerConnExec;
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::{server::TlsStream, TlsAcceptor};

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
    let builders = Arc::new(Builders::new(&limits));
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    // A timer that fires every second keeps the runtime's timer driver from sleeping longer
    // than that. Each request's head is read under a new timer (hyper's header read
    // timeout); when the driver sleeps past its deadline, registering it wakes the driver
    // (an eventfd write and an extra `epoll_wait`, per request). One tick a second is cheaper.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

    loop {
        tokio::select! {
            _ = shutdown.triggered() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = tick.tick() => {}
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
                    call(&handler, req)
                });
                let conn = Conn {
                    builders: builders.clone(),
                    watcher: graceful.watcher(),
                    stop: shutdown.clone(),
                    first_bytes: limits.header_read_timeout,
                    peer,
                };
                // Two task types: a plain connection's task does not carry the size of a
                // TLS session's state.
                match limits.tls.clone() {
                    Some(acceptor) => conns.spawn(async move {
                        if let Some((tls, protocol)) = conn.handshake(acceptor, stream).await {
                            conn.serve(TokioIo::new(tls), protocol, service).await;
                        }
                    }),
                    None => conns.spawn(async move {
                        if let Some(protocol) = conn.sniff(&stream).await {
                            conn.serve(TokioIo::new(stream), protocol, service).await;
                        }
                    }),
                };
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

/// The service's future for one request: the handler's own future, boxed. hyper's HTTP/1.1
/// connection keeps a slot the size of the service's future for the connection's whole life,
/// also while a response body streams; boxed, that slot holds a pointer, and the handler's
/// large future (the whole request path, several KiB) is freed as soon as the response head
/// is out. This is most of what an open stream saves (BENCHMARKS.md, memory per open stream).
fn call<F, Fut, Req>(handler: &F, req: Req) -> impl Future<Output = Result<Fut::Output, Infallible>>
where
    F: Fn(Req) -> Fut,
    Fut: Future,
{
    let handled = Box::pin(handler(req));
    async move { Ok(handled.await) }
}

/// hyper's HTTP/1.1 and HTTP/2 servers, configured once per listener. The protocol is
/// decided before a connection is handed over (the h2 preface, or ALPN), so a connection
/// holds only its own protocol's state.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(limits: &Limits) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192));
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        Builders { http1, http2 }
    }
}

/// One accepted connection, before its protocol is known.
struct Conn {
    builders: Arc<Builders>,
    watcher: Watcher,
    stop: Shutdown,
    /// The client's first bytes (or its TLS handshake) must arrive within this.
    first_bytes: Duration,
    peer: SocketAddr,
}

impl Conn {
    /// A plain-text connection's protocol: h2c if it starts with the HTTP/2 preface, else
    /// HTTP/1.1. Nothing else bounds the wait for a client's first bytes: a client that
    /// connects and sends nothing (or a few bytes of the preface) is closed after the header
    /// read timeout. `None`: closed.
    async fn sniff(&self, stream: &TcpStream) -> Option<Protocol> {
        let sniffed = tokio::select! {
            r = tokio::time::timeout(self.first_bytes, guard::sniff(stream)) => r,
            _ = self.stop.triggered() => return None,
        };
        let protocol = sniffed.ok().flatten();
        if protocol.is_none() {
            tracing::debug!(peer = %self.peer, "no request within header_read_timeout; closing");
        }
        protocol
    }

    /// A TLS connection after its handshake (within the header read timeout), with the
    /// protocol ALPN chose. `None`: closed.
    async fn handshake(
        &self,
        acceptor: TlsAcceptor,
        stream: TcpStream,
    ) -> Option<(TlsStream<TcpStream>, Protocol)> {
        let handshake = tokio::select! {
            r = tokio::time::timeout(self.first_bytes, acceptor.accept(stream)) => r,
            _ = self.stop.triggered() => return None,
        };
        let Ok(Ok(stream)) = handshake else {
            tracing::debug!(peer = %self.peer, "TLS handshake failed or timed out; closing");
            return None;
        };
        let protocol = match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        };
        Some((stream, protocol))
    }

    /// Serve the connection until it closes, or until a graceful shutdown closes it.
    async fn serve<I, S, B>(self, io: I, protocol: Protocol, service: S)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        S: HttpService<Incoming, ResBody = B> + Send + 'static,
        S::Error: Into<Box<dyn StdError + Send + Sync>>,
        B: Body + Send + 'static,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
        TokioExecutor: Http2ServerConnExec<S::Future, B>,
    {
        let b = &self.builders;
        let result = match protocol {
            Protocol::Http1 => {
                self.watcher
                    .watch(b.http1.serve_connection(io, service))
                    .await
            }
            // Boxed: an HTTP/2 connection's state is larger, and rarer on this listener.
            Protocol::Http2 => {
                Box::pin(self.watcher.watch(b.http2.serve_connection(io, service))).await
            }
        };
        if let Err(e) = result {
            tracing::debug!(peer = %self.peer, error = %e, "connection ended with error");
        }
    }
}

#[cfg(test)]
mod tests;
