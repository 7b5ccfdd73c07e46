//! The relay's request path: classify → limits → retry/resume → sign → send.
//!
//! [`handle`] is the whole path in one function. Its steps live beside it: `request`
//! (body limit, wrong-service check, the upstream template), `attempt` (sign, send, retry
//! gate), `stream` (EventStream pump with resumption), `error` (the one mapping to HTTP).

mod attempt;
mod body;
mod credentials;
pub mod error;
mod frames;
mod request;
mod stream;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::ops::{self, Classified};
use crate::retry::{Backoff, RetryBudget};
use crate::signing::Signer;
use crate::upstream::Upstream;
use attempt::{read_whole, Attempts};
use bytes::Bytes;
use error::{full, RelayError};
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;

/// Body type of every response the relay sends to its clients.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// Everything a request needs, shared by all connections.
pub struct Relay {
    pub settings: Arc<Settings>,
    pub signer: Signer,
    pub upstream: Upstream,
    pub metrics: Metrics,
    pub budget: RetryBudget,
    pub backoff: Backoff,
    pub models: stream::ModelMemory,
    /// Inbound authentication, policy and per-client limits (step 1).
    pub inbound: crate::inbound::Inbound,
}

impl Relay {
    pub fn new(
        settings: Arc<Settings>,
        signer: Signer,
        upstream: Upstream,
        metrics: Metrics,
    ) -> Self {
        let inbound = crate::inbound::Inbound::new(&settings.inbound);
        let budget = RetryBudget::new(settings.retry_budget);
        let backoff = Backoff::new(settings.backoff_base, settings.backoff_max);
        Relay {
            settings,
            signer,
            upstream,
            metrics,
            budget,
            backoff,
            models: Default::default(),
            inbound,
        }
    }
}

/// What one request did, for its access-log line and metrics.
#[derive(Debug)]
pub struct Record {
    pub operation: ops::Operation,
    pub model: Option<String>,
    pub started: Instant,
    pub attempts: u32,
    pub resumes: u32,
    pub bytes_out: u64,
}

impl Record {
    /// Log the access line and count the request. Called once, when the response is done
    /// (for streams: when the stream ends).
    pub fn finish(self, relay: &Relay, status: u16) {
        let op = self.operation.name();
        let secs = self.started.elapsed().as_secs_f64();
        relay
            .metrics
            .requests_total
            .with_label_values(&[op, &status.to_string()])
            .inc();
        relay
            .metrics
            .request_duration_seconds
            .with_label_values(&[op])
            .observe(secs);
        tracing::info!(
            target: "bedrock_relay::access",
            operation = op,
            model = self.model.as_deref().unwrap_or("-"),
            status,
            attempts = self.attempts,
            resumes = self.resumes,
            duration_ms = (secs * 1000.0) as u64,
            bytes = self.bytes_out,
            "request"
        );
    }
}

/// Serve one client request.
pub async fn handle(relay: Arc<Relay>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    // 1a. the SDK's own credential calls (STS web identity / SAML, SSO), sent here by a
    // global AWS_ENDPOINT_URL: they carry their own proof and pass on untouched.
    let (path, query) = (parts.uri.path(), parts.uri.query());
    if let Some(service) = ops::credential_service(&parts.method, path, query, &parts.headers) {
        return credentials::forward(&relay, parts, body, service).await;
    }
    // 1. classify: which operation and model; refuse other AWS services.
    let Classified {
        operation,
        model_id,
    } = ops::classify(&parts.method, parts.uri.path());
    let mut record = Record {
        operation,
        model: model_id,
        started: Instant::now(),
        attempts: 0,
        resumes: 0,
        bytes_out: 0,
    };
    // 1b. inbound: the client's own auth, policy, its concurrency slot (held to the end).
    let admission = match relay
        .inbound
        .admit(&parts, operation, record.model.as_deref())
    {
        Ok(a) => a,
        Err(e) => return finish_error(&relay, record, e.into()),
    };
    let prepared = async {
        // A request signed for another AWS service is refused, or forwarded re-signed
        // for that service when the operator enabled it.
        let other = request::other_service(&parts.headers);
        let base = match &other {
            None => relay.upstream.base(operation.route()).clone(),
            Some(service) if relay.settings.forward_other_services => {
                request::service_endpoint(&relay.settings, service, relay.signer.region())?
            }
            Some(service) => return Err(request::wrong_service(&parts, service.clone())),
        };
        // 2. limits: the body is buffered (signing and replay need it), within its cap.
        let body = request::read_body(body, relay.settings.max_request_body).await?;
        admission.verify_body(&relay.inbound, &parts, &body)?;
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let uri = crate::upstream::join(&base, path)
            .map_err(|e| RelayError::BadRequestBody(format!("bad request path: {e}")))?;
        Ok((request::Outbound::new(&parts, uri, body), other))
    }
    .await;
    let (outbound, other_service) = match prepared {
        Ok(o) => o,
        Err(e) => return admission.hold(finish_error(&relay, record, e)),
    };
    // 3. retry/resume → 4. sign → 5. send: streams go to the pump, which owns their
    // attempts from here on; everything else is read whole so a torn body is retried too.
    let streams = operation.is_resumable_stream() || operation == ops::Operation::AgentRuntime;
    if streams && other_service.is_none() {
        return admission.hold(stream::open(relay, outbound, record).await);
    }
    let mut attempts = Attempts::new(relay.clone(), operation).signing_for(other_service);
    let head_timeout = relay
        .settings
        .stall_timeout_for(record.model.as_deref().unwrap_or(""));
    let result = loop {
        let failure = match attempts.send(outbound.request(), head_timeout).await {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                match read_whole(body, relay.settings.max_response_body, attempts.remaining()).await
                {
                    Ok(bytes) => break Ok(Response::from_parts(parts, bytes)),
                    Err(f) => f,
                }
            }
            Err(f) => f,
        };
        let retry = failure.retry_reason();
        if let Some(reason) = retry {
            if attempts
                .may_retry(reason, relay.settings.max_attempts)
                .await
            {
                continue;
            }
        }
        break failure.into_result(attempts.made());
    };
    match result {
        Ok(resp) => admission.hold(finish_plain(&relay, record, &attempts, resp)),
        Err(e) => {
            record.attempts = attempts.made();
            admission.hold(finish_error(&relay, record, e))
        }
    }
}

/// A complete upstream answer (success or Bedrock's own error) to the client: counted,
/// logged, hop-by-hop framing headers dropped (the body is sent whole).
fn finish_plain(
    relay: &Relay,
    mut record: Record,
    attempts: &Attempts,
    resp: Response<Bytes>,
) -> Response<Body> {
    if resp.status().is_success() {
        attempts.succeeded();
    }
    record.attempts = attempts.made();
    record.bytes_out = resp.body().len() as u64;
    let status = resp.status().as_u16();
    record.finish(relay, status);
    let (mut parts, bytes) = resp.into_parts();
    parts.headers.remove(http::header::TRANSFER_ENCODING);
    parts.headers.remove(http::header::CONNECTION);
    Response::from_parts(parts, full(bytes))
}

fn finish_error(relay: &Relay, record: Record, error: RelayError) -> Response<Body> {
    tracing::warn!(operation = record.operation.name(), error = %error, "request failed in the relay");
    record.finish(relay, error.status().as_u16());
    error.into_response()
}
