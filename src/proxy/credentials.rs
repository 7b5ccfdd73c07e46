//! The credential calls an SDK makes on its own behalf, which a global `AWS_ENDPOINT_URL`
//! sends to the relay too: STS `AssumeRoleWithWebIdentity` and `AssumeRoleWithSAML`, the SSO
//! portal's `GetRoleCredentials`, SSO OIDC `CreateToken` and `RegisterClient`. They are
//! passed on untouched to the service's regional endpoint (or its `service_upstreams`
//! override), and the service's answer comes back as it was sent.
//!
//! Untouched: no relay credentials are added; method, path, query and body are byte-exact;
//! the client's headers are kept except hop-by-hop ones, `host` and `content-length` (the
//! connection's own). One attempt: the SDK retries its credential calls itself.
//!
//! These requests carry their own proof (a web identity token, a SAML assertion, an SSO
//! access token, a client secret) and get nothing from the relay's credentials, so the
//! relay's inbound authentication does not apply to them; they can only go to the fixed
//! endpoint of their service. The proof is never logged: the access line names the service,
//! the action, the status and the duration.

use super::error::{full, RelayError};
use super::{outbound, Body, Relay};
use crate::ops::{self, CredentialService};
use crate::signing::strip_hop_by_hop;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::time::Instant;
use tokio::time::timeout;

/// Largest credential call accepted (they come without inbound authentication): STS allows
/// SAML assertions of up to 100,000 characters, the other calls are far smaller.
const MAX_CREDENTIAL_BODY: usize = 256 * 1024;

/// Pass one credential call on and answer the client; errors the relay makes itself are
/// written in the service's own protocol.
pub async fn forward(
    relay: &Relay,
    parts: Parts,
    body: Incoming,
    service: CredentialService,
) -> Response<Body> {
    let started = Instant::now();
    let (action, result) = match read_call(relay, &parts, body, service).await {
        Ok((action, body)) => (action, exchange(relay, &parts, body, service).await),
        Err(e) => ("-", Err(e)),
    };
    let response = match result {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(service = service.key(), action, error = %e, "credential call not passed on");
            e.in_protocol(service.protocol()).into_response()
        }
    };
    let status = response.status().as_u16();
    relay
        .metrics
        .credential_calls_total
        .with_label_values(&[service.key(), &status.to_string()])
        .inc();
    tracing::info!(
        target: "bedrock_relay::access",
        service = service.key(),
        operation = action,
        status,
        duration_ms = started.elapsed().as_millis() as u64,
        "credential call"
    );
    response
}

/// The action of a credential call, from a fixed list (never text from the request).
fn action_of(
    service: CredentialService,
    parts: &Parts,
    body: &[u8],
) -> Result<&'static str, RelayError> {
    match service {
        CredentialService::Sts => {
            let action = ops::sts_action(parts.uri.query(), body).unwrap_or_default();
            ops::STS_CREDENTIAL_ACTIONS
                .iter()
                .find(|a| **a == action)
                .copied()
                .ok_or_else(|| RelayError::NotACredentialCall {
                    service: service.key(),
                    action: action.chars().take(64).collect(),
                    allowed: ops::STS_CREDENTIAL_ACTIONS.join(", "),
                })
        }
        CredentialService::SsoPortal => Ok("GetRoleCredentials"),
        CredentialService::SsoOidc if parts.uri.path() == "/token" => Ok("CreateToken"),
        CredentialService::SsoOidc => Ok("RegisterClient"),
    }
}

/// The body (within its cap) and the action, when the request is a credential call.
async fn read_call(
    relay: &Relay,
    parts: &Parts,
    body: Incoming,
    service: CredentialService,
) -> Result<(&'static str, Bytes), RelayError> {
    let limit = MAX_CREDENTIAL_BODY.min(relay.settings.max_request_body);
    let body = outbound::read_body(body, limit).await?;
    Ok((action_of(service, parts, &body)?, body))
}

/// Send the call, as it came, to the service's endpoint; the answer as it came back.
async fn exchange(
    relay: &Relay,
    parts: &Parts,
    body: Bytes,
    service: CredentialService,
) -> Result<Response<Body>, RelayError> {
    let base = outbound::service_endpoint(&relay.settings, service.key(), relay.signer.region())?;
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri = crate::upstream::join(&base, path).map_err(RelayError::BadPath)?;
    let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = passable(&parts.headers);

    let settings = &relay.settings;
    let failed = |detail: String, connect: bool| RelayError::CredentialUpstream {
        host: host.clone(),
        detail,
        connect,
    };
    let resp = match timeout(settings.first_byte_timeout, relay.upstream.send(req)).await {
        Err(_) => return Err(failed("no response headers in time".into(), false)),
        Ok(Err(e)) => {
            // The request never left (refused, or the connect timed out): SDKs retry a 503.
            use crate::retry::RetryReason;
            let connect = matches!(
                e.retry_reason(),
                Some(RetryReason::Connect | RetryReason::Timeout)
            );
            return Err(failed(e.to_string(), connect));
        }
        Ok(Ok(resp)) => resp,
    };
    let (mut head, body) = resp.into_parts();
    let limit = settings.max_response_body;
    let bytes: Bytes =
        match timeout(settings.stall_timeout, Limited::new(body, limit).collect()).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(RelayError::ResponseTooLarge { limit })
            }
            Ok(Err(e)) => return Err(failed(format!("response body torn: {e}"), false)),
            Err(_) => return Err(failed("response body did not finish in time".into(), false)),
        };
    strip_hop_by_hop(&mut head.headers);
    Ok(Response::from_parts(head, full(bytes)))
}

/// The client's headers minus those that belong to its connection to the relay.
fn passable(headers: &HeaderMap) -> HeaderMap {
    let mut h = headers.clone();
    strip_hop_by_hop(&mut h);
    h.remove(http::header::EXPECT);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_headers_pass_except_the_connection_s_own() {
        let req = Request::get("/federation/credentials?role_name=r&account_id=1")
            .header("host", "127.0.0.1:8790")
            .header("x-amz-sso_bearer_token", "opaque-token")
            .header("user-agent", "aws-sdk-rust")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "1")
            .header("proxy-authorization", "Basic x")
            .header("content-length", "0")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let h = passable(&parts.headers);
        assert_eq!(h["x-amz-sso_bearer_token"], "opaque-token");
        assert_eq!(h["user-agent"], "aws-sdk-rust");
        for gone in [
            "host",
            "connection",
            "x-hop",
            "proxy-authorization",
            "content-length",
        ] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
        assert!(h.get("authorization").is_none());
    }

    #[test]
    fn only_the_sts_credential_actions_pass() {
        let parts = |uri: &str| Request::post(uri).body(()).unwrap().into_parts().0;
        let sts = CredentialService::Sts;
        assert_eq!(
            action_of(
                sts,
                &parts("/"),
                b"Action=AssumeRoleWithWebIdentity&Version=2011-06-15"
            )
            .unwrap(),
            "AssumeRoleWithWebIdentity"
        );
        assert_eq!(
            action_of(sts, &parts("/?Action=AssumeRoleWithSAML"), b"").unwrap(),
            "AssumeRoleWithSAML"
        );
        let refused = action_of(sts, &parts("/"), b"Action=GetCallerIdentity").unwrap_err();
        assert!(
            refused.to_string().contains("`GetCallerIdentity`"),
            "{refused}"
        );
        assert_eq!(
            action_of(CredentialService::SsoOidc, &parts("/token"), b"{}").unwrap(),
            "CreateToken"
        );
    }
}
