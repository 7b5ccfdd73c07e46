//! The inbound side of a request: reading the body within its limit, recognising requests
//! meant for another AWS service, and the template every upstream attempt is cut from.
//!
//! The buffered body is owned by [`Outbound`] for the whole life of the request: every retry
//! and every resume is built from it (and re-signed), and it is dropped with the request.

use super::error::RelayError;
use crate::config::Settings;
use crate::ops::Protocol;
use bytes::{Bytes, BytesMut};
use http::{request::Parts, HeaderMap, Method, Request, Uri};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::body::Incoming;

/// Read the whole request body into a buffer of its own, refusing more than `limit` bytes.
///
/// Of its own: hyper hands a small body over as a slice of the connection's read buffer,
/// and the body lives as long as the request (a stream's: minutes), so a slice would keep
/// that buffer (8 KiB or more) alive beside the one hyper reads the next bytes into.
pub async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, RelayError> {
    // Sized from the announced length, but a claim is not data: at most this up front, so
    // connections announcing large bodies and sending nothing hold nothing large.
    const UP_FRONT: usize = 256 * 1024;
    let expected = usize::try_from(body.size_hint().lower()).unwrap_or(usize::MAX);
    let mut buf = BytesMut::with_capacity(expected.min(limit).min(UP_FRONT));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(RelayError::BadRequestBody)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(RelayError::BodyTooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// The AWS service a request was signed for when it is not Bedrock (a global
/// `AWS_ENDPOINT_URL` sends every client to the relay). Unsigned and bearer requests can
/// only be meant for Bedrock.
pub fn other_service(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    match crate::ops::signed_service(auth) {
        None | Some("bedrock" | "bedrock-mantle") => None,
        Some(other) => Some(other.to_owned()),
    }
}

/// The error for a request meant for another service, in that service's protocol.
pub fn wrong_service(parts: &Parts, service: String) -> RelayError {
    let protocol = Protocol::of_request(&service, &parts.headers, parts.uri.query());
    RelayError::WrongService { service }.in_protocol(protocol)
}

/// Where a request for another AWS service goes (`service` is its signing name, or the key
/// of a credential service): the `service_upstreams` override, else the regional endpoint
/// `https://{prefix}.{region}.amazonaws.com` (`amazonaws.com.cn` in China).
pub fn service_endpoint(
    settings: &Settings,
    service: &str,
    region: &str,
) -> Result<Uri, RelayError> {
    if let Some(uri) = settings.service_upstreams.get(service) {
        return Ok(uri.clone());
    }
    // Both end up in a host name: letters, digits and dashes only.
    let label =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let prefix = crate::ops::endpoint_prefix(service);
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    let uri = format!("https://{prefix}.{region}.{suffix}");
    match uri.parse() {
        Ok(u) if label(service) && label(region) => Ok(u),
        _ => Err(RelayError::NoServiceEndpoint(service.to_owned())),
    }
}

/// Everything needed to build one upstream attempt.
#[derive(Debug, Clone)]
pub struct Outbound {
    method: Method,
    /// `scheme://authority` of the upstream plus the client's path and query, byte-exact.
    uri: Uri,
    headers: HeaderMap,
    pub body: Bytes,
}

impl Outbound {
    /// Cut the template from the client's request, aimed at `uri` (the upstream base plus
    /// the client's path and query, byte-exact). Client auth and hop-by-hop headers go.
    pub fn new(parts: &Parts, uri: Uri, body: Bytes) -> Self {
        let headers = crate::signing::forwarded_copy(&parts.headers);
        Outbound {
            method: parts.method.clone(),
            uri,
            headers,
            body,
        }
    }

    /// A fresh, unsigned request with the original body.
    pub fn request(&self) -> Request<Bytes> {
        self.request_with_body(self.body.clone())
    }

    /// A fresh, unsigned request with another body (a resume's continuation request).
    pub fn request_with_body(&self, body: Bytes) -> Request<Bytes> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_drops_client_auth_and_keeps_bedrock_headers() {
        let req = Request::post("/model/m/converse")
            .header("authorization", "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=00")
            .header("x-amz-date", "20250101T000000Z")
            .header("x-amzn-bedrock-trace", "ENABLED")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let uri: Uri = "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse"
            .parse()
            .unwrap();
        let up = Outbound::new(&parts, uri.clone(), Bytes::from_static(b"{}")).request();
        assert_eq!(up.uri(), &uri);
        assert!(up.headers().get("authorization").is_none());
        assert!(up.headers().get("x-amz-date").is_none());
        assert_eq!(up.headers()["x-amzn-bedrock-trace"], "ENABLED");
    }

    #[test]
    fn other_services_are_recognised_from_the_credential_scope() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=00".parse().unwrap());
        h.insert(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8"
                .parse()
                .unwrap(),
        );
        assert_eq!(other_service(&h).as_deref(), Some("sts"));
        let mut req = Request::post("/").body(()).unwrap();
        *req.headers_mut() = h.clone();
        let (parts, ()) = req.into_parts();
        assert!(matches!(
            wrong_service(&parts, "sts".into()),
            RelayError::InProtocol {
                protocol: Protocol::Query,
                ..
            }
        ));
        h.insert("authorization", "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=00".parse().unwrap());
        assert_eq!(other_service(&h), None);
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(other_service(&h), None);
    }

    #[test]
    fn forwarded_services_go_to_their_regional_endpoint() {
        let s = Settings::default();
        let endpoint =
            |service, region| service_endpoint(&s, service, region).map(|u| u.to_string());
        assert_eq!(
            endpoint("sts", "eu-west-1").unwrap(),
            "https://sts.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            endpoint("sso", "eu-west-1").unwrap(),
            "https://portal.sso.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            endpoint("sso-oidc", "cn-north-1").unwrap(),
            "https://oidc.cn-north-1.amazonaws.com.cn/"
        );
        assert!(endpoint("evil.com/x", "us-east-1").is_err());
        assert!(endpoint("evil.com", "us-east-1").is_err());
        assert!(endpoint("sts", "us-east-1.evil.com/").is_err());
    }

    #[test]
    fn service_upstreams_override_the_regional_endpoint() {
        let mut s = Settings::default();
        s.service_upstreams
            .insert("sts".into(), "http://127.0.0.1:9000".parse().unwrap());
        assert_eq!(
            service_endpoint(&s, "sts", "us-east-1")
                .unwrap()
                .to_string(),
            "http://127.0.0.1:9000/"
        );
        assert_eq!(
            service_endpoint(&s, "sso", "us-east-1")
                .unwrap()
                .to_string(),
            "https://portal.sso.us-east-1.amazonaws.com/"
        );
    }
}
