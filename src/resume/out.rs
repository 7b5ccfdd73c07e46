//! What splicing produces, shared by the splicer and the replay verifier: a message for the
//! client ([`Spliced`]), what to do with one upstream message (`Out`), and a replay that
//! differs from what the client has ([`Divergence`]).

use super::event::{Edits, Msg};

/// One message for the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Spliced {
    /// The upstream message as received: forward its original bytes.
    Unchanged,
    /// A rewritten or synthesised message: encode it (fresh CRCs).
    Rewritten(Msg),
}

impl Spliced {
    /// The message to send, given the upstream message passed to [`Splicer::accept`].
    pub fn into_message(self, upstream: &Msg) -> Msg {
        match self {
            Spliced::Unchanged => upstream.clone(),
            Spliced::Rewritten(m) => m,
        }
    }
}

/// A replay produced something other than what the client already has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("replay diverged from what the client has (block {block:?}): {reason}")]
pub struct Divergence {
    /// Client-visible block index, when the difference is inside a block.
    pub block: Option<u32>,
    pub reason: String,
    /// An instructed continuation that did not follow the protocol (nothing of it reached
    /// the client): a fresh continuation may; the pump asks once more.
    pub reask: bool,
}

impl Divergence {
    pub(crate) fn new(block: Option<u32>, reason: impl Into<String>) -> Self {
        Divergence {
            block,
            reason: reason.into(),
            reask: false,
        }
    }

    /// The instructed seam refused the continuation.
    pub(crate) fn seam(block: Option<u32>, e: super::seam::SeamError) -> Self {
        Divergence {
            block,
            reason: e.to_string(),
            reask: true,
        }
    }
}

/// What to do with one upstream message.
#[derive(Debug, Default)]
pub(crate) struct Out {
    /// Synthesised messages to send before it.
    pub pre: Vec<Msg>,
    pub edits: Edits,
    pub drop: bool,
}

impl Out {
    pub(crate) fn drop() -> Out {
        Out {
            drop: true,
            ..Out::default()
        }
    }
}
