//! Server tests over real loopback: HTTP/1.1 and h2c on one port, graceful drain.

use super::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use std::time::Duration;
use tokio::net::TcpStream;

async fn slow_handler(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let ms: u64 = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("sleep="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Response::new(Full::new(Bytes::from(format!(
        "{} {}",
        req.version() == http::Version::HTTP_2,
        req.uri().path()
    ))))
}

async fn h1_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let stream = TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "x")
        .body(Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn start(
    drain: Duration,
) -> (
    std::net::SocketAddr,
    Shutdown,
    tokio::task::JoinHandle<DrainReport>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let task = tokio::spawn(serve(listener, slow_handler, shutdown.clone(), drain));
    (addr, shutdown, task)
}

#[tokio::test]
async fn http1_and_h2c_on_one_port() {
    let (addr, shutdown, task) = start(Duration::from_secs(1)).await;
    assert_eq!(h1_get(addr, "/a").await.unwrap(), (200, "false /a".into()));

    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://x/b")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"true /b");

    shutdown.trigger();
    let report = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.forced, 0);
}

#[tokio::test]
async fn drain_finishes_in_flight_and_refuses_new() {
    let (addr, shutdown, task) = start(Duration::from_secs(10)).await;
    let in_flight = tokio::spawn(h1_get(addr, "/slow?sleep=800"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    shutdown.trigger();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "new connections are refused while draining"
    );
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "false /slow"));
    let report = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.forced, 0);
}

#[tokio::test]
async fn drain_timeout_closes_stragglers() {
    let (addr, shutdown, task) = start(Duration::from_millis(200)).await;
    let in_flight = tokio::spawn(h1_get(addr, "/stuck?sleep=30000"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = std::time::Instant::now();
    shutdown.trigger();
    let report = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.forced, 1);
    assert!(started.elapsed() < Duration::from_secs(3));
    let result = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .unwrap()
        .unwrap();
    assert!(
        result.is_err(),
        "the stuck request is cut off, not answered"
    );
}

#[tokio::test]
async fn many_sequential_connections_are_reaped() {
    let (addr, shutdown, task) = start(Duration::from_secs(1)).await;
    for i in 0..20 {
        assert_eq!(
            h1_get(addr, &format!("/{i}")).await.unwrap(),
            (200, format!("false /{i}"))
        );
    }
    shutdown.trigger();
    let report = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        report.forced, 0,
        "closed connections are not counted as open"
    );
}
