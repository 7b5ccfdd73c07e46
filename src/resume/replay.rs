//! Replay with verification: the original request is sent again; every event that covers what
//! the client already has is swallowed only after checking it reproduces that content exactly
//! (text, tool input, reasoning text per block; a delivered reasoning signature must match,
//! one not yet delivered is forwarded; a different toolUseId is tolerated and the client keeps
//! its own). Everything past the client's position is forwarded. The first mismatch is a
//! [`Divergence`]: the pump must then end the stream with a typed exception, never splice.

use super::event::{BlockKind, Delta, Event};
use super::out::{Divergence, Out};
use super::transcript::Transcript;
use super::StreamFormat;

/// A client block being verified.
#[derive(Debug)]
struct Expect {
    index: u32,
    kind: BlockKind,
    text: String,
    signature: Option<String>,
    others: Vec<Delta>,
    client_stopped: bool,
    /// Bytes of `text` reproduced so far.
    pos: usize,
    sig_seen: bool,
    others_pos: usize,
    replay_stopped: bool,
}

impl Expect {
    fn reproduced(&self) -> bool {
        self.pos == self.text.len()
            && (self.signature.is_none() || self.sig_seen)
            && self.others_pos == self.others.len()
    }
}

pub(crate) struct Replay {
    single: bool,
    swallow_start: bool,
    client_stop: Option<String>,
    expected: Vec<Expect>,
}

impl Replay {
    pub(crate) fn new(format: StreamFormat, t: &Transcript) -> Replay {
        let expected = t
            .blocks()
            .iter()
            .map(|b| Expect {
                index: b.index,
                kind: b.kind.clone(),
                text: b.text.clone(),
                signature: b.signature.clone(),
                others: b.others.clone(),
                client_stopped: b.stopped,
                pos: 0,
                sig_seen: false,
                others_pos: 0,
                replay_stopped: false,
            })
            .collect();
        Replay {
            single: format.single_block() || t.single(),
            swallow_start: t.started(),
            client_stop: t.stop().map(str::to_owned),
            expected,
        }
    }

    /// Every client block before `index` must be fully reproduced (and ended, for formats
    /// with block stops) before the replay may move past it.
    fn check_before(&self, index: u32) -> Result<(), Divergence> {
        match self
            .expected
            .iter()
            .find(|e| e.index < index && !(e.reproduced() && (e.replay_stopped || self.single)))
        {
            Some(e) => Err(Divergence::new(
                Some(e.index),
                "replay moved on before reproducing this block",
            )),
            None => Ok(()),
        }
    }

    pub(crate) fn accept(&mut self, ev: &Event) -> Result<Out, Divergence> {
        let mut out = Out::default();
        // Each part of the message either is swallowed (verified) or must be forwarded.
        let mut forward = ev.terminal;
        let mut swallowed_any = false;
        let mut delta_swallowed = false;
        if ev.start {
            if self.swallow_start {
                swallowed_any = true;
            } else {
                forward = true;
            }
        }
        if let Some((i, kind)) = &ev.block_start {
            self.check_before(*i)?;
            match self.expected.iter().find(|e| e.index == *i) {
                Some(e) if !e.kind.same_as(kind) => {
                    return Err(Divergence::new(
                        Some(*i),
                        format!("block kind {kind:?} instead of {:?}", e.kind),
                    ))
                }
                Some(_) => swallowed_any = true,
                None => forward = true,
            }
        }
        if let Some((i, delta)) = &ev.delta {
            self.check_before(*i)?;
            match self.expected.iter_mut().find(|e| e.index == *i) {
                Some(e) => match verify_delta(e, delta)? {
                    Verified::Swallow => {
                        swallowed_any = true;
                        delta_swallowed = true;
                    }
                    Verified::Forward => forward = true,
                    Verified::Rest(rest) => {
                        forward = true;
                        out.edits.text = Some(rest);
                    }
                },
                None => forward = true,
            }
        }
        if let Some(i) = ev.block_stop {
            self.check_before(i)?;
            if let Some(e) = self.expected.iter_mut().find(|e| e.index == i) {
                if !e.reproduced() {
                    return Err(Divergence::new(
                        Some(i),
                        "replay ended the block before reproducing it",
                    ));
                }
                e.replay_stopped = true;
                if e.client_stopped {
                    swallowed_any = true;
                } else {
                    forward = true;
                }
            } else {
                forward = true;
            }
        }
        if let Some(reason) = &ev.stop {
            if let Some(e) = self
                .expected
                .iter()
                .find(|e| !(e.reproduced() && (e.replay_stopped || self.single)))
            {
                return Err(Divergence::new(
                    Some(e.index),
                    "replay stopped before reproducing this block",
                ));
            }
            match &self.client_stop {
                Some(had) if had != reason => {
                    return Err(Divergence::new(
                        None,
                        format!("stop reason {reason:?} instead of {had:?}"),
                    ))
                }
                Some(_) => swallowed_any = true,
                None => forward = true,
            }
        }
        // A message with both swallowed and new parts (single-block chunk: text + stop) is
        // forwarded with the swallowed text removed; Claude's message_delta that only repeats
        // a delivered stop is dropped with its (superseded) usage.
        if !forward && swallowed_any {
            return Ok(Out::drop());
        }
        let had_text = ev
            .delta
            .as_ref()
            .and_then(|(_, d)| d.text())
            .is_some_and(|t| !t.is_empty());
        if forward && delta_swallowed && had_text {
            out.edits.text = Some(String::new());
        }
        Ok(out)
    }
}

