//! Phase 1 of a stream, for any [`Wire`]: attempts are retried invisibly until the first
//! whole event arrives; the client has nothing yet, so its response head is held back until
//! then. An attempt whose first event is a retryable exception is retried too; when none is
//! left, that exception goes to the client as Bedrock sent it (HTTP 200 and the frame), so
//! throttling stays throttling. An answer that is not the wire's stream after all (some
//! operations answer JSON) is read whole.

use super::reader::Events;
use super::wire::{Class, Wire};
use crate::proxy::attempt::{whole_response, Exchange, Failure};
use crate::proxy::fault::{Interruption, Transport};
use crate::proxy::outbound::Outbound;
use crate::retry::classify_exception;
use crate::upstream::UpstreamBody;
use bytes::Bytes;
use http::response::Parts;
use http::{Request, Response};
use std::marker::PhantomData;
use std::time::Duration;

/// Phase 1: send the request until a first whole event arrives.
pub(super) struct First<'a, W> {
    outbound: &'a Outbound,
    stall: Duration,
    /// Cap on a response that turns out not to be a stream.
    max_body: usize,
    wire: PhantomData<W>,
}

/// What phase 1 got.
pub(crate) enum Opening<W: Wire> {
    /// Not a stream after all: read whole.
    Whole(Response<Bytes>),
    /// The head, the rest of the body as events, and the first event.
    Stream(Parts, Events<W::Splitter, UpstreamBody>, W::Event),
}

impl<'a, W: Wire> First<'a, W> {
    pub(super) fn new(outbound: &'a Outbound, stall: Duration, max_body: usize) -> Self {
        First {
            outbound,
            stall,
            max_body,
            wire: PhantomData,
        }
    }
}

impl<W: Wire> Exchange for First<'_, W> {
    type Output = Opening<W>;

    fn request(&mut self) -> Result<Request<Bytes>, Failure> {
        Ok(self.outbound.request())
    }

    async fn accept(
        &mut self,
        resp: Response<UpstreamBody>,
        within: Duration,
    ) -> Result<Opening<W>, Failure> {
        if !W::is_stream(resp.headers()) {
            let whole = whole_response(resp, self.max_body, within).await?;
            return Ok(Opening::Whole(whole));
        }
        let (head, body) = resp.into_parts();
        let mut events = Events::new(body, self.stall);
        match events.next().await {
            Ok(Some(event)) => match W::class(&event) {
                Class::Retryable(exception_type) => Err(Failure::Exception {
                    head: Box::new(head),
                    retry: classify_exception(&exception_type),
                    exception_type,
                    raw: W::into_raw(event),
                }),
                _ => Ok(Opening::Stream(head, events, event)),
            },
            Ok(None) if W::EMPTY_IS_ANSWER => {
                Ok(Opening::Whole(Response::from_parts(head, Bytes::new())))
            }
            Ok(None) => Err(fault_failure(Interruption::Truncated)),
            Err(fault) => Err(fault_failure(fault)),
        }
    }
}

/// A fault before anything reached the client: retried like any failure (it is counted by
/// `upstream_attempts_total` and `retries_total`, not as a stream interruption).
fn fault_failure(fault: Interruption) -> Failure {
    Failure::Transport(Transport::Stream(fault))
}
