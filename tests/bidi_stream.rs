//! `InvokeModelWithBidirectionalStream` through the relay, spoken by aws-sdk-bedrockruntime.
//!
//! The SDK needs HTTP/2 for this operation; its default HTTP client does not speak h2c to
//! an `http://` endpoint, so most tests give it a small `HttpClient` over hyper-util's
//! h2-only client (`support::h2c`); one uses the SDK's own HTTPS client against the
//! relay's TLS listener (ALPN h2, the test certificate trusted). Everything else — the request's SigV4 head, the
//! event-stream encoding and each input event's chained signature — is the SDK's own. The
//! SDK signs with the client's keys, which the simulator does not know: the session
//! completes only because the relay re-signs the head and every event with its own chain,
//! and the simulator checks every link (`events_verified` in its log).

use crate::support::{self, Harness, CLIENT_KEY, CLIENT_SECRET};
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{
    BidirectionalInputPayloadPart, InvokeModelWithBidirectionalStreamInput as In,
    InvokeModelWithBidirectionalStreamOutput as Out,
};
use aws_sdk_bedrockruntime::Client;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::time::Duration;
use tokio::sync::mpsc;

type InputError =
    aws_sdk_bedrockruntime::types::error::InvokeModelWithBidirectionalStreamInputError;
fn h2_client(endpoint: &str) -> Client {
    let conf = aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            CLIENT_KEY,
            CLIENT_SECRET,
            None,
            None,
            "test",
        ))
        .retry_config(aws_sdk_bedrockruntime::config::retry::RetryConfig::disabled())
        .http_client(support::h2c::H2c::shared())
        .build();
    Client::from_conf(conf)
}

fn chunk(text: &str) -> In {
    In::Chunk(
        BidirectionalInputPayloadPart::builder()
            .bytes(Blob::new(text.as_bytes()))
            .build(),
    )
}

