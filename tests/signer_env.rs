//! Process-level signer test: `Signer::from_settings` picks bearer mode from
//! `AWS_BEARER_TOKEN_BEDROCK`, else SigV4 with credentials from the aws-config default chain
//! (here: the environment provider). One test function: it mutates the environment.

use bedrock_relay::Settings;
use bedrock_relay::Signer;
use bytes::Bytes;

fn request() -> http::Request<Bytes> {
    http::Request::post("http://127.0.0.1:1/model/m/converse")
        .body(Bytes::from_static(b"{}"))
        .unwrap()
}

#[tokio::test]
async fn bearer_then_default_chain() {
    // Isolate from any profile files on this machine.
    std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/aws-config");
    std::env::set_var(
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/aws-credentials",
    );
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let settings = Settings {
        region: "eu-west-3".into(),
        ..Settings::default()
    };

    std::env::set_var("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key-xyz");
    let s = Signer::from_settings(&settings).await.unwrap();
    assert!(s.is_bearer());
    let mut req = request();
    s.sign(&mut req).await.unwrap();
    assert_eq!(req.headers()["authorization"], "Bearer bedrock-api-key-xyz");

    std::env::remove_var("AWS_BEARER_TOKEN_BEDROCK");
    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIAENVCHAINTEST");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "env-secret");
    std::env::set_var("AWS_SESSION_TOKEN", "env-session");
    let s = Signer::from_settings(&settings).await.unwrap();
    assert!(!s.is_bearer());
    assert!(!format!("{s:?}").contains("env-secret"));
    let mut req = request();
    s.sign(&mut req).await.unwrap();
    let auth = req.headers()["authorization"].to_str().unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIAENVCHAINTEST/")
            && auth.contains("/eu-west-3/bedrock/aws4_request"),
        "{auth}"
    );
    assert_eq!(req.headers()["x-amz-security-token"], "env-session");
}
