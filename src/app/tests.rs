//! App tests: `serve_main` exit codes, and the full drain sequence over loopback with a
//! test handler (the proxy's handler is not part of this module).

use super::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn test_settings() -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        drain_timeout: Duration::from_secs(10),
        ..Settings::default()
    }
}

async fn raw_get(addr: SocketAddr, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn serve_main_returns_64_on_bad_config_without_binding() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let args = ServeArgs {
        listen: Some(format!("127.0.0.1:{port}")),
        region: Some("us-east-1".into()),
        stall_timeout: Some("soon".into()),
        max_attempts: Some("0".into()),
        ..Default::default()
    };
    let code = tokio::time::timeout(Duration::from_secs(10), serve_main(args))
        .await
        .unwrap();
    assert_eq!(code, EXIT_CONFIG);
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "port was not bound"
    );
}

#[tokio::test]
async fn check_validates_without_binding() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let args = ServeArgs {
        listen: Some(taken.local_addr().unwrap().to_string()),
        admin_listen: Some("127.0.0.1:0".into()),
        region: Some("us-east-1".into()),
        check: true,
        ..Default::default()
    };
    let code = tokio::time::timeout(Duration::from_secs(10), serve_main(args.clone()))
        .await
        .unwrap();
    assert_eq!(code, 0, "--check must not try to bind the (taken) port");
    let bad = ServeArgs {
        upstream: Some("not a url".into()),
        ..args
    };
    assert_eq!(serve_main(bad).await, EXIT_CONFIG);
}

#[tokio::test]
async fn start_with_signer_binds_port_zero_and_refuses_loop() {
    let signer = Signer::for_tests("AKID", "SECRET", None, "us-east-1");
    let h = start_with_signer(test_settings(), signer.clone())
        .await
        .unwrap();
    assert_ne!(h.addr.port(), 0);
    assert_ne!(h.admin_addr.port(), 0);
    assert_eq!(raw_get(h.admin_addr, "/healthz").await, 200);
    assert!(h.metrics.render().contains("bedrock_relay_build_info"));
    assert_eq!(
        h.metrics.retry_budget_tokens.get(),
        500,
        "gauge starts at the full bucket"
    );
    h.shutdown().await;

    // An upstream pointing at the relay's own (fixed) listen address is refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut s = test_settings();
    s.listen = format!("127.0.0.1:{port}").parse().unwrap();
    s.upstream = Some(format!("http://localhost:{port}").parse().unwrap());
    let err = start_with_signer(s, signer).await.unwrap_err();
    assert!(format!("{err:#}").contains("loop"), "{err:#}");
}

#[tokio::test]
async fn shutdown_turns_readiness_503_finishes_in_flight_and_refuses_new() {
    // The slow request announces its arrival and waits for `release`: no guessed delays.
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    let release = Arc::new(tokio::sync::Notify::new());
    let handler = {
        let release = release.clone();
        move |req: Request<Incoming>| {
            let (arrived_tx, release) = (arrived_tx.clone(), release.clone());
            async move {
                if req.uri().path() == "/slow" {
                    let _ = arrived_tx.send(());
                    release.notified().await;
                }
                Response::new(Full::new(Bytes::from_static(b"done")))
            }
        }
    };
    let h = start_with_handler(test_settings(), handler).await.unwrap();
    let (addr, admin) = (h.addr, h.admin_addr);
    assert_eq!(raw_get(admin, "/readyz").await, 200);

    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let in_flight = tokio::spawn(async move {
        let req = Request::get("/slow")
            .header("host", "x")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    });
    arrived.recv().await.unwrap();

    let draining = tokio::spawn(h.shutdown());
    let mut readyz = 0;
    for _ in 0..60 {
        readyz = raw_get(admin, "/readyz").await;
        if readyz == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(readyz, 503, "readiness turns 503 while draining");
    let mut refused = false;
    for _ in 0..60 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "new connections refused while draining");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !draining.is_finished(),
        "drain waits for the in-flight request"
    );
    assert!(!in_flight.is_finished());
    release.notify_one();

    let (status, body) = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"done");
    let report = tokio::time::timeout(Duration::from_secs(5), draining)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.forced, 0);
    assert!(
        TcpStream::connect(admin).await.is_err(),
        "admin stops after the drain"
    );
}
