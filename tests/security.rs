//! Inbound security end to end: client authentication (SigV4 with a relay-only key, bearer
//! tokens), policy lists, per-client concurrency, listener limits against slow and
//! oversized request heads, and the refusal to serve a non-loopback address unprotected.
//! Each test fails if its protection is removed.

use crate::support;

use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use bedrock_relay_sim::Fault;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::canon::{self, ConverseReq};
use support::{sdk_client, Harness, CLIENT_KEY, CLIENT_SECRET};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

/// Start the harness with `inbound` as the relay's `[inbound]` table.
async fn harness(inbound: &str) -> (Harness, tempfile::NamedTempFile) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    write!(f, "[inbound]\n{inbound}\n").unwrap();
    let path = f.path().to_path_buf();
    let h = Harness::start_with(move |a| a.config = Some(path)).await;
    (h, f)
}

fn keys() -> String {
    format!(
        "sigv4_keys = [{{ access_key_id = \"{CLIENT_KEY}\", secret_access_key = \"{CLIENT_SECRET}\" }}]\n\
         bearer_tokens = [\"app-token-1\"]"
    )
}

/// The error code an SDK call failed with.
async fn converse_code(client: &aws_sdk_bedrockruntime::Client, model: &str) -> Option<String> {
    match client
        .converse()
        .model_id(model)
        .messages(
            aws_sdk_bedrockruntime::types::Message::builder()
                .role(aws_sdk_bedrockruntime::types::ConversationRole::User)
                .content(aws_sdk_bedrockruntime::types::ContentBlock::Text(
                    "Hello sim:len=5".into(),
                ))
                .build()
                .unwrap(),
        )
        .send()
        .await
    {
        Ok(_) => None,
        Err(e) => Some(e.into_service_error().code().unwrap_or("none").to_string()),
    }
}

/// One raw HTTP/1.1 exchange; returns (status, x-amzn-errortype, body).
async fn raw(addr: std::net::SocketAddr, head: &str, body: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{head}Host: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let etype = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-amzn-errortype: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, etype, body)
}

#[tokio::test]
async fn client_sigv4_keys_are_verified_before_anything_is_forwarded() {
    let (h, _f) = harness(&keys()).await;
    let text = canon::converse_text(&h.client, MODEL, "Hello sim:len=5").await;
    assert!(text.expect("the configured client key is accepted").len() > 1);
    let stream = canon::converse_stream(&h.client, &ConverseReq::new(MODEL, "Hi sim:len=8")).await;
    assert_eq!(stream.error, None, "streams are authenticated too");
    let before = h.sim.log().len();
    let url = format!("http://{}", h.relay.addr);
    let wrong_secret = sdk_client(&url, CLIENT_KEY, "not-the-client-secret");
    assert_eq!(
        converse_code(&wrong_secret, MODEL).await.as_deref(),
        Some("InvalidSignatureException")
    );
    let unknown = sdk_client(&url, "AKIDSOMEONEELSE", CLIENT_SECRET);
    assert_eq!(
        converse_code(&unknown, MODEL).await.as_deref(),
        Some("UnrecognizedClientException")
    );
    assert_eq!(
        h.sim.log().len(),
        before,
        "refused requests never reach Bedrock"
    );
    assert_eq!(
        h.metric("bedrock_relay_requests_total", &[("status", "403")])
            .await,
        2.0
    );
}

#[tokio::test]
async fn bearer_tokens_and_missing_auth_get_403_in_bedrock_shape() {
    let (h, _f) = harness(&keys()).await;
    let path = format!("POST /model/{MODEL}/converse HTTP/1.1\r\n");
    let body = r#"{"messages":[{"role":"user","content":[{"text":"Hi sim:len=3"}]}]}"#;
    let good = format!("{path}Authorization: Bearer app-token-1\r\n");
    let (status, _, answer) = raw(h.relay.addr, &good, body).await;
    assert_eq!(status, 200, "{answer}");
    let bad = format!("{path}Authorization: Bearer app-token-2\r\n");
    let (status, etype, answer) = raw(h.relay.addr, &bad, body).await;
    assert_eq!(status, 403);
    assert!(etype.starts_with("unrecognizedclientexception:"), "{etype}");
    let v: serde_json::Value = serde_json::from_str(&answer).expect("JSON error body");
    assert!(
        v["message"].as_str().unwrap().contains("bearer token"),
        "{v}"
    );
    assert!(!answer.contains("app-token"), "tokens are never echoed");
    let (status, etype, answer) = raw(h.relay.addr, &path, body).await;
    assert_eq!(status, 403);
    assert!(
        etype.starts_with("missingauthenticationtokenexception:"),
        "{etype}"
    );
    assert!(answer.contains("\"message\""), "{answer}");
    assert_eq!(h.sim.log().len(), 1, "only the good token reached upstream");
}

