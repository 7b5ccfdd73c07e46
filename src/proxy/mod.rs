//! The relay's request path: classify → limits → retry/resume → sign → send.
//!
//! [`handle`] is the whole path: it admits the request, runs [`relay_request`] (the steps
//! that can fail, as one `Result`) and is the one exit — every answer is counted, logged and
//! held against the client's concurrency slot here, every error mapped to HTTP here (by
//! `error`). Beside it: `outbound` (body limit, other services, the upstream template),
//! `attempt` (the one retry driver: sign, send, judge, back off), `stream` (the EventStream
//! pump with resumption), `relay` (shared state and the request's record), `bidi` (the
//! bidirectional stream: a live HTTP/2 session whose body is never read whole, each input
//! event re-signed as it passes). The SDK's own
//! credential calls (a global `AWS_ENDPOINT_URL`) leave before admission, through
//! `credentials`, which passes them on untouched and answers them itself.

mod attempt;
mod bidi;
mod bidi_session;
mod count;
mod credentials;
pub mod error;
mod fault;
mod outbound;
mod relay;
mod stream;
#[cfg(test)]
mod testing;

pub use crate::body::Body;
pub use relay::{Record, Relay};

use crate::inbound::Admission;
use crate::ops::{self, Classified};
use attempt::{Attempts, Policy, Whole};
use bytes::Bytes;
use error::{full, RelayError};
use http::request::Parts;
use http::{Request, Response};
use hyper::body::Incoming;
use outbound::Outbound;
use std::sync::Arc;

/// Serve one client request. The one exit: whatever happened, the answer leaves here.
pub async fn handle(relay: Arc<Relay>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    // 1a. the SDK's own credential calls (STS web identity / SAML, SSO), sent here by a
    // global AWS_ENDPOINT_URL: they carry their own proof and pass on untouched.
    let (path, query) = (parts.uri.path(), parts.uri.query());
    if let Some(service) = ops::credential_service(&parts.method, path, query, &parts.headers) {
        return credentials::forward(&relay, parts, body, service).await;
    }
    // 1. classify: which operation and model.
    let Classified {
        operation,
        model_id,
    } = ops::classify(&parts.method, parts.uri.path());
    let mut record = Record::new(operation, model_id);
    record.otel =
        crate::otel::RequestSpan::start(&parts.headers, operation, record.model.as_deref());
    // 1b. inbound: the client's own auth, policy, its concurrency slot (held to the end).
    let (admission, answer) = match relay
        .inbound
        .admit(&parts, operation, record.model.as_deref())
    {
        Ok(admission) => {
            record.ledger.client = admission.client().map(str::to_owned);
            let answer = relay_request(&relay, parts, body, &admission, &mut record).await;
            (Some(admission), answer)
        }
        Err(denied) => (None, Err(denied.into())),
    };
    if matches!(answer, Ok(Answer::Stream(_))) {
        record.otel.first_chunk();
    }
    let resp = match answer {
        Ok(Answer::Whole(resp)) => finish_whole(&relay, record, resp),
        Ok(Answer::Stream(started)) => started.respond(relay, record),
        Ok(Answer::Bidi(resp)) => bidi_session::finish_at_end(relay, record, resp),
        Err(e) => finish_error(&relay, record, e),
    };
    match admission {
        Some(admission) => admission.hold(resp),
        None => resp,
    }
}

/// What the request path produced.
enum Answer {
    /// A complete response: Bedrock's answer or its own error, read whole.
    Whole(Response<Bytes>),
    /// A stream (EventStream or Server-Sent Events) whose first event has arrived; its
    /// pump takes it from here.
    Stream(stream::Started),
    /// A bidirectional session, open (its output streams as it comes), or its refusal.
    Bidi(Response<Body>),
}

