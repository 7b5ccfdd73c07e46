//! Server-Sent Events on the wire: whether an answer is an event stream, reading whole
//! events from an upstream body ([`SseEvents`]: never a partial event, at most the stall
//! timeout per read), which event ends each API's stream, and each API's error event.

use crate::ops::Operation;
use crate::proxy::frames::Interruption;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::time::Duration;

/// Longest single event accepted (a bigger one is a corrupt stream).
const MAX_EVENT: usize = 16 * 1024 * 1024;

pub(super) fn is_sse(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"))
}

/// Whole events from one upstream response body.
pub(in crate::proxy) struct SseEvents {
    body: Incoming,
    buf: BytesMut,
    /// How far `buf` has been searched for an event's end.
    scanned: usize,
    stall: Duration,
}

impl SseEvents {
    pub(super) fn new(body: Incoming, stall: Duration) -> Self {
        SseEvents {
            body,
            buf: BytesMut::new(),
            scanned: 0,
            stall,
        }
    }

    /// The next whole event (its bytes up to and including the blank line that ends it);
    /// `Ok(None)` at a clean end of the body.
    pub(super) async fn next(&mut self) -> Result<Option<Bytes>, Interruption> {
        loop {
            if let Some(event) = self.buffered()? {
                return Ok(Some(event));
            }
            match tokio::time::timeout(self.stall, self.body.frame()).await {
                Err(_) => return Err(Interruption::Stall(self.stall)),
                Ok(None) if self.buf.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                Ok(None) => {
                    return Err(Interruption::Corrupt(format!(
                        "body ended inside an event ({} bytes)",
                        self.buf.len()
                    )))
                }
                Ok(Some(Err(e))) if e.is_incomplete_message() => {
                    return Err(Interruption::Eof(e.to_string()))
                }
                Ok(Some(Err(e))) => return Err(Interruption::Reset(e.to_string())),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    fn buffered(&mut self) -> Result<Option<Bytes>, Interruption> {
        match event_end(&self.buf, self.scanned) {
            Some(end) => {
                self.scanned = 0;
                Ok(Some(self.buf.split_to(end).freeze()))
            }
            None if self.buf.len() > MAX_EVENT => Err(Interruption::Corrupt(format!(
                "an event longer than {MAX_EVENT} bytes"
            ))),
            None => {
                // Resume the search a little before the end: a terminator may span reads.
                self.scanned = self.buf.len().saturating_sub(3);
                Ok(None)
            }
        }
    }
}

/// Where the first event in `buf` ends (just past the blank line that ends it), searching
/// from `from`. Lines end in CRLF, LF or CR (the SSE specification); an event ends at an
/// empty line.
fn event_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    // Whether the bytes just before `i` ended a line (an empty line follows one directly).
    let mut at_line_start = i == 0 || matches!(buf.get(i - 1), Some(b'\n' | b'\r'));
    if i > 0 && at_line_start {
        // Step back to the start of that line ending, to judge it whole.
        i -= 1;
        if i > 0 && buf[i] == b'\n' && buf[i - 1] == b'\r' {
            i -= 1;
        }
        at_line_start = i == 0 || matches!(buf.get(i - 1), Some(b'\n' | b'\r'));
    }
    while i < buf.len() {
        let len = match buf[i] {
            b'\r' if buf.get(i + 1) == Some(&b'\n') => 2,
            b'\r' if i + 1 == buf.len() => return None, // CR or CRLF: not known yet
            b'\r' | b'\n' => 1,
            _ => {
                at_line_start = false;
                i += 1;
                continue;
            }
        };
        if at_line_start && i > 0 {
            return Some(i + len);
        }
        at_line_start = true;
        i += len;
    }
    None
}

/// Whether `event` is the one that ends the API's stream.
pub(super) fn is_terminal(op: Operation, event: &[u8]) -> bool {
    let text = String::from_utf8_lossy(event);
    let lines = || text.lines().map(str::trim_end);
    match op {
        Operation::ChatCompletions => lines().any(|l| l == "data: [DONE]" || l == "data:[DONE]"),
        Operation::Responses => lines().any(|l| {
            [
                "response.completed",
                "response.failed",
                "response.incomplete",
            ]
            .iter()
            .any(|t| l == format!("event: {t}") || l.contains(&format!("\"type\":\"{t}\"")))
        }),
        Operation::AnthropicMessages => {
            lines().any(|l| l == "event: message_stop" || l.contains("\"type\":\"message_stop\""))
        }
        // An API the relay does not know: any clean end is the end.
        _ => false,
    }
}

/// The error event the API defines, which its SDK raises; `None`: no shape is known, the
/// connection is cut instead.
pub(super) fn error_event(op: Operation, message: &str) -> Option<Bytes> {
    let text = match op {
        Operation::ChatCompletions => format!(
            "data: {}\n\n",
            serde_json::json!({"error": {"message": message, "type": "server_error", "code": "stream_interrupted"}})
        ),
        Operation::Responses => format!(
            "event: error\ndata: {}\n\n",
            serde_json::json!({"type": "error", "code": "stream_interrupted", "message": message,
                               "error": {"message": message, "type": "server_error", "code": "stream_interrupted"}})
        ),
        Operation::AnthropicMessages => format!(
            "event: error\ndata: {}\n\n",
            serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}})
        ),
        _ => return None,
    };
    Some(Bytes::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(buf: &str) -> Option<usize> {
        event_end(buf.as_bytes(), 0)
    }

    #[test]
    fn events_end_at_an_empty_line_whatever_the_line_endings() {
        assert_eq!(ends("data: a\n\ndata: b\n\n"), Some(9));
        assert_eq!(ends("data: a\r\n\r\nrest"), Some(11));
        assert_eq!(ends("event: x\ndata: a\n\n"), Some(18));
        assert_eq!(ends("data: a\r\rnext"), Some(9));
        assert_eq!(ends("data: a\n"), None);
        assert_eq!(ends("data: a\r\n\r"), None, "CR may be the start of CRLF");
        assert_eq!(ends("data: a"), None);
    }

    #[test]
    fn a_search_resumed_midway_finds_the_same_end() {
        // The reader resumes 3 bytes before the end of a buffer that held no whole event;
        // whatever arrived since, it must find the same end as a search from the start.
        for buf in [
            &b"data: hello\r\n\r\ndata: x"[..],
            b"data: hello\n\ndata: x",
            b"a\r\rb",
        ] {
            let end = event_end(buf, 0).expect("an event");
            for seen in 0..buf.len() {
                if event_end(&buf[..seen], 0).is_none() {
                    assert_eq!(
                        event_end(buf, seen.saturating_sub(3)),
                        Some(end),
                        "{buf:?} after {seen}"
                    );
                }
            }
        }
    }

    #[test]
    fn each_api_has_its_terminal_event_and_error_event() {
        assert!(is_terminal(Operation::ChatCompletions, b"data: [DONE]\n\n"));
        assert!(!is_terminal(
            Operation::ChatCompletions,
            b"data: {\"choices\":[]}\n\n"
        ));
        assert!(is_terminal(
            Operation::Responses,
            b"event: response.completed\ndata: {\"type\":\"response.completed\"}\n\n"
        ));
        assert!(is_terminal(
            Operation::AnthropicMessages,
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        ));
        for op in [
            Operation::ChatCompletions,
            Operation::Responses,
            Operation::AnthropicMessages,
        ] {
            let e = error_event(op, "cut").unwrap();
            let text = std::str::from_utf8(&e).unwrap();
            assert_eq!(event_end(&e, 0), Some(e.len()), "{text}");
            let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            let v: serde_json::Value = serde_json::from_str(data).unwrap();
            assert!(v["error"]["message"] == "cut", "{text}");
        }
        assert!(error_event(Operation::Unknown, "cut").is_none());
    }
}
