//! The simulator seen through a raw HTTP/1.1 client: exact bytes of torn streams, control
//! and log endpoints, Bedrock errors, keep-alive, random faults, shutdown.

use crate::sim_support;

use bedrock_relay_sim::{self as sim, Fault, FaultRule, SimConfig};
use bedrock_relay_wire::eventstream::FrameSplitter;
use serde_json::{json, Value};
use sim_support::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn torn_streams_have_exact_bytes() {
    let sim = start().await;
    let path = format!("/model/{CLAUDE}/converse-stream");
    let full = send(
        sim.addr,
        "POST",
        &path,
        &[],
        &converse_body(&[("user", "exact sim:len=30")]),
    )
    .await;
    assert_eq!(full.end, End::Complete);
    assert_eq!(
        full.header("content-type").as_deref(),
        Some("application/vnd.amazon.eventstream")
    );
    assert!(full.header("x-amzn-requestid").is_some());
    let frames = full.frames();
    assert_eq!(frames.len(), 1 + 30 + 1 + 2);
    assert!(frames.iter().all(|(_, v)| v["p"].is_string()));

    let cases = [
        ("reset_after_events:events=4@tag=a", End::Reset, 4, false),
        ("reset_mid_frame:events=4@tag=b", End::Reset, 4, true),
        ("eof_no_terminator:events=4@tag=c", End::Eof, 4, false),
        (
            "truncate:events=99@tag=d",
            End::Complete,
            frames.len() - 2,
            false,
        ),
        (
            "exception:events=4,type=modelStreamErrorException@tag=e",
            End::Complete,
            5,
            false,
        ),
    ];
    for (spec, end, whole, partial) in cases {
        sim.add_rule(FaultRule::parse_spec(spec).unwrap());
        let tag = &spec[spec.len() - 1..];
        let r = send(
            sim.addr,
            "POST",
            &path,
            &[],
            &converse_body(&[("user", &format!("exact sim:len=30 sim:tag={tag}"))]),
        )
        .await;
        assert_eq!(r.end, end, "{spec}");
        let got = r.frames();
        assert_eq!(got.len(), whole, "{spec}");
        let whole_bytes: usize = {
            let mut s = FrameSplitter::new();
            s.push(&r.body);
            let mut n = 0;
            while let Ok(Some(f)) = s.next_frame() {
                n += f.raw.len();
            }
            n
        };
        assert_eq!(
            r.body.len() > whole_bytes,
            partial,
            "{spec}: half a frame follows"
        );
    }
    let exc = send(
        sim.addr,
        "POST",
        &path,
        &[],
        &converse_body(&[("user", "exact sim:len=30 sim:tag=e")]),
    )
    .await;
    let last = exc.frames().pop().unwrap();
    assert_eq!(last.0, "modelStreamErrorException");
    assert_eq!(last.1["originalStatusCode"], 500);

    sim.add_rule(FaultRule::parse_spec("corrupt_crc:events=2@tag=f").unwrap());
    let r = send(
        sim.addr,
        "POST",
        &path,
        &[],
        &converse_body(&[("user", "exact sim:tag=f")]),
    )
    .await;
    let mut s = FrameSplitter::new();
    s.push(&r.body);
    assert!(s.next_frame().unwrap().is_some() && s.next_frame().unwrap().is_some());
    assert!(s.next_frame().is_err(), "third frame has a bad CRC");
    sim.shutdown().await;
}