#[tokio::test]
async fn policy_lists_refuse_models_and_operations_with_access_denied() {
    let (h, _f) = harness(
        "allow_models = [\"^anthropic\\\\.\"]\ndeny_models = [\"claude-v2\"]\ndeny_operations = [\"InvokeModel\"]",
    )
    .await;
    assert_eq!(converse_code(&h.client, MODEL).await, None, "allowed model");
    for model in ["meta.llama3-70b-instruct-v1:0", "anthropic.claude-v2"] {
        assert_eq!(
            converse_code(&h.client, model).await.as_deref(),
            Some("AccessDeniedException"),
            "{model}"
        );
    }
    let err = h
        .client
        .invoke_model()
        .model_id(MODEL)
        .body(aws_sdk_bedrockruntime::primitives::Blob::new(
            b"{}".to_vec(),
        ))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err.into_service_error().code(),
        Some("AccessDeniedException")
    );
    assert_eq!(
        h.sim.log().len(),
        1,
        "only the allowed call reached upstream"
    );
}

#[tokio::test]
async fn a_client_over_its_concurrency_limit_is_throttled() {
    let (h, _f) = harness("max_concurrency_per_client = 1").await;
    h.fault(
        "slow",
        None,
        Fault::Stall {
            events: 2,
            duration: Duration::from_millis(1500),
        },
    );
    let client = h.client.clone();
    let slow = tokio::spawn(async move {
        canon::converse_stream(
            &client,
            &ConverseReq::new(MODEL, "Slow sim:tag=slow sim:len=6"),
        )
        .await
    });
    // Wait until the slow stream is in flight upstream.
    let t0 = Instant::now();
    while h.attempts_for("slow").is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "slow stream never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        converse_code(&h.client, MODEL).await.as_deref(),
        Some("ThrottlingException"),
        "a second request from the same client while the first streams"
    );
    let done = slow.await.unwrap();
    assert_eq!(done.error, None, "the first stream is unaffected");
    assert_eq!(
        converse_code(&h.client, MODEL).await,
        None,
        "the slot was released"
    );
}

/// Seconds until the relay closes a connection that sent `bytes` and then nothing.
async fn closed_after(addr: std::net::SocketAddr, bytes: &[u8]) -> f64 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 1024];
    let r = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(r.is_ok(), "connection still open after 8 s: {bytes:?}");
    t0.elapsed().as_secs_f64()
}

#[tokio::test]
async fn slow_silent_and_oversized_request_heads_are_cut_off() {
    let (h, _f) = harness("header_read_timeout = \"400ms\"\nmax_header_bytes = \"16KiB\"").await;
    let addr = h.relay.addr;
    let partial = format!("POST /model/{MODEL}/converse HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    for bytes in [&b""[..], b"P", b"PRI * HTTP/2.0\r\n", partial.as_bytes()] {
        let secs = closed_after(addr, bytes).await;
        assert!(secs < 3.0, "closed after {secs:.1}s for {bytes:?}");
    }
    // An idle keep-alive connection is closed too, after a complete exchange.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut all))
        .await
        .expect("idle keep-alive closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 "));
    assert!(t0.elapsed() < Duration::from_secs(3));
    // A 40 KiB header is refused with 431, not buffered.
    let big = format!(
        "POST /model/{MODEL}/converse HTTP/1.1\r\nX-Big: {}\r\n",
        "a".repeat(40 * 1024)
    );
    let (status, _, _) = raw(addr, &big, "{}").await;
    assert_eq!(status, 431);
}

#[test]
fn serve_refuses_a_non_loopback_address_without_auth() {
    let run = |extra: &[&str]| {
        let mut args = vec![
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--region",
            "us-east-1",
            "--check",
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_bedrock-relay"))
            .args(&args)
            .env_remove("BEDROCK_RELAY_ALLOW_UNAUTHENTICATED_NON_LOOPBACK")
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address")
            && err.contains("--allow-unauthenticated-non-loopback"),
        "{err}"
    );
    let out = run(&["--allow-unauthenticated-non-loopback"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Forward every connection accepted on `listener` to `to` (the upstream comes back).
async fn forward(listener: tokio::net::TcpListener, to: std::net::SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            if let Ok(mut out) = TcpStream::connect(to).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
            }
        });
    }
}

