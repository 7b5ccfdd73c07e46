//! HTTP/2 in the simulator: h2c with prior knowledge, served by hyper's http2 server.
//!
//! A connection whose first bytes are the HTTP/2 preface (`PRI * HTTP/2.0`) comes here;
//! every other connection stays on the byte-exact HTTP/1.1 path (`http`, `wire`). Each
//! stream is turned into the same `http::Request` and goes through the same control
//! endpoints and [`admit`] (classification, SigV4, plans, renderers, fault rules) as over
//! HTTP/1.1; only the writing differs. On h2 a fault cuts one stream, never its neighbours:
//! every reset kind (before headers, mid-body, after or mid frame, EOF without a terminator)
//! becomes an RST_STREAM, `truncate` ends the body cleanly without the terminal events.
//!
//! The connection-level fault is [`Registry::reset_all`] (`POST /_sim/h2/reset`,
//! [`super::SimHandle::reset_h2_connections`]): each open h2 connection is dropped with
//! `SO_LINGER 0`, a TCP RST that breaks every stream on it at once, as when a load
//! balancer or Bedrock's front end goes away.

use super::http::{Request, MAX_BODY};
use super::server::{admit, control_reply, State};
use super::wire::{exception_frame, with_oversized_header, Outcome, Reply};
use super::{error_type_for, SimError};
use crate::faults::Fault;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};

/// The client connection preface of RFC 9113 §3.4.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Streams one connection may carry at once (hyper's default is 200; a relay multiplexes more).
const MAX_STREAMS: u32 = 10_000;

pub(super) type Body = BoxBody<Bytes, std::io::Error>;

/// Connection ids (HTTP/1.1 and h2 alike) and a kill switch per open h2 connection.
#[derive(Default)]
pub struct Registry {
    last_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Notify>>>,
}

impl Registry {
    /// A fresh connection id, counted from 1.
    pub fn next_id(&self) -> u64 {
        self.last_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Reset every open h2 connection with a TCP RST; returns how many there were.
    pub fn reset_all(&self) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.values().for_each(|kill| kill.notify_one());
        open.len()
    }

    fn register(&self, id: u64) -> Arc<Notify> {
        let kill = Arc::new(Notify::new());
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.insert(id, kill.clone());
        kill
    }

