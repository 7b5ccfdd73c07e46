//! Retry policy pieces shared by the request path: why an attempt failed
//! ([`RetryReason`], decided from status codes, error types and in-stream exception types:
//! [`classify_status`], [`classify_exception`]), exponential backoff with full jitter
//! ([`Backoff`]) and the process-wide retry token bucket ([`RetryBudget`]).
//!
//! This is the one place that decides what is retryable. The single exception to "never
//! message text" is [`rejects_prefill`]: Bedrock reports a model's refusal of assistant
//! prefill as a plain `ValidationException`, and its message is the only thing that tells it
//! apart from any other invalid request.

mod backoff;
mod budget;

pub use backoff::Backoff;
pub use budget::{RetryBudget, RetryCost};

use http::{HeaderMap, StatusCode};

/// Why an attempt failed in a way that may be retried or resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// Could not connect (refused, DNS, TLS handshake, connect timeout).
    Connect,
    /// The connection broke (reset, premature EOF of the headers).
    Reset,
    /// No response headers within the first-byte timeout.
    Timeout,
    /// 429 or a throttling error type.
    Throttled,
    /// 500, 502, 504.
    ServerError,
    /// 503 or ServiceUnavailableException.
    Unavailable,
    /// A response body went silent past the stall timeout.
    Stall,
    /// An EventStream frame failed its CRC or length checks.
    CorruptFrame,
    /// The body ended before the stream's terminal events.
    Truncated,
    /// A modelled exception event inside the stream (e.g. modelStreamErrorException).
    InStreamError,
}

impl RetryReason {
    /// snake_case label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            RetryReason::Connect => "connect",
            RetryReason::Reset => "reset",
            RetryReason::Timeout => "timeout",
            RetryReason::Throttled => "throttled",
            RetryReason::ServerError => "server_error",
            RetryReason::Unavailable => "unavailable",
            RetryReason::Stall => "stall",
            RetryReason::CorruptFrame => "corrupt_frame",
            RetryReason::Truncated => "truncated",
            RetryReason::InStreamError => "in_stream_error",
        }
    }

    /// What a retry for this reason costs in the budget (timeouts and stalls cost more).
    pub fn cost(self) -> RetryCost {
        match self {
            RetryReason::Timeout | RetryReason::Stall => RetryCost::Timeout,
            _ => RetryCost::Retry,
        }
    }

    /// All reasons (the label test walks them).
    #[cfg(test)]
    pub const ALL: [RetryReason; 10] = [
        RetryReason::Connect,
        RetryReason::Reset,
        RetryReason::Timeout,
        RetryReason::Throttled,
        RetryReason::ServerError,
        RetryReason::Unavailable,
        RetryReason::Stall,
        RetryReason::CorruptFrame,
        RetryReason::Truncated,
        RetryReason::InStreamError,
    ];
}

/// The error type from `x-amzn-ErrorType` (`ThrottlingException:http://...` → `ThrottlingException`).
pub fn error_type(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("x-amzn-errortype")?.to_str().ok()?;
    let t = v.split(':').next()?.trim();
    (!t.is_empty()).then_some(t)
}

/// In-stream exceptions after which the rest of the answer can be fetched again.
pub const RETRYABLE_EXCEPTIONS: [&str; 5] = [
    "internalServerException",
    "modelStreamErrorException",
    "throttlingException",
    "serviceUnavailableException",
    "modelTimeoutException",
];

/// Whether an in-stream exception (`:exception-type`) is worth resuming after, and why.
pub fn classify_exception(exception_type: &str) -> Option<RetryReason> {
    match exception_type {
        "throttlingException" => Some(RetryReason::Throttled),
        "serviceUnavailableException" => Some(RetryReason::Unavailable),
        t if RETRYABLE_EXCEPTIONS.contains(&t) => Some(RetryReason::InStreamError),
        _ => None,
    }
}

