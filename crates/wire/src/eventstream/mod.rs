//! AWS EventStream framing for the relay and the simulator.
//!
//! Owns three things: splitting a byte stream into whole, checked frames ([`Frame`]: both
//! CRCs and the header structure verified as `aws-smithy-eventstream`'s decoder does),
//! classifying a frame (event, modelled exception, unmodelled error), and building/encoding
//! the frames the relay or simulator emits (with `aws-smithy-eventstream`).
//!
//! A [`Frame`] keeps the original bytes and where its type headers and payload are, so a
//! frame that needs no change is forwarded byte-for-byte, never decoded or re-encoded.

use aws_smithy_eventstream::frame::{read_message_from, write_message_to};
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::{Buf, Bytes, BytesMut};

/// Frames are at most 16 MiB of payload plus headers (Smithy allows 24 MiB total).
pub const MAX_FRAME_LEN: usize = 24 * 1024 * 1024;
const PRELUDE_LEN: usize = 12;
const MIN_FRAME_LEN: usize = 16;

mod frame;

pub use frame::Frame;

/// Why a byte stream could not be split into frames.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length {0} outside the allowed range")]
    BadLength(usize),
    #[error("corrupt frame: {0}")]
    Corrupt(String),
}

/// Incremental frame splitter. Feed it body chunks with [`FrameSplitter::push`], take whole
/// frames with [`FrameSplitter::next_frame`]. Holds at most one partial frame plus whatever
/// the caller pushed; the caller owns the bound on what it pushes.
#[derive(Debug, Default)]
pub struct FrameSplitter {
    buf: BytesMut,
}

impl FrameSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes held that do not yet form a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < PRELUDE_LEN {
            return Ok(None);
        }
        let total =
            u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&total) {
            return Err(FrameError::BadLength(total));
        }
        // Check the prelude CRC as soon as it is here, so a corrupt length never makes us
        // wait for megabytes that will not come.
        let prelude_crc =
            u32::from_be_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]]);
        if crc32fast::hash(&self.buf[..8]) != prelude_crc {
            return Err(FrameError::Corrupt("prelude checksum mismatch".into()));
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        Frame::check(self.buf.split_to(total).freeze()).map(Some)
    }
}

/// Decode exactly one frame from `raw`, checking both CRCs.
pub fn decode(raw: &[u8]) -> Result<Message, FrameError> {
    let mut cursor = raw;
    let message = read_message_from(&mut cursor).map_err(|e| FrameError::Corrupt(e.to_string()))?;
    if cursor.has_remaining() {
        return Err(FrameError::Corrupt("trailing bytes after frame".into()));
    }
    Ok(message)
}

/// Encode a message into a frame with fresh CRCs, or say why it cannot be one (a header
/// value over 32 KiB, a frame over 16 MiB: limits of `aws-smithy-eventstream`'s encoder that
/// its decoder does not apply, so an upstream frame can exceed them).
pub fn try_encode(message: &Message) -> Result<Bytes, FrameError> {
    let mut out = Vec::with_capacity(message.payload().len() + 128);
    write_message_to(message, &mut out).map_err(|e| FrameError::Corrupt(e.to_string()))?;
    Ok(Bytes::from(out))
}

/// Encode a message the relay or the simulator built itself (small headers and payload)
/// into a frame with fresh CRCs. Messages derived from upstream frames go through
/// [`try_encode`].
///
/// # Panics
/// If the message exceeds the EventStream encoder's limits (a programming error here).
pub fn encode(message: &Message) -> Bytes {
    try_encode(message).expect("relay-built frames are within EventStream limits")
}