    fn remove(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

/// Whether the client opened with the HTTP/2 preface (peeked, nothing consumed). An
/// HTTP/1.1 request differs from it by its second byte at the latest.
pub(super) async fn starts_with_preface(stream: &TcpStream) -> bool {
    let mut buf = [0u8; PREFACE.len()];
    for _ in 0..200 {
        let n = match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        if buf[..n] != PREFACE[..n] {
            return false;
        }
        if n == PREFACE.len() {
            return true;
        }
        // A prefix of the preface so far: wait for the rest (peek returns at once).
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

/// Serve one h2c connection until the client closes it or [`Registry::reset_all`].
pub(super) async fn serve(stream: TcpStream, state: Arc<State>, id: u64) {
    let _ = stream.set_nodelay(true);
    // Every close of this socket is an RST: a killed connection must not end in a clean FIN.
    let _ = stream.set_zero_linger();
    let kill = state.h2.register(id);
    let shared = state.clone();
    let service = hyper::service::service_fn(move |req| stream_of(shared.clone(), req, id));
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .max_concurrent_streams(MAX_STREAMS)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        _ = kill.notified() => tracing::debug!(connection = id, "simulator: h2 connection reset"),
    }
    state.h2.remove(id);
}

/// One h2 stream: the request read whole, then dispatched like an HTTP/1.1 request. An
/// `Err` makes hyper reset the stream (RST_STREAM) instead of answering.
async fn stream_of(
    state: Arc<State>,
    req: http::Request<Incoming>,
    connection: u64,
) -> Result<http::Response<Body>, std::io::Error> {
    if super::bidi::is_bidi(&req) {
        return Ok(super::bidi::serve(state, req, connection));
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(e) => return Err(std::io::Error::other(format!("request body: {e}"))),
    };
    let req = Request {
        body,
        ..Request::head_of(&parts)
    };
    if req.path.starts_with("/_sim/") {
        let (status, body) = control_reply(&state, &req);
        return Ok(json_response(status, &body, Vec::new(), "control"));
    }
    let (seq, rid) = state.next_request();
    let outcome = admit(&state, &req, seq, connection);
    respond(state, outcome, rid).await
}

pub(super) fn json_response(
    status: u16,
    body: &Value,
    extra: Vec<(&str, String)>,
    rid: &str,
) -> http::Response<Body> {
    let mut b = http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-amzn-RequestId", rid);
    for (k, v) in extra {
        b = b.header(k, v);
    }
    let full = Full::new(Bytes::from(body.to_string())).map_err(|never| match never {});
    b.body(full.boxed()).expect("valid response head")
}

pub(super) fn error_response(err: &SimError, rid: &str) -> http::Response<Body> {
    let (status, ty) = err.status_and_type();
    let ty = format!("{ty}:http://internal.amazon.com/coral/com.amazon.bedrock/");
    let body = json!({ "message": err.to_string() });
    json_response(status, &body, vec![("x-amzn-ErrorType", ty)], rid)
}

/// The response head now; a body whose frames a task writes (and cuts) into a channel.
async fn respond(
    state: Arc<State>,
    outcome: Outcome,
    rid: String,
) -> Result<http::Response<Body>, std::io::Error> {
    let (content_type, stream, invoke, sse) = match (&outcome.fault, outcome.result) {
        (Some(Fault::ResetBeforeHeaders), _) => {
            return Err(std::io::Error::other("simulated reset before headers"));
        }
        (Some(Fault::Status { code }), _) => {
            let message = format!("Simulated {} ({code})", error_type_for(*code));
            let err = SimError::Injected {
                status: *code,
                message,
            };
            return Ok(error_response(&err, &rid));
        }
        (_, Err(e)) => return Ok(error_response(&e, &rid)),
        (fault, Ok(Reply::Json { body, headers })) => {
            return Ok(json_body(body, headers, fault.clone(), &rid).await);
        }
        (_, Ok(Reply::Stream { stream, invoke })) => {
            ("application/vnd.amazon.eventstream", stream, invoke, None)
        }
        (_, Ok(Reply::Sse { stream, op })) => ("text/event-stream", stream, false, Some(op)),
    };
    let (tx, rx) = mpsc::channel(8);
    let mut b = http::Response::builder()
        .status(200)
        .header("content-type", content_type)
        .header("x-amzn-RequestId", rid.as_str());
    if invoke {
        b = b.header("x-amzn-bedrock-content-type", "application/json");
    }
    let fault = outcome.fault.clone();
    let (ttft, gap) = (state.config.ttft, state.config.inter_token);
    tokio::spawn(async move {
        let _ = write_stream(Sink(tx), stream, sse, fault, ttft, gap).await;
    });
    Ok(b.body(channel_body(rx)).expect("valid response head"))
}

pub(super) fn channel_body(mut rx: mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>) -> Body {
    StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))).boxed()
}

/// The writing end of one stream's body. `Err(())`: the client (or the connection) is gone.
struct Sink(mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>);

impl Sink {
    async fn data(&self, data: impl Into<Bytes>) -> Result<(), ()> {
        let data = data.into();
        if data.is_empty() {
            return Ok(());
        }
        self.0.send(Ok(Frame::data(data))).await.map_err(|_| ())
    }

    /// End the stream with RST_STREAM.
    async fn reset(&self, why: &str) {
        let _ = self
            .0
            .send(Err(std::io::Error::other(why.to_owned())))
            .await;
    }
}

