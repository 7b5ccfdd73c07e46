//! The two wires a model stream arrives on, behind one [`Wire`] trait: AWS EventStream
//! (ConverseStream, InvokeModelWithResponseStream, Agent Runtime streams) and Server-Sent
//! Events (the OpenAI-compatible Chat Completions and Responses paths, the
//! Anthropic-Messages-compatible path, any `text/event-stream` answer). A wire says whether
//! an answer is its stream, splits body bytes into whole events ([`Splitter`]), what an event
//! means to the pump ([`Class`]), which event ends an unhealed stream, how the stream is
//! healed (its [`Codec`](crate::resume::Codec)) and what the client gets when it cannot be.
//! Everything else (reading, pumping, resuming) is one generic implementation over it.

use crate::eventstream::{self, Frame, FrameSplitter};
use crate::ops::Operation;
use crate::proxy::fault::Interruption;
use crate::resume::sse::{SseCodec, FORMAT};
use crate::resume::{give_up_event, Codec, EventStreamCodec, StreamFormat};
use crate::retry::classify_exception;
use bytes::{Bytes, BytesMut};

/// Longest single SSE event accepted (a bigger one is a corrupt stream).
const MAX_EVENT: usize = 16 * 1024 * 1024;

/// What an event means to the pump.
#[derive(Debug)]
pub(crate) enum Class {
    /// A normal event.
    Event,
    /// A retryable in-stream exception (see [`classify_exception`]): a fault.
    Retryable(String),
    /// A non-retryable exception or unmodelled error: forwarded unchanged, then the stream
    /// ends.
    Final,
}

/// Whole events out of body bytes; never a partial one.
pub(crate) trait Splitter: Default + Send + Sync + 'static {
    type Event;
    fn push(&mut self, data: &[u8]);
    /// The next whole event, if the bytes pushed hold one.
    fn next(&mut self) -> Result<Option<Self::Event>, Interruption>;
    /// The body ended: a fault if it ended inside an event.
    fn end(&self) -> Result<(), Interruption>;
}

/// One kind of stream on the wire.
pub(crate) trait Wire: Send + Sync + Sized + 'static {
    type Event: Send + Sync + 'static;
    type Splitter: Splitter<Event = Self::Event>;
    type Codec: Codec<Event = Self::Event> + Sync + 'static;

    /// Whether a response with these headers is this wire's stream.
    fn is_stream(headers: &http::HeaderMap) -> bool;

    /// The event's bytes as they came.
    fn into_raw(event: Self::Event) -> Bytes;

    /// What the event means to the pump.
    fn class(event: &Self::Event) -> Class;

    /// A stream that ends before its first event is an (empty) answer, not a fault.
    const EMPTY_IS_ANSWER: bool;

    /// How this stream is healed; `None`: its events go out as they come and a fault after
    /// the first ends it with [`Wire::give_up`].
    fn codec(&self, model: &str, original: &[u8]) -> Option<(Self::Codec, StreamFormat)>;

    /// Whether `event` ends an unhealed stream (its API's terminal event).
    fn is_terminal(&self, event: &Self::Event) -> bool;

    /// Whether a clean end of an unhealed stream is its end (`terminal`: its terminal event
    /// passed).
    fn ends_cleanly(&self, terminal: bool) -> bool;

    /// What the client gets when the stream cannot go on: the upstream's own error where
    /// the client's SDK models it, else the relay's typed error carrying `message`. `None`:
    /// no error shape is known; the client's connection is cut.
    fn give_up(&self, fault: Option<Interruption>, message: &str) -> Option<Bytes>;
}

/// AWS EventStream, whole CRC-checked frames.
pub(crate) struct EventStream {
    pub op: Operation,
}

impl Splitter for FrameSplitter {
    type Event = Frame;

    fn push(&mut self, data: &[u8]) {
        FrameSplitter::push(self, data)
    }

    fn next(&mut self) -> Result<Option<Frame>, Interruption> {
        self.next_frame()
            .map_err(|e| Interruption::Corrupt(e.to_string()))
    }