enum Verified {
    Swallow,
    Forward,
    /// Part reproduced, part new: forward only the new text.
    Rest(String),
}

fn verify_delta(e: &mut Expect, delta: &Delta) -> Result<Verified, Divergence> {
    let at = Some(e.index);
    if e.replay_stopped {
        return Err(Divergence::new(
            at,
            "replay continued a block after ending it",
        ));
    }
    let kind_ok = match delta {
        Delta::Text(_) => e.kind == BlockKind::Text,
        Delta::ToolInput(_) => e.kind.is_tool(),
        Delta::Reasoning(_) | Delta::Signature(_) => e.kind == BlockKind::Reasoning,
        Delta::Redacted(_) | Delta::Other(_) => true,
    };
    if !kind_ok {
        return Err(Divergence::new(
            at,
            format!("{delta:?} in a {:?} block", e.kind),
        ));
    }
    let more_allowed = !e.client_stopped && e.signature.is_none() && e.others_pos == e.others.len();
    match delta {
        Delta::Text(t) | Delta::ToolInput(t) | Delta::Reasoning(t) => {
            let rest = &e.text[e.pos..];
            if t.is_empty() {
                return Ok(Verified::Swallow);
            }
            if t.len() <= rest.len() {
                if rest.as_bytes().starts_with(t.as_bytes()) {
                    e.pos += t.len();
                    return Ok(Verified::Swallow);
                }
                return Err(Divergence::new(
                    at,
                    "replayed text differs from what the client has",
                ));
            }
            if !t.as_bytes().starts_with(rest.as_bytes()) {
                return Err(Divergence::new(
                    at,
                    "replayed text differs from what the client has",
                ));
            }
            if !more_allowed {
                return Err(Divergence::new(
                    at,
                    "replay has more content than the client's ended block",
                ));
            }
            let had = rest.len();
            e.pos = e.text.len();
            Ok(if had == 0 {
                Verified::Forward
            } else {
                Verified::Rest(t[had..].to_owned())
            })
        }
        Delta::Signature(s) => {
            if e.pos != e.text.len() {
                return Err(Divergence::new(
                    at,
                    "signature before the reasoning text was reproduced",
                ));
            }
            match &e.signature {
                Some(had) if had == s => {
                    e.sig_seen = true;
                    Ok(Verified::Swallow)
                }
                Some(_) => Err(Divergence::new(at, "reasoning signature differs")),
                None if e.client_stopped => Err(Divergence::new(
                    at,
                    "signature in a block the client saw end without one",
                )),
                None => Ok(Verified::Forward),
            }
        }
        other => {
            if let Some(had) = e.others.get(e.others_pos) {
                if had == other {
                    e.others_pos += 1;
                    return Ok(Verified::Swallow);
                }
                return Err(Divergence::new(at, "replayed content differs"));
            }
            if e.client_stopped {
                return Err(Divergence::new(
                    at,
                    "replay has more content than the client's ended block",
                ));
            }
            Ok(Verified::Forward)
        }
    }
}

/// Replay of a stream the relay did not fully understand: chunk by chunk, byte-exact
/// (compared by a 64-bit hash of each chunk's decoded bytes).
pub(crate) struct Opaque {
    expected: Vec<u64>,
    pos: usize,
}

impl Opaque {
    pub(crate) fn new(t: &Transcript) -> Opaque {
        Opaque {
            expected: t.chunk_hashes().to_vec(),
            pos: 0,
        }
    }

    /// `Ok(true)`: forward, `Ok(false)`: verified and swallowed.
    pub(crate) fn accept(&mut self, ev: &Event) -> Result<bool, Divergence> {
        let Some(raw) = &ev.raw_chunk else {
            return Ok(true);
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(raw, &mut h);
        let raw = &std::hash::Hasher::finish(&h);
        match self.expected.get(self.pos) {
            Some(had) if had == raw => {
                self.pos += 1;
                Ok(false)
            }
            Some(_) => Err(Divergence::new(
                None,
                format!("chunk {} differs on replay", self.pos),
            )),
            None => Ok(true),
        }
    }
}