/// A non-streaming body; a mid-body fault sends half of it, then resets the stream.
async fn json_body(
    body: Value,
    extra: Vec<(&'static str, String)>,
    fault: Option<Fault>,
    rid: &str,
) -> http::Response<Body> {
    let cut = match fault {
        Some(Fault::Stall { duration, .. }) => {
            tokio::time::sleep(duration).await;
            false
        }
        Some(
            Fault::ResetMidBody
            | Fault::ResetAfterEvents { .. }
            | Fault::ResetMidFrame { .. }
            | Fault::EofNoTerminator { .. }
            | Fault::Truncate { .. },
        ) => true,
        Some(Fault::Exception { exception_type, .. }) => {
            let status = Fault::exception_status(exception_type.as_str());
            let message = format!("Simulated {exception_type}");
            return error_response(&SimError::Injected { status, message }, rid);
        }
        _ => false,
    };
    if !cut {
        return json_response(200, &body, extra, rid);
    }
    let bytes = Bytes::from(body.to_string());
    let (tx, rx) = mpsc::channel(2);
    let mut b = http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("content-length", bytes.len())
        .header("x-amzn-RequestId", rid);
    for (k, v) in extra {
        b = b.header(k, v);
    }
    tokio::spawn(async move {
        let sink = Sink(tx);
        if sink.data(bytes.slice(..bytes.len() / 2)).await.is_ok() {
            sink.reset("simulated reset mid-body").await;
        }
    });
    b.body(channel_body(rx)).expect("valid response head")
}

/// Frames with the fault cut in at its position, as `wire::send_stream` does on HTTP/1.1.
async fn write_stream(
    sink: Sink,
    stream: super::render::Stream,
    sse: Option<bedrock_relay_wire::ops::Operation>,
    fault: Option<Fault>,
    ttft: Duration,
    gap: Duration,
) -> Result<(), ()> {
    if !ttft.is_zero() {
        tokio::time::sleep(ttft).await;
    }
    let n = stream.frames.len();
    let at = fault
        .as_ref()
        .map_or(usize::MAX, |f| f.cut_at(n, stream.terminal));
    let mut batch: Vec<u8> = Vec::new();
    for i in 0..=n {
        if i == at {
            sink.data(std::mem::take(&mut batch)).await?;
            match fault.as_ref().ok_or(())? {
                Fault::ResetAfterEvents { .. } | Fault::EofNoTerminator { .. } => {
                    sink.reset("simulated reset").await;
                    return Ok(());
                }
                Fault::ResetMidFrame { .. } | Fault::ResetMidBody => {
                    if let Some(f) = stream.frames.get(i) {
                        sink.data(f.slice(..f.len() / 2)).await?;
                    }
                    sink.reset("simulated reset mid-frame").await;
                    return Ok(());
                }
                Fault::Truncate { .. } => return Ok(()),
                Fault::Stall { duration, .. } => tokio::time::sleep(*duration).await,
                Fault::Exception { exception_type, .. } => {
                    let message = format!("Simulated {exception_type}");
                    let frame = match sse {
                        Some(op) => super::sse::error_event(op, &message),
                        None => exception_frame(exception_type),
                    };
                    return sink.data(frame).await;
                }
                Fault::CorruptCrc { .. } => {
                    let mut bad = stream.frames[i].to_vec();
                    if let Some(last) = bad.last_mut() {
                        *last ^= 0xA5;
                    }
                    sink.data(bad).await?;
                    continue;
                }
                Fault::Status { .. }
                | Fault::ResetBeforeHeaders
                | Fault::OversizedHeader { .. } => {}
            }
        }
        let Some(frame) = stream.frames.get(i) else {
            break;
        };
        if stream.delta[i] && !gap.is_zero() {
            sink.data(std::mem::take(&mut batch)).await?;
            tokio::time::sleep(gap).await;
        }
        match &fault {
            Some(Fault::OversizedHeader { events }) if i >= *events => {
                batch.extend_from_slice(&with_oversized_header(frame))
            }
            _ => batch.extend_from_slice(frame),
        }
        if !gap.is_zero() {
            sink.data(std::mem::take(&mut batch)).await?;
        }
    }
    sink.data(batch).await
}

#[cfg(test)]
mod tests;
