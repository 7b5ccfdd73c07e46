//! Server-Sent Events streams (the OpenAI-compatible Chat Completions and Responses paths,
//! the Anthropic-Messages-compatible path, and any answer served as `text/event-stream`):
//! forwarded event by event as they arrive, never buffered whole.
//!
//! As with EventStream, the response head is held until the first complete event has
//! arrived ([`FirstEvent`], run by the retry driver), so anything failing before it is
//! retried invisibly. Then a supervised task forwards whole events only (a partial event is
//! never sent), waits at most the stall timeout for each, and drops the upstream request when
//! the client goes away. A fault after the first event is healed by the resume ladder
//! (`sse_pump`, with the API's codec from `crate::resume::sse`); when it cannot be, the
//! stream ends with the error event the client's API defines (its SDK raises it), never a
//! silent end.

use super::sse_events::{is_sse, SseEvents};
use super::sse_pump::{Heal, SsePump};
use super::{fault_failure, stream_head, supervise, ActiveStream, Client};
use crate::body;
use crate::proxy::attempt::{read_whole, Attempts, Exchange, Failure};
use crate::proxy::outbound::Outbound;
use crate::proxy::{Body, Record, Relay};
use bytes::Bytes;
use http::response::Parts;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;

/// Phase 1: send the request until the first whole event (or a whole non-SSE answer).
pub(in crate::proxy) struct FirstEvent<'a> {
    outbound: &'a Outbound,
    stall: Duration,
    max_body: usize,
}

/// An SSE stream whose first event has arrived.
pub(in crate::proxy) struct SseOpened {
    head: Parts,
    events: SseEvents,
    first: Bytes,
    outbound: Outbound,
    attempts: Attempts,
}

impl SseOpened {
    pub(in crate::proxy) fn new(first: SseFirst, outbound: Outbound, attempts: Attempts) -> Self {
        let (head, events, first) = first;
        SseOpened {
            head,
            events,
            first,
            outbound,
            attempts,
        }
    }
}

impl<'a> FirstEvent<'a> {
    pub(in crate::proxy) fn new(outbound: &'a Outbound, stall: Duration, max_body: usize) -> Self {
        FirstEvent {
            outbound,
            stall,
            max_body,
        }
    }
}

/// The head, the rest of the body as events, and the first event.
pub(in crate::proxy) type SseFirst = (Parts, SseEvents, Bytes);

impl Exchange for FirstEvent<'_> {
    /// The stream, or a whole answer that is not an event stream (a non-streaming request).
    type Output = Result<SseFirst, Response<Bytes>>;

    fn request(&mut self) -> Result<Request<Bytes>, Failure> {
        Ok(self.outbound.request())
    }

    async fn accept(
        &mut self,
        resp: Response<Incoming>,
        within: Duration,
    ) -> Result<Self::Output, Failure> {
        let (head, body) = resp.into_parts();
        if !is_sse(&head.headers) {
            let bytes = read_whole(body, self.max_body, within).await?;
            return Ok(Err(Response::from_parts(head, bytes)));
        }
        let mut events = SseEvents::new(body, self.stall);
        match events.next().await {
            Ok(Some(first)) => Ok(Ok((head, events, first))),
            // An event stream without a single event: an empty answer, passed on as it is.
            Ok(None) => Ok(Err(Response::from_parts(head, Bytes::new()))),
            Err(fault) => Err(fault_failure(fault)),
        }
    }
}

/// Phase 2: answer the client with the stream's head and start its pump (which heals the
/// stream when its API is one the relay knows).
pub(in crate::proxy) fn start(
    relay: Arc<Relay>,
    opened: SseOpened,
    record: Record,
) -> Response<Body> {
    let SseOpened {
        head,
        events,
        first,
        outbound,
        attempts,
    } = opened;
    let (tx, rx) = body::channel();
    let heal = Heal::new(&relay, &outbound, &record);
    let mut pump = SsePump {
        _active: ActiveStream::new(relay.clone()),
        relay: relay.clone(),
        model: record.model.clone().unwrap_or_default(),
        outbound,
        record,
        attempts,
        client: Client::new(tx),
        heal,
        resumes: 0,
        last_strategy: None,
        unsent: None,
        done: false,
        interrupted: false,
    };
    // The first event goes into the body before the head leaves (one write for both).
    let pending = pump.prime(first);
    tokio::spawn(supervise(relay, pump.run(events, pending)));
    Response::from_parts(stream_head(head), rx.boxed())
}