/// The echo model's text in one output event.
fn text_of(out: Out) -> String {
    let Out::Chunk(part) = out else {
        panic!("unexpected output {out:?}")
    };
    let v: serde_json::Value = serde_json::from_slice(part.bytes().unwrap().as_ref()).unwrap();
    v["event"]["textOutput"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

const MODEL: &str = "amazon.nova-sonic-v1:0";

#[tokio::test]
async fn a_session_through_the_relay_has_every_input_event_re_signed_and_verified() {
    let h = Harness::start().await;
    let client = h2_client(&format!("http://{}", h.relay.addr));
    let (tx, rx) = mpsc::channel::<
        Result<
            In,
            aws_sdk_bedrockruntime::types::error::InvokeModelWithBidirectionalStreamInputError,
        >,
    >(4);
    let input = input_of(rx);
    tx.send(Ok(chunk(r#"{"event":{"sessionStart":{}}}"#)))
        .await
        .unwrap();
    let mut out = tokio::time::timeout(
        Duration::from_secs(10),
        client
            .invoke_model_with_bidirectional_stream()
            .model_id(MODEL)
            .body(input.into())
            .send(),
    )
    .await
    .expect("the session opens")
    .expect("the relay accepts the session");
    // Each answer arrives while the input is still open: nothing is buffered either way.
    let mut answers = Vec::new();
    for text in ["", "hello", "world"] {
        if !text.is_empty() {
            tx.send(Ok(chunk(text))).await.unwrap();
        }
        let event = tokio::time::timeout(Duration::from_secs(5), out.body.recv())
            .await
            .expect("an answer before the input ends")
            .expect("no error event")
            .expect("the output is open");
        answers.push(text_of(event));
    }
    assert_eq!(
        answers,
        [r#"{"event":{"sessionStart":{}}}"#, "hello", "world"]
    );
    drop(tx);
    let end = tokio::time::timeout(Duration::from_secs(5), out.body.recv())
        .await
        .unwrap();
    assert!(
        matches!(end, Ok(None)),
        "the output ends with the input: {end:?}"
    );

    let log = h.sim.log();
    let entry = log
        .iter()
        .find(|e| e.operation == "InvokeModelWithBidirectionalStream")
        .expect("the simulator saw the session");
    assert_eq!(entry.signature, "valid", "the head is signed by the relay");
    assert_eq!(
        entry.events_verified,
        Some(4),
        "3 events and the signed end, each verified: {entry:?}"
    );
    assert_eq!(entry.fault, None);
}

#[tokio::test]
async fn without_the_relay_the_clients_own_signatures_are_refused() {
    let h = Harness::start().await;
    let client = h2_client(&h.sim.url());
    let input = futures_util::stream::iter([Ok(chunk("hello"))]);
    let res = client
        .invoke_model_with_bidirectional_stream()
        .model_id(MODEL)
        .body(input.into())
        .send()
        .await;
    let err = res.expect_err("the simulator refuses the client's keys");
    let text = format!(
        "{:?}",
        aws_sdk_bedrockruntime::error::DisplayErrorContext(&err)
    );
    assert!(text.contains("UnrecognizedClient"), "{text}");
}

/// The SDK's input stream over `rx`. Fused: the SDK may poll its input again after it ended
/// (seen once under load as "`Unfold` must not be polled after it returned `Ready(None)`"
/// inside the SDK), and a fused stream answers that with `None` again.
fn input_of<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> futures_util::stream::Fuse<impl futures_util::Stream<Item = T> + Send> {
    use futures_util::StreamExt as _;
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) })
        .fuse()
}

/// A session open through the relay, one event answered; the input sender stays open.
async fn opened(
    h: &Harness,
) -> (
    mpsc::Sender<Result<In, InputError>>,
    aws_sdk_bedrockruntime::operation::invoke_model_with_bidirectional_stream::InvokeModelWithBidirectionalStreamOutput,
){
    let client = h2_client(&format!("http://{}", h.relay.addr));
    let (tx, rx) = mpsc::channel::<Result<In, InputError>>(4);
    let input = input_of(rx);
    tx.send(Ok(chunk("first"))).await.unwrap();
    let mut out = client
        .invoke_model_with_bidirectional_stream()
        .model_id(MODEL)
        .body(input.into())
        .send()
        .await
        .expect("the session opens");
    let first = out.body.recv().await.unwrap().unwrap();
    assert_eq!(text_of(first), "first");
    (tx, out)
}

#[tokio::test]
async fn an_upstream_fault_mid_session_ends_it_with_a_typed_error_event() {
    let h = Harness::start().await;
    let (_tx, mut out) = opened(&h).await;
    assert!(h.sim.reset_h2_connections() >= 1);
    let end = tokio::time::timeout(Duration::from_secs(5), out.body.recv())
        .await
        .expect("the session ends at once");
    let err = end.expect_err("an error event, not a silent end");
    let text = format!(
        "{:?}",
        aws_sdk_bedrockruntime::error::DisplayErrorContext(&err)
    );
    assert!(text.contains("ModelStreamErrorException"), "{text}");
    assert!(text.contains("cannot be resumed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_ends_the_session_upstream() {
    let h = Harness::start().await;
    let relay = h.relay.addr;
    // A raw h2c client on its own runtime: dropping that runtime closes its socket, with no
    // signed end of input and no clean end of stream.
    let client = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(one_event_then_wait(relay));
        drop(rt);
    });
    tokio::task::spawn_blocking(move || client.join().unwrap())
        .await
        .unwrap();
    let mut entry = None;
    for _ in 0..100 {
        entry = h
            .sim
            .log()
            .into_iter()
            .find(|e| e.operation == "InvokeModelWithBidirectionalStream");
        if entry.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let entry = entry.expect("the simulator's session ended with the client's");
    assert_eq!(
        entry.events_verified,
        Some(1),
        "one event, no signed end: {entry:?}"
    );
}

/// Open a session on `relay`, send one unsigned event, read its answer, return with the
/// session still open (its input never ended).
async fn one_event_then_wait(relay: std::net::SocketAddr) {
    let tcp = tokio::net::TcpStream::connect(relay).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let (tx, mut rx) = mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(4);
    let body =
        http_body_util::StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let req = http::Request::post(format!(
        "http://{relay}/model/{MODEL}/invoke-with-bidirectional-stream"
    ))
    .body(body)
    .unwrap();
    let event = bedrock_relay_wire::eventstream::event("chunk", r#"{"bytes":"aGk="}"#);
    let frame = hyper::body::Frame::data(bedrock_relay_wire::eventstream::encode(&event));
    tx.send(Ok(frame)).await.unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let answer = resp.into_body().frame().await.unwrap().unwrap();
    assert!(!answer.into_data().unwrap().is_empty());
    // The input stays open: only the runtime's end closes the connection.
    std::mem::forget(tx);
}

#[tokio::test]
async fn a_relay_with_a_bearer_token_refuses_the_session_clearly() {
    let sim = bedrock_relay_sim::start(bedrock_relay_sim::SimConfig::default())
        .await
        .unwrap();
    let settings = bedrock_relay::load_config(&support::args(&sim.url())).unwrap();
    let signer = bedrock_relay::Signer::bearer("relay-token", "us-east-1");
    let relay = bedrock_relay::start_with_signer(settings, signer)
        .await
        .unwrap();
    let client = h2_client(&format!("http://{}", relay.addr));
    let input = futures_util::stream::iter([Ok(chunk("hello"))]);
    let err = client
        .invoke_model_with_bidirectional_stream()
        .model_id(MODEL)
        .body(input.into())
        .send()
        .await
        .expect_err("bearer mode cannot sign input events");
    let text = format!(
        "{:?}",
        aws_sdk_bedrockruntime::error::DisplayErrorContext(&err)
    );
    assert!(text.contains("AccessDeniedException"), "{text}");
    assert!(text.contains("only SigV4"), "{text}");
    assert!(sim.log().is_empty(), "nothing went upstream");
}

#[tokio::test]
async fn the_sdks_own_https_client_speaks_it_to_the_relays_tls_listener() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(
        &mut file,
        format!(
            "[inbound]\ntls_cert_file = \"{fixtures}/cert-a.pem\"\ntls_key_file = \"{fixtures}/key-a.pem\"\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let path = file.path().to_path_buf();
    let h = Harness::start_with(move |a| a.config = Some(path)).await;
    use aws_smithy_http_client::tls;
    let pem = std::fs::read(format!("{fixtures}/cert-a.pem")).unwrap();
    let trust = tls::TlsContext::builder()
        .with_trust_store(tls::TrustStore::empty().with_pem_certificate(pem))
        .build()
        .unwrap();
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(trust)
        .build_https();
    let conf = aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("https://127.0.0.1:{}", h.relay.addr.port()))
        .credentials_provider(Credentials::new(
            CLIENT_KEY,
            CLIENT_SECRET,
            None,
            None,
            "test",
        ))
        .http_client(http)
        .build();
    let client = Client::from_conf(conf);
    let input = futures_util::stream::iter([Ok(chunk("over tls")), Ok(chunk("and h2"))]);
    let mut out = client
        .invoke_model_with_bidirectional_stream()
        .model_id(MODEL)
        .body(input.into())
        .send()
        .await
        .expect("the session opens over TLS");
    let mut answers = Vec::new();
    while let Some(event) = out.body.recv().await.expect("no error event") {
        answers.push(text_of(event));
    }
    assert_eq!(answers, ["over tls", "and h2"]);
    let log = h.sim.log();
    let entry = log
        .iter()
        .find(|e| e.operation == "InvokeModelWithBidirectionalStream")
        .unwrap();
    assert_eq!(entry.events_verified, Some(3), "{entry:?}");
}

#[tokio::test]
async fn bedrocks_own_refusal_of_the_head_reaches_the_client_as_it_came() {
    let sim = bedrock_relay_sim::start(bedrock_relay_sim::SimConfig {
        credentials: vec![(support::RELAY_KEY.into(), support::RELAY_SECRET.into())],
        ..Default::default()
    })
    .await
    .unwrap();
    let settings = bedrock_relay::load_config(&support::args(&sim.url())).unwrap();
    let signer = bedrock_relay::Signer::for_tests("AKIDUNKNOWN", "wrong", None, "us-east-1");
    let relay = bedrock_relay::start_with_signer(settings, signer)
        .await
        .unwrap();
    let client = h2_client(&format!("http://{}", relay.addr));
    let input = futures_util::stream::iter([Ok(chunk("hello"))]);
    let err = client
        .invoke_model_with_bidirectional_stream()
        .model_id(MODEL)
        .body(input.into())
        .send()
        .await
        .expect_err("the upstream refuses the relay's key");
    let text = format!(
        "{:?}",
        aws_sdk_bedrockruntime::error::DisplayErrorContext(&err)
    );
    assert!(text.contains("UnrecognizedClient"), "{text}");
    assert_eq!(sim.log()[0].signature, "unknown_key");
}

/// Access lines of the relay, captured as JSON on this test's thread (a current-thread
/// runtime: the relay's tasks run here too).
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let me = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || me.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// The bidirectional sessions' access lines so far.
    fn sessions(&self) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| {
                v["target"] == "bedrock_relay::access"
                    && v["operation"] == "InvokeModelWithBidirectionalStream"
            })
            .collect()
    }

    async fn session_line(&self) -> serde_json::Value {
        for _ in 0..250 {
            if let Some(line) = self.sessions().pop() {
                return line;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "no access line for the session: {}",
            String::from_utf8_lossy(&self.0.lock().unwrap())
        )
    }
}

#[tokio::test]
async fn a_session_is_counted_while_open_and_logged_when_it_ends() {
    let log = Captured::default();
    let _guard = log.install();
    let h = Harness::start().await;
    let (tx, mut out) = opened(&h).await;
    assert_eq!(h.metric("bedrock_relay_active_streams", &[]).await, 1.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Ok(chunk("second"))).await.unwrap();
    let second = out.body.recv().await.unwrap().unwrap();
    assert_eq!(text_of(second), "second");
    assert!(log.sessions().is_empty(), "not logged while open");
    drop(tx);
    let end = tokio::time::timeout(Duration::from_secs(5), out.body.recv())
        .await
        .unwrap();
    assert!(matches!(end, Ok(None)), "{end:?}");
    let line = log.session_line().await;
    assert_eq!(line["end"], "clean", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["events_in"], 2, "{line}");
    assert_eq!(line["events_out"], 2, "{line}");
    assert!(line["duration_ms"].as_u64().unwrap() >= 300, "{line}");
    assert!(line["bytes"].as_u64().unwrap() > 0, "{line}");
    assert!(line.get("fault").is_none(), "{line}");
    assert_eq!(h.metric("bedrock_relay_active_streams", &[]).await, 0.0);
    assert_eq!(
        h.metric(
            "bedrock_relay_requests_total",
            &[("operation", "InvokeModelWithBidirectionalStream")]
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn a_session_ended_by_an_upstream_fault_says_so() {
    let log = Captured::default();
    let _guard = log.install();
    let h = Harness::start().await;
    let (tx, mut out) = opened(&h).await;
    assert!(h.sim.reset_h2_connections() >= 1);
    let end = tokio::time::timeout(Duration::from_secs(5), out.body.recv())
        .await
        .expect("the session ends at once");
    assert!(end.is_err(), "a typed error event");
    drop(tx);
    drop(out);
    let line = log.session_line().await;
    assert_eq!(line["end"], "upstream_fault", "{line}");
    assert_eq!(line["fault"], "upstream_fault", "{line}");
    assert_eq!(line["events_in"], 1, "{line}");
    // The answer to the first event, then the relay's error event.
    assert_eq!(line["events_out"], 2, "{line}");
    assert_eq!(h.metric("bedrock_relay_active_streams", &[]).await, 0.0);
    // The status page lists it among the interruptions.
    let status = support::http_get(&format!("http://{}/status.json", h.relay.admin_addr)).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let last = &status["interruptions"][0];
    assert_eq!(last["operation"], "InvokeModelWithBidirectionalStream");
    assert_eq!(last["outcome"], "upstream_fault");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_is_logged_as_gone_and_uncounted() {
    let h = Harness::start().await;
    let relay = h.relay.addr;
    let client = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(one_event_then_wait(relay));
        drop(rt);
    });
    tokio::task::spawn_blocking(move || client.join().unwrap())
        .await
        .unwrap();
    let gone = [("operation", "InvokeModelWithBidirectionalStream")];
    for _ in 0..250 {
        if h.metric("bedrock_relay_requests_total", &gone).await == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.metric("bedrock_relay_requests_total", &gone).await, 1.0);
    assert_eq!(h.metric("bedrock_relay_active_streams", &[]).await, 0.0);
    assert_eq!(
        h.metric("bedrock_relay_client_disconnects_total", &[])
            .await,
        1.0
    );
}