/// What a frame is, by its `:message-type` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind<'a> {
    /// `:message-type: event`, with its `:event-type`.
    Event(&'a str),
    /// `:message-type: exception`, with its `:exception-type`.
    Exception(&'a str),
    /// `:message-type: error`, with `:error-code`.
    Error(&'a str),
    /// Anything else (missing or unknown message type).
    Unknown,
}

/// Classify a decoded frame.
pub fn kind(message: &Message) -> Kind<'_> {
    match header_str(message, ":message-type") {
        Some("event") => Kind::Event(header_str(message, ":event-type").unwrap_or("")),
        Some("exception") => Kind::Exception(header_str(message, ":exception-type").unwrap_or("")),
        Some("error") => Kind::Error(header_str(message, ":error-code").unwrap_or("")),
        _ => Kind::Unknown,
    }
}

/// A string header's value.
pub fn header_str<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| h.value().as_string().ok())
        .map(|s| s.as_str())
}

/// An event frame as Bedrock sends it: `:event-type`, `:content-type`, `:message-type`.
pub fn event(event_type: &str, payload: impl Into<Bytes>) -> Message {
    Message::new_from_parts(
        vec![
            string_header(":event-type", event_type),
            string_header(":content-type", "application/json"),
            string_header(":message-type", "event"),
        ],
        payload,
    )
}

/// A modelled exception frame, body `{"message": ...}` as Bedrock sends it.
pub fn exception(exception_type: &str, message: &str) -> Message {
    exception_with_body(
        exception_type,
        serde_json::json!({ "message": message }).to_string(),
    )
}

/// A modelled exception frame with a caller-built JSON body (e.g. `modelStreamErrorException`
/// with `originalStatusCode`).
pub fn exception_with_body(exception_type: &str, body: impl Into<Bytes>) -> Message {
    Message::new_from_parts(
        vec![
            string_header(":exception-type", exception_type),
            string_header(":content-type", "application/json"),
            string_header(":message-type", "exception"),
        ],
        body,
    )
}

/// Same headers, new payload (used when the relay rewrites an event's JSON).
pub fn with_payload(message: &Message, payload: impl Into<Bytes>) -> Message {
    Message::new_from_parts(message.headers().to_vec(), payload)
}

fn string_header(name: &'static str, value: &str) -> Header {
    Header::new(name, HeaderValue::String(value.to_owned().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_frames() -> (Message, Message, Vec<u8>) {
        let a = event("messageStart", r#"{"role":"assistant"}"#);
        let b = exception("throttlingException", "slow down");
        let mut wire = encode(&a).to_vec();
        wire.extend_from_slice(&encode(&b));
        (a, b, wire)
    }

    #[test]
    fn splits_frames_fed_byte_by_byte() {
        let (a, b, wire) = two_frames();
        let mut s = FrameSplitter::new();
        let mut got = Vec::new();
        for byte in &wire {
            s.push(std::slice::from_ref(byte));
            while let Some(f) = s.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].message(), a);
        assert_eq!(got[1].message(), b);
        assert_eq!([got[0].raw.as_ref(), got[1].raw.as_ref()].concat(), wire);
        assert_eq!(s.pending(), 0);
        assert_eq!(got[0].kind(), Kind::Event("messageStart"));
        assert_eq!(got[1].kind(), Kind::Exception("throttlingException"));
        assert_eq!(got[0].payload(), br#"{"role":"assistant"}"#);
    }

    #[test]
    fn rejects_corrupt_message_crc() {
        let (_, _, mut wire) = two_frames();
        let first_len = u32::from_be_bytes([wire[0], wire[1], wire[2], wire[3]]) as usize;
        wire[first_len - 1] ^= 0xff;
        let mut s = FrameSplitter::new();
        s.push(&wire);
        assert!(matches!(s.next_frame(), Err(FrameError::Corrupt(_))));
    }

    #[test]
    fn rejects_corrupt_prelude_before_waiting_for_body() {
        let (_, _, mut wire) = two_frames();
        wire[2] ^= 0x01; // length changes, prelude CRC no longer matches
        let mut s = FrameSplitter::new();
        s.push(&wire[..12]);
        assert!(s.next_frame().is_err());
    }

    #[test]
    fn partial_frame_is_not_returned() {
        let (_, _, wire) = two_frames();
        let mut s = FrameSplitter::new();
        s.push(&wire[..20]);
        assert!(s.next_frame().unwrap().is_none());
        assert_eq!(s.pending(), 20);
    }
}