/// Bedrock's answer to an assistant prefill for a model that takes none (Claude 4.6 and
/// later): 400 `ValidationException` "This model does not support assistant message
/// prefill. The conversation must end with a user message."
pub fn rejects_prefill(status: StatusCode, body: &[u8]) -> bool {
    status == StatusCode::BAD_REQUEST
        && std::str::from_utf8(body)
            .is_ok_and(|b| b.contains("does not support assistant message prefill"))
}

/// Whether a response status (with its headers) is worth retrying, and why.
/// Retryable: 429, 500, 502, 503, 504, and the throttling error types ThrottlingException,
/// TooManyRequestsException, ServiceUnavailableException on any status.
pub fn classify_status(status: StatusCode, headers: &HeaderMap) -> Option<RetryReason> {
    match error_type(headers) {
        Some("ThrottlingException") | Some("TooManyRequestsException") => {
            return Some(RetryReason::Throttled)
        }
        Some("ServiceUnavailableException") => return Some(RetryReason::Unavailable),
        _ => {}
    }
    match status.as_u16() {
        429 => Some(RetryReason::Throttled),
        500 | 502 | 504 => Some(RetryReason::ServerError),
        503 => Some(RetryReason::Unavailable),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_type(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-amzn-ErrorType", t.parse().unwrap());
        h
    }

    #[test]
    fn statuses() {
        let h = HeaderMap::new();
        let s = |n| StatusCode::from_u16(n).unwrap();
        assert_eq!(classify_status(s(429), &h), Some(RetryReason::Throttled));
        assert_eq!(classify_status(s(500), &h), Some(RetryReason::ServerError));
        assert_eq!(classify_status(s(502), &h), Some(RetryReason::ServerError));
        assert_eq!(classify_status(s(503), &h), Some(RetryReason::Unavailable));
        assert_eq!(classify_status(s(504), &h), Some(RetryReason::ServerError));
        for n in [200, 400, 403, 404, 413, 424, 501] {
            assert_eq!(classify_status(s(n), &h), None, "{n}");
        }
    }

    #[test]
    fn error_types_on_any_status() {
        let s400 = StatusCode::BAD_REQUEST;
        let t =
            with_type("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/");
        assert_eq!(classify_status(s400, &t), Some(RetryReason::Throttled));
        let t = with_type("TooManyRequestsException");
        assert_eq!(classify_status(s400, &t), Some(RetryReason::Throttled));
        let t = with_type("ServiceUnavailableException:x");
        assert_eq!(classify_status(s400, &t), Some(RetryReason::Unavailable));
        let t = with_type("ValidationException:http://internal.amazon.com/coral/");
        assert_eq!(classify_status(s400, &t), None);
        assert_eq!(error_type(&t), Some("ValidationException"));
    }

    #[test]
    fn labels_are_snake_case_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in RetryReason::ALL {
            let l = r.label();
            assert!(l.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{l}");
            assert!(seen.insert(l));
        }
        assert_eq!(RetryReason::Stall.cost(), RetryCost::Timeout);
        assert_eq!(RetryReason::Reset.cost(), RetryCost::Retry);
    }

    #[test]
    fn in_stream_exceptions() {
        assert_eq!(
            classify_exception("throttlingException"),
            Some(RetryReason::Throttled)
        );
        assert_eq!(
            classify_exception("serviceUnavailableException"),
            Some(RetryReason::Unavailable)
        );
        assert_eq!(
            classify_exception("modelStreamErrorException"),
            Some(RetryReason::InStreamError)
        );
        assert_eq!(classify_exception("validationException"), None);
        assert_eq!(classify_exception("accessDeniedException"), None);
    }

    #[test]
    fn prefill_rejection() {
        let body = br#"{"message":"This model does not support assistant message prefill. The conversation must end with a user message."}"#;
        assert!(rejects_prefill(StatusCode::BAD_REQUEST, body));
        assert!(!rejects_prefill(StatusCode::INTERNAL_SERVER_ERROR, body));
        assert!(!rejects_prefill(
            StatusCode::BAD_REQUEST,
            br#"{"message":"max_tokens: too large"}"#
        ));
    }
}
