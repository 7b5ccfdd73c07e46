//! Requests for AWS services other than Bedrock, which a global `AWS_ENDPOINT_URL` sends to
//! the relay too: the credential calls an SDK makes on its own behalf, recognised from the
//! request head (and, for STS, the `Action` parameter), and the wire protocol another
//! service's errors must be written in for its SDK to read them.
//!
//! Credential calls are unsigned: the web identity token, SAML assertion, SSO access token or
//! OIDC client secret inside them is their proof. Nothing here reads or keeps those values;
//! only the `Action` name is decoded.

use http::{HeaderMap, Method};
use percent_encoding::percent_decode_str;

/// A service an SDK calls, unsigned, to obtain credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialService {
    /// STS `AssumeRoleWithWebIdentity` (IRSA, web identity token files) and
    /// `AssumeRoleWithSAML`: query protocol, form body or query string.
    Sts,
    /// The IAM Identity Center portal's `GetRoleCredentials` (`GET /federation/credentials`,
    /// SSO profiles): REST-JSON, proof in `x-amz-sso_bearer_token`.
    SsoPortal,
    /// SSO OIDC `CreateToken` (`POST /token`, refreshing an SSO session) and
    /// `RegisterClient` (`POST /client/register`): REST-JSON, proof in the body.
    SsoOidc,
}

/// STS actions an SDK sends unsigned on its own behalf.
pub const STS_CREDENTIAL_ACTIONS: &[&str] = &["AssumeRoleWithWebIdentity", "AssumeRoleWithSAML"];

impl CredentialService {
    /// The service's key in `service_upstreams` (`--service-upstream sts=URL`), also the
    /// metric label and the name in logs.
    pub fn key(self) -> &'static str {
        match self {
            CredentialService::Sts => "sts",
            CredentialService::SsoPortal => "sso",
            CredentialService::SsoOidc => "sso-oidc",
        }
    }

    /// The wire protocol of the service, for errors the relay writes itself.
    pub fn protocol(self) -> Protocol {
        match self {
            CredentialService::Sts => Protocol::Query,
            CredentialService::SsoPortal | CredentialService::SsoOidc => Protocol::Json,
        }
    }
}

/// The host prefix of a service's regional endpoint (`{prefix}.{region}.amazonaws.com`),
/// for the credential services' keys and for any signing name (forwarded services).
pub fn endpoint_prefix(service: &str) -> &str {
    match service {
        "sso" => "portal.sso",
        "sso-oidc" => "oidc",
        other => other,
    }
}

/// How a service writes its errors, so its SDK can parse the relay's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Bedrock, REST-JSON and AWS-JSON services: `{"message": ...}` and `x-amzn-ErrorType`.
    Json,
    /// AWS query services (STS, IAM, SNS, ...): `<ErrorResponse><Error>...`.
    Query,
    /// EC2's query dialect: `<Response><Errors><Error>...`.
    Ec2,
    /// REST-XML (S3): `<Error><Code>...`.
    RestXml,
}

impl Protocol {
    /// The protocol of a request for `service` (its signing name), from its content type:
    /// query protocols send form bodies (or an `Action=` query string).
    pub fn of_request(service: &str, headers: &HeaderMap, query: Option<&str>) -> Protocol {
        match service {
            "s3" => Protocol::RestXml,
            "ec2" => Protocol::Ec2,
            _ if query_shaped(headers, query) => Protocol::Query,
            _ => Protocol::Json,
        }
    }
}

/// Which credential service an unsigned request is for, from its head alone. A request
/// with an `Authorization` header is never a credential call (signed requests for other
/// services are recognised by their credential scope instead). For STS the caller must
/// still check the action with [`sts_action`] once the body is read.
pub fn credential_service(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Option<CredentialService> {
    if headers.contains_key(http::header::AUTHORIZATION) {
        return None;
    }
    let action_in_query = query.is_some_and(|q| form_value(q, "Action").is_some());
    match (method, path) {
        (&Method::POST, "/") if query_shaped(headers, query) => Some(CredentialService::Sts),
        (&Method::GET, "/") if action_in_query => Some(CredentialService::Sts),
        (&Method::GET, "/federation/credentials") => Some(CredentialService::SsoPortal),
        (&Method::POST, "/token" | "/client/register") => Some(CredentialService::SsoOidc),
        _ => None,
    }
}

/// A query-protocol request: a form body, or an `Action=` query string.
fn query_shaped(headers: &HeaderMap, query: Option<&str>) -> bool {
    let form = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    form || query.is_some_and(|q| form_value(q, "Action").is_some())
}

/// The STS action of a query-protocol request: `Action` from the query string, else from
/// the form body.
pub fn sts_action(query: Option<&str>, body: &[u8]) -> Option<String> {
    query
        .and_then(|q| form_value(q, "Action"))
        .or_else(|| form_value(std::str::from_utf8(body).ok()?, "Action"))
}

/// The decoded value of the first `name=value` pair in an `application/x-www-form-urlencoded`
/// string (`+` is a space).
pub fn form_value(form: &str, name: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode_form(k) == name).then(|| decode_form(v))
    })
}

