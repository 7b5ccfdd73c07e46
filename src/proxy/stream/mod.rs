//! Streams, one stack for both wires ([`wire`]: AWS EventStream and Server-Sent Events):
//! forwarded event by event as they arrive, faults detected mid-stream and healed.
//!
//! [`open`] owns both phases of a stream:
//! 1. `first` — attempts are retried invisibly (by the one retry driver) until the first
//!    whole event arrives; the client's response head is held back until then.
//! 2. `pump` — the client's response body: every event goes through the heal step
//!    (`crate::resume::Heal`: splicer, tool-call hold, transcript) as the client reads; on a
//!    fault the resume ladder (`resume`, run by the same driver) fetches the rest from a new
//!    upstream request; when that is impossible the client gets the wire's typed error, then
//!    a clean end — never a torn event.
//!
//! `reader` splits an upstream body into the wire's whole events under the stall timeout;
//! `give_up` says why a stream could not go on ([`give_up::GiveUp`]); how it broke is
//! `crate::proxy::fault::Interruption`.

mod first;
mod give_up;
mod pump;
mod reader;
mod resume;
mod wire;

use super::attempt::{Attempts, Failure, Policy};
use super::outbound::Outbound;
use super::{Body, Record, Relay};
use bytes::Bytes;
use first::{First, Opening};
use http::response::Parts;
use http::Response;
use http_body_util::BodyExt;
use pump::{Opened, Pump, PumpBody};
use std::sync::Arc;
use wire::Wire;

/// Which wire an operation's stream arrives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// ConverseStream, InvokeModelWithResponseStream, Agent Runtime streams.
    EventStream,
    /// Server-Sent Events when the answer is `text/event-stream` (the OpenAI- and
    /// Anthropic-compatible paths, and operations the relay does not know), else whole.
    Sse,
}

/// What phase 1 of a stream gave.
// Returned once per request and taken apart at once: boxing the whole answer would cost an
// allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Open {
    /// Not a stream after all, or Bedrock's final answer or the last failure: whole, with
    /// the attempts made.
    Whole(Result<Response<Bytes>, Failure>, Attempts),
    /// The stream, its first event here: answered once the request's record is handed over.
    Stream(Started),
}

/// A stream whose first event has arrived, whatever its wire.
pub(super) struct Started(Box<dyn FnOnce(Arc<Relay>, Record) -> Response<Body> + Send>);

impl Started {
    /// Phase 2: the client's response, with the stream's pump as its body.
    pub(super) fn respond(self, relay: Arc<Relay>, record: Record) -> Response<Body> {
        (self.0)(relay, record)
    }
}

/// Phase 1 of a stream of `kind`: attempts until its first whole event (or a whole answer,
/// or the last failure).
pub(super) async fn open(
    relay: &Arc<Relay>,
    kind: Kind,
    outbound: Outbound,
    attempts: Attempts,
    policy: Policy,
    record: &mut Record,
) -> Open {
    let op = record.operation;
    match kind {
        Kind::EventStream => {
            let wire = wire::EventStream { op };
            open_on(relay, wire, outbound, attempts, policy, record).await
        }
        Kind::Sse => open_on(relay, wire::Sse { op }, outbound, attempts, policy, record).await,
    }
}

async fn open_on<W: Wire>(
    relay: &Arc<Relay>,
    wire: W,
    outbound: Outbound,
    mut attempts: Attempts,
    policy: Policy,
    record: &mut Record,
) -> Open {
    let settings = &relay.settings;
    let stall = settings.stall_timeout_for(record.model.as_deref().unwrap_or(""));
    let mut first = First::<W>::new(&outbound, stall, settings.max_response_body);
    let (head, events, first) = match attempts.drive(&mut first, policy).await {
        Ok(Opening::Stream(head, events, first)) => (head, events, first),
        Ok(Opening::Whole(resp)) => return Open::Whole(Ok(resp), attempts),
        Err(failure) => return Open::Whole(Err(failure), attempts),
    };
    record.attempts = attempts.made();
    attempts.note(record);
    let opened = Opened {
        wire,
        events,
        first,
        outbound,
        attempts,
    };
    Open::Stream(Started(Box::new(move |relay, record| {
        respond(relay, head, opened, record)
    })))
}

/// Phase 2: the response head, and the pump as the body.
fn respond<W: Wire>(
    relay: Arc<Relay>,
    head: Parts,
    opened: Opened<W>,
    record: Record,
) -> Response<Body> {
    let head = stream_head(head);
    let pump = Pump::new(relay.clone(), opened, record);
    let chunks = futures_util::stream::unfold(pump, |mut pump| async move {
        let chunk = pump.next_chunk().await?;
        Some((chunk, pump))
    });
    Response::from_parts(head, PumpBody::new(chunks, relay).boxed())
}

/// The response head of a stream: framing headers go (hyper frames the body itself).
fn stream_head(mut head: Parts) -> Parts {
    for h in [
        http::header::CONTENT_LENGTH,
        http::header::TRANSFER_ENCODING,
        http::header::CONNECTION,
    ] {
        head.headers.remove(h);
    }
    head
}

#[cfg(test)]
mod tests;
