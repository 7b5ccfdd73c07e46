//! Why the relay refuses a client: [`Denied`], shaped as Bedrock (and the AWS front door in
//! front of it) shapes the same refusals, so SDKs raise the exception they already know.
//! Messages never contain a secret, a token or a signature.

use http::StatusCode;

/// A request refused by inbound authentication or policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("Missing Authentication Token: this bedrock-relay requires requests signed with a key configured in [inbound] sigv4_keys, or an Authorization: Bearer token from [inbound] bearer_tokens")]
    Missing,
    #[error("The security token included in the request is invalid (access key {access_key_id} is not configured in this relay's [inbound] sigv4_keys)")]
    UnknownKey { access_key_id: String },
    #[error("The request signature we calculated does not match the signature you provided. Check your relay client key and signing method.")]
    BadSignature,
    #[error("Signature expired: the request's x-amz-date is more than {max_skew_secs}s away from the relay's clock (or missing)")]
    Expired { max_skew_secs: u64 },
    #[error("The bearer token included in the request is invalid.")]
    BadBearer,
    #[error("bedrock-relay policy does not allow operation {operation}")]
    Operation { operation: &'static str },
    #[error("bedrock-relay policy does not allow model {model_id}")]
    Model { model_id: String },
    #[error("Too many concurrent requests from this client (the relay allows {limit} at a time); retry later")]
    TooManyConcurrent { limit: u32 },
}

impl Denied {
    /// HTTP status and `x-amzn-ErrorType` of the refusal.
    pub fn status_and_type(&self) -> (StatusCode, &'static str) {
        match self {
            Denied::Missing => (StatusCode::FORBIDDEN, "MissingAuthenticationTokenException"),
            Denied::UnknownKey { .. } | Denied::BadBearer => {
                (StatusCode::FORBIDDEN, "UnrecognizedClientException")
            }
            Denied::BadSignature | Denied::Expired { .. } => {
                (StatusCode::FORBIDDEN, "InvalidSignatureException")
            }
            Denied::Operation { .. } | Denied::Model { .. } => {
                (StatusCode::FORBIDDEN, "AccessDeniedException")
            }
            Denied::TooManyConcurrent { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "ThrottlingException")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_failures_are_403_and_busy_is_429() {
        for d in [
            Denied::Missing,
            Denied::UnknownKey {
                access_key_id: "AKID".into(),
            },
            Denied::BadSignature,
            Denied::Expired { max_skew_secs: 900 },
            Denied::BadBearer,
            Denied::Operation {
                operation: "Converse",
            },
            Denied::Model {
                model_id: "m".into(),
            },
        ] {
            assert_eq!(d.status_and_type().0, StatusCode::FORBIDDEN, "{d:?}");
        }
        let busy = Denied::TooManyConcurrent { limit: 2 };
        assert_eq!(
            busy.status_and_type(),
            (StatusCode::TOO_MANY_REQUESTS, "ThrottlingException")
        );
    }
}
