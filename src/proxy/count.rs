//! Counting what a client already has before a continuation: Bedrock `CountTokens` of the
//! conversation with and without the delivered text (two requests, concurrent, time-boxed by
//! `resume.count_timeout`), so the continuation asks for exactly what is left of the client's
//! output limit instead of the limit minus an upper bound (one token per byte).
//!
//! Called by both pumps (EventStream and SSE) right before they plan a continuation; on
//! success the count is recorded in the transcript ([`Transcript::set_counted_output`]) and
//! `resume::plan` uses it. Everything else falls back to the bounds, as before:
//!
//! - not asked: no prefill or instructed continuation can follow (nothing countable, or the
//!   model allows neither), the request has no output limit, or this transcript state was
//!   already counted (a count is never made twice for the same delivered text);
//! - `skipped`: the model id has no countable foundation model (application inference
//!   profile, provisioned or custom model, Amazon Nova), the format cannot be counted, the
//!   model refused before, or counting is off (`count_timeout = 0s`);
//! - `unsupported` (400 "doesn't support counting tokens") and `denied` (403 AccessDenied: no
//!   `bedrock:CountTokens`): remembered per bare model id, not asked again (bounded memory);
//! - `timeout`, `error`: this time only.
//!
//! The requests go to the bedrock-runtime endpoint (`/model/{bare-id}/count-tokens`), signed
//! like every model request (SigV4 for `bedrock`, or the bearer token), outside the retry
//! driver: a count takes no retry budget and never retries.

use super::Relay;
use crate::ops::Route;
use crate::resume::{self, StreamFormat, Transcript};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use std::time::Instant;

/// The access log's `limit_count`: the continuation's limit came from an exact count.
pub(crate) const COUNTED: &str = "counted";
/// The limit came from the bounds on what was delivered (no count, or it failed).
pub(crate) const BOUNDS: &str = "bounds";
/// The request has no output limit: nothing to decide.
pub(crate) const UNLIMITED: &str = "unlimited";

/// How many models the refusal memory holds.
/// CountTokens answers are tiny; anything larger is not one.
const MAX_ANSWER: usize = 64 * 1024;

/// How one count went (the `outcome` label of `count_tokens_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Counted(u64),
    Unsupported,
    Denied,
    Timeout,
    Error,
    Skipped,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Counted(_) => "counted",
            Outcome::Unsupported => "unsupported",
            Outcome::Denied => "denied",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
            Outcome::Skipped => "skipped",
        }
    }
}

/// Before a continuation of a stream in `format` (`None`: a format that is not counted) of
/// `model`, whose original request body is `body`: count what the client has when a prefill
/// or instructed continuation may follow under an output limit, and record the count in
/// `transcript`. Returns how the continuation's limit is decided ([`COUNTED`], [`BOUNDS`],
/// [`UNLIMITED`]) for the access log.
pub(crate) async fn before_continuation(
    relay: &Relay,
    body: &[u8],
    model: &str,
    format: Option<StreamFormat>,
    transcript: &mut Transcript,
) -> &'static str {
    let caps = relay.caps(model);
    let Some(text) = transcript.countable_text() else {
        return BOUNDS;
    };
    if !(caps.prefill || caps.instructed) {
        return BOUNDS;
    }
    let Some(format) = format else {
        count(relay, Outcome::Skipped);
        return BOUNDS;
    };
    if resume::output_limit(format, body).is_none() {
        return UNLIMITED;
    }
    match transcript.count_tried() {
        // Counted (or tried) for this very output already: never twice.
        Some(Some(_)) => return COUNTED,
        Some(None) => return BOUNDS,
        None => {}
    }
    let outcome = count_text(relay, body, model, format, text).await;
    count(relay, outcome);
    match outcome {
        Outcome::Counted(n) => {
            tracing::debug!(model = %model, output_tokens = n, "delivered output counted");
            transcript.set_counted_output(n);
            COUNTED
        }
        _ => {
            transcript.set_count_failed();
            BOUNDS
        }
    }
}

fn count(relay: &Relay, outcome: Outcome) {
    relay
        .metrics
        .count_tokens_total
        .with_label_values(&[outcome.label()])
        .inc();
}

