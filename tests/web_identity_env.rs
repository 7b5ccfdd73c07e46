//! aws-sdk-rust in a pod with IRSA and only the global `AWS_ENDPOINT_URL`: aws-config's
//! default chain finds the web identity token file, sends `AssumeRoleWithWebIdentity` to the
//! endpoint override (the relay), which passes it on untouched to the simulator's STS
//! (`--service-upstream sts=...`); the application then calls ConverseStream through the
//! relay with the temporary credentials it got, and the relay heals a reset stream.
//!
//! Its own test binary: aws-config reads the process environment, which this test sets (the
//! shared integration binary runs tests on parallel threads). One test function.

use aws_config::BehaviorVersion;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseStreamOutput, Message,
};
use aws_sdk_bedrockruntime::Client;
use bedrock_relay::ServeArgs;
use bedrock_relay::Signer;
use bedrock_relay_sim::{self as sim, Fault, FaultRule, SimConfig};
use sha2::{Digest, Sha256};

const RELAY_KEY: &str = "AKIDRELAYEXAMPLE";
const RELAY_SECRET: &str = "relay-secret-key-for-tests";
const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/app-role";
/// A token shaped like the JWT EKS projects into a pod.
const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6InNpbSJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDphcHAiLCJhdWQiOiJzdHMuYW1hem9uYXdzLmNvbSJ9.c2lnbmF0dXJl";

/// The application: the default chain and the global endpoint from the environment, its
/// own retries off. Returns the streamed text and the access key it signed with.
async fn application(prompt: &str) -> (String, String) {
    let conf = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let creds = conf
        .credentials_provider()
        .expect("a credentials chain")
        .provide_credentials()
        .await
        .expect("credentials through the endpoint override");
    let client = Client::from_conf(
        aws_sdk_bedrockruntime::config::Builder::from(&conf)
            .retry_config(aws_sdk_bedrockruntime::config::retry::RetryConfig::disabled())
            .build(),
    );
    let mut out = client
        .converse_stream()
        .model_id(MODEL)
        .messages(
            Message::builder()
                .role(ConversationRole::User)
                .content(ContentBlock::Text(prompt.into()))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("ConverseStream");
    let mut text = String::new();
    while let Some(event) = out.stream.recv().await.expect("stream") {
        if let ConverseStreamOutput::ContentBlockDelta(d) = event {
            if let Some(Ok(t)) = d.delta().map(|d| d.as_text()) {
                text.push_str(t);
            }
        }
    }
    (text, creds.access_key_id().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_identity_credentials_through_the_relay_then_converse_stream() {
    // Bedrock: verifies the relay's signatures (and, straight at it, the credentials it issued).
    let sim = sim::start(SimConfig {
        credentials: vec![(RELAY_KEY.into(), RELAY_SECRET.into())],
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts");
    // STS, behind the relay.
    let sts = sim::start(SimConfig::default())
        .await
        .expect("simulator starts");
    let args = ServeArgs {
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        region: Some("us-east-1".into()),
        upstream: Some(sim.url()),
        service_upstream: vec![format!("sts={}", sts.url())],
        ..Default::default()
    };
    let settings = bedrock_relay::load_config(&args).expect("valid settings");
    let signer = Signer::for_tests(RELAY_KEY, RELAY_SECRET, None, "us-east-1");
    let relay = bedrock_relay::start_with_signer(settings, signer)
        .await
        .expect("relay starts");
    let relay_url = format!("http://{}", relay.addr);

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            std::env::remove_var(k);
        }
    }
    for (k, v) in [
        ("AWS_ENDPOINT_URL", relay_url.as_str()),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
        ("AWS_ROLE_ARN", ROLE_ARN),
        ("AWS_ROLE_SESSION_NAME", "pod-rust"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_CONFIG_FILE", "/nonexistent/aws-config"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        ),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ] {
        std::env::set_var(k, v);
    }

    // Through the relay: credentials from the simulator's STS, Bedrock re-signed.
    let prompt = "estuaries sim:tag=rust-irsa";
    sim.add_rule(FaultRule {
        operation: None,
        tag: Some("rust-irsa".into()),
        attempts: Some(vec![1]),
        fault: Fault::ResetAfterEvents { events: 3 },
    });
    let (text, access_key) = application(prompt).await;
    assert_eq!(text, sim::reference_text(MODEL, "", &[("user", prompt)]));
    assert!(access_key.starts_with("ASIASIM"), "{access_key}");
    let sts_log = sts.log();
    // Two calls: `application` asks the chain once itself, the client's cache once more.
    assert!(!sts_log.is_empty(), "the credential call reached STS");
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(TOKEN.as_bytes())));
    for call in &sts_log {
        assert_eq!(call.operation, "AssumeRoleWithWebIdentity");
        assert_eq!((call.status, call.signature.as_str()), (200, "unsigned"));
        assert_eq!(call.body["RoleArn"], ROLE_ARN);
        assert_eq!(call.body["RoleSessionName"], "pod-rust");
        assert_eq!(call.body["WebIdentityToken"], digest, "token untouched");
    }
    let log = sim.log();
    assert!(
        log.iter()
            .all(|e| e.operation != "AssumeRoleWithWebIdentity"),
        "not sent to Bedrock: {log:?}"
    );
    let bedrock: Vec<_> = log
        .iter()
        .filter(|e| e.tag.as_deref() == Some("rust-irsa"))
        .collect();
    assert_eq!(
        bedrock.len(),
        2,
        "the reset on the first attempt was healed"
    );
    assert!(
        bedrock.iter().all(|e| e.signature == "valid"),
        "re-signed with the relay's key: {bedrock:?}"
    );

    // Straight at the simulator: it verifies the temporary credentials it issued.
    std::env::set_var("AWS_ENDPOINT_URL", sim.url());
    let prompt = "deltas sim:tag=rust-irsa-direct";
    let (text, _) = application(prompt).await;
    assert_eq!(text, sim::reference_text(MODEL, "", &[("user", prompt)]));
    let direct = sim.log();
    let direct: Vec<_> = direct
        .iter()
        .filter(|e| e.tag.as_deref() == Some("rust-irsa-direct"))
        .collect();
    assert_eq!(direct.len(), 1);
    assert_eq!(direct[0].signature, "valid");

    relay.shutdown().await;
    sim.shutdown().await;
    sts.shutdown().await;
}
