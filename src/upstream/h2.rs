//! HTTP/2 towards Bedrock: the client settings behind `upstream_http2`.
//!
//! With h2 every stream to an endpoint shares one pooled connection (hyper-util's legacy
//! pool keeps one h2 connection per scheme and authority, and requests that arrive while it
//! is being set up wait for it instead of opening their own), so 10k open streams hold one
//! socket and one pair of connection buffers, not 10k. Streams beyond the server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` wait on that connection for a free slot; the
//! per-attempt `first_byte_timeout` bounds the wait. A reset of the connection breaks every
//! stream on it at once: each is then resumed on its own (jittered backoff, shared budget).
//!
//! Keep-alive pings while streams are open find a connection that died silently in
//! `KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT` instead of one stall timeout per stream. Flow
//! control windows are hyper's defaults: a window is a limit on unread data, not an
//! allocation, and the pump reads each stream as its frames arrive.

use crate::config::UpstreamHttp2;
use hyper_util::client::legacy::Builder;
use std::time::Duration;

/// Ping interval on an h2 connection with open streams.
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection counts as dead.
pub(crate) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Apply the h2 settings of `mode` to the client builder. ALPN (which protocols TLS
/// offers) is the connector's part, see `super::connector`.
pub(crate) fn configure(builder: &mut Builder, mode: UpstreamHttp2) {
    builder
        .http2_only(mode == UpstreamHttp2::Always)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .http2_keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .http2_keep_alive_while_idle(false);
}

#[cfg(test)]
mod tests {
    use super::super::{ConnectionId, Upstream};
    use crate::config::{Settings, UpstreamHttp2};
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// An h2c server (prior knowledge) that answers each request with its HTTP version and
    /// counts accepted connections.
    async fn h2c_server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let v = format!("{:?}", req.version());
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(v))))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    fn upstream(mode: UpstreamHttp2) -> Upstream {
        Upstream::new(&Settings {
            upstream_http2: mode,
            connect_timeout: Duration::from_secs(2),
            ..Settings::default()
        })
        .unwrap()
    }

    fn req(addr: std::net::SocketAddr) -> http::Request<Bytes> {
        http::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}/model/m/converse-stream"))
            .body(Bytes::from_static(b"{}"))
            .unwrap()
    }

    #[tokio::test]
    async fn always_speaks_h2c_and_multiplexes_on_one_connection() {
        let (addr, accepted) = h2c_server().await;
        let u = upstream(UpstreamHttp2::Always);
        let sends = (0..20).map(|_| {
            let u = u.clone();
            tokio::spawn(async move {
                let resp = u.send(req(addr)).await.unwrap();
                let id = *resp.extensions().get::<ConnectionId>().unwrap();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                (String::from_utf8(body.to_vec()).unwrap(), id)
            })
        });
        let mut ids = std::collections::HashSet::new();
        for s in sends.collect::<Vec<_>>() {
            let (version, id) = s.await.unwrap();
            assert_eq!(version, "HTTP/2.0");
            ids.insert(id);
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one shared h2 connection"
        );
        assert_eq!(ids.len(), 1, "every response names the one connection");
    }

    #[tokio::test]
    async fn auto_and_never_speak_http1_over_plain_http() {
        for mode in [UpstreamHttp2::Auto, UpstreamHttp2::Never] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let first = tokio::spawn(async move {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 256];
                let n = sock.read(&mut buf).await.unwrap();
                buf.truncate(n);
                buf
            });
            let u = upstream(mode);
            let _ = tokio::time::timeout(Duration::from_millis(500), u.send(req(addr))).await;
            let head = first.await.unwrap();
            assert!(
                head.starts_with(b"POST /model/m/converse-stream HTTP/1.1"),
                "{mode:?}"
            );
        }
    }

    /// A TLS server (the test certificate for 127.0.0.1) offering `alpn`, answering each
    /// request with its HTTP version; and the roots that trust it.
    async fn tls_server(alpn: &[&[u8]]) -> (std::net::SocketAddr, rustls::RootCertStore) {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");
        let cert = CertificateDer::from_pem_file(format!("{dir}/cert-a.pem")).unwrap();
        let key = PrivateKeyDer::from_pem_file(format!("{dir}/key-a.pem")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(sock).await else {
                        return;
                    };
                    let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                        let v = format!("{:?}", req.version());
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(v))))
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        (addr, roots)
    }

    #[tokio::test]
    async fn alpn_over_tls_prefers_h2_and_falls_back_to_http1() {
        let both: &[&[u8]] = &[b"h2", b"http/1.1"];
        let h1_only: &[&[u8]] = &[b"http/1.1"];
        for (offered, mode, want) in [
            (both, UpstreamHttp2::Auto, "HTTP/2.0"),
            (h1_only, UpstreamHttp2::Auto, "HTTP/1.1"),
            (both, UpstreamHttp2::Never, "HTTP/1.1"),
            (both, UpstreamHttp2::Always, "HTTP/2.0"),
        ] {
            let (addr, roots) = tls_server(offered).await;
            let settings = Settings {
                upstream_http2: mode,
                ..Settings::default()
            };
            let u = Upstream::with_roots(&settings, roots).unwrap();
            let mut r = req(addr);
            *r.uri_mut() = format!("https://{addr}/model/m/converse-stream")
                .parse()
                .unwrap();
            let resp = tokio::time::timeout(Duration::from_secs(5), u.send(r))
                .await
                .unwrap()
                .unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, want.as_bytes(), "{mode:?} against {offered:?}");
        }
    }

    #[tokio::test]
    async fn the_bidirectional_client_is_h2_whatever_the_mode() {
        let both: &[&[u8]] = &[b"h2", b"http/1.1"];
        for mode in [UpstreamHttp2::Auto, UpstreamHttp2::Never] {
            let (tls, roots) = tls_server(both).await;
            let (plain, _) = h2c_server().await;
            let settings = Settings {
                upstream_http2: mode,
                ..Settings::default()
            };
            let u = Upstream::with_roots(&settings, roots).unwrap();
            for uri in [format!("https://{tls}/m"), format!("http://{plain}/m")] {
                let body = Full::new(Bytes::from_static(b"event"))
                    .map_err(|never| match never {})
                    .boxed();
                let r = http::Request::post(&uri).body(body).unwrap();
                let resp = tokio::time::timeout(Duration::from_secs(5), u.bidi.send(r))
                    .await
                    .unwrap()
                    .unwrap();
                let got = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(got, "HTTP/2.0".as_bytes(), "{mode:?} {uri}");
            }
        }
    }
}