/// Count `delivered` (the client's one text block) for `model`, within the time box.
async fn count_text(
    relay: &Relay,
    body: &[u8],
    model: &str,
    format: StreamFormat,
    delivered: &str,
) -> Outcome {
    let time_box = relay.settings.resume.count_timeout;
    let Some(id) = resume::count_model_id(model) else {
        return Outcome::Skipped;
    };
    if time_box.is_zero() || relay.count_refusals.refused(&id) {
        return Outcome::Skipped;
    }
    let Some((with, without)) = resume::count_bodies(format, body, delivered) else {
        return Outcome::Skipped;
    };
    let started = Instant::now();
    let both = async {
        tokio::join!(
            count_tokens(relay, &id, with),
            count_tokens(relay, &id, without)
        )
    };
    let outcome = match tokio::time::timeout(time_box, both).await {
        Err(_) => Outcome::Timeout,
        Ok((Ok(with), Ok(without))) => {
            Outcome::Counted(resume::output_tokens(with, without, delivered))
        }
        Ok((a, b)) => {
            let failures = [a.err(), b.err()];
            let any = |o: Outcome| failures.contains(&Some(o));
            if any(Outcome::Unsupported) {
                Outcome::Unsupported
            } else if any(Outcome::Denied) {
                Outcome::Denied
            } else {
                Outcome::Error
            }
        }
    };
    relay
        .metrics
        .count_tokens_seconds
        .observe(started.elapsed().as_secs_f64());
    match outcome {
        Outcome::Unsupported | Outcome::Denied => {
            relay.count_refusals.refuse(&id);
            tracing::info!(model = %id, outcome = outcome.label(), "CountTokens refused for this model: its continuations keep the bounded limit");
        }
        Outcome::Timeout | Outcome::Error => {
            tracing::debug!(model = %id, outcome = outcome.label(), "CountTokens failed: this continuation keeps the bounded limit");
        }
        _ => {}
    }
    outcome
}

/// One CountTokens request: the input tokens Bedrock counts for `body`, or how it failed.
async fn count_tokens(relay: &Relay, id: &str, body: Vec<u8>) -> Result<u64, Outcome> {
    let path = format!("/model/{}/count-tokens", encode_id(id));
    let uri = crate::upstream::join(relay.upstream.base(Route::Runtime), &path)
        .map_err(|_| Outcome::Error)?;
    let mut req = Request::new(Bytes::from(body));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::ACCEPT,
        header::HeaderValue::from_static("application/json"),
    );
    relay
        .signer
        .sign(&mut req)
        .await
        .map_err(|_| Outcome::Error)?;
    let resp = relay.upstream.send(req).await.map_err(|_| Outcome::Error)?;
    let status = resp.status();
    let error_type = resp
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let answer = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|_| Outcome::Error)?
        .to_bytes();
    judge(status, &error_type, &answer)
}

/// What a CountTokens answer says.
fn judge(status: StatusCode, error_type: &str, answer: &[u8]) -> Result<u64, Outcome> {
    let json = serde_json::from_slice::<serde_json::Value>(answer).ok();
    if status == StatusCode::OK {
        return json
            .as_ref()
            .and_then(|v| v.get("inputTokens"))
            .and_then(serde_json::Value::as_u64)
            .ok_or(Outcome::Error);
    }
    let field = |k: &str| {
        json.as_ref()
            .and_then(|v| v.get(k))
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let message = format!("{} {}", field("message"), field("Message")).to_ascii_lowercase();
    let kind = format!("{error_type} {}", field("__type"));
    match status {
        StatusCode::BAD_REQUEST
            if message.contains("support counting") || message.contains("support count") =>
        {
            Err(Outcome::Unsupported)
        }
        StatusCode::FORBIDDEN
            if kind.contains("AccessDenied") || message.contains("not authorized") =>
        {
            Err(Outcome::Denied)
        }
        _ => Err(Outcome::Error),
    }
}

/// A model id in a path segment, as the SDKs send it (`:` as `%3A`).
fn encode_id(id: &str) -> String {
    id.replace(':', "%3A")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_judged() {
        assert_eq!(judge(StatusCode::OK, "", br#"{"inputTokens":42}"#), Ok(42));
        assert_eq!(judge(StatusCode::OK, "", b"{}"), Err(Outcome::Error));
        assert_eq!(
            judge(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                br#"{"message":"The provided model doesn't support counting tokens."}"#
            ),
            Err(Outcome::Unsupported)
        );
        assert_eq!(
            judge(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                br#"{"message":"messages: final assistant content cannot end with trailing whitespace"}"#
            ),
            Err(Outcome::Error),
            "a refusal of this request is not one of the model"
        );
        assert_eq!(
            judge(
                StatusCode::FORBIDDEN,
                "AccessDeniedException:http://internal.amazon.com/coral/com.amazon.bedrock/",
                br#"{"message":"User: arn:aws:iam::1:role/r is not authorized to perform: bedrock:CountTokens"}"#
            ),
            Err(Outcome::Denied)
        );
        assert_eq!(
            judge(
                StatusCode::FORBIDDEN,
                "",
                br#"{"__type":"AccessDeniedException","message":"denied"}"#
            ),
            Err(Outcome::Denied)
        );
        assert_eq!(
            judge(
                StatusCode::FORBIDDEN,
                "InvalidSignatureException",
                br#"{"message":"The request signature we calculated does not match"}"#
            ),
            Err(Outcome::Error),
            "a signing problem is not a missing permission"
        );
        assert_eq!(
            judge(StatusCode::TOO_MANY_REQUESTS, "ThrottlingException", b"{}"),
            Err(Outcome::Error)
        );
    }

    #[test]
    fn ids_are_encoded_for_the_path() {
        assert_eq!(
            encode_id("anthropic.claude-3-5-sonnet-20240620-v1:0"),
            "anthropic.claude-3-5-sonnet-20240620-v1%3A0"
        );
    }
}
