//! The admin listener, separate from SDK traffic: `/metrics` (Prometheus text),
//! `/healthz` (200 while the process runs) and `/readyz` (200, then 503 once draining),
//! plus the [`Readiness`] flag it reports.

use crate::metrics::Metrics;
use crate::server::{self, Shutdown};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Whether the relay wants new traffic. Cloning shares the flag.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<AtomicBool>);

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// Ready.
    pub fn new() -> Self {
        Readiness(Arc::new(AtomicBool::new(true)))
    }

    /// From now on `/readyz` answers 503 (load balancers stop sending traffic).
    pub fn set_draining(&self) {
        self.0.store(false, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn text(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// The status page changes every second: never cached; it loads nothing from elsewhere.
fn no_store(mut resp: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    resp
}

/// Answer one admin request.
pub fn respond<B>(
    req: &Request<B>,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        );
    }
    match req.uri().path() {
        // The status page (`crate::status`): one self-contained page and its data.
        "/" => no_store(text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            crate::status::page(&metrics.status, metrics.status_gauges()),
        )),
        "/status.json" => no_store(text(
            StatusCode::OK,
            "application/json",
            crate::status::json(&metrics.status, metrics.status_gauges()).to_string(),
        )),
        "/metrics" => text(StatusCode::OK, PROMETHEUS_TEXT, metrics.render()),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" if readiness.is_ready() => text(StatusCode::OK, "text/plain", "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n"),
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// Serve the admin endpoints on `listener` until `shutdown`.
pub async fn serve_admin(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    shutdown: Shutdown,
) {
    let handler = move |req: Request<hyper::body::Incoming>| {
        let resp = respond(&req, &metrics, &readiness);
        async move { resp }
    };
    server::serve(listener, handler, shutdown, Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP/1.1 GET over a fresh loopback connection; returns (status, headers+body text).
    pub(crate) async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, out)
    }

    #[tokio::test]
    async fn endpoints_over_loopback() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        metrics.active_streams.set(3);
        let readiness = Readiness::new();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(serve_admin(
            listener,
            metrics.clone(),
            readiness.clone(),
            shutdown.clone(),
        ));

        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            body.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{body}"
        );
        assert!(body.contains("bedrock_relay_active_streams 3"), "{body}");
        assert_eq!(get(addr, "/healthz").await.0, 200);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        assert_eq!(get(addr, "/nope").await.0, 404);
        let (status, page) = get(addr, "/").await;
        assert_eq!(status, 200);
        assert!(
            page.contains("<title>bedrock-relay status</title>"),
            "{page}"
        );
        let (status, json) = get(addr, "/status.json").await;
        assert_eq!(status, 200);
        assert!(json.contains("\"streams_open\":3"), "{json}");

        readiness.set_draining();
        assert_eq!(get(addr, "/readyz").await.0, 503);
        assert_eq!(
            get(addr, "/healthz").await.0,
            200,
            "healthz stays 200 while draining"
        );

        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "listener closed"
        );
    }

    #[test]
    fn post_is_rejected() {
        let req = Request::post("/metrics").body(()).unwrap();
        let resp = respond(&req, &Metrics::new(), &Readiness::new());
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
