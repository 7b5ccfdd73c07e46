//! Signing tests: the SigV4 signature is re-derived independently (hmac/sha2, straight
//! from the SigV4 spec) and compared with what the signer produced.

use super::*;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::time::{Duration, UNIX_EPOCH};

const AK: &str = "AKIDEXAMPLE";
const SK: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Independent SigV4 verification for requests without a query string.
fn expected_signature(
    req: &http::Request<Bytes>,
    secret: &str,
    region: &str,
    service: &str,
) -> (String, String) {
    let auth = req.headers()["authorization"].to_str().unwrap().to_string();
    let signed: Vec<&str> = auth
        .split("SignedHeaders=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .split(';')
        .collect();
    let amz_date = req.headers()["x-amz-date"].to_str().unwrap();
    let date = &amz_date[..8];
    let path: String = req
        .uri()
        .path()
        .split('/')
        .map(encode)
        .collect::<Vec<_>>()
        .join("/");
    let canonical_headers: String = signed
        .iter()
        .map(|h| format!("{h}:{}\n", req.headers()[*h].to_str().unwrap().trim()))
        .collect();
    let payload = hex::encode(Sha256::digest(req.body()));
    let canonical = format!(
        "{}\n{path}\n\n{canonical_headers}\n{}\n{payload}",
        req.method(),
        signed.join(";")
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let sts = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let k = hmac(format!("AWS4{secret}").as_bytes(), date);
    let k = hmac(&k, region);
    let k = hmac(&k, service);
    let k = hmac(&k, "aws4_request");
    let sig = hex::encode(hmac(&k, &sts));
    let got = auth.rsplit("Signature=").next().unwrap().to_string();
    (sig, got)
}

fn bedrock_request(path: &str) -> http::Request<Bytes> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1:9000{path}"))
        .header("content-type", "application/json")
        .header("x-amzn-bedrock-trace", "ENABLED")
        .header("user-agent", "test")
        .body(Bytes::from_static(br#"{"messages":[]}"#))
        .unwrap()
}

#[test]
fn sigv4_matches_independent_derivation_with_arn_path() {
    let path = "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-haiku/converse-stream";
    let mut req = bedrock_request(path);
    set_host(&mut req).unwrap();
    let creds = Credentials::new(AK, SK, None, None, "t");
    let t = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
    sign_sigv4(&mut req, &creds, "us-east-1", "bedrock", t).unwrap();

    assert_eq!(req.uri().path(), path, "path forwarded byte-exact");
    assert_eq!(req.headers()["x-amz-date"], "20150830T123600Z");
    assert_eq!(req.headers()["host"], "127.0.0.1:9000");
    assert_eq!(
        req.headers()["x-amz-content-sha256"].to_str().unwrap(),
        hex::encode(Sha256::digest(br#"{"messages":[]}"#))
    );
    let auth = req.headers()["authorization"].to_str().unwrap();
    assert!(auth.starts_with(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, SignedHeaders="
    ));
    for h in [
        "content-type;",
        "host;",
        "x-amz-content-sha256;",
        "x-amz-date",
        "x-amzn-bedrock-trace",
    ] {
        assert!(auth.contains(h), "{h} not signed: {auth}");
    }
    assert!(
        !auth.contains("user-agent"),
        "user-agent must not be signed"
    );
    let (want, got) = expected_signature(&req, SK, "us-east-1", "bedrock");
    assert_eq!(want, got);

    // A different secret gives a signature the verifier rejects (the check can fail).
    let (other, _) = expected_signature(&req, "not-the-secret", "us-east-1", "bedrock");
    assert_ne!(other, got);
}

#[tokio::test]
async fn session_token_is_added_and_signed() {
    let signer = Signer::for_tests(AK, SK, Some("SESSIONTOKEN"), "eu-central-1");
    let mut req = bedrock_request("/model/amazon.nova-pro-v1%3A0/converse");
    signer.sign(&mut req).await.unwrap();
    assert_eq!(req.headers()["x-amz-security-token"], "SESSIONTOKEN");
    let auth = req.headers()["authorization"].to_str().unwrap();
    assert!(auth.contains("x-amz-security-token"), "{auth}");
    assert!(auth.contains("/eu-central-1/bedrock/aws4_request"));
    let (want, got) = expected_signature(&req, SK, "eu-central-1", "bedrock");
    assert_eq!(want, got);
}

#[tokio::test]
async fn fresh_timestamp_each_call() {
    let signer = Signer::for_tests(AK, SK, None, "us-east-1");
    let mut req = bedrock_request("/model/m/converse");
    signer.sign(&mut req).await.unwrap();
    let today: String = humantime::format_rfc3339(SystemTime::now())
        .to_string()
        .chars()
        .take(10)
        .filter(|c| *c != '-')
        .collect();
    assert!(
        req.headers()["x-amz-date"]
            .to_str()
            .unwrap()
            .starts_with(&today),
        "x-amz-date is not now"
    );
    // Re-signing an already-signed request replaces, not duplicates, the auth headers.
    signer.sign(&mut req).await.unwrap();
    assert_eq!(req.headers().get_all("authorization").iter().count(), 1);
    assert_eq!(req.headers().get_all("x-amz-date").iter().count(), 1);
}

#[tokio::test]
async fn bearer_mode() {
    let signer = Signer::bearer("tok-123", "us-west-2");
    assert!(signer.is_bearer());
    let mut req = bedrock_request("/model/m/converse");
    signer.sign(&mut req).await.unwrap();
    assert_eq!(req.headers()["authorization"], "Bearer tok-123");
    assert!(req.headers().get("x-amz-date").is_none());
    assert_eq!(req.headers()["host"], "127.0.0.1:9000");
}

#[tokio::test]
async fn relative_uri_is_refused() {
    let signer = Signer::for_tests(AK, SK, None, "us-east-1");
    let mut req = http::Request::builder()
        .method("POST")
        .uri("/model/m/converse")
        .body(Bytes::new())
        .unwrap();
    assert!(matches!(
        signer.sign(&mut req).await,
        Err(SigningError::RelativeUri)
    ));
}

#[test]
fn debug_redacts_secrets() {
    let s = format!(
        "{:?}",
        Signer::for_tests(AK, SK, Some("SESSIONTOKEN"), "us-east-1")
    );
    assert!(
        !s.contains(SK) && !s.contains("SESSIONTOKEN") && !s.contains(AK),
        "{s}"
    );
    let b = format!("{:?}", Signer::bearer("tok-secret", "us-east-1"));
    assert!(!b.contains("tok-secret"), "{b}");
}
