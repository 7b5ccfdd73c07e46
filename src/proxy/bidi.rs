//! `InvokeModelWithBidirectionalStream`, relayed as a live session over HTTP/2.
//!
//! Entered from `relay_request` before the body is read: the client's input is an event
//! stream that never ends while the session lasts, so it cannot be buffered. The request
//! head is re-signed (`Signer::sign_event_stream`, payload `STREAMING-AWS4-HMAC-SHA256-EVENTS`)
//! and sent on the upstream's HTTP/2 client with a streaming body; a task (`pump`) reads the
//! client's input messages as they arrive, takes off the client's signing wrapper (made with
//! its own keys) and forwards each event wrapped and signed with the relay's chain, then
//! the signed empty message when the client ends its input. The output events stream back
//! whole frame by whole frame as they arrive ([`Output`]).
//!
//! Both directions close together: the end of the output stops the pump, a client that
//! goes away drops the output (resetting the upstream stream) and breaks its input (the
//! pump resets the upstream request body). A live session is not healed: a fault upstream
//! ends the output with a `modelStreamErrorException` event, never a silent end.

use super::bidi_session::SessionStats;
use super::error::RelayError;
use super::fault::Transport;
use super::outbound::Outbound;
use super::relay::Relay;
use crate::body::Body;
use crate::inbound::Admission;
use crate::retry::RetryReason;
use crate::signing::events::{unwrap_client, EventSigner, Input};
use crate::signing::SigningError;
use crate::upstream::bidi::StreamBody as UpstreamBody;
use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use bytes::{Buf, Bytes, BytesMut};
use http::request::Parts;
use http::Response;
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

type Sender = mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>;

/// Open the session upstream and answer with its output stream (or Bedrock's own error).
pub(super) async fn open(
    relay: &Arc<Relay>,
    parts: Parts,
    input: Incoming,
    admission: &Admission,
) -> Result<Response<Body>, RelayError> {
    // An inbound SigV4 client signed the head over the streaming (or empty) payload.
    admission.verify_body(&relay.inbound, &parts, &Bytes::new())?;
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let base = relay.upstream.base(crate::ops::Route::Runtime);
    let uri = crate::upstream::join(base, path).map_err(RelayError::BadPath)?;
    let mut head = Outbound::new(&parts, uri, Bytes::new()).request();
    let signer = match relay.signer.sign_event_stream(&mut head).await {
        Ok(signer) => signer,
        Err(SigningError::BearerEventStream) => return Err(RelayError::BearerEventStream),
        Err(e) => return Err(RelayError::Signing(e)),
    };
    session(relay, head, input, signer).await
}

/// Send the head with the input pump as its body; the output streams back.
async fn session(
    relay: &Arc<Relay>,
    head: http::Request<Bytes>,
    input: Incoming,
    signer: EventSigner,
) -> Result<Response<Body>, RelayError> {
    let (tx, rx) = mpsc::channel(crate::body::DEPTH);
    let body: UpstreamBody = channel_body(rx);
    let stats = Arc::new(SessionStats::default());
    let pump = tokio::spawn(pump(input, signer, tx, stats.clone()));
    let guard = AbortOnDrop(pump);
    let head_host = head
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let req = head.map(|_| body);
    let sent = tokio::time::timeout(
        relay.settings.first_byte_timeout,
        relay.upstream.bidi.send(req),
    );
    let host = head_host.clone();
    let resp = match sent.await {
        Ok(Ok(resp)) => resp,
        Ok(Err(source)) => {
            let reason = source.retry_reason().unwrap_or(RetryReason::Connect);
            let error = Transport::Send {
                host,
                reason,
                source,
            };
            return Err(RelayError::Connect { attempts: 1, error });
        }
        Err(_) => {
            let wait = relay.settings.first_byte_timeout;
            let error = Transport::HeadTimeout { host, wait };
            return Err(RelayError::Timeout { attempts: 1, error });
        }
    };
    let (mut parts, upstream) = resp.into_parts();
    parts.headers.remove(http::header::TRANSFER_ENCODING);
    parts.headers.remove(http::header::CONNECTION);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    if !parts.status.is_success() {
        // Bedrock's own error, whole (the session never started).
        let limit = relay.settings.max_response_body;
        let bytes = match http_body_util::Limited::new(upstream, limit)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(RelayError::ResponseTooLarge { limit })
            }
            Err(e) => {
                let error = Transport::BodyTorn(e);
                return Err(RelayError::Reset { attempts: 1, error });
            }
        };
        return Ok(Response::from_parts(parts, crate::body::full(bytes)));
    }
    let output = Output {
        upstream,
        pending: BytesMut::new(),
        done: false,
        _pump: guard,
        stats: stats.clone(),
    };
    // The session's end is logged and counted by `bidi_session::finish_at_end`.
    parts.extensions.insert(stats);
    Ok(Response::from_parts(parts, output.boxed()))
}

