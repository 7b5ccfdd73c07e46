//! Unit tests of inbound admission: SigV4 (signed by `aws-sigv4`, as SDKs sign), bearer
//! tokens, clock skew, policy lists and per-client slots.

use super::*;
use crate::config::{ClientKey, Secret};
use std::time::UNIX_EPOCH;

const PATH: &str = "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.anthropic.claude-v2/converse";

fn settings() -> InboundSettings {
    InboundSettings {
        sigv4_keys: vec![ClientKey {
            access_key_id: "AKIDAPP".into(),
            secret_access_key: Secret::new("app-secret"),
        }],
        bearer_tokens: vec![Secret::new("tok-1")],
        ..Default::default()
    }
}

/// Request parts signed by aws-sigv4 with `key`/`secret` at `time`.
fn signed(key: &str, secret: &str, body: &[u8], time: SystemTime) -> Parts {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;
    let identity = aws_credential_types::Credentials::new(key, secret, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("bedrock")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let uri = format!("http://127.0.0.1:8790{PATH}");
    let base = [
        ("host", "127.0.0.1:8790"),
        ("content-type", "application/json"),
    ];
    let signable =
        SignableRequest::new("POST", &uri, base.into_iter(), SignableBody::Bytes(body)).unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = http::Request::post(PATH);
    for (k, v) in base {
        req = req.header(k, v);
    }
    for (k, v) in instructions.headers() {
        req = req.header(k, v);
    }
    req.body(()).unwrap().into_parts().0
}

fn plain(authz: Option<&str>) -> Parts {
    let mut req = http::Request::post(PATH);
    if let Some(a) = authz {
        req = req.header("authorization", a);
    }
    req.body(()).unwrap().into_parts().0
}

fn admit(i: &Inbound, parts: &Parts) -> Result<Admission, Denied> {
    i.admit(
        parts,
        Operation::Converse,
        Some(PATH.split('/').nth(2).unwrap()),
    )
}

#[test]
fn sigv4_with_a_client_key_is_accepted_and_tampering_is_not() {
    let i = Inbound::new(&settings());
    let body = Bytes::from_static(br#"{"messages":[]}"#);
    let parts = signed("AKIDAPP", "app-secret", &body, SystemTime::now());
    let a = admit(&i, &parts).expect("head passes");
    a.verify_body(&i, &parts, &body).expect("signature valid");
    let other = Bytes::from_static(b"{}");
    assert_eq!(a.verify_body(&i, &parts, &other), Err(Denied::BadSignature));
    let wrong_secret = signed("AKIDAPP", "not-the-secret", &body, SystemTime::now());
    let a = admit(&i, &wrong_secret).expect("head passes");
    assert_eq!(
        a.verify_body(&i, &wrong_secret, &body),
        Err(Denied::BadSignature)
    );
}

#[test]
fn unknown_key_and_stale_signature_are_refused_before_the_body() {
    let i = Inbound::new(&settings());
    let parts = signed("AKIDOTHER", "app-secret", b"", SystemTime::now());
    assert!(matches!(admit(&i, &parts), Err(Denied::UnknownKey { .. })));
    let old = SystemTime::now() - Duration::from_secs(3600);
    let parts = signed("AKIDAPP", "app-secret", b"", old);
    assert_eq!(
        admit(&i, &parts).unwrap_err(),
        Denied::Expired { max_skew_secs: 900 }
    );
}

#[test]
fn bearer_tokens_and_missing_auth() {
    let i = Inbound::new(&settings());
    let a = admit(&i, &plain(Some("Bearer tok-1"))).expect("good token");
    a.verify_body(&i, &plain(None), &Bytes::new())
        .expect("bearer needs no body check");
    assert_eq!(
        admit(&i, &plain(Some("Bearer tok-2"))).unwrap_err(),
        Denied::BadBearer
    );
    assert_eq!(admit(&i, &plain(None)).unwrap_err(), Denied::Missing);
    assert_eq!(
        admit(&i, &plain(Some("Basic dXNlcjpwdw=="))).unwrap_err(),
        Denied::Missing
    );
}

#[test]
fn without_configured_auth_everything_is_admitted() {
    let i = Inbound::new(&InboundSettings::default());
    assert!(admit(&i, &plain(None)).is_ok());
    assert!(admit(&i, &plain(Some("Bearer anything"))).is_ok());
}

#[test]
fn policy_lists_of_operations_and_models() {
    let mut s = InboundSettings {
        deny_operations: vec!["InvokeModel".into()],
        allow_models: vec![regex::Regex::new(r"^arn:aws:bedrock:.*anthropic").unwrap()],
        deny_models: vec![regex::Regex::new(r"claude-v1").unwrap()],
        ..Default::default()
    };
    let i = Inbound::new(&s);
    let arn = "arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.anthropic.claude-v2";
    let p = plain(None);
    assert!(
        i.admit(&p, Operation::Converse, Some(arn)).is_ok(),
        "decoded ARN matches"
    );
    assert!(matches!(
        i.admit(&p, Operation::InvokeModel, Some(arn)),
        Err(Denied::Operation { .. })
    ));
    assert!(matches!(
        i.admit(&p, Operation::Converse, Some("meta.llama3")),
        Err(Denied::Model { .. })
    ));
    let v1 = "arn:aws:bedrock:x:anthropic.claude-v1";
    assert!(matches!(
        i.admit(&p, Operation::Converse, Some(v1)),
        Err(Denied::Model { .. })
    ));
    s.allow_operations = vec!["ConverseStream".into()];
    let i = Inbound::new(&s);
    assert!(matches!(
        i.admit(&p, Operation::Converse, Some(arn)),
        Err(Denied::Operation { .. })
    ));
    assert!(i.admit(&p, Operation::ConverseStream, Some(arn)).is_ok());
}

#[test]
fn concurrency_slots_per_client_follow_the_response_body() {
    let s = InboundSettings {
        max_concurrency_per_client: 1,
        ..settings()
    };
    let i = Inbound::new(&s);
    let first = admit(&i, &plain(Some("Bearer tok-1"))).unwrap();
    assert_eq!(
        admit(&i, &plain(Some("Bearer tok-1"))).unwrap_err(),
        Denied::TooManyConcurrent { limit: 1 }
    );
    let resp = first.hold(http::Response::new(crate::body::full(Bytes::new())));
    assert_eq!(i.in_flight(), 1, "the slot moved into the response");
    drop(resp);
    assert_eq!(i.in_flight(), 0);
    assert!(admit(&i, &plain(Some("Bearer tok-1"))).is_ok());
}

#[test]
fn amz_dates() {
    let t = parse_amz_date("20150830T123600Z").unwrap();
    assert_eq!(
        t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
        1_440_938_160
    );
    for bad in [
        "",
        "20150830T1236Z",
        "2015-08-30T12:36:00Z",
        "20151330T123600Z",
    ] {
        assert!(parse_amz_date(bad).is_none(), "{bad}");
    }
    assert!(within(
        t,
        t + Duration::from_secs(60),
        Duration::from_secs(60)
    ));
    assert!(!within(
        t + Duration::from_secs(61),
        t,
        Duration::from_secs(60)
    ));
}