/// Steps 2–5 for an admitted request.
async fn relay_request(
    relay: &Arc<Relay>,
    parts: Parts,
    body: Incoming,
    admission: &Admission,
    record: &mut Record,
) -> Result<Answer, RelayError> {
    let operation = record.operation;
    // The bidirectional stream's body is a live session: never read whole.
    if operation == ops::Operation::InvokeModelWithBidirectionalStream
        && outbound::other_service(&parts.headers).is_none()
        && ops::Route::of_path(parts.uri.path()).0.is_none()
    {
        return bidi::open(relay, parts, body, admission)
            .await
            .map(Answer::Bidi);
    }
    // A request signed for another AWS service is refused, or forwarded re-signed for that
    // service when the operator enabled it.
    let other_service = outbound::other_service(&parts.headers);
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    // Paths under `/mantle/` go to bedrock-mantle (prefix removed), signed for it.
    let (mantle, path) = ops::Route::of_path(path);
    let route = mantle.unwrap_or(operation.route());
    let signing_name = match &other_service {
        None => mantle.map(|r| r.signing_name().to_owned()),
        service => service.clone(),
    };
    let base = match &other_service {
        None => relay.upstream.base(route).clone(),
        Some(service) if relay.settings.forward_other_services => {
            outbound::service_endpoint(&relay.settings, service, relay.signer.region())?
        }
        Some(service) => return Err(outbound::wrong_service(&parts, service.clone())),
    };
    // 2. limits: the body is buffered (signing and replay need it), within its cap.
    let body = outbound::read_body(body, relay.settings.max_request_body).await?;
    admission.verify_body(&relay.inbound, &parts, &body)?;
    if operation.is_sse() {
        record.model = model_in_body(&body);
        relay.inbound.model_policy(record.model.as_deref())?;
    }
    record.otel.request_body(&body, record.model.as_deref());
    let uri = crate::upstream::join(&base, path).map_err(RelayError::BadPath)?;
    let outbound = Outbound::new(&parts, uri, body);
    // 3. retry/resume → 4. sign → 5. send, by the one driver. Streams are answered once
    // their first frame or event is here (their pump owns the attempts from then on);
    // everything else is read whole, so a torn body is retried too.
    let settings = &relay.settings;
    let streaming = Policy::configured(settings, None);
    let mut attempts = Attempts::new(relay.clone(), operation)
        .signing_for(signing_name)
        .traced(&record.otel)
        .for_client(crate::admission::client_of(&parts.headers));
    let result = match Shape::of(operation, other_service.is_some()) {
        Shape::Stream(kind) => {
            match stream::open(relay, kind, outbound, attempts, streaming, record).await {
                stream::Open::Stream(started) => return Ok(Answer::Stream(started)),
                stream::Open::Whole(result, made) => {
                    attempts = made;
                    result
                }
            }
        }
        Shape::Whole => {
            let model = record.model.as_deref().unwrap_or("");
            let policy = Policy {
                head_timeout: settings.stall_timeout_for(model),
                ..streaming
            };
            let mut whole = Whole::new(&outbound, settings.max_response_body);
            attempts.drive(&mut whole, policy).await
        }
    };
    record.attempts = attempts.made();
    attempts.note(record);
    match result {
        Ok(resp) => {
            if resp.status().is_success() {
                attempts.succeeded();
            }
            Ok(Answer::Whole(resp))
        }
        // Bedrock's own final answer (an error status, an exception frame) goes out as it came.
        Err(failure) => failure.into_result(attempts.made()).map(Answer::Whole),
    }
}

/// How an operation's answer arrives.
enum Shape {
    /// A stream on its wire (an answer that turns out not to be one is read whole).
    Stream(stream::Kind),
    /// One body, read whole.
    Whole,
}

impl Shape {
    fn of(operation: ops::Operation, other_service: bool) -> Shape {
        use ops::Operation::*;
        match operation {
            _ if other_service => Shape::Whole,
            ConverseStream | InvokeModelWithResponseStream | AgentRuntime => {
                Shape::Stream(stream::Kind::EventStream)
            }
            ChatCompletions | Responses | AnthropicMessages | Unknown => {
                Shape::Stream(stream::Kind::Sse)
            }
            _ => Shape::Whole,
        }
    }
}

/// The `model` of an OpenAI- or Anthropic-compatible request body.
fn model_in_body(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        model: Option<String>,
    }
    serde_json::from_slice::<Named>(body).ok()?.model
}

/// A complete upstream answer (success or Bedrock's own error) to the client: counted,
/// logged, hop-by-hop framing headers dropped (the body is sent whole).
fn finish_whole(relay: &Relay, mut record: Record, resp: Response<Bytes>) -> Response<Body> {
    record.bytes_out = resp.body().len() as u64;
    if resp.status().is_success() {
        let converse = record.operation == ops::Operation::Converse;
        record.ledger.tokens = crate::usage::of_whole(resp.headers(), resp.body(), converse);
        record.otel.whole_response(resp.body());
    }
    record.finish(relay, resp.status().as_u16());
    let (mut parts, bytes) = resp.into_parts();
    parts.headers.remove(http::header::TRANSFER_ENCODING);
    parts.headers.remove(http::header::CONNECTION);
    Response::from_parts(parts, full(bytes))
}

/// The relay's own error to the client, in Bedrock's shape.
fn finish_error(relay: &Relay, record: Record, error: RelayError) -> Response<Body> {
    tracing::warn!(operation = record.operation.name(), error = %error, "request failed in the relay");
    record.finish(relay, error.status().as_u16());
    error.into_response()
}