fn channel_body(mut rx: mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>) -> UpstreamBody {
    http_body_util::StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
        .boxed()
}

/// Aborts the input pump when the output is over (or dropped by a departed client).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a session's input ended before its signed end.
#[derive(Debug, thiserror::Error)]
enum InputEnd {
    #[error("client input broke: {0}")]
    Client(#[source] hyper::Error),
    #[error("malformed input event: {0}")]
    Malformed(#[source] aws_smithy_eventstream::error::Error),
    /// Not an input event the relay can re-sign (the client's own signature envelope).
    #[error("{0}")]
    NotAnInput(String),
    #[error("could not sign an input event: {0}")]
    Signing(#[source] SigningError),
    #[error("upstream stream closed")]
    UpstreamClosed,
}

/// Forward the client's input events, each re-signed, then the signed end. A broken or
/// malformed input resets the upstream request body instead (the session then ends).
async fn pump(input: Incoming, signer: EventSigner, tx: Sender, stats: Arc<SessionStats>) {
    let result = forward_input(input, signer, &tx, &stats).await;
    if let Err(why) = result {
        match why {
            // The client or the upstream went away: the session's access line says so.
            InputEnd::Client(_) | InputEnd::UpstreamClosed => {
                tracing::info!(error = %why, "bidirectional stream: input ended")
            }
            _ => {
                stats.ended("input_error");
                tracing::warn!(error = %why, "bidirectional stream: input ended abnormally");
            }
        }
        let _ = tx.send(Err(std::io::Error::other(why))).await;
    }
}

async fn forward_input(
    mut input: Incoming,
    mut signer: EventSigner,
    tx: &Sender,
    stats: &SessionStats,
) -> Result<(), InputEnd> {
    let mut decoder = MessageFrameDecoder::new();
    let mut buf = BytesMut::new();
    'read: while let Some(frame) = input.frame().await {
        let frame = frame.map_err(InputEnd::Client)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        loop {
            let message = match decoder.decode_frame(&mut buf) {
                Ok(DecodedFrame::Complete(m)) => m,
                Ok(DecodedFrame::Incomplete) => break,
                Err(e) => return Err(InputEnd::Malformed(e)),
            };
            let event = match unwrap_client(message).map_err(InputEnd::NotAnInput)? {
                Input::Event(event) => event,
                Input::End => break 'read,
            };
            let signed = signer.sign(&event).map_err(InputEnd::Signing)?;
            if tx.send(Ok(Frame::data(signed))).await.is_err() {
                return Err(InputEnd::UpstreamClosed);
            }
            stats.input_event();
        }
    }
    let end = signer.finish().map_err(InputEnd::Signing)?;
    let _ = tx.send(Ok(Frame::data(end))).await;
    Ok(())
}

/// The output stream: whole EventStream frames as they arrive; a fault upstream (reset,
/// torn frame) becomes one `modelStreamErrorException` event and the end.
struct Output<B = Incoming> {
    upstream: B,
    /// Bytes of a frame not yet complete.
    pending: BytesMut,
    done: bool,
    _pump: AbortOnDrop,
    /// Told when a fault ends the session.
    stats: Arc<SessionStats>,
}

impl<B> Output<B> {
    /// The complete frames at the front of `pending`.
    fn whole_frames(&mut self) -> Option<Bytes> {
        let mut at = 0;
        while self.pending.len() - at >= 4 {
            let len = (&self.pending[at..at + 4]).get_u32() as usize;
            if len < 16 || self.pending.len() - at < len {
                break;
            }
            at += len;
        }
        (at > 0).then(|| self.pending.split_to(at).freeze())
    }

    fn fault(&mut self, why: &str) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.done = true;
        self.stats.ended("upstream_fault");
        tracing::warn!(error = %why, "bidirectional stream: upstream fault ends the session");
        Poll::Ready(Some(Ok(Frame::data(error_event(why)))))
    }
}

/// The typed error event that ends a session the relay cannot continue.
fn error_event(why: &str) -> Bytes {
    let body = serde_json::json!({
        "message": format!("bedrock-relay: the bidirectional stream broke upstream ({why}); a live session cannot be resumed"),
        "originalStatusCode": 502,
    });
    crate::eventstream::encode(&crate::eventstream::exception_with_body(
        "modelStreamErrorException",
        body.to_string(),
    ))
}

impl<B> HttpBody for Output<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return this.fault(&e.to_string()),
                Poll::Ready(None) if this.pending.is_empty() => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(None) => return this.fault("the output ended inside a frame"),
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.pending.extend_from_slice(&data);
                        if let Some(whole) = this.whole_frames() {
                            return Poll::Ready(Some(Ok(Frame::data(whole))));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventstream::{encode, event};

    /// What the client reads from an output whose upstream sends `chunks`, then `end`.
    async fn read(chunks: Vec<Bytes>, end: Option<&str>) -> Vec<Bytes> {
        let mut items: Vec<Result<Frame<Bytes>, std::io::Error>> =
            chunks.into_iter().map(|c| Ok(Frame::data(c))).collect();
        if let Some(why) = end {
            items.push(Err(std::io::Error::other(why.to_owned())));
        }
        let upstream = http_body_util::StreamBody::new(futures_util::stream::iter(items));
        let output = Output {
            upstream,
            pending: BytesMut::new(),
            done: false,
            _pump: AbortOnDrop(tokio::spawn(async {})),
            stats: Default::default(),
        };
        let mut body = output.boxed();
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            got.push(frame.unwrap().into_data().unwrap());
        }
        got
    }

