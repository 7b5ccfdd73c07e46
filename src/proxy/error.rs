//! Every way a request can fail inside the relay, and the one place they become HTTP.
//!
//! Errors are shaped as Bedrock shapes them (JSON `{"message": ...}` with
//! `x-amzn-ErrorType`), so SDKs raise a modelled exception. An error for a request meant
//! for another service ([`RelayError::InProtocol`]: wrong service, a failed credential call)
//! is shaped for the protocol of the service the client thought it was calling (query XML
//! for STS and friends, EC2 XML, S3 XML, JSON otherwise), so its message reaches the user
//! verbatim instead of a parser failure.

use super::fault::Transport;
pub use crate::body::full;
use crate::body::Body;
use crate::ops::Protocol;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// Why the relay answers a request itself instead of forwarding Bedrock's answer.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("bedrock-relay serves Amazon Bedrock Runtime (and passes on the SDK's own credential calls), but this request was signed for the `{service}` service, and the relay does not forward other services. A global AWS_ENDPOINT_URL sends every AWS service to the relay: set AWS_ENDPOINT_URL_BEDROCK_RUNTIME to the relay's URL instead (and unset AWS_ENDPOINT_URL), or start the relay with --forward-other-services to forward it")]
    WrongService { service: String },
    #[error("bedrock-relay passes on unsigned `{service}` requests only for the credential calls an SDK makes on its own behalf ({allowed}), not `{action}`. A global AWS_ENDPOINT_URL sends every AWS service to the relay: set AWS_ENDPOINT_URL_BEDROCK_RUNTIME to the relay's URL instead (and unset AWS_ENDPOINT_URL)")]
    NotACredentialCall {
        service: &'static str,
        action: String,
        allowed: String,
    },
    #[error("bedrock-relay could not pass the SDK's credential call on to {host}: {detail}")]
    CredentialUpstream {
        host: String,
        detail: String,
        connect: bool,
    },
    /// `error`, written in the protocol of the service the client called.
    #[error("{error}")]
    InProtocol {
        protocol: Protocol,
        error: Box<RelayError>,
    },
    #[error("request body exceeds the relay's limit of {limit} bytes (max_request_body)")]
    BodyTooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    BadRequestBody(#[source] hyper::Error),
    #[error("bad request path: {0}")]
    BadPath(#[source] crate::upstream::UpstreamError),
    #[error("cannot forward to service {0:?}")]
    NoServiceEndpoint(String),
    #[error("bedrock-relay could not sign the request: {0}")]
    Signing(#[source] crate::signing::SigningError),
    #[error("bedrock-relay could not connect upstream after {attempts} attempt(s): {error}")]
    Connect {
        attempts: u32,
        #[source]
        error: Transport,
    },
    #[error("bedrock-relay lost the connection upstream after {attempts} attempt(s): {error}")]
    Reset {
        attempts: u32,
        #[source]
        error: Transport,
    },
    #[error("Bedrock did not answer in time after {attempts} attempt(s): {error}")]
    Timeout {
        attempts: u32,
        #[source]
        error: Transport,
    },
    #[error("bedrock-relay cannot send the request upstream: {0}")]
    Upstream(#[source] crate::upstream::UpstreamError),
    #[error(transparent)]
    Inbound(#[from] crate::inbound::Denied),
    #[error("upstream response exceeds the relay's limit of {limit} bytes (max_response_body)")]
    ResponseTooLarge { limit: usize },
    #[error("the retry budget or the request deadline is exhausted")]
    Exhausted,
    #[error(transparent)]
    CannotResume(crate::resume::CannotResume),
    #[error("resume request answered {0} without a stream")]
    NotAStream(http::StatusCode),
    #[error("Amazon Bedrock accepts only SigV4 on InvokeModelWithBidirectionalStream (its input events are signed one by one), and this relay signs with a bearer token (AWS_BEARER_TOKEN_BEDROCK): run the relay with AWS credentials to use the bidirectional stream")]
    BearerEventStream,
}

impl RelayError {
    fn status_and_type(&self) -> (StatusCode, &'static str) {
        match self {
            RelayError::WrongService { .. } | RelayError::NotACredentialCall { .. } => {
                (StatusCode::BAD_REQUEST, "WrongServiceForRelay")
            }
            RelayError::CredentialUpstream { connect: true, .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
            }
            RelayError::CredentialUpstream { .. } => (StatusCode::BAD_GATEWAY, "InternalFailure"),
            RelayError::InProtocol { error, .. } => error.status_and_type(),
            RelayError::BodyTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "ValidationException")
            }
            RelayError::BadRequestBody(_)
            | RelayError::BadPath(_)
            | RelayError::NoServiceEndpoint(_) => (StatusCode::BAD_REQUEST, "ValidationException"),
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
            RelayError::Upstream(_) | RelayError::CannotResume(_) | RelayError::NotAStream(_) => {
                (StatusCode::BAD_GATEWAY, "InternalServerException")
            }
            RelayError::Exhausted => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
            ),
            RelayError::Inbound(d) => d.status_and_type(),
            RelayError::BearerEventStream => (StatusCode::FORBIDDEN, "AccessDeniedException"),
        }
    }

    /// HTTP status the client gets (for logs and metrics).
    pub fn status(&self) -> StatusCode {
        self.status_and_type().0
    }

    /// The same error, to be written in `protocol` (the service the client called).
    pub fn in_protocol(self, protocol: Protocol) -> RelayError {
        RelayError::InProtocol {
            protocol,
            error: Box::new(self),
        }
    }

    /// The response the client gets.
    pub fn into_response(self) -> Response<Body> {
        let (status, error_type) = self.status_and_type();
        let protocol = match &self {
            RelayError::InProtocol { protocol, .. } => *protocol,
            _ => Protocol::Json,
        };
        let message = xml_escape(&self.to_string());
        // Query-protocol errors carry a fault type: the client's (4xx) or the server's.
        let fault = if status.is_client_error() {
            "Sender"
        } else {
            "Receiver"
        };
        match protocol {
            Protocol::Query => respond(status, "text/xml", None, format!(
                "<ErrorResponse><Error><Type>{fault}</Type><Code>{error_type}</Code><Message>{message}</Message></Error><RequestId>bedrock-relay</RequestId></ErrorResponse>"
            )),
            Protocol::Ec2 => respond(status, "text/xml", None, format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{error_type}</Code><Message>{message}</Message></Error></Errors><RequestID>bedrock-relay</RequestID></Response>"
            )),
            Protocol::RestXml => respond(status, "application/xml", None, format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{error_type}</Code><Message>{message}</Message></Error>"
            )),
            Protocol::Json if matches!(self, RelayError::InProtocol { .. }) => {
                // AWS-JSON SDKs read the type from the body's `__type`, REST-JSON ones from
                // the header: another service's client gets both.
                let body = serde_json::json!({ "__type": error_type, "message": self.to_string() });
                respond(status, "application/json", Some(error_type.to_string()), body.to_string())
            }
            Protocol::Json => json_error(status, error_type, &self.to_string()),
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
        }
        .in_protocol(Protocol::Query)
        .into_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(resp.headers()["content-type"], "text/xml");
        let body = body_string(resp).await;
        assert!(
            body.starts_with("<ErrorResponse><Error><Type>Sender</Type><Code>WrongServiceForRelay</Code><Message>bedrock-relay "),
            "{body}"
        );
        assert!(body.contains("AWS_ENDPOINT_URL_BEDROCK_RUNTIME"), "{body}");
        assert!(body.contains("--forward-other-services"), "{body}");
        assert!(body.contains("`sts`"), "{body}");
    }

    #[tokio::test]
    async fn other_protocols_get_their_own_error_shapes() {
        let wrong = |service: &str| RelayError::WrongService {
            service: service.into(),
        };
        let body = body_string(wrong("s3").in_protocol(Protocol::RestXml).into_response()).await;
        assert!(
            body.contains("<Error><Code>WrongServiceForRelay</Code>"),
            "{body}"
        );
        let body = body_string(wrong("ec2").in_protocol(Protocol::Ec2).into_response()).await;
        assert!(
            body.contains("<Response><Errors><Error><Code>WrongServiceForRelay"),
            "{body}"
        );
        let resp = wrong("dynamodb")
            .in_protocol(Protocol::Json)
            .into_response();
        assert_eq!(resp.headers()["x-amzn-errortype"], "WrongServiceForRelay");
        let body: serde_json::Value = serde_json::from_str(&body_string(resp).await).unwrap();
        assert!(body["message"].as_str().unwrap().contains("`dynamodb`"));
        assert_eq!(body["__type"], "WrongServiceForRelay");
        let failed = RelayError::CredentialUpstream {
            host: "sts.us-east-1.amazonaws.com".into(),
            detail: "connection refused".into(),
            connect: true,
        }
        .in_protocol(Protocol::Query)
        .into_response();
        assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = body_string(failed).await;
        assert!(
            body.contains("<Type>Receiver</Type><Code>ServiceUnavailable</Code>"),
            "{body}"
        );
    }
}