fn decode_form(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    const FORM: (&str, &str) = (
        "content-type",
        "application/x-www-form-urlencoded; charset=utf-8",
    );

    #[test]
    fn sts_credential_calls_come_as_a_form_body_or_a_query_string() {
        let h = headers(&[FORM]);
        assert_eq!(
            credential_service(&Method::POST, "/", None, &h),
            Some(CredentialService::Sts)
        );
        let body = b"Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr&WebIdentityToken=eyJ.x.y";
        assert_eq!(
            sts_action(None, body).as_deref(),
            Some("AssumeRoleWithWebIdentity")
        );
        let q = "Action=AssumeRoleWithSAML&Version=2011-06-15&SAMLAssertion=PD94";
        assert_eq!(
            credential_service(&Method::GET, "/", Some(q), &HeaderMap::new()),
            Some(CredentialService::Sts)
        );
        assert_eq!(
            sts_action(Some(q), b"").as_deref(),
            Some("AssumeRoleWithSAML")
        );
        assert!(STS_CREDENTIAL_ACTIONS.contains(&"AssumeRoleWithSAML"));
        assert!(!STS_CREDENTIAL_ACTIONS.contains(&"GetCallerIdentity"));
        assert!(!STS_CREDENTIAL_ACTIONS.contains(&"AssumeRole"));
    }

    #[test]
    fn sso_portal_and_oidc_calls_are_recognised_by_their_paths() {
        let h = headers(&[("x-amz-sso_bearer_token", "opaque")]);
        assert_eq!(
            credential_service(
                &Method::GET,
                "/federation/credentials",
                Some("role_name=r&account_id=1"),
                &h
            ),
            Some(CredentialService::SsoPortal)
        );
        let json = headers(&[("content-type", "application/json")]);
        for path in ["/token", "/client/register"] {
            assert_eq!(
                credential_service(&Method::POST, path, None, &json),
                Some(CredentialService::SsoOidc),
                "{path}"
            );
        }
        assert_eq!(CredentialService::SsoPortal.protocol(), Protocol::Json);
        assert_eq!(endpoint_prefix("sso"), "portal.sso");
        assert_eq!(endpoint_prefix("sso-oidc"), "oidc");
        assert_eq!(endpoint_prefix("sts"), "sts");
    }

    #[test]
    fn signed_requests_and_bedrock_paths_are_not_credential_calls() {
        let signed = headers(&[
            FORM,
            ("authorization", "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=00"),
        ]);
        assert_eq!(credential_service(&Method::POST, "/", None, &signed), None);
        let json = headers(&[("content-type", "application/json")]);
        assert_eq!(
            credential_service(&Method::POST, "/model/m/converse-stream", None, &json),
            None
        );
        assert_eq!(credential_service(&Method::POST, "/", None, &json), None);
        assert_eq!(
            credential_service(&Method::GET, "/", None, &HeaderMap::new()),
            None
        );
        assert_eq!(
            credential_service(&Method::GET, "/token", None, &HeaderMap::new()),
            None
        );
    }

    #[test]
    fn protocols_of_other_services() {
        let form = headers(&[FORM]);
        let json = headers(&[("content-type", "application/x-amz-json-1.0")]);
        assert_eq!(Protocol::of_request("sts", &form, None), Protocol::Query);
        assert_eq!(
            Protocol::of_request("iam", &HeaderMap::new(), Some("Action=ListRoles")),
            Protocol::Query
        );
        assert_eq!(Protocol::of_request("ec2", &form, None), Protocol::Ec2);
        assert_eq!(
            Protocol::of_request("s3", &HeaderMap::new(), None),
            Protocol::RestXml
        );
        assert_eq!(
            Protocol::of_request("dynamodb", &json, None),
            Protocol::Json
        );
    }

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(
            form_value("a=1&Action=Get+It%21", "Action").as_deref(),
            Some("Get It!")
        );
        assert_eq!(form_value("a=1", "Action"), None);
        assert_eq!(form_value("Action", "Action").as_deref(), Some(""));
    }
}
