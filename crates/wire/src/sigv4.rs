//! SigV4 verification of a request's own signature, shared by the relay's inbound
//! authentication (`inbound`) and the simulator; [`events`] does the same for the signed
//! input messages of a bidirectional stream.
//!
//! Hand-written from the SigV4 specification with `hmac` + `sha2`, deliberately independent
//! of `aws-sigv4`, so a bug in the relay's signer (which uses `aws-sigv4`) is caught here
//! rather than mirrored. Non-S3 rules: the already-encoded path is URI-encoded once more
//! (`%3A` → `%253A`), the payload hash is SHA-256 of the body, and when the client sent
//! `x-amz-content-sha256` it must equal that hash. The clock is not checked here (the
//! relay's inbound check adds a skew limit). Secrets and signatures are compared in
//! constant time.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub mod events;

/// Outcome of checking a request's authentication, as written to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid,
    UnknownKey,
    Missing,
    Bearer,
    BadBearer,
    Unchecked,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Invalid => "invalid",
            Verdict::UnknownKey => "unknown_key",
            Verdict::Missing => "missing",
            Verdict::Bearer => "bearer",
            Verdict::BadBearer => "invalid",
            Verdict::Unchecked => "unchecked",
        }
    }
}

/// The parts of an HTTP request the signature covers.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// Path as sent on the wire (still percent-encoded), without the query.
    pub path: &'a str,
    pub query: &'a str,
    /// Header names in any case; repeated names allowed.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// A parsed `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Parse a SigV4 Authorization header value.
pub fn parse_authorization(value: &str) -> Option<Authorization> {
    let rest = value.trim().strip_prefix("AWS4-HMAC-SHA256")?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let mut scope = credential?.split('/');
    let auth = Authorization {
        access_key_id: scope.next()?.to_owned(),
        date: scope.next()?.to_owned(),
        region: scope.next()?.to_owned(),
        service: scope.next()?.to_owned(),
        signed_headers: signed?.split(';').map(str::to_owned).collect(),
        signature: signature?.to_owned(),
    };
    (scope.next() == Some("aws4_request")).then_some(auth)
}

/// Encode every byte except the unreserved set; `/` kept when `keep_slash`.
fn uri_encode(input: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(input.len() * 2);
    for b in input.bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The canonical request for `req` under `auth`'s SignedHeaders.
pub fn canonical_request(
    req: &SignedRequest<'_>,
    signed_headers: &[String],
    payload_hash: &str,
) -> String {
    let path = if req.path.is_empty() { "/" } else { req.path };
    let mut query: Vec<(String, String)> = req
        .query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (uri_encode(&dec(k), false), uri_encode(&dec(v), false))
        })
        .collect();
    query.sort();
    let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut out = format!(
        "{}\n{}\n{}\n",
        req.method,
        uri_encode(path, true),
        query.join("&")
    );
    for name in signed_headers {
        let values: Vec<String> = header_values(req.headers, name)
            .iter()
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        out.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    out.push_str(&format!("\n{}\n{payload_hash}", signed_headers.join(";")));
    out
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The signature the request should carry for `secret`.
pub fn expected_signature(
    req: &SignedRequest<'_>,
    auth: &Authorization,
    secret: &str,
) -> Option<String> {
    let amz_date = header_values(req.headers, "x-amz-date").first().copied()?;
    let body_hash = hex::encode(Sha256::digest(req.body));
    let payload_hash = match header_values(req.headers, "x-amz-content-sha256").first() {
        Some(h) if *h == body_hash => h.to_string(),
        // A signed event stream's head (its events carry their own chained signatures).
        Some(h) if *h == events::STREAMING_EVENTS && req.body.is_empty() => h.to_string(),
        Some(_) => return None,
        None => body_hash,
    };
    let canonical = canonical_request(req, &auth.signed_headers, &payload_hash);
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), &auth.date);
    for part in [auth.region.as_str(), auth.service.as_str(), "aws4_request"] {
        key = hmac(&key, part);
    }
    Some(hex::encode(hmac(&key, &to_sign)))
}

