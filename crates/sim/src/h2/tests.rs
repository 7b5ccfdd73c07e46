//! The simulator over h2c: same answers as HTTP/1.1, faults per stream, the connection reset.
//! The client is hyper-util's pooled client (the one the relay's upstream is built on), over
//! HTTP/1.1 or h2c with prior knowledge.

use crate::{self as sim, FaultRule, SimConfig};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// A pooled client, HTTP/1.1 or (`http2`) h2c only.
struct Upstream(Client<HttpConnector, Full<Bytes>>);

impl Upstream {
    async fn send(
        &self,
        req: http::Request<Bytes>,
    ) -> Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        self.0.request(req.map(Full::new)).await
    }
}

fn client(http2: bool) -> Upstream {
    Upstream(
        Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .build_http(),
    )
}

fn converse_stream(base: &str, text: &str) -> http::Request<Bytes> {
    let body = serde_json::json!({"messages": [{"role": "user", "content": [{"text": text}]}]});
    http::Request::builder()
        .method("POST")
        .uri(format!("{base}/model/amazon.nova-pro-v1:0/converse-stream"))
        .header("content-type", "application/json")
        .body(Bytes::from(body.to_string()))
        .unwrap()
}

/// Status, HTTP version and the whole body, or the error that ended the body.
async fn fetch(
    u: &Upstream,
    req: http::Request<Bytes>,
) -> (u16, http::Version, Result<Bytes, String>) {
    let resp = tokio::time::timeout(Duration::from_secs(10), u.send(req))
        .await
        .unwrap()
        .unwrap();
    let (status, version) = (resp.status().as_u16(), resp.version());
    let body = resp.into_body().collect().await;
    (
        status,
        version,
        body.map(|c| c.to_bytes()).map_err(|e| e.to_string()),
    )
}

#[tokio::test]
async fn h2c_answers_byte_identical_to_http1_and_logs_connections() {
    let sim = sim::start(SimConfig::default()).await.unwrap();
    let (h1, h2) = (client(false), client(true));
    let text = "why is the sky blue sim:len=30";
    let (s1, v1, b1) = fetch(&h1, converse_stream(&sim.url(), text)).await;
    let (s2, v2, b2) = fetch(&h2, converse_stream(&sim.url(), text)).await;
    assert_eq!((s1, v1), (200, http::Version::HTTP_11));
    assert_eq!((s2, v2), (200, http::Version::HTTP_2));
    let (b1, b2) = (b1.unwrap(), b2.unwrap());
    assert!(b1.len() > 1000);
    assert_eq!(b1, b2, "same frames over both protocols");
    let (_, _, b3) = fetch(&h2, converse_stream(&sim.url(), "other sim:len=5")).await;
    assert!(b3.is_ok());
    let log = sim.log();
    let conns: Vec<u64> = log.iter().map(|e| e.connection).collect();
    assert_eq!(conns[1], conns[2], "h2 requests share one connection");
    assert_ne!(conns[0], conns[1], "HTTP/1.1 came on its own connection");
    let (status, _, body) = fetch(
        &h2,
        http::Request::get(format!("{}/_sim/health", sim.url()))
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body.unwrap()),
        (200, Bytes::from(r#"{"status":"ok"}"#))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_stream_fault_resets_only_its_stream() {
    let sim = sim::start(SimConfig {
        inter_token: Duration::from_millis(2),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    for spec in [
        "reset_after_events:events=3@tag=cut",
        "truncate:events=3@tag=short",
        "status:code=429@tag=busy",
        "reset_before_headers@tag=early",
    ] {
        sim.add_rule(FaultRule::parse_spec(spec).unwrap());
    }
    let u = client(true);
    let base = sim.url();
    let whole = fetch(&u, converse_stream(&base, "fine sim:len=20"));
    let cut = fetch(&u, converse_stream(&base, "x sim:tag=cut sim:len=20"));
    let short = fetch(&u, converse_stream(&base, "y sim:tag=short sim:len=20"));
    let busy = fetch(&u, converse_stream(&base, "z sim:tag=busy"));
    let (whole, cut, short, busy) = tokio::join!(whole, cut, short, busy);
    assert!(
        whole.2.is_ok(),
        "the neighbour stream completes: {:?}",
        whole.2
    );
    assert!(cut.2.is_err(), "RST_STREAM ends the body with an error");
    let short = short.2.unwrap();
    assert!(!short.is_empty() && short.len() < whole.2.unwrap().len() / 2);
    assert_eq!(busy.0, 429);
    let early = tokio::time::timeout(
        Duration::from_secs(5),
        u.send(converse_stream(&base, "w sim:tag=early")),
    )
    .await
    .unwrap();
    assert!(early.is_err(), "reset before headers: no response");
    let conns: std::collections::HashSet<u64> = sim.log().iter().map(|e| e.connection).collect();
    assert_eq!(
        conns.len(),
        1,
        "every stream on one connection, which survived"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn connection_reset_breaks_every_open_stream() {
    let sim = sim::start(SimConfig {
        inter_token: Duration::from_millis(20),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let u = client(true);
    let mut bodies = Vec::new();
    for i in 0..5 {
        let resp = u
            .send(converse_stream(&sim.url(), &format!("q{i} sim:len=100")))
            .await
            .unwrap();
        bodies.push(resp.into_body());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sim.reset_h2_connections(), 1);
    for body in bodies {
        let got = tokio::time::timeout(Duration::from_secs(5), body.collect()).await;
        assert!(
            got.unwrap().is_err(),
            "the stream broke with the connection"
        );
    }
    // The next request opens a new connection.
    let (status, _, body) = fetch(&u, converse_stream(&sim.url(), "after sim:len=3")).await;
    assert_eq!(status, 200);
    assert!(body.is_ok());
    let log = sim.log();
    assert_ne!(log[0].connection, log[5].connection);
    sim.shutdown().await;
}
