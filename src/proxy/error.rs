//! Every way a request can fail inside the relay, and the one place they become HTTP.
//!
//! Errors are shaped as Bedrock shapes them (JSON `{"message": ...}` with
//! `x-amzn-ErrorType`), so SDKs raise a modelled exception. The wrong-service error is
//! shaped for the protocol of the service the client thought it was calling (query XML for
//! STS and friends, S3 XML, JSON otherwise), so its message reaches the user verbatim.

pub use crate::body::full;
use crate::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// Why the relay answers a request itself instead of forwarding Bedrock's answer.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("this relay serves Amazon Bedrock Runtime only, but the request was signed for the `{service}` service. A global AWS_ENDPOINT_URL sends every AWS service to the relay: set AWS_ENDPOINT_URL_BEDROCK_RUNTIME to the relay's URL instead (and unset AWS_ENDPOINT_URL)")]
    WrongService {
        service: String,
        query_protocol: bool,
    },
    #[error("request body exceeds the relay's limit of {limit} bytes (max_request_body)")]
    BodyTooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    BadRequestBody(String),
    #[error("bedrock-relay could not sign the request: {0}")]
    Signing(String),
    #[error("bedrock-relay could not connect upstream after {attempts} attempt(s): {detail}")]
    Connect { attempts: u32, detail: String },
    #[error("bedrock-relay lost the connection upstream after {attempts} attempt(s): {detail}")]
    Reset { attempts: u32, detail: String },
    #[error("Bedrock did not answer in time after {attempts} attempt(s): {detail}")]
    Timeout { attempts: u32, detail: String },
    #[error("bedrock-relay cannot send the request upstream: {0}")]
    Upstream(String),
    #[error(transparent)]
    Inbound(#[from] crate::inbound::Denied),
    #[error("upstream response exceeds the relay's limit of {limit} bytes (max_response_body)")]
    ResponseTooLarge { limit: usize },
    #[error("the retry budget or the request deadline is exhausted")]
    Exhausted,
    #[error("{0}")]
    CannotResume(String),
}

impl RelayError {
    fn status_and_type(&self) -> (StatusCode, &'static str) {
        match self {
            RelayError::WrongService { .. } => (StatusCode::BAD_REQUEST, "WrongServiceForRelay"),
            RelayError::BodyTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "ValidationException")
            }
            RelayError::BadRequestBody(_) => (StatusCode::BAD_REQUEST, "ValidationException"),
            RelayError::Signing(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerException")
            }
            RelayError::Connect { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
            ),
            RelayError::Reset { .. } => (StatusCode::BAD_GATEWAY, "InternalServerException"),
            RelayError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "ModelTimeoutException"),
            RelayError::ResponseTooLarge { .. } => {
                (StatusCode::BAD_GATEWAY, "InternalServerException")
            }
            RelayError::Upstream(_) | RelayError::CannotResume(_) => {
                (StatusCode::BAD_GATEWAY, "InternalServerException")
            }
            RelayError::Exhausted => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
            ),
            RelayError::Inbound(d) => d.status_and_type(),
        }
    }

    /// HTTP status the client gets (for logs and metrics).
    pub fn status(&self) -> StatusCode {
        self.status_and_type().0
    }

    /// The response the client gets.
    pub fn into_response(self) -> Response<Body> {
        let (status, error_type) = self.status_and_type();
        let message = self.to_string();
        match &self {
            RelayError::WrongService {
                service,
                query_protocol: true,
            } => {
                let xml = format!(
                    "<ErrorResponse><Error><Type>Sender</Type><Code>{error_type}</Code><Message>{}</Message></Error><RequestId>bedrock-relay</RequestId></ErrorResponse>",
                    xml_escape(&message)
                );
                let _ = service;
                respond(status, "text/xml", None, xml)
            }
            RelayError::WrongService { service, .. } if service == "s3" => {
                let xml = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{error_type}</Code><Message>{}</Message></Error>",
                    xml_escape(&message)
                );
                respond(status, "application/xml", None, xml)
            }
            _ => json_error(status, error_type, &message),
        }
    }
}

/// A Bedrock-shaped JSON error.
pub fn json_error(status: StatusCode, error_type: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "message": message }).to_string();
    let type_header = format!("{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/");
    respond(status, "application/json", Some(type_header), body)
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    error_type: Option<String>,
    body: String,
) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(t) = error_type.and_then(|t| HeaderValue::from_str(&t).ok()) {
        headers.insert("x-amzn-errortype", t);
    }
    resp
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_string(resp: Response<Body>) -> String {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn json_errors_carry_the_type_header_sdks_parse() {
        let resp = RelayError::BodyTooLarge { limit: 10 }.into_response();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let t = resp.headers()["x-amzn-errortype"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(t.starts_with("ValidationException:"), "{t}");
        let body: serde_json::Value = serde_json::from_str(&body_string(resp).await).unwrap();
        assert!(body["message"].as_str().unwrap().contains("10 bytes"));
    }

    #[tokio::test]
    async fn wrong_service_speaks_the_query_protocol_for_sts() {
        let resp = RelayError::WrongService {
            service: "sts".into(),
            query_protocol: true,
        }
        .into_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body = body_string(resp).await;
        assert!(body.contains("<Code>WrongServiceForRelay</Code>"), "{body}");
        assert!(body.contains("AWS_ENDPOINT_URL_BEDROCK_RUNTIME"), "{body}");
        assert!(body.contains("`sts`"), "{body}");
    }
}
