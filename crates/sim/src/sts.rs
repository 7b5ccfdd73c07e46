//! The simulator's STS: answers `AssumeRoleWithWebIdentity` and `AssumeRoleWithSAML` (query
//! protocol: `POST /` with a form body, or an `Action=` query string) with temporary
//! credentials in STS's XML shape, so an SDK whose global `AWS_ENDPOINT_URL` points at the
//! relay (or at the simulator) can obtain credentials the way a pod with IRSA does.
//!
//! Credentials are derived from the request (same token, role and session → same keys) and
//! remembered ([`Issued`]): when the simulator verifies SigV4 (it was given keys), a request
//! signed with issued credentials and carrying their session token is accepted too.
//!
//! The web identity token and the SAML assertion are never kept: the log records their
//! SHA-256 (`sha256:<hex>`). A token containing `sim:invalid` is refused with
//! `InvalidIdentityToken`, as STS refuses a token its identity provider does not vouch for.

use super::gen;
use super::http::{Conn, Request};
use super::log::{Log, LogEntry};
use super::SimConfig;
use bedrock_relay_wire::ops::form_value;
use bedrock_relay_wire::sigv4::{self, Verdict};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Issued credentials kept for SigV4 verification (oldest forgotten first).
const MAX_ISSUED: usize = 1000;

/// Parameters whose values are proof and are logged as a digest only.
const SECRET_PARAMS: &[&str] = &["WebIdentityToken", "SAMLAssertion"];

/// Temporary credentials the simulator issued.
#[derive(Clone, PartialEq, Eq)]
pub struct TempCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
}

impl std::fmt::Debug for TempCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Credentials issued so far, shared by all connections.
#[derive(Debug, Default)]
pub struct Issued(Mutex<VecDeque<TempCredentials>>);

impl Issued {
    fn remember(&self, c: TempCredentials) {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !v.contains(&c) {
            if v.len() == MAX_ISSUED {
                v.pop_front();
            }
            v.push_back(c);
        }
    }

    /// `(access key id, secret)` pairs, in the form the SigV4 verifier takes.
    pub fn keys(&self) -> Vec<(String, String)> {
        let v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.iter()
            .map(|c| (c.access_key_id.clone(), c.secret_access_key.clone()))
            .collect()
    }

    /// `Some(true)` when `access_key_id` was issued here and `session_token` is its token,
    /// `Some(false)` when it was issued with another token, `None` when it was not issued here.
    pub fn token_matches(&self, access_key_id: &str, session_token: Option<&str>) -> Option<bool> {
        let v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.iter()
            .find(|c| c.access_key_id == access_key_id)
            .map(|c| session_token == Some(c.session_token.as_str()))
    }
}

/// Whether a simulator request is an STS query-protocol call.
pub fn is_sts(req: &Request) -> bool {
    let form = req.header("content-type").is_some_and(|ct| {
        ct.trim_start()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    let action_in_query = form_value(&req.query, "Action").is_some();
    req.path == "/"
        && ((req.method == "POST" && (form || action_in_query))
            || (req.method == "GET" && action_in_query))
}

/// One STS answer: status, XML body, and what the log records.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub xml: String,
    pub action: String,
    pub logged_params: Value,
}

/// Answer an STS call (`params` from the query string, then the form body).
pub fn answer(issued: &Issued, req: &Request, request_id: &str) -> Answer {
    let body = String::from_utf8_lossy(&req.body);
    let params: Vec<(String, String)> = pairs(&req.query).chain(pairs(&body)).collect();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let action = get("Action").unwrap_or("").to_string();
    let mut logged = Map::new();
    for (k, v) in &params {
        let shown = if SECRET_PARAMS.contains(&k.as_str()) {
            Value::String(digest(v))
        } else {
            Value::String(v.clone())
        };
        logged.entry(k.clone()).or_insert(shown);
    }
    let result = match action.as_str() {
        "AssumeRoleWithWebIdentity" => web_identity(issued, &get),
        "AssumeRoleWithSAML" => saml(issued, &get),
        other => Err((
            "InvalidAction",
            format!("Could not find operation {other} for version 2011-06-15"),
        )),
    };
    let (status, xml) = match result {
        Ok(inner) => (
            200,
            format!(
                "<{action}Response xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <{action}Result>\n{inner}  </{action}Result>\n  <ResponseMetadata>\n    <RequestId>{request_id}</RequestId>\n  </ResponseMetadata>\n</{action}Response>\n"
            ),
        ),
        Err((code, message)) => (
            400,
            format!(
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    <Type>Sender</Type>\n    <Code>{code}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n",
                escape(&message)
            ),
        ),
    };
    Answer {
        status,
        xml,
        action,
        logged_params: Value::Object(logged),
    }
}

type Refusal = (&'static str, String);

fn required<'a>(get: &impl Fn(&str) -> Option<&'a str>, name: &str) -> Result<&'a str, Refusal> {
    match get(name) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => {
            let member = format!("{}{}", name[..1].to_ascii_lowercase(), &name[1..]);
            Err((
                "ValidationError",
                format!("1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"),
            ))
        }
    }
}

