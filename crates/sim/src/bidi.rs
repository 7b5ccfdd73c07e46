//! `InvokeModelWithBidirectionalStream` in the simulator, over h2c: an echo model that
//! answers each input event as it arrives.
//!
//! The request head is SigV4-checked like any request (its payload hash is
//! `STREAMING-AWS4-HMAC-SHA256-EVENTS`, or the empty body's, as the Rust SDK signs it);
//! when keys are configured, every input message must then carry a `:chunk-signature`
//! chained from the head's signature (`events::Chain`). A message that fails ends the
//! session with a `validationException` event. For each input `chunk` event (payload
//! `{"bytes": base64}`) one output `chunk` event answers
//! `{"event":{"textOutput":{"content": <the input's bytes as text>}}}`; the output ends when
//! the client ends its input (the signed empty message, or the end of its body). The log
//! entry, written when the session ends, counts the verified input messages.

use super::h2::{channel_body, error_response, Body};
use super::http::Request;
use super::log::LogEntry;
use super::server::State;
use super::SimError;
use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::Message;
use base64::Engine;
use bedrock_relay_wire::sigv4::events::{unwrap_client, Chain, Input, Refused, Verified};
use bedrock_relay_wire::sigv4::{parse_authorization, Verdict};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::mpsc;

type Sender = mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>;

/// Whether this h2 request is a bidirectional stream (served here, its body never read whole).
pub(super) fn is_bidi(req: &http::Request<Incoming>) -> bool {
    req.method() == http::Method::POST
        && req
            .uri()
            .path()
            .ends_with("/invoke-with-bidirectional-stream")
}

/// Check the head, answer 200 at once and run the session in a task.
pub(super) fn serve(
    state: Arc<State>,
    req: http::Request<Incoming>,
    connection: u64,
) -> http::Response<Body> {
    let (parts, body) = req.into_parts();
    let head = Request::head_of(&parts);
    let (seq, rid) = state.next_request();
    let model_id = bedrock_relay_wire::ops::classify(&parts.method, &head.path).model_id;
    let verdict = super::sts::verify(&state.config, &state.sts, &head);
    let entry = LogEntry {
        seq,
        operation: "InvokeModelWithBidirectionalStream".into(),
        model_id,
        conversation: format!("{seq:016x}"),
        attempt: 1,
        connection,
        signature: verdict.as_str().to_owned(),
        service: head.signed_service(),
        status: 200,
        ..LogEntry::default()
    };
    let error = match verdict {
        Verdict::Valid | Verdict::Unchecked => None,
        // Bedrock takes only SigV4 here: the input events are signed.
        Verdict::Bearer | Verdict::BadBearer => Some(SimError::AccessDenied),
        Verdict::UnknownKey => Some(SimError::UnrecognizedClient),
        Verdict::Invalid => Some(SimError::InvalidSignature),
        Verdict::Missing => Some(SimError::MissingAuthentication),
    };
    if let Some(e) = error {
        state.log.push(LogEntry {
            status: e.status_and_type().0,
            ..entry
        });
        return error_response(&e, &rid);
    }
    let chain = (verdict == Verdict::Valid)
        .then(|| chain_of(&state, head.header("authorization")))
        .flatten();
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(session(state, body, chain, tx, entry));
    http::Response::builder()
        .status(200)
        .header("content-type", "application/vnd.amazon.eventstream")
        .header("x-amzn-RequestId", rid.as_str())
        .body(channel_body(rx))
        .expect("valid response head")
}

/// The chain of a request whose head verified: its key's secret and its seed signature.
fn chain_of(state: &State, authorization: Option<&str>) -> Option<Chain> {
    let auth = parse_authorization(authorization?)?;
    let mut keys = state.config.credentials.clone();
    keys.extend(state.sts.keys());
    let (_, secret) = keys.iter().find(|(k, _)| *k == auth.access_key_id)?;
    Some(Chain::new(
        secret,
        &auth.region,
        &auth.service,
        &auth.signature,
    ))
}

/// Read the input as it arrives, answer each event, log the session when it ends.
async fn session(
    state: Arc<State>,
    mut body: Incoming,
    mut chain: Option<Chain>,
    tx: Sender,
    mut entry: LogEntry,
) {
    let mut decoder = MessageFrameDecoder::new();
    let mut buf = BytesMut::new();
    let mut inputs = 0u64;
    let mut refused: Option<String> = None;
    'read: while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        loop {
            let message = match decoder.decode_frame(&mut buf) {
                Ok(DecodedFrame::Complete(m)) => m,
                Ok(DecodedFrame::Incomplete) => break,
                Err(e) => {
                    refused = Some(format!("malformed input event: {e}"));
                    break 'read;
                }
            };
            let event = match chain.as_mut() {
                Some(chain) => match chain.verify(&message) {
                    Ok(Verified::Event(inner)) => inner,
                    Ok(Verified::End) => break 'read,
                    Err(why) => {
                        refused = Some(refusal(why));
                        break 'read;
                    }
                },
                None => match unwrap_client(message) {
                    Ok(Input::Event(inner)) => inner,
                    Ok(Input::End) => break 'read,
                    Err(e) => {
                        refused = Some(e);
                        break 'read;
                    }
                },
            };
            inputs += 1;
            if tx.send(Ok(Frame::data(answer(&event)))).await.is_err() {
                break 'read;
            }
        }
    }
    if let Some(why) = &refused {
        let frame = bedrock_relay_wire::eventstream::encode(
            &bedrock_relay_wire::eventstream::exception("validationException", why),
        );
        let _ = tx.send(Ok(Frame::data(frame))).await;
        entry.fault = Some("event_signature".into());
    }
    entry.events_verified = chain.as_ref().map(|c| c.verified);
    entry.body = json!({ "input_events": inputs, "refused": refused });
    state.log.push(entry);
}

fn refusal(why: Refused) -> String {
    match why {
        Refused::Unsigned => "input event without :date and :chunk-signature".into(),
        Refused::Mismatch => "The event signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.".into(),
        Refused::Malformed => "signed input event whose payload is not an event message".into(),
    }
}

/// The echo model's output event for one input event.
fn answer(event: &Message) -> Bytes {
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = serde_json::from_slice::<Value>(event.payload())
        .ok()
        .and_then(|v| v["bytes"].as_str().and_then(|b| b64.decode(b).ok()))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|| String::from_utf8_lossy(event.payload()).into_owned());
    let inner = json!({ "event": { "textOutput": { "content": text } } });
    let payload = json!({ "bytes": b64.encode(inner.to_string()) });
    bedrock_relay_wire::eventstream::encode(&bedrock_relay_wire::eventstream::event(
        "chunk",
        payload.to_string(),
    ))
}
