//! The EventStream pump: forwards whole frames, detects faults mid-stream, and resumes.
//!
//! Phase 1 ([`open`]): attempts are retried invisibly until the first whole frame arrives;
//! the client has nothing yet, so its response head is held back until then.
//! Phase 2 (`pump`, a task per stream): every frame goes through the [`Splicer`](crate::resume::Splicer) of the
//! current attempt (none for the first) and is recorded in the [`Transcript`](crate::resume::Transcript) once
//! forwarded. On a fault the resume ladder (see `crate::resume`) fetches the rest from a
//! new upstream request; when that is impossible the client gets the upstream's own
//! exception or a typed `modelStreamErrorException`, then a clean end — never a torn frame.
//! If the client goes away the upstream request is dropped at once.

mod pump;

use super::attempt::{read_whole, Attempts, Failure};
use super::body;
use super::frames::{classify, Classified, Fault, UpstreamFrames};
use super::request::Outbound;
use super::{finish_plain, Body, Record, Relay};
use crate::resume::{ModelCaps, StreamFormat};
use bytes::Bytes;
use http::response::Parts;
use http::Response;
use http_body_util::BodyExt;
use pump::Pump;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// What the relay learns about models at run time: those that rejected a prefill.
/// Bounded: model ids come from clients.
#[derive(Debug, Default)]
pub struct ModelMemory {
    no_prefill: Mutex<HashSet<String>>,
}

const MAX_REMEMBERED_MODELS: usize = 1024;

impl ModelMemory {
    fn forbid_prefill(&self, model: &str) {
        let mut set = self.no_prefill.lock().unwrap_or_else(|p| p.into_inner());
        if set.len() < MAX_REMEMBERED_MODELS {
            set.insert(model.to_owned());
        }
    }

    fn prefill_forbidden(&self, model: &str) -> bool {
        self.no_prefill
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(model)
    }
}

impl Relay {
    /// Which rungs of the ladder a model allows: configuration, then what was learned.
    fn caps(&self, model: &str) -> ModelCaps {
        let learned = self.models.prefill_forbidden(model);
        self.settings.resume.caps(model, learned)
    }
}

/// Phase 1: get the first whole frame (retrying invisibly), then hand the stream to a pump.
pub async fn open(relay: Arc<Relay>, outbound: Outbound, mut record: Record) -> Response<Body> {
    let model = record.model.clone().unwrap_or_default();
    let stall = relay.settings.stall_timeout_for(&model);
    let mut attempts = Attempts::new(relay.clone(), record.operation);
    let (parts, frames, first) = loop {
        let failure = match attempts
            .send(outbound.request(), relay.settings.first_byte_timeout)
            .await
        {
            Ok(resp) if !is_eventstream(resp.headers()) => {
                // Not a stream after all (some agent operations answer JSON): read it whole.
                let (parts, body) = resp.into_parts();
                match read_whole(body, relay.settings.max_response_body, attempts.remaining()).await
                {
                    Ok(bytes) => {
                        return finish_plain(
                            &relay,
                            record,
                            &attempts,
                            Response::from_parts(parts, bytes),
                        )
                    }
                    Err(f) => f,
                }
            }
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                let mut frames = UpstreamFrames::new(body, stall);
                match frames.next().await {
                    Ok(Some(frame)) => match classify(&frame) {
                        Classified::Retryable(t) => fault_failure(Fault::Exception {
                            exception_type: t,
                            frame,
                        }),
                        _ => break (parts, frames, frame),
                    },
                    Ok(None) => fault_failure(Fault::Truncated),
                    Err(fault) => fault_failure(fault),
                }
            }
            Err(f) => f,
        };
        if let Some(reason) = failure.retry_reason() {
            if attempts
                .may_retry(reason, relay.settings.max_attempts)
                .await
            {
                continue;
            }
        }
        record.attempts = attempts.made();
        return match failure.into_result(attempts.made()) {
            Ok(resp) => finish_plain(&relay, record, &attempts, resp),
            Err(e) => super::finish_error(&relay, record, e),
        };
    };
    let (tx, rx) = body::channel();
    let mut parts: Parts = parts;
    for h in [
        http::header::CONTENT_LENGTH,
        http::header::TRANSFER_ENCODING,
        http::header::CONNECTION,
    ] {
        parts.headers.remove(h);
    }
    relay.metrics.active_streams.inc();
    let format = StreamFormat::detect(record.operation, &model);
    let mut pump = Pump::new(relay, outbound, record, attempts, format, model, tx);
    let primed = pump.prime(&first);
    tokio::spawn(pump.run(frames, first, primed));
    Response::from_parts(parts, rx.boxed())
}

fn is_eventstream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/vnd.amazon.eventstream"))
}

/// A fault before anything reached the client: retried like any failure (it is counted by
/// `upstream_attempts_total` and `retries_total`, not as a stream interruption).
fn fault_failure(fault: Fault) -> Failure {
    Failure::Transport {
        reason: fault.retry_reason(),
        detail: fault.describe(),
    }
}

/// Bedrock's answer to a prefill for a model that takes none.
fn rejects_prefill(resp: &Response<Bytes>) -> bool {
    resp.status() == http::StatusCode::BAD_REQUEST
        && std::str::from_utf8(resp.body())
            .is_ok_and(|b| b.contains("does not support assistant message prefill"))
}
