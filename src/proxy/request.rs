//! The inbound side of a request: reading the body within its limit, recognising requests
//! meant for another AWS service, and the template every upstream attempt is cut from.
//!
//! The buffered body is owned by [`Outbound`] for the whole life of the request: every retry
//! and every resume is built from it (and re-signed), and it is dropped with the request.

use super::error::RelayError;
use bytes::Bytes;
use http::{request::Parts, HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

/// Read the whole request body, refusing more than `limit` bytes.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, RelayError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(RelayError::BodyTooLarge { limit })
        }
        Err(e) => Err(RelayError::BadRequestBody(e.to_string())),
    }
}

/// Refuse a request signed for another AWS service (a global `AWS_ENDPOINT_URL` sends every
/// client to the relay). Unsigned and bearer requests pass: they can only be meant for Bedrock.
pub fn check_service(headers: &HeaderMap) -> Result<(), RelayError> {
    let Some(auth) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    match crate::ops::signed_service(auth) {
        None | Some("bedrock") => Ok(()),
        Some(other) => Err(RelayError::WrongService {
            service: other.to_owned(),
            query_protocol: headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded")),
        }),
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
    /// Cut the template from the client's request. Client auth and hop-by-hop headers go.
    pub fn new(parts: &Parts, base: &Uri, body: Bytes) -> Result<Self, RelayError> {
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let base_str = base.to_string();
        let uri: Uri = format!("{}{}", base_str.trim_end_matches('/'), path_and_query)
            .parse()
            .map_err(|e| RelayError::BadRequestBody(format!("bad request path: {e}")))?;
        let mut headers = parts.headers.clone();
        crate::signing::strip_client_headers(&mut headers);
        Ok(Outbound {
            method: parts.method.clone(),
            uri,
            headers,
            body,
        })
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
    fn outbound_keeps_path_byte_exact_and_drops_client_auth() {
        let req = Request::post("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx/converse?a=b%2F")
            .header("authorization", "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=00")
            .header("x-amz-date", "20250101T000000Z")
            .header("x-amzn-bedrock-trace", "ENABLED")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let base: Uri = "https://bedrock-runtime.us-east-1.amazonaws.com"
            .parse()
            .unwrap();
        let out = Outbound::new(&parts, &base, Bytes::from_static(b"{}")).unwrap();
        let up = out.request();
        assert_eq!(
            up.uri().to_string(),
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx/converse?a=b%2F"
        );
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
        assert!(
            matches!(check_service(&h), Err(RelayError::WrongService { ref service, query_protocol: true }) if service == "sts")
        );
        h.insert("authorization", "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=00".parse().unwrap());
        assert!(check_service(&h).is_ok());
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert!(check_service(&h).is_ok());
    }
}