#[tokio::test]
async fn an_upstream_refusing_connections_causes_no_retry_storm() {
    let sim = bedrock_relay_sim::start(Default::default()).await.unwrap();
    let sim_addr: std::net::SocketAddr = sim.url().trim_start_matches("http://").parse().unwrap();
    // A port nothing listens on (yet): every connect is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut args = support::args(&format!("http://127.0.0.1:{port}"));
    args.retry_budget = Some("50".into());
    args.max_attempts = Some("4".into());
    let settings = bedrock_relay::load_config(&args).unwrap();
    let signer = bedrock_relay::Signer::for_tests("AKID", "secret", None, "us-east-1");
    let relay = bedrock_relay::start_with_signer(settings, signer)
        .await
        .unwrap();
    let client = sdk_client(&format!("http://{}", relay.addr), CLIENT_KEY, CLIENT_SECRET);
    let attempts = || async {
        let text = support::http_get(&format!("http://{}/metrics", relay.admin_addr)).await;
        support::sum_metric(&text, "bedrock_relay_upstream_attempts_total", &[])
    };

    const CALLS: usize = 80;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CALLS {
        let c = client.clone();
        tasks.spawn(async move { converse_code(&c, MODEL).await });
    }
    while let Some(code) = tasks.join_next().await {
        assert_eq!(
            code.unwrap().as_deref(),
            Some("ServiceUnavailableException"),
            "a typed error during the outage"
        );
    }
    let during = attempts().await;
    // 80 first attempts plus at most 50 / 5 = 10 retries; without the budget, 4 x 80.
    assert!(
        during >= CALLS as f64 && during <= (CALLS + 10) as f64,
        "{during} upstream attempts for {CALLS} calls"
    );
    let exhausted = support::sum_metric(
        &support::http_get(&format!("http://{}/metrics", relay.admin_addr)).await,
        "bedrock_relay_retry_budget_exhausted_total",
        &[],
    );
    assert!(exhausted > 0.0);

    // The upstream comes back on the same port: requests succeed at once.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let proxy = tokio::spawn(forward(listener, sim_addr));
    for _ in 0..10 {
        assert_eq!(
            converse_code(&client, MODEL).await,
            None,
            "served after recovery"
        );
    }
    proxy.abort();
}

/// One HTTP/1.1 request over TLS; returns the status line and the server's leaf certificate.
async fn tls_get(addr: std::net::SocketAddr) -> (String, Vec<u8>) {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for name in ["cert-a.pem", "cert-b.pem"] {
        let pem = std::fs::read(fixture(name)).unwrap();
        roots
            .add(CertificateDer::from_pem_slice(&pem).unwrap())
            .unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with a trusted certificate");
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    tls.write_all(b"GET /_relay/nothing HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    (text.lines().next().unwrap_or("").to_string(), leaf)
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

fn der(name: &str) -> Vec<u8> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    CertificateDer::from_pem_slice(&std::fs::read(fixture(name)).unwrap())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn tls_listener_serves_and_follows_certificate_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(fixture("cert-a.pem"), &cert).unwrap();
    std::fs::copy(fixture("key-a.pem"), &key).unwrap();
    let (h, _f) = harness(&format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        cert.display(),
        key.display()
    ))
    .await;
    let (status, leaf) = tls_get(h.relay.addr).await;
    assert!(status.starts_with("HTTP/1.1 "), "{status:?}");
    assert_eq!(leaf, der("cert-a.pem"));
    // Plain HTTP to the TLS port gets no HTTP answer.
    let (status, _, _) = raw(h.relay.addr, "GET / HTTP/1.1\r\n", "").await;
    assert_eq!(status, 0);
    // Replace the pair: new connections get the new certificate.
    tokio::time::sleep(Duration::from_millis(600)).await;
    std::fs::copy(fixture("key-b.pem"), &key).unwrap();
    std::fs::copy(fixture("cert-b.pem"), &cert).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, leaf) = tls_get(h.relay.addr).await;
    assert_eq!(leaf, der("cert-b.pem"), "the changed certificate is served");
    // A broken replacement is ignored: the last good pair stays.
    std::fs::write(&cert, b"not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, leaf) = tls_get(h.relay.addr).await;
    assert_eq!(leaf, der("cert-b.pem"));
}
