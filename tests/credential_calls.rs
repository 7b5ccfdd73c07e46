//! The SDK's own credential calls, sent to the relay by a global `AWS_ENDPOINT_URL`: passed on
//! untouched (no relay credentials, client headers and body kept) to the service's endpoint,
//! not refused by inbound authentication, and refusals or failures written in the service's
//! own protocol. The SDK-level tests are tests/web_identity_env.rs and
//! tests/python/test_global_endpoint.py.

use crate::sim_support::{send, Resp};
use crate::support::{sum_metric, Harness};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const FORM: (&str, &str) = (
    "content-type",
    "application/x-www-form-urlencoded; charset=utf-8",
);

/// The harness with the simulator as the relay's STS too, plus `tweak`.
async fn harness(tweak: impl FnOnce(&mut bedrock_relay::ServeArgs)) -> Harness {
    Harness::start_with(|a| {
        let sim = a.upstream.clone().expect("the simulator");
        a.service_upstream.push(format!("sts={sim}"));
        tweak(a);
    })
    .await
}

fn body(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[tokio::test]
async fn saml_from_a_query_string_reaches_sts_and_its_answer_comes_back() {
    let h = harness(|_| {}).await;
    let assertion = "PHNhbWxwOlJlc3BvbnNlPg==";
    let path = format!(
        "/?Action=AssumeRoleWithSAML&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr&PrincipalArn=arn%3Aaws%3Aiam%3A%3A1%3Asaml-provider%2Fidp&SAMLAssertion={}",
        assertion.replace('=', "%3D")
    );
    let r = send(h.relay.addr, "GET", &path, &[], "").await;
    assert_eq!(r.status, 200, "{}", body(&r));
    assert_eq!(r.header("content-type").as_deref(), Some("text/xml"));
    assert!(
        body(&r).contains("<AssumeRoleWithSAMLResult>"),
        "{}",
        body(&r)
    );
    let log = h.sim.log();
    let call = log
        .iter()
        .find(|e| e.operation == "AssumeRoleWithSAML")
        .expect("the call reached the simulator's STS");
    assert_eq!(call.signature, "unsigned");
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(assertion)));
    assert_eq!(call.body["SAMLAssertion"], digest);
    let m = h.metrics().await;
    assert_eq!(
        sum_metric(
            &m,
            "bedrock_relay_credential_calls_total",
            &[("service", "sts"), ("status", "200")]
        ),
        1.0,
        "{m}"
    );
}

/// A stand-in for an AWS endpoint: records one request's raw bytes, answers `answer`.
async fn recorder(answer: &'static str) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                if raw.len() >= end + 4 + len || n == 0 {
                    break;
                }
            }
        }
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-amzn-requestid: rec-1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        s.write_all(resp.as_bytes()).await.unwrap();
        raw
    });
    (addr, task)
}

#[tokio::test]
async fn oidc_create_token_passes_on_byte_exact_without_relay_credentials() {
    let (addr, recorded) = recorder(r#"{"accessToken":"new","expiresIn":3600}"#).await;
    let h = harness(|a| a.service_upstream.push(format!("sso-oidc=http://{addr}"))).await;
    let json = r#"{"clientId":"cid","clientSecret":"client-secret","grantType":"refresh_token","refreshToken":"refresh-1"}"#;
    let r = send(
        h.relay.addr,
        "POST",
        "/token",
        &[
            ("content-type", "application/json"),
            ("user-agent", "aws-sdk-rust/1.0 api/ssooidc"),
            ("amz-sdk-invocation-id", "inv-1"),
        ],
        json,
    )
    .await;
    assert_eq!(r.status, 200, "{}", body(&r));
    assert_eq!(body(&r), r#"{"accessToken":"new","expiresIn":3600}"#);
    assert_eq!(r.header("x-amzn-requestid").as_deref(), Some("rec-1"));
    let raw = String::from_utf8(recorded.await.unwrap()).unwrap();
    let (head, sent) = raw.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("post /token http/1.1\r\n"), "{head}");
    assert_eq!(sent, json, "body byte-exact");
    assert!(head.contains(&format!("host: {addr}")), "{head}");
    assert!(
        head.contains("user-agent: aws-sdk-rust/1.0 api/ssooidc"),
        "{head}"
    );
    assert!(head.contains("amz-sdk-invocation-id: inv-1"), "{head}");
    for relay_added in ["authorization", "x-amz-date", "x-amz-security-token"] {
        assert!(!head.contains(relay_added), "{relay_added} in {head}");
    }
}

#[tokio::test]
async fn inbound_authentication_does_not_block_credential_calls_but_still_guards_bedrock() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    write!(f, "[inbound]\nbearer_tokens = [\"app-token-1\"]\n").unwrap();
    let path = f.path().to_path_buf();
    let h = harness(move |a| a.config = Some(path)).await;
    let form = "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr&RoleSessionName=s&WebIdentityToken=jwt";
    let r = send(h.relay.addr, "POST", "/", &[FORM], form).await;
    assert_eq!(r.status, 200, "{}", body(&r));
    assert!(body(&r).contains("<AccessKeyId>ASIASIM"), "{}", body(&r));
    let converse = send(
        h.relay.addr,
        "POST",
        "/model/m/converse",
        &[("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(converse.status, 403, "{}", body(&converse));
}

#[tokio::test]
async fn refusals_and_failures_are_written_in_the_service_s_own_protocol() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let h = harness(|a| a.service_upstream.push(format!("sso=http://{closed}"))).await;

    // Unsigned, query protocol, but not a credential call: refused in STS's XML.
    let r = send(
        h.relay.addr,
        "POST",
        "/",
        &[FORM],
        "Action=GetCallerIdentity&Version=2011-06-15",
    )
    .await;
    assert_eq!(r.status, 400);
    let xml = body(&r);
    assert!(
        xml.starts_with("<ErrorResponse><Error><Type>Sender</Type><Code>WrongServiceForRelay</Code><Message>bedrock-relay "),
        "{xml}"
    );
    assert!(
        xml.contains("`GetCallerIdentity`") && xml.contains("AWS_ENDPOINT_URL_BEDROCK_RUNTIME"),
        "{xml}"
    );
    assert!(
        h.sim
            .log()
            .iter()
            .all(|e| e.operation != "GetCallerIdentity"),
        "nothing was forwarded"
    );

    // Credential calls come without inbound authentication: their bodies are kept small.
    let big = format!(
        "Action=AssumeRoleWithSAML&SAMLAssertion={}",
        "A".repeat(300 * 1024)
    );
    let r = send(h.relay.addr, "POST", "/", &[FORM], &big).await;
    assert_eq!(r.status, 413);
    assert!(body(&r).starts_with("<ErrorResponse>"), "{}", body(&r));

    // The portal cannot be reached: 503 in REST-JSON, which SDKs retry.
    let r = send(
        h.relay.addr,
        "GET",
        "/federation/credentials?role_name=App&account_id=123456789012",
        &[("x-amz-sso_bearer_token", "sso-token")],
        "",
    )
    .await;
    assert_eq!(r.status, 503, "{}", body(&r));
    assert_eq!(r.json()["__type"], "ServiceUnavailable");
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains(&closed.to_string()), "{message}");
    assert!(!message.contains("sso-token"), "{message}");
}