/// Check a request against configured keys and bearer tokens. With none configured every
/// request is accepted (`Unchecked`).
pub fn verify(req: &SignedRequest<'_>, keys: &[(String, String)], tokens: &[String]) -> Verdict {
    if keys.is_empty() && tokens.is_empty() {
        return Verdict::Unchecked;
    }
    let Some(authz) = header_values(req.headers, "authorization").first().copied() else {
        return Verdict::Missing;
    };
    if let Some(token) = authz.strip_prefix("Bearer ") {
        let token = token.trim().as_bytes();
        // Every token is compared (no early exit), each in constant time.
        let matched = tokens
            .iter()
            .fold(false, |m, t| constant_time_eq(t.as_bytes(), token) | m);
        return if matched {
            Verdict::Bearer
        } else {
            Verdict::BadBearer
        };
    }
    let Some(auth) = parse_authorization(authz) else {
        return Verdict::Missing;
    };
    let Some((_, secret)) = keys.iter().find(|(k, _)| *k == auth.access_key_id) else {
        return Verdict::UnknownKey;
    };
    let signed_ok = auth.signed_headers.iter().any(|h| h == "host")
        && (header_values(req.headers, "x-amz-security-token").is_empty()
            || auth
                .signed_headers
                .iter()
                .any(|h| h == "x-amz-security-token"));
    match expected_signature(req, &auth, secret) {
        Some(sig)
            if signed_ok
                && matches!(auth.service.as_str(), "bedrock" | "bedrock-mantle")
                && constant_time_eq(sig.as_bytes(), auth.signature.as_bytes()) =>
        {
            Verdict::Valid
        }
        _ => Verdict::Invalid,
    }
}

/// Byte equality whose time depends only on the lengths, not on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `post-vanilla` from the AWS SigV4 test suite (shipped in aws-sigv4's crate).
    #[test]
    fn aws_test_vector_post_vanilla() {
        let headers = h(&[
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
            ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
        ]);
        let req = SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: b"",
        };
        let auth = parse_authorization(&headers[2].1).unwrap();
        assert_eq!(
            canonical_request(&req, &auth.signed_headers, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            "POST\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            expected_signature(&req, &auth, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY").unwrap(),
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
    }

    fn sign_with_aws_sigv4(path: &str, body: &[u8], token: Option<&str>) -> Vec<(String, String)> {
        use aws_sigv4::http_request::{
            sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
        };
        use aws_sigv4::sign::v4;
        let creds = aws_credential_types::Credentials::new(
            "AKIDSIM",
            "simsecret",
            token.map(str::to_owned),
            None,
            "test",
        );
        let identity = creds.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-west-2")
            .name("bedrock")
            .time(std::time::SystemTime::now())
            .settings({
                // With a session token, also send x-amz-content-sha256 (as S3-style clients do).
                let mut settings = SigningSettings::default();
                if token.is_some() {
                    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
                }
                settings
            })
            .build()
            .unwrap()
            .into();
        let uri = format!("http://127.0.0.1:8799{path}");
        let base = [
            ("host", "127.0.0.1:8799"),
            ("content-type", "application/json"),
        ];
        let signable =
            SignableRequest::new("POST", &uri, base.into_iter(), SignableBody::Bytes(body))
                .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut headers = h(&base);
        for (k, v) in instructions.headers() {
            headers.push((k.to_string(), v.to_string()));
        }
        headers
    }

    #[test]
    fn accepts_aws_sigv4_signed_requests_and_rejects_tampering() {
        let keys = vec![("AKIDSIM".to_string(), "simsecret".to_string())];
        let path = "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.anthropic.claude-v2/converse";
        let body = br#"{"messages":[]}"#;
        for token in [None, Some("session-token")] {
            let headers = sign_with_aws_sigv4(path, body, token);
            let req = SignedRequest {
                method: "POST",
                path,
                query: "",
                headers: &headers,
                body,
            };
            assert_eq!(verify(&req, &keys, &[]), Verdict::Valid, "token {token:?}");
            let mut claimed = headers.clone();
            claimed.push(("x-amz-content-sha256".into(), "UNSIGNED-PAYLOAD".into()));
            let unsigned = SignedRequest {
                headers: &claimed,
                ..req
            };
            assert_eq!(
                verify(&unsigned, &keys, &[]),
                Verdict::Invalid,
                "hash header must match"
            );
            let tampered = SignedRequest { body: b"{}", ..req };
            assert_eq!(verify(&tampered, &keys, &[]), Verdict::Invalid);
            let wrong = vec![("AKIDSIM".to_string(), "other".to_string())];
            assert_eq!(verify(&req, &wrong, &[]), Verdict::Invalid);
            let other_key = vec![("AKIDOTHER".to_string(), "simsecret".to_string())];
            assert_eq!(verify(&req, &other_key, &[]), Verdict::UnknownKey);
        }
    }

    #[test]
    fn bearer_missing_and_unchecked() {
        let none: Vec<(String, String)> = vec![];
        let tokens = vec!["tok1".to_string()];
        let bearer = h(&[("authorization", "Bearer tok1")]);
        let req = SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers: &bearer,
            body: b"",
        };
        assert_eq!(verify(&req, &none, &tokens), Verdict::Bearer);
        assert_eq!(verify(&req, &none, &["x".into()]), Verdict::BadBearer);
        assert_eq!(verify(&req, &none, &[]), Verdict::Unchecked);
        let empty = SignedRequest {
            headers: &[],
            ..req
        };
        assert_eq!(verify(&empty, &none, &tokens), Verdict::Missing);
    }
}