    fn end(&self) -> Result<(), Interruption> {
        match self.pending() {
            0 => Ok(()),
            n => Err(Interruption::Corrupt(format!(
                "body ended inside a frame ({n} bytes)"
            ))),
        }
    }
}

impl Wire for EventStream {
    type Event = Frame;
    type Splitter = FrameSplitter;
    type Codec = EventStreamCodec;
    const EMPTY_IS_ANSWER: bool = false;

    fn is_stream(headers: &http::HeaderMap) -> bool {
        content_type(headers).starts_with("application/vnd.amazon.eventstream")
    }

    fn into_raw(frame: Frame) -> Bytes {
        frame.raw
    }

    fn class(frame: &Frame) -> Class {
        match frame.kind() {
            eventstream::Kind::Event(_) => Class::Event,
            eventstream::Kind::Exception(t) if classify_exception(t).is_some() => {
                Class::Retryable(t.to_owned())
            }
            _ => Class::Final,
        }
    }

    fn codec(&self, model: &str, _original: &[u8]) -> Option<(EventStreamCodec, StreamFormat)> {
        let format = StreamFormat::detect(self.op, model)?;
        Some((EventStreamCodec { format }, format))
    }

    fn is_terminal(&self, _frame: &Frame) -> bool {
        false
    }

    fn ends_cleanly(&self, _terminal: bool) -> bool {
        true
    }

    fn give_up(&self, fault: Option<Interruption>, message: &str) -> Option<Bytes> {
        match fault {
            // The upstream's own exception, when the client's SDK models it for this
            // operation (ConverseStream has no modelTimeoutException).
            Some(Interruption::Exception {
                raw,
                exception_type,
            }) if self.op != Operation::ConverseStream
                || exception_type != "modelTimeoutException" =>
            {
                Some(raw)
            }
            _ => match eventstream::try_encode(&give_up_event(message)) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    tracing::error!(error = %e, "could not encode the give-up event");
                    None
                }
            },
        }
    }
}

/// Server-Sent Events of one API.
pub(crate) struct Sse {
    pub op: Operation,
}

/// Whole SSE events: up to and including the blank line that ends each.
#[derive(Debug, Default)]
pub(crate) struct SseSplitter {
    buf: BytesMut,
    /// How far `buf` has been searched for an event's end.
    scanned: usize,
}

impl Splitter for SseSplitter {
    type Event = Bytes;

    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    fn next(&mut self) -> Result<Option<Bytes>, Interruption> {
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

    fn end(&self) -> Result<(), Interruption> {
        if self.buf.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        Err(Interruption::Corrupt(format!(
            "body ended inside an event ({} bytes)",
            self.buf.len()
        )))
    }
}

impl Wire for Sse {
    type Event = Bytes;
    type Splitter = SseSplitter;
    type Codec = SseCodec;
    /// An event stream without a single event: an empty answer, passed on as it is.
    const EMPTY_IS_ANSWER: bool = true;

    fn is_stream(headers: &http::HeaderMap) -> bool {
        content_type(headers).starts_with("text/event-stream")
    }

    fn into_raw(event: Bytes) -> Bytes {
        event
    }

    /// An SSE API's error event is read by its codec (a healed stream) or passed on.
    fn class(_event: &Bytes) -> Class {
        Class::Event
    }

    fn codec(&self, _model: &str, original: &[u8]) -> Option<(SseCodec, StreamFormat)> {
        let mut codec = SseCodec::new(self.op)?;
        codec.observe_request(original);
        Some((codec, FORMAT))
    }

    fn is_terminal(&self, event: &Bytes) -> bool {
        is_terminal(self.op, event)
    }

    fn ends_cleanly(&self, terminal: bool) -> bool {
        terminal || !self.op.is_sse()
    }

    fn give_up(&self, _fault: Option<Interruption>, message: &str) -> Option<Bytes> {
        error_event(self.op, &format!("bedrock-relay: {message}"))
    }
}

fn content_type(headers: &http::HeaderMap) -> &str {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
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
fn is_terminal(op: Operation, event: &[u8]) -> bool {
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
fn error_event(op: Operation, message: &str) -> Option<Bytes> {
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
