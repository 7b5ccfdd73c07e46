//! Writing one response onto the connection, with a fault cut in at its exact position.
//!
//! Owns what each fault kind does to the bytes on the wire: HTTP errors with Bedrock's
//! `x-amzn-ErrorType`, TCP resets before headers, mid-body and mid-frame, a FIN without the
//! chunked terminator, clean truncation, stalls, in-stream exception frames and corrupted
//! CRCs. Whole frames are batched into one chunk only when no delay separates them.

use super::faults::Fault;
use super::http::Conn;
use super::render::Stream;
use super::{error_type_for, SimConfig, SimError};
use serde_json::{json, Value};

/// Bytes of whole frames gathered into one chunk when no delay separates them.
const BATCH: usize = 16 * 1024;

/// What a model request turned into before anything is written.
pub(super) struct Outcome {
    pub result: Result<Reply, SimError>,
    pub fault: Option<Fault>,
}

pub(super) enum Reply {
    Stream {
        stream: Stream,
        invoke: bool,
    },
    Json {
        body: Value,
        headers: Vec<(&'static str, String)>,
    },
    /// Server-Sent Events of an OpenAI- or Anthropic-compatible operation.
    Sse {
        stream: Stream,
        op: bedrock_relay_wire::ops::Operation,
    },
}

pub(super) async fn send_error(
    conn: &mut Conn,
    err: &SimError,
    request_id: &str,
) -> std::io::Result<()> {
    let (status, ty) = err.status_and_type();
    let body = json!({ "message": err.to_string() }).to_string();
    let headers = [
        ("content-type", "application/json".to_string()),
        ("x-amzn-RequestId", request_id.to_string()),
        (
            "x-amzn-ErrorType",
            format!("{ty}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
        ),
    ];
    conn.respond(status, &headers, body.as_bytes()).await
}

pub(super) async fn send_json(
    conn: &mut Conn,
    status: u16,
    body: &Value,
    extra: Vec<(&str, String)>,
    rid: &str,
) -> std::io::Result<()> {
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        ("x-amzn-RequestId", rid.to_string()),
    ];
    headers.extend(extra);
    conn.respond(status, &headers, body.to_string().as_bytes())
        .await
}

pub(super) async fn respond(
    config: &SimConfig,
    mut conn: Conn,
    outcome: Outcome,
    rid: &str,
) -> Option<Conn> {
    match (&outcome.fault, outcome.result) {
        (Some(Fault::ResetBeforeHeaders), _) => {
            conn.reset().await;
            None
        }
        (Some(Fault::Status { code }), _) => {
            let err = SimError::Injected {
                status: *code,
                message: format!("Simulated {} ({code})", error_type_for(*code)),
            };
            send_error(&mut conn, &err, rid).await.ok().map(|_| conn)
        }
        (_, Err(e)) => send_error(&mut conn, &e, rid).await.ok().map(|_| conn),
        (fault, Ok(Reply::Json { body, headers })) => {
            send_body(
                conn,
                body.to_string().into_bytes(),
                headers,
                fault.as_ref(),
                rid,
            )
            .await
        }
        (fault, Ok(Reply::Stream { stream, invoke })) => {
            let kind = if invoke { Kind::Invoke } else { Kind::Converse };
            send_stream(config, conn, stream, kind, fault.clone(), rid).await
        }
        (fault, Ok(Reply::Sse { stream, op })) => {
            send_stream(config, conn, stream, Kind::Sse(op), fault.clone(), rid).await
        }
    }
}

/// A non-streaming body, possibly cut by a fault.
async fn send_body(
    mut conn: Conn,
    body: Vec<u8>,
    extra: Vec<(&'static str, String)>,
    fault: Option<&Fault>,
    rid: &str,
) -> Option<Conn> {
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        ("x-amzn-RequestId", rid.to_string()),
    ];
    headers.extend(extra);
    // The head announces the whole body; only the first half follows.
    let half = || {
        let mut head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n", body.len());
        for (k, v) in &headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&body[..body.len() / 2]);
        out
    };
    match fault {
        Some(
            Fault::ResetMidBody | Fault::ResetAfterEvents { .. } | Fault::ResetMidFrame { .. },
        ) => {
            let out = half();
            let _ = conn.raw(&out).await;
            conn.reset().await;
            None
        }
        Some(Fault::EofNoTerminator { .. } | Fault::Truncate { .. }) => {
            let out = half();
            let _ = conn.raw(&out).await;
            conn.close().await;
            None
        }
        Some(Fault::Exception { exception_type, .. }) => {
            let status = Fault::exception_status(exception_type.as_str());
            let err = SimError::Injected {
                status,
                message: format!("Simulated {exception_type}"),
            };
            send_error(&mut conn, &err, rid).await.ok().map(|_| conn)
        }
        other => {
            if let Some(Fault::Stall { duration, .. }) = other {
                tokio::time::sleep(*duration).await;
            }
            conn.respond(200, &headers, &body).await.ok().map(|_| conn)
        }
    }
}