fn role<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<(&'a str, &'a str), Refusal> {
    let arn = required(get, "RoleArn")?;
    // arn:aws:iam::123456789012:role/path/name
    let account = arn.split(':').nth(4).filter(|a| !a.is_empty());
    let name = arn.rsplit('/').next().filter(|_| arn.contains(":role/"));
    match (arn.starts_with("arn:"), account, name) {
        (true, Some(account), Some(name)) => Ok((account, name)),
        _ => Err(("ValidationError", format!("{arn} is not a valid role ARN"))),
    }
}

fn web_identity<'a>(
    issued: &Issued,
    get: &impl Fn(&str) -> Option<&'a str>,
) -> Result<String, Refusal> {
    let (account, role_name) = role(get)?;
    let session = required(get, "RoleSessionName")?;
    let token = required(get, "WebIdentityToken")?;
    if token.contains("sim:invalid") {
        return Err((
            "InvalidIdentityToken",
            "Couldn't retrieve verification key from your identity provider,  please reference AssumeRoleWithWebIdentity documentation for requirements".into(),
        ));
    }
    let claims = jwt_claims(token);
    let claim = |k: &str, default: &str| {
        claims
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    };
    let creds = issue(issued, &[token, account, role_name, session]);
    Ok(format!(
        "{}    <SubjectFromWebIdentityToken>{}</SubjectFromWebIdentityToken>\n{}    <Provider>{}</Provider>\n    <Audience>{}</Audience>\n",
        credentials_xml(&creds, duration(get)),
        escape(&claim("sub", "sim-subject")),
        assumed_role_xml(account, role_name, session),
        escape(&claim("iss", "sim")),
        escape(&claim("aud", "sts.amazonaws.com")),
    ))
}

fn saml<'a>(issued: &Issued, get: &impl Fn(&str) -> Option<&'a str>) -> Result<String, Refusal> {
    let (account, role_name) = role(get)?;
    let principal = required(get, "PrincipalArn")?;
    let assertion = required(get, "SAMLAssertion")?;
    let session = "sim-saml-session";
    let creds = issue(issued, &[assertion, account, role_name, principal]);
    Ok(format!(
        "{}{}    <Audience>https://signin.aws.amazon.com/saml</Audience>\n    <Issuer>{}</Issuer>\n    <Subject>sim-subject</Subject>\n    <SubjectType>persistent</SubjectType>\n    <NameQualifier>sim-name-qualifier</NameQualifier>\n",
        credentials_xml(&creds, duration(get)),
        assumed_role_xml(account, role_name, session),
        escape(principal),
    ))
}

fn duration<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Duration {
    let secs = get("DurationSeconds")
        .and_then(|d| d.parse::<u64>().ok())
        .unwrap_or(3600)
        .clamp(900, 43_200);
    Duration::from_secs(secs)
}

/// Deterministic credentials for the request's proof and role, remembered for SigV4.
fn issue(issued: &Issued, parts: &[&str]) -> TempCredentials {
    let h = gen::hash_parts(parts.iter().copied());
    let h2 = gen::hash_parts([h.to_string().as_str(), "secret"]);
    let h3 = gen::hash_parts([h.to_string().as_str(), "token"]);
    let creds = TempCredentials {
        access_key_id: format!("ASIASIM{:013X}", h & 0xf_ffff_ffff_ffff),
        secret_access_key: format!("simSecret{h2:016x}{h3:016x}"),
        session_token: format!("simSessionToken{h3:016x}{h:016x}{h2:016x}"),
    };
    issued.remember(creds.clone());
    creds
}

