//! Relay core, end to end: aws-sdk-bedrockruntime → relay → simulator that verifies the
//! relay's own SigV4 signatures (the client signs with other, dummy keys).

use crate::support;

use aws_sdk_bedrockruntime::primitives::Blob;
use bedrock_relay_sim::Fault;
use support::canon::{self, ConverseReq};
use support::Harness;

const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
const ARN: &str = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20240620-v1:0";

#[tokio::test]
async fn four_main_operations_pass_through_with_plain_and_arn_model_ids() {
    let h = Harness::start().await;
    for model in [MODEL, ARN] {
        let prompt = format!("Describe rivers sim:len=30 sim:tag=ops-{}", model.len());
        // Converse: same text through the relay as straight from the simulator.
        let via = canon::converse_text(&h.client, model, &prompt)
            .await
            .expect("converse via relay");
        let direct = canon::converse_text(&h.reference, model, &prompt)
            .await
            .expect("converse direct");
        assert_eq!(via, direct);
        assert!(!via.is_empty());
        // ConverseStream: every event, in order, identical; and the same text as Converse.
        let req = ConverseReq::new(model, &prompt);
        let streamed = canon::converse_stream(&h.client, &req).await;
        let reference = canon::converse_stream(&h.reference, &req).await;
        assert_eq!(streamed.error, None);
        assert_eq!(streamed.events, reference.events);
        assert_eq!(streamed.text(), via);
        // InvokeModel and InvokeModelWithResponseStream in the Claude format.
        let body = canon::invoke_body(model, &prompt);
        let out = h
            .client
            .invoke_model()
            .model_id(model)
            .content_type("application/json")
            .body(Blob::new(serde_json::to_vec(&body).unwrap()))
            .send()
            .await
            .expect("invoke via relay");
        let v: serde_json::Value = serde_json::from_slice(out.body.as_ref()).unwrap();
        assert_eq!(v["content"][0]["text"].as_str().unwrap(), direct);
        let streamed = canon::invoke_stream(&h.client, model, &body).await;
        let reference = canon::invoke_stream(&h.reference, model, &body).await;
        assert_eq!(streamed.error, None);
        assert_eq!(streamed.events, reference.events);
    }
    // Every attempt the simulator saw was signed by the relay, and verified.
    let log = h.sim.log();
    assert!(log.len() >= 8, "{} attempts logged", log.len());
    assert!(
        log.iter().all(|e| e.signature == "valid"),
        "{:?}",
        log.iter().map(|e| &e.signature).collect::<Vec<_>>()
    );
    assert!(
        log.iter().any(|e| e.model_id.as_deref() == Some(ARN)),
        "ARN model id reached the simulator decoded intact"
    );
}

#[tokio::test]
async fn failures_before_the_response_are_retried_invisibly() {
    let h = Harness::start().await;
    let cases = [
        ("r429", Fault::Status { code: 429 }),
        ("r503", Fault::Status { code: 503 }),
        ("r500", Fault::Status { code: 500 }),
        ("rst", Fault::ResetBeforeHeaders),
    ];
    for (tag, fault) in cases {
        h.fault(tag, Some(vec![1]), fault.clone());
        let prompt = format!("Explain tides sim:tag={tag}");
        let text = canon::converse_text(&h.client, MODEL, &prompt).await;
        assert_eq!(
            text,
            canon::converse_text(&h.reference, MODEL, &prompt).await,
            "{tag}"
        );
        // Streams too: the first attempt fails before headers, the client never knows.
        let stream_tag = format!("{tag}-s");
        h.fault(&stream_tag, Some(vec![1]), fault);
        let req = ConverseReq::new(MODEL, format!("Explain tides sim:tag={stream_tag}"));
        let got = canon::converse_stream(&h.client, &req).await;
        assert_eq!(got.error, None, "{stream_tag}");
        assert_eq!(
            got.events,
            canon::converse_stream(&h.reference, &req).await.events
        );
        for t in [tag, stream_tag.as_str()] {
            let attempts = h.attempts_for(t);
            assert_eq!(attempts.len(), 2, "{t}: one failed attempt, one retry");
            assert!(
                attempts.iter().all(|e| e.signature == "valid"),
                "{t}: each attempt signed afresh"
            );
        }
    }
    // A 429 before the first byte is waited for by the admission queue (absorbed), the
    // other failures are retried.
    let retried = h.metric("bedrock_relay_retries_total", &[]).await;
    let absorbed = h
        .metric("bedrock_relay_throttles_total", &[("outcome", "absorbed")])
        .await;
    assert!(retried >= 6.0 && absorbed >= 2.0, "{retried} {absorbed}");
}

#[tokio::test]
async fn a_reset_mid_body_of_a_non_streaming_answer_is_retried() {
    let h = Harness::start().await;
    h.fault("midbody", Some(vec![1]), Fault::ResetMidBody);
    let prompt = "Explain glaciers sim:len=80 sim:tag=midbody";
    let text = canon::converse_text(&h.client, MODEL, prompt)
        .await
        .expect("healed");
    assert_eq!(
        Ok(text),
        canon::converse_text(&h.reference, MODEL, prompt).await
    );
    assert_eq!(h.attempts_for("midbody").len(), 2);
}