/// What a stream's frames are.
#[derive(Clone, Copy)]
enum Kind {
    Converse,
    Invoke,
    Sse(bedrock_relay_wire::ops::Operation),
}

/// A stream of frames (or SSE events) with the fault cut in at its position.
async fn send_stream(
    config: &SimConfig,
    mut conn: Conn,
    stream: Stream,
    kind: Kind,
    fault: Option<Fault>,
    rid: &str,
) -> Option<Conn> {
    let content_type = match kind {
        Kind::Sse(_) => "text/event-stream",
        _ => "application/vnd.amazon.eventstream",
    };
    let mut headers = vec![
        ("content-type", content_type.to_string()),
        ("x-amzn-RequestId", rid.to_string()),
    ];
    if matches!(kind, Kind::Invoke) {
        headers.push((
            "x-amzn-bedrock-content-type",
            "application/json".to_string(),
        ));
    }
    conn.start_chunked(200, &headers).await.ok()?;
    let (ttft, gap) = (config.ttft, config.inter_token);
    if !ttft.is_zero() {
        tokio::time::sleep(ttft).await;
    }
    let n = stream.frames.len();
    let fault = fault.map(|f| match f {
        Fault::ResetMidBody => Fault::ResetMidFrame { events: n / 2 },
        other => other,
    });
    let at = fault
        .as_ref()
        .map_or(usize::MAX, |f| f.cut_at(n, stream.terminal));
    let mut batch: Vec<u8> = Vec::with_capacity(BATCH + 1024);
    for i in 0..=n {
        if i == at {
            conn.chunk(&batch).await.ok()?;
            batch.clear();
            match fault.as_ref()? {
                Fault::ResetAfterEvents { .. } => {
                    conn.reset().await;
                    return None;
                }
                Fault::ResetMidFrame { .. } => {
                    if let Some(f) = stream.frames.get(i) {
                        let _ = conn.chunk(&f[..f.len() / 2]).await;
                    }
                    conn.reset().await;
                    return None;
                }
                Fault::EofNoTerminator { .. } => {
                    conn.close().await;
                    return None;
                }
                Fault::Truncate { .. } => break,
                Fault::Stall { duration, .. } => tokio::time::sleep(*duration).await,
                Fault::Exception { exception_type, .. } => {
                    let frame = match kind {
                        Kind::Sse(op) => {
                            super::sse::error_event(op, &format!("Simulated {exception_type}"))
                        }
                        _ => exception_frame(exception_type),
                    };
                    conn.chunk(&frame).await.ok()?;
                    break;
                }
                Fault::CorruptCrc { .. } => {
                    let mut bad = stream.frames[i].to_vec();
                    if let Some(last) = bad.last_mut() {
                        *last ^= 0xA5;
                    }
                    conn.chunk(&bad).await.ok()?;
                    continue;
                }
                Fault::Status { .. }
                | Fault::ResetBeforeHeaders
                | Fault::ResetMidBody
                | Fault::OversizedHeader { .. } => {}
            }
        }
        let Some(frame) = stream.frames.get(i) else {
            break;
        };
        let padded;
        let frame = match &fault {
            Some(Fault::OversizedHeader { events }) if i >= *events => {
                padded = with_oversized_header(frame);
                &padded[..]
            }
            _ => &frame[..],
        };
        if stream.delta[i] && !gap.is_zero() {
            conn.chunk(&batch).await.ok()?;
            batch.clear();
            tokio::time::sleep(gap).await;
        }
        batch.extend_from_slice(frame);
        if batch.len() >= BATCH || !gap.is_zero() {
            conn.chunk(&batch).await.ok()?;
            batch.clear();
        }
    }
    conn.chunk(&batch).await.ok()?;
    conn.end_chunked().await.ok()?;
    Some(conn)
}

/// The frame with an extra `x-sim-padding` string header of 40,000 bytes, CRCs recomputed.
/// Built by hand: the EventStream encoder refuses header values over 32,767 bytes.
pub(super) fn with_oversized_header(frame: &[u8]) -> Vec<u8> {
    const VALUE_LEN: u16 = 40_000;
    let name = b"x-sim-padding";
    let headers_len = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]) as usize;
    let mut header = vec![name.len() as u8];
    header.extend_from_slice(name);
    header.push(7); // string
    header.extend_from_slice(&VALUE_LEN.to_be_bytes());
    header.extend(std::iter::repeat_n(b'p', VALUE_LEN as usize));
    let body = &frame[12..frame.len() - 4];
    let total = 12 + header.len() + body.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&((headers_len + header.len()) as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

pub(super) fn exception_frame(exception_type: &str) -> bytes::Bytes {
    let message = format!("Simulated {exception_type}");
    let body = if exception_type == "modelStreamErrorException" {
        json!({"message": message, "originalStatusCode": 500, "originalMessage": "Simulated model failure"})
    } else {
        json!({"message": message})
    };
    bedrock_relay_wire::eventstream::encode(&bedrock_relay_wire::eventstream::exception_with_body(
        exception_type,
        body.to_string(),
    ))
}