#[tokio::test]
async fn control_and_log_endpoints() {
    let sim = start().await;
    let r = send(
        sim.addr,
        "POST",
        "/_sim/faults",
        &[],
        r#"[{"kind":"status","code":503,"tag":"x","attempts":[1]}]"#,
    )
    .await;
    assert_eq!(r.json()["added"], 1);
    assert_eq!(
        send(sim.addr, "GET", "/_sim/faults", &[], "").await.json()[0]["kind"],
        "status"
    );
    let path = format!("/model/{CLAUDE}/converse");
    let body = converse_body(&[("user", "hello sim:tag=x")]);
    let r = send(sim.addr, "POST", &path, &[], &body).await;
    assert_eq!(r.status, 503);
    assert!(r
        .header("x-amzn-errortype")
        .unwrap()
        .starts_with("ServiceUnavailableException:"));
    assert_eq!(send(sim.addr, "POST", &path, &[], &body).await.status, 200);
    let log = send(sim.addr, "GET", "/_sim/log", &[], "").await.json();
    assert_eq!(log[0]["attempt"], 1);
    assert_eq!(log[0]["fault"], "status");
    assert_eq!(log[0]["tag"], "x");
    assert_eq!(log[1]["attempt"], 2);
    assert_eq!(log[1]["signature"], "unchecked");
    assert_eq!(log[1]["body"]["messages"][0]["role"], "user");
    assert_eq!(log[0]["conversation"], log[1]["conversation"]);
    assert_eq!(
        send(
            sim.addr,
            "POST",
            "/_sim/faults",
            &[],
            "[{\"kind\":\"nope\"}]"
        )
        .await
        .status,
        400
    );
    send(sim.addr, "DELETE", "/_sim/faults", &[], "").await;
    send(sim.addr, "DELETE", "/_sim/log", &[], "").await;
    assert_eq!(
        send(sim.addr, "GET", "/_sim/log", &[], "").await.json(),
        json!([])
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn bedrock_errors_for_unknown_paths_bad_json_and_auth() {
    let sim = start().await;
    let r = send(sim.addr, "POST", "/model/m/summon", &[], "{}").await;
    assert_eq!(r.status, 404);
    assert!(r
        .header("x-amzn-errortype")
        .unwrap()
        .starts_with("UnknownOperationException:"));
    let r = send(
        sim.addr,
        "POST",
        &format!("/model/{CLAUDE}/converse"),
        &[],
        "{not json",
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r
        .header("x-amzn-errortype")
        .unwrap()
        .starts_with("ValidationException:"));
    sim.shutdown().await;

    let config = SimConfig {
        bearer_tokens: vec!["tok".into()],
        credentials: vec![("AK".into(), "SK".into())],
        ..SimConfig::default()
    };
    let sim = sim::start(config).await.unwrap();
    let path = format!("/model/{CLAUDE}/converse");
    let body = converse_body(&[("user", "hi")]);
    let r = send(sim.addr, "POST", &path, &[], &body).await;
    assert_eq!(
        (
            r.status,
            r.header("x-amzn-errortype")
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .to_owned()
        ),
        (403, "MissingAuthenticationTokenException".to_owned())
    );
    assert_eq!(
        send(
            sim.addr,
            "POST",
            &path,
            &[("authorization", "Bearer tok")],
            &body
        )
        .await
        .status,
        200
    );
    let bad = "AWS4-HMAC-SHA256 Credential=AK/20250101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=00";
    let r = send(
        sim.addr,
        "POST",
        &path,
        &[("authorization", bad), ("x-amz-date", "20250101T000000Z")],
        &body,
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("The request signature we calculated does not match"));
    let signatures: Vec<Value> = sim
        .log()
        .iter()
        .map(|e| e.signature.clone().into())
        .collect();
    assert_eq!(
        signatures,
        [json!("missing"), json!("bearer"), json!("invalid")]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn keep_alive_and_chunked_request_bodies() {
    let sim = start().await;
    let mut s = TcpStream::connect(sim.addr).await.unwrap();
    let body = converse_body(&[("user", "ka")]);
    let (a, b) = body.split_at(10);
    let req = format!(
        "POST /model/{CLAUDE}/converse HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\nGET /_sim/log HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        a.len(), b.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert!(text.contains(&sim::reference_text(CLAUDE, "", &[("user", "ka")])[..20]));
    sim.shutdown().await;
}

#[tokio::test]
async fn random_faults_are_reproducible() {
    async fn run() -> Vec<Option<String>> {
        let config = SimConfig {
            fault_rate: 0.5,
            seed: 42,
            ..SimConfig::default()
        };
        let sim = sim::start(config).await.unwrap();
        for i in 0..16 {
            let body = converse_body(&[("user", &format!("random {i}"))]);
            send(
                sim.addr,
                "POST",
                &format!("/model/{CLAUDE}/converse-stream"),
                &[],
                &body,
            )
            .await;
        }
        let kinds = sim.log().into_iter().map(|e| e.fault).collect();
        sim.shutdown().await;
        kinds
    }
    let a = run().await;
    assert_eq!(a, run().await);
    assert!(
        a.iter().any(Option::is_some) && a.iter().any(Option::is_none),
        "{a:?}"
    );
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let sim = start().await;
    let addr = sim.addr;
    sim.add_rule(FaultRule {
        operation: None,
        tag: None,
        attempts: None,
        fault: Fault::Stall {
            events: 1,
            duration: Duration::from_secs(30),
        },
    });
    let stalled = tokio::spawn(async move {
        send(
            addr,
            "POST",
            &format!("/model/{CLAUDE}/converse-stream"),
            &[],
            &converse_body(&[("user", "s")]),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(Duration::from_secs(2), sim.shutdown())
        .await
        .expect("shutdown does not wait for stalled streams");
    let torn = stalled.await.unwrap();
    assert_ne!(torn.end, End::Complete);
    assert!(TcpStream::connect(addr).await.is_err());
}