#[tokio::test]
async fn exhausted_retries_surface_as_the_right_sdk_errors() {
    let h = Harness::start_with(|a| a.max_attempts = Some("3".into())).await;
    h.fault("always503", None, Fault::Status { code: 503 });
    let err = canon::converse_text(&h.client, MODEL, "x sim:tag=always503")
        .await
        .unwrap_err();
    assert!(err.starts_with("ServiceUnavailableException"), "{err}");
    assert_eq!(h.attempts_for("always503").len(), 3, "--max-attempts 3");

    h.fault("always429", None, Fault::Status { code: 429 });
    let err = canon::converse_text(&h.client, MODEL, "x sim:tag=always429")
        .await
        .unwrap_err();
    assert!(
        err.starts_with("ThrottlingException"),
        "the last upstream error, unchanged: {err}"
    );

    h.fault("alwaysrst", None, Fault::ResetBeforeHeaders);
    let req = ConverseReq::new(MODEL, "x sim:tag=alwaysrst");
    let got = canon::converse_stream(&h.client, &req).await;
    let err = got.error.expect("fails");
    assert!(err.contains("InternalServerException"), "{err}");
    assert!(err.contains("lost the connection"), "{err}");

    // Nothing listens upstream at all: a Bedrock-shaped 503 the SDK parses.
    let dead = Harness::start_with(|a| {
        a.upstream = Some("http://127.0.0.1:9".into());
        a.max_attempts = Some("2".into());
    })
    .await;
    let err = canon::converse_text(&dead.client, MODEL, "x")
        .await
        .unwrap_err();
    assert!(err.starts_with("ServiceUnavailableException"), "{err}");
    assert!(err.contains("could not connect"), "{err}");
}

#[tokio::test]
async fn oversized_bodies_get_413_in_bedrocks_error_shape() {
    let h = Harness::start_with(|a| a.max_request_body = Some("2KiB".into())).await;
    let big = "word ".repeat(1000);
    let err = h
        .client
        .converse()
        .model_id(MODEL)
        .messages(
            aws_sdk_bedrockruntime::types::Message::builder()
                .role(aws_sdk_bedrockruntime::types::ConversationRole::User)
                .content(aws_sdk_bedrockruntime::types::ContentBlock::Text(big))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    let raw = err.raw_response().expect("an HTTP response");
    assert_eq!(raw.status().as_u16(), 413);
    let service = err.into_service_error();
    assert!(service.is_validation_exception(), "{service:?}");
    assert!(h.sim.log().is_empty(), "nothing was sent upstream");
}

#[tokio::test]
async fn metrics_count_requests_attempts_and_streams() {
    let h = Harness::start().await;
    h.fault("m1", Some(vec![1]), Fault::Status { code: 503 });
    canon::converse_text(&h.client, MODEL, "count me sim:tag=m1")
        .await
        .unwrap();
    let m = h.metrics().await;
    let get = |name, labels: &[(&str, &str)]| support::sum_metric(&m, name, labels);
    assert_eq!(
        get(
            "bedrock_relay_requests_total",
            &[("operation", "Converse"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        get(
            "bedrock_relay_upstream_attempts_total",
            &[("operation", "Converse")]
        ),
        2.0
    );
    assert_eq!(get("bedrock_relay_retries_total", &[]), 1.0);
    assert!(m.contains("bedrock_relay_request_duration_seconds_bucket"));
    assert_eq!(get("bedrock_relay_active_streams", &[]), 0.0);
    let (status, _) =
        support::http_get_status(&format!("http://{}/readyz", h.relay.admin_addr)).await;
    assert_eq!(status, 200);
}

/// A one-shot upstream that records the raw request it receives and answers `{}`.
async fn recording_upstream() -> (String, tokio::task::JoinHandle<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&buf).contains("\r\n\r\n{}") {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "request ended early");
            buf.extend_from_slice(&chunk[..n]);
        }
        s.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        )
        .await
        .unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    });
    (url, task)
}

#[tokio::test]
async fn agent_runtime_requests_go_to_their_own_host_signed_by_the_relay() {
    let (agent_url, seen) = recording_upstream().await;
    let h = Harness::start_with(|a| a.agent_upstream = Some(agent_url.clone())).await;
    let path = "/agents/AGENT1/agentAliases/ALIAS%2F1/sessions/s-1/text?x=a%3Ab";
    let mut req = http::Request::post(format!("http://{}{path}", h.relay.addr))
        .header("content-type", "application/json")
        .body(bytes::Bytes::from_static(b"{}"))
        .unwrap();
    bedrock_relay::Signer::for_tests(
        support::CLIENT_KEY,
        support::CLIENT_SECRET,
        None,
        "us-east-1",
    )
    .sign(&mut req)
    .await
    .unwrap();
    let (parts, body) = req.into_parts();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let resp = client
        .request(http::Request::from_parts(
            parts,
            http_body_util::Full::new(body),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let raw = seen.await.unwrap();
    let first = raw.lines().next().unwrap();
    assert_eq!(
        first,
        format!("POST {path} HTTP/1.1"),
        "path and query forwarded byte-exact"
    );
    let auth = raw
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
        .unwrap();
    assert!(
        auth.contains(&format!("Credential={}/", support::RELAY_KEY)),
        "re-signed by the relay: {auth}"
    );
    assert!(auth.contains("/us-east-1/bedrock/aws4_request"), "{auth}");
    assert!(
        h.sim.log().is_empty(),
        "nothing went to the runtime upstream"
    );
}