fn credentials_xml(c: &TempCredentials, valid_for: Duration) -> String {
    let expiration = humantime::format_rfc3339_seconds(SystemTime::now() + valid_for);
    format!(
        "    <Credentials>\n      <AccessKeyId>{}</AccessKeyId>\n      <SecretAccessKey>{}</SecretAccessKey>\n      <SessionToken>{}</SessionToken>\n      <Expiration>{expiration}</Expiration>\n    </Credentials>\n",
        c.access_key_id, c.secret_access_key, c.session_token
    )
}

fn assumed_role_xml(account: &str, role_name: &str, session: &str) -> String {
    let id = gen::hash_parts([account, role_name]);
    format!(
        "    <AssumedRoleUser>\n      <AssumedRoleId>AROASIM{:013X}:{}</AssumedRoleId>\n      <Arn>arn:aws:sts::{}:assumed-role/{}/{}</Arn>\n    </AssumedRoleUser>\n",
        id & 0xf_ffff_ffff_ffff,
        escape(session),
        escape(account),
        escape(role_name),
        escape(session)
    )
}

/// The claims of a JWT's payload, when the token is one (nothing is verified).
fn jwt_claims(token: &str) -> Map<String, Value> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap_or("");
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
}

/// `sha256:<hex>` of a secret value, for the log.
pub fn digest(secret: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(secret.as_bytes())))
}

fn pairs(form: &str) -> impl Iterator<Item = (String, String)> + '_ {
    form.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        (decode(k), decode(v))
    })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Answer an STS call on `conn` and record it in the log.
pub(super) async fn serve(
    issued: &Issued,
    log: &Log,
    mut conn: Conn,
    req: Request,
    seq: u64,
    rid: &str,
) -> Option<Conn> {
    let a = answer(issued, &req, rid);
    let signature = if req.header("authorization").is_some() {
        "unchecked"
    } else {
        "unsigned"
    };
    log.push(LogEntry {
        seq,
        operation: a.action.chars().take(64).collect(),
        model_id: None,
        conversation: String::new(),
        attempt: 1,
        connection: conn.id,
        signature: signature.into(),
        service: req.signed_service(),
        status: a.status,
        body: a.logged_params,
        ..LogEntry::default()
    });
    let headers = [
        ("content-type", "text/xml".to_string()),
        ("x-amzn-RequestId", rid.to_string()),
    ];
    conn.respond(a.status, &headers, a.xml.as_bytes())
        .await
        .ok()
        .map(|_| conn)
}

