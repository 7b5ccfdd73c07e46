//! Server tests over real loopback: HTTP/1.1 and h2c on one port, graceful drain.

use super::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use std::time::Duration;
use tokio::net::TcpStream;

/// Answers "<is h2> <path>" after sleeping `?sleep=MS`; reports each request's arrival on
/// `arrived` so tests wait for the server to hold a request instead of guessing a delay.
type BoxedResponse = std::pin::Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

fn slow_handler(
    arrived: tokio::sync::mpsc::UnboundedSender<String>,
) -> impl Fn(Request<Incoming>) -> BoxedResponse + Clone + Send + Sync + 'static {
    move |req: Request<Incoming>| {
        let arrived = arrived.clone();
        Box::pin(async move {
            let _ = arrived.send(req.uri().path().to_string());
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
        })
    }
}

/// Poll until connecting to `addr` is refused (the listener is closed), at most 3 s.
async fn wait_refused(addr: std::net::SocketAddr) -> bool {
    for _ in 0..60 {
        if TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
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

struct Running {
    addr: std::net::SocketAddr,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<DrainReport>,
    arrived: tokio::sync::mpsc::UnboundedReceiver<String>,
}

async fn start(drain: Duration) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let (tx, arrived) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(serve(listener, slow_handler(tx), shutdown.clone(), drain));
    Running {
        addr,
        shutdown,
        task,
        arrived,
    }
}

#[tokio::test]
async fn http1_and_h2c_on_one_port() {
    let Running {
        addr,
        shutdown,
        task,
        ..
    } = start(Duration::from_secs(1)).await;
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
    let Running {
        addr,
        shutdown,
        task,
        mut arrived,
    } = start(Duration::from_secs(10)).await;
    let in_flight = tokio::spawn(h1_get(addr, "/slow?sleep=800"));
    assert_eq!(arrived.recv().await.as_deref(), Some("/slow"));
    shutdown.trigger();
    assert!(
        wait_refused(addr).await,
        "new connections are refused while draining"
    );
    assert!(
        !in_flight.is_finished(),
        "still in flight while the listener is closed"
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
    let Running {
        addr,
        shutdown,
        task,
        mut arrived,
    } = start(Duration::from_millis(200)).await;
    let in_flight = tokio::spawn(h1_get(addr, "/stuck?sleep=30000"));
    assert_eq!(arrived.recv().await.as_deref(), Some("/stuck"));
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
    let Running {
        addr,
        shutdown,
        task,
        ..
    } = start(Duration::from_secs(1)).await;
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

/// The future hyper keeps a slot for, per connection, holds a box, not the handler's
/// future: an open stream must not carry the request path's state (memory per stream).
#[test]
fn the_service_future_hyper_keeps_is_small_however_large_the_handler() {
    let big = |n: u8| async move {
        let state = [n; 4096];
        tokio::task::yield_now().await;
        state[0]
    };
    assert!(std::mem::size_of_val(&big(1)) >= 4096);
    let future = call(&big, 7);
    assert!(
        std::mem::size_of_val(&future) <= 64,
        "{}",
        std::mem::size_of_val(&future)
    );
    let answered = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future);
    assert_eq!(answered, Ok(7));
}