    fn is_stream_error(frame: &Bytes) -> bool {
        let message = aws_smithy_eventstream::frame::read_message_from(&mut frame.clone()).unwrap();
        message.headers().iter().any(|h| {
            h.name().as_str() == ":exception-type"
                && h.value().as_string().map(|s| s.as_str()) == Ok("modelStreamErrorException")
        })
    }

    #[tokio::test]
    async fn frames_go_out_whole_however_they_arrive() {
        let (a, b) = (
            encode(&event("chunk", "{}")),
            encode(&event("chunk", "{\"x\":1}")),
        );
        let joined = [a.clone(), b.clone()].concat();
        let (head, tail) = joined.split_at(a.len() + 3);
        let got = read(
            vec![Bytes::copy_from_slice(head), Bytes::copy_from_slice(tail)],
            None,
        )
        .await;
        assert_eq!(got, vec![a, b]);
    }

    #[tokio::test]
    async fn a_torn_frame_or_a_reset_ends_with_a_typed_error_event() {
        let a = encode(&event("chunk", "{}"));
        let torn = read(vec![a.clone(), a.slice(..10)], None).await;
        assert_eq!(torn.len(), 2);
        assert_eq!(torn[0], a);
        assert!(is_stream_error(&torn[1]));
        let reset = read(vec![a.clone()], Some("stream reset")).await;
        assert_eq!(reset.len(), 2);
        assert!(is_stream_error(&reset[1]));
    }
}
