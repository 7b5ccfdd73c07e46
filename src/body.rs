//! Response bodies the relay sends to its clients: [`Body`], a whole one ([`full`]), and
//! the [`Batch`] a streamed one gathers its whole events into (a stream's body is its pump,
//! `crate::proxy::stream`).

use bytes::{Bytes, BytesMut};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// Body type of every response the relay sends to its clients.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A complete body.
pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Frames buffered between a bidirectional session's output pump and the client connection.
pub(crate) const DEPTH: usize = 32;

/// A write to the client is sent when nothing more is ready upstream or when this many
/// bytes are gathered, whichever comes first.
pub(crate) const BATCH_BYTES: usize = 64 * 1024;

/// Frames gathered for the client's next write: frames that arrive together leave together
/// (one channel send, one HTTP chunk, one socket write). A single frame is passed on as it
/// came, without a copy.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    one: Option<Bytes>,
    many: BytesMut,
}

impl Batch {
    pub fn push(&mut self, bytes: Bytes) {
        if self.many.is_empty() {
            match self.one.take() {
                None => {
                    self.one = Some(bytes);
                    return;
                }
                Some(first) => self.many.extend_from_slice(&first),
            }
        }
        self.many.extend_from_slice(&bytes);
    }

    pub fn len(&self) -> usize {
        self.one.as_ref().map_or(self.many.len(), Bytes::len)
    }

    /// Everything gathered, leaving the batch empty.
    pub fn take(&mut self) -> Option<Bytes> {
        self.one
            .take()
            .or_else(|| (!self.many.is_empty()).then(|| self.many.split().freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_passes_one_frame_on_and_joins_several_in_order() {
        let mut b = Batch::default();
        assert!(b.take().is_none());
        let one = Bytes::from_static(b"first");
        b.push(one.clone());
        assert_eq!(b.len(), 5);
        let taken = b.take().unwrap();
        assert_eq!(taken.as_ptr(), one.as_ptr(), "a lone frame is not copied");
        assert_eq!(b.len(), 0);
        for part in ["a", "bc", "def"] {
            b.push(Bytes::from(part));
        }
        assert_eq!(b.len(), 6);
        assert_eq!(&b.take().unwrap()[..], b"abcdef");
        assert!(b.take().is_none());
        b.push(Bytes::from_static(b"again"));
        assert_eq!(&b.take().unwrap()[..], b"again");
    }
}
