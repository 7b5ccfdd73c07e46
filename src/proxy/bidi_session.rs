//! A bidirectional session is visible while it lasts and logged when it ends: counted in
//! `bedrock_relay_active_streams` while open, its access line written at its end with its
//! duration, the events each way (`events_in`: client → Bedrock, `events_out`: Bedrock →
//! client) and how it ended (`end`): `clean`, `client_gone`, `upstream_fault` (the relay
//! ended the output with a `modelStreamErrorException`), `input_error` (the client's input
//! was malformed or could not be signed).
//!
//! `bidi::session` puts a [`SessionStats`] in the response's extensions; the input pump and
//! the output count into it; [`finish_at_end`] wraps the response body in [`Tracked`], which
//! finishes the request's `Record` when the body ends or is dropped.

use super::{Body, Record, Relay};
use bytes::{Buf, Bytes};
use http::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// What a session did, counted as it goes.
#[derive(Debug, Default)]
pub(crate) struct SessionStats {
    events_in: AtomicU64,
    events_out: AtomicU64,
    /// Why it ended, when not cleanly (the first reason given).
    end: Mutex<Option<&'static str>>,
}

impl SessionStats {
    /// One client event forwarded upstream.
    pub(crate) fn input_event(&self) {
        self.events_in.fetch_add(1, Ordering::Relaxed);
    }

    /// Output events sent to the client.
    pub(crate) fn output_events(&self, n: u64) {
        self.events_out.fetch_add(n, Ordering::Relaxed);
    }

    /// The session is ending for `why` (`upstream_fault`, `input_error`); the first wins.
    pub(crate) fn ended(&self, why: &'static str) {
        self.end
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(why);
    }

    fn end(&self) -> Option<&'static str> {
        *self.end.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// EventStream frames whole in `data` (the output sends whole frames only).
pub(crate) fn frames_in(data: &[u8]) -> u64 {
    let mut at = 0;
    let mut n = 0;
    while data.len() - at >= 4 {
        let len = (&data[at..at + 4]).get_u32() as usize;
        if len < 16 || data.len() - at < len {
            break;
        }
        at += len;
        n += 1;
    }
    n
}

/// Answer the client; an open session's record is finished when its output ends (or the
/// client goes away), a refusal's now.
pub(super) fn finish_at_end(
    relay: Arc<Relay>,
    record: Record,
    mut resp: Response<Body>,
) -> Response<Body> {
    let status = resp.status().as_u16();
    match resp.extensions_mut().remove::<Arc<SessionStats>>() {
        Some(stats) if resp.status().is_success() => {
            resp.map(|body| Tracked::new(relay, record, stats, body, status).boxed())
        }
        _ => {
            record.finish(&relay, status);
            resp
        }
    }
}

/// The session's output as the client reads it; finishes the record at the end.
pub(crate) struct Tracked {
    inner: Body,
    open: Option<(Arc<Relay>, Record)>,
    stats: Arc<SessionStats>,
    status: u16,
    bytes: u64,
    /// The output ended (cleanly or after the relay's error event).
    done: bool,
}

impl Tracked {
    fn new(
        relay: Arc<Relay>,
        record: Record,
        stats: Arc<SessionStats>,
        inner: Body,
        status: u16,
    ) -> Self {
        relay.metrics.active_streams.inc();
        Tracked {
            inner,
            open: Some((relay, record)),
            stats,
            status,
            bytes: 0,
            done: false,
        }
    }

    fn finish(&mut self) {
        let Some((relay, mut record)) = self.open.take() else {
            return;
        };
        relay.metrics.active_streams.dec();
        // A fault that ended the session stays its end, whether or not the client read on.
        let end = match (self.done, self.stats.end()) {
            (_, Some(why)) => why,
            (true, None) => "clean",
            (false, None) => "client_gone",
        };
        if end == "client_gone" {
            relay.metrics.client_disconnects_total.inc();
        }
        record.ledger.end = Some(end);
        record.ledger.fault = match end {
            "upstream_fault" | "input_error" => Some(end),
            _ => None,
        };
        record.ledger.events_in = Some(self.stats.events_in.load(Ordering::Relaxed));
        record.ledger.events_out = Some(self.stats.events_out.load(Ordering::Relaxed));
        record.bytes_out = self.bytes;
        record.attempts = record.attempts.max(1);
        record.finish(&relay, self.status);
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.finish();
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                    this.stats.output_events(frames_in(data));
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.stats.ended("upstream_fault");
                this.done = true;
                this.finish();
            }
            Poll::Ready(None) => {
                this.done = true;
                this.finish();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventstream::{encode, event};

    #[test]
    fn whole_frames_are_counted() {
        let a = encode(&event("chunk", "{}"));
        let b = encode(&event("chunk", "{\"x\":1}"));
        assert_eq!(frames_in(&[a.clone(), b].concat()), 2);
        assert_eq!(frames_in(&a[..10]), 0);
        assert_eq!(frames_in(b""), 0);
    }

    #[test]
    fn the_first_reason_wins() {
        let s = SessionStats::default();
        assert_eq!(s.end(), None);
        s.ended("upstream_fault");
        s.ended("input_error");
        assert_eq!(s.end(), Some("upstream_fault"));
    }
}