/// Check the request's SigV4 signature (or bearer token) against the configured keys and,
/// when verification is on, the temporary credentials the simulator's STS issued (their
/// session token must come along).
pub(super) fn verify(c: &SimConfig, issued: &Issued, req: &Request) -> Verdict {
    let mut keys = c.credentials.clone();
    let checking = !c.credentials.is_empty() || !c.bearer_tokens.is_empty();
    if checking {
        keys.extend(issued.keys());
    }
    let verdict = sigv4::verify(
        &sigv4::SignedRequest {
            method: &req.method,
            path: &req.path,
            query: &req.query,
            headers: &req.headers,
            body: &req.body,
        },
        &keys,
        &c.bearer_tokens,
    );
    let key = req
        .header("authorization")
        .and_then(sigv4::parse_authorization)
        .map(|a| a.access_key_id);
    let configured = |k: &str| c.credentials.iter().any(|(id, _)| id == k);
    match (verdict, key) {
        (Verdict::Valid, Some(k)) if !configured(&k) => {
            match issued.token_matches(&k, req.header("x-amz-security-token")) {
                Some(false) => Verdict::UnknownKey,
                _ => verdict,
            }
        }
        _ => verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, query: &str, body: &str) -> Request {
        Request {
            method: method.into(),
            path: "/".into(),
            query: query.into(),
            headers: vec![(
                "Content-Type".into(),
                "application/x-www-form-urlencoded; charset=utf-8".into(),
            )],
            body: body.as_bytes().to_vec(),
            close: false,
        }
    }

    const WEB_IDENTITY: &str = "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fapp-role&RoleSessionName=pod-1&WebIdentityToken=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDphcHAiLCJhdWQiOiJzdHMuYW1hem9uYXdzLmNvbSJ9.c2ln";

    #[test]
    fn web_identity_gets_credentials_in_sts_shape_and_the_token_is_not_logged() {
        let issued = Issued::default();
        let req = request("POST", "", WEB_IDENTITY);
        assert!(is_sts(&req));
        let a = answer(&issued, &req, "rid-1");
        assert_eq!(a.status, 200, "{}", a.xml);
        assert_eq!(a.action, "AssumeRoleWithWebIdentity");
        for part in [
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">",
            "<AssumeRoleWithWebIdentityResult>",
            "<AccessKeyId>ASIASIM",
            "<SessionToken>simSessionToken",
            "<SubjectFromWebIdentityToken>system:serviceaccount:default:app</SubjectFromWebIdentityToken>",
            "<Arn>arn:aws:sts::123456789012:assumed-role/app-role/pod-1</Arn>",
            "<RequestId>rid-1</RequestId>",
        ] {
            assert!(a.xml.contains(part), "{part} in {}", a.xml);
        }
        let token = form_value(WEB_IDENTITY, "WebIdentityToken").unwrap();
        assert_eq!(a.logged_params["WebIdentityToken"], digest(&token));
        assert_eq!(a.logged_params["RoleSessionName"], "pod-1");
        assert!(!a.logged_params.to_string().contains(&token));

        let keys = issued.keys();
        assert_eq!(keys.len(), 1);
        assert!(
            a.xml.contains(&keys[0].1),
            "the secret is the one remembered"
        );
        let again = answer(&issued, &req, "rid-2");
        assert_eq!(issued.keys(), keys, "same request, same credentials");
        let token_of = |xml: &str| {
            xml.split("<SessionToken>")
                .nth(1)
                .unwrap()
                .split('<')
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            issued.token_matches(&keys[0].0, Some(&token_of(&again.xml))),
            Some(true)
        );
        assert_eq!(issued.token_matches(&keys[0].0, Some("other")), Some(false));
        assert_eq!(issued.token_matches("AKIDOTHER", None), None);
    }

    #[test]
    fn saml_from_a_query_string_and_refusals_in_sts_error_shape() {
        let issued = Issued::default();
        let q = "Action=AssumeRoleWithSAML&Version=2011-06-15&RoleArn=arn:aws:iam::1:role/r&PrincipalArn=arn:aws:iam::1:saml-provider/idp&SAMLAssertion=PHNhbWw%2B";
        let req = Request {
            headers: Vec::new(),
            ..request("GET", q, "")
        };
        assert!(is_sts(&req));
        let a = answer(&issued, &req, "r");
        assert_eq!(a.status, 200, "{}", a.xml);
        assert!(a.xml.contains("<AssumeRoleWithSAMLResult>"), "{}", a.xml);
        assert!(a.logged_params["SAMLAssertion"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"));

        let no_role = answer(
            &issued,
            &request(
                "POST",
                "",
                "Action=AssumeRoleWithWebIdentity&RoleSessionName=s&WebIdentityToken=t",
            ),
            "r",
        );
        assert_eq!(no_role.status, 400);
        assert!(
            no_role.xml.contains("<Code>ValidationError</Code>"),
            "{}",
            no_role.xml
        );
        assert!(no_role.xml.contains("'roleArn'"), "{}", no_role.xml);
        let invalid = WEB_IDENTITY.replace("c2ln", "sim:invalid");
        let refused = answer(&issued, &request("POST", "", &invalid), "r");
        assert!(
            refused.xml.contains("<Code>InvalidIdentityToken</Code>"),
            "{}",
            refused.xml
        );
        let other = answer(
            &issued,
            &request("POST", "", "Action=GetCallerIdentity"),
            "r",
        );
        assert!(
            other.xml.contains("<Code>InvalidAction</Code>"),
            "{}",
            other.xml
        );
        assert_eq!(
            issued.keys().len(),
            1,
            "only the SAML call issued credentials"
        );
        assert!(!is_sts(&Request {
            path: "/model/m/converse".into(),
            ..request("POST", "", "{}")
        }));
    }
}
