//! Upstream tests over real loopback sockets.

use super::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn settings(region: &str) -> Settings {
    Settings {
        region: region.into(),
        listen: "127.0.0.1:8790".parse().unwrap(),
        connect_timeout: Duration::from_secs(2),
        ..Settings::default()
    }
}

#[test]
fn regional_endpoints() {
    let u = Upstream::new(&settings("us-west-2")).unwrap();
    assert_eq!(
        u.base(Route::Runtime),
        "https://bedrock-runtime.us-west-2.amazonaws.com/"
    );
    assert_eq!(
        u.base(Route::AgentRuntime),
        "https://bedrock-agent-runtime.us-west-2.amazonaws.com/"
    );
    let mut s = settings("us-gov-west-1");
    s.fips = true;
    let u = Upstream::new(&s).unwrap();
    assert_eq!(
        u.base(Route::Runtime),
        "https://bedrock-runtime-fips.us-gov-west-1.amazonaws.com/"
    );
    let u = Upstream::new(&settings("cn-north-1")).unwrap();
    assert_eq!(
        u.base(Route::Runtime),
        "https://bedrock-runtime.cn-north-1.amazonaws.com.cn/"
    );
    assert!(matches!(
        Upstream::new(&settings("us east/1")),
        Err(UpstreamError::Endpoint(_))
    ));
}

#[test]
fn override_and_uri_join() {
    let mut s = settings("us-east-1");
    s.upstream = Some("http://127.0.0.1:9999/prefix/".parse().unwrap());
    let u = Upstream::new(&s).unwrap();
    let path = "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx/converse?a=b";
    let uri = u.uri_for(Route::Runtime, path).unwrap();
    assert_eq!(
        uri.to_string(),
        format!("http://127.0.0.1:9999/prefix{path}")
    );
    let uri = u.uri_for(Route::AgentRuntime, "/agents/a/x").unwrap();
    assert_eq!(
        uri.to_string(),
        "https://bedrock-agent-runtime.us-east-1.amazonaws.com/agents/a/x"
    );
}

#[test]
fn refuses_loop_to_own_listener() {
    for target in [
        "http://127.0.0.1:8790",
        "http://localhost:8790/",
        "http://[::1]:8790",
    ] {
        let mut s = settings("us-east-1");
        if target.contains("::1") {
            s.listen = "[::1]:8790".parse().unwrap();
        }
        s.upstream = Some(target.parse().unwrap());
        assert!(
            matches!(Upstream::new(&s), Err(UpstreamError::Loop(_))),
            "{target}"
        );
    }
    let mut s = settings("us-east-1");
    s.listen = "0.0.0.0:8790".parse().unwrap();
    s.agent_upstream = Some("http://127.0.0.1:8790".parse().unwrap());
    assert!(matches!(Upstream::new(&s), Err(UpstreamError::Loop(_))));
    let mut s = settings("us-east-1");
    s.upstream = Some("http://127.0.0.1:8799".parse().unwrap());
    assert!(Upstream::new(&s).is_ok());
}

fn req(addr: std::net::SocketAddr) -> http::Request<Bytes> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/model/m/converse"))
        .header("host", addr.to_string())
        .body(Bytes::from_static(b"{}"))
        .unwrap()
}

#[tokio::test]
async fn sends_over_http_and_reads_response() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-amzn-requestid: r1\r\n\r\nok")
            .await
            .unwrap();
        String::from_utf8_lossy(&got).to_string()
    });
    let u = Upstream::new(&settings("us-east-1")).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), u.send(req(addr)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-amzn-requestid"], "r1");
    let head = server.await.unwrap();
    assert!(
        head.starts_with("POST /model/m/converse HTTP/1.1"),
        "{head}"
    );
}

#[tokio::test]
async fn refused_connection_is_connect_kind() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let u = Upstream::new(&settings("us-east-1")).unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), u.send(req(addr)))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), FailureKind::Connect, "{e}");
    assert_eq!(e.retry_reason(), Some(crate::retry::RetryReason::Connect));
}

#[tokio::test]
async fn closed_before_response_is_reset_kind() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = sock.read(&mut buf).await;
        drop(sock);
    });
    let u = Upstream::new(&settings("us-east-1")).unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), u.send(req(addr)))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), FailureKind::Reset, "{e}");
}

#[tokio::test]
async fn silent_tls_peer_hits_connect_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(sock);
    });
    let mut s = settings("us-east-1");
    s.connect_timeout = Duration::from_millis(300);
    let u = Upstream::new(&s).unwrap();
    let mut r = req(addr);
    *r.uri_mut() = format!("https://{addr}/model/m/converse").parse().unwrap();
    let started = std::time::Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(5), u.send(r))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), FailureKind::ConnectTimeout, "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
    hold.abort();
}
