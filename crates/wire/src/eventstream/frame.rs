//! A whole, checked frame as the relay holds it: the original bytes and where its headers
//! of interest and its payload are, without decoding it into a [`Message`].
//!
//! Forwarding a frame needs its type headers and its payload, nothing else; decoding every
//! frame into an `aws_smithy_types` `Message` (a vector of headers, a copy of every name,
//! value and payload, and a CRC computed a few bytes at a time) was most of the relay's CPU
//! per event. [`Frame::check`] verifies exactly what `aws_smithy_eventstream`'s decoder
//! verifies (both CRCs, header structure and types, UTF-8 names and strings; a proptest in
//! the relay's `tests/fuzz_inputs.rs` holds the two to the same verdict on arbitrary and
//! mutated frames) in one pass over the bytes, and [`Frame::message`] decodes with that
//! crate when a frame has to be rewritten.

use super::{decode, FrameError, Kind};
use aws_smithy_types::event_stream::Message;
use bytes::Bytes;
use std::ops::Range;

const PRELUDE_LEN: usize = 12;
const CRC_LEN: usize = 4;

/// Header value types (the EventStream wire format).
const TYPE_TRUE: u8 = 0;
const TYPE_FALSE: u8 = 1;
const TYPE_BYTE: u8 = 2;
const TYPE_INT16: u8 = 3;
const TYPE_INT32: u8 = 4;
const TYPE_INT64: u8 = 5;
const TYPE_BYTE_ARRAY: u8 = 6;
const TYPE_STRING: u8 = 7;
const TYPE_TIMESTAMP: u8 = 8;
const TYPE_UUID: u8 = 9;

/// A whole, CRC-checked frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The frame's bytes as received: what is forwarded when nothing changes.
    pub raw: Bytes,
    /// `:message-type` and the header naming the type (`:event-type`, `:exception-type`,
    /// `:error-code`), as byte ranges of `raw`.
    message_type: Option<Range<usize>>,
    type_name: Option<Range<usize>>,
    payload: Range<usize>,
}

impl Frame {
    /// Check one whole frame (`raw` is exactly one frame) the way the EventStream decoder
    /// does, noting where its type headers and payload are.
    pub fn check(raw: Bytes) -> Result<Frame, FrameError> {
        let corrupt = |what: &str| FrameError::Corrupt(what.to_owned());
        if raw.len() < PRELUDE_LEN + CRC_LEN {
            return Err(FrameError::BadLength(raw.len()));
        }
        let be32 = |at: usize| u32::from_be_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        let total = be32(0) as usize;
        if total != raw.len() {
            return Err(FrameError::BadLength(total));
        }
        if crc32fast::hash(&raw[..8]) != be32(8) {
            return Err(corrupt("prelude checksum mismatch"));
        }
        let headers_len = be32(4) as usize;
        if headers_len == 1 || headers_len > total - PRELUDE_LEN - CRC_LEN {
            return Err(corrupt("invalid headers length"));
        }
        if crc32fast::hash(&raw[..total - CRC_LEN]) != be32(total - CRC_LEN) {
            return Err(corrupt("message checksum mismatch"));
        }
        let headers_end = PRELUDE_LEN + headers_len;
        // The first header of each name, as a lookup on the decoded message finds it
        // (`None` inside: that first header is not a string).
        let mut first: [Option<Option<Range<usize>>>; 4] = Default::default();
        let mut at = PRELUDE_LEN;
        while at < headers_end {
            // One header: name length, name, value type, value.
            let name_len = raw[at] as usize;
            let name = at + 1..at + 1 + name_len;
            if name.end + 1 > headers_end {
                return Err(corrupt("header overruns the header section"));
            }
            let name_str = std::str::from_utf8(&raw[name.clone()])
                .map_err(|_| corrupt("header name is not UTF-8"))?;
            let value_type = raw[name.end];
            let value_at = name.end + 1;
            let value = match value_type {
                TYPE_TRUE | TYPE_FALSE => value_at..value_at,
                TYPE_BYTE => value_at..value_at + 1,
                TYPE_INT16 => value_at..value_at + 2,
                TYPE_INT32 => value_at..value_at + 4,
                TYPE_INT64 | TYPE_TIMESTAMP => value_at..value_at + 8,
                TYPE_UUID => value_at..value_at + 16,
                TYPE_BYTE_ARRAY | TYPE_STRING => {
                    if value_at + 2 > headers_end {
                        return Err(corrupt("header overruns the header section"));
                    }
                    let len = u16::from_be_bytes([raw[value_at], raw[value_at + 1]]) as usize;
                    value_at + 2..value_at + 2 + len
                }
                other => return Err(FrameError::Corrupt(format!("invalid header type {other}"))),
            };
            if value.end > headers_end {
                return Err(corrupt("header overruns the header section"));
            }
            let is_string = value_type == TYPE_STRING;
            if is_string {
                std::str::from_utf8(&raw[value.clone()])
                    .map_err(|_| corrupt("header value is not UTF-8"))?;
            }
            let slot = match name_str {
                ":message-type" => Some(0),
                ":event-type" => Some(1),
                ":exception-type" => Some(2),
                ":error-code" => Some(3),
                _ => None,
            };
            if let Some(slot) = slot {
                first[slot].get_or_insert_with(|| is_string.then(|| value.clone()));
            }
            at = value.end;
        }
        let [message_type, event_type, exception_type, error_code] = first.map(Option::flatten);
        let type_name = match message_type.as_ref().map(|r| &raw[r.clone()]) {
            Some(b"event") => event_type,
            Some(b"exception") => exception_type,
            Some(b"error") => error_code,
            _ => None,
        };
        Ok(Frame {
            raw,
            message_type,
            type_name,
            payload: headers_end..total - CRC_LEN,
        })
    }

    /// What the frame is, by its `:message-type` header (see [`super::kind`]).
    pub fn kind(&self) -> Kind<'_> {
        let text = |r: &Range<usize>| std::str::from_utf8(&self.raw[r.clone()]).unwrap_or("");
        let name = self.type_name.as_ref().map(text).unwrap_or("");
        match self.message_type.as_ref().map(text) {
            Some("event") => Kind::Event(name),
            Some("exception") => Kind::Exception(name),
            Some("error") => Kind::Error(name),
            _ => Kind::Unknown,
        }
    }

    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.raw[self.payload.clone()]
    }

    /// The decoded message (headers and payload), for frames that are rewritten.
    pub fn message(&self) -> Message {
        decode(&self.raw).expect("a checked frame decodes")
    }
}
