//! The [`Splicer`]: turns one upstream attempt's messages into what the client must receive
//! next, so that all attempts together read as ONE response.
//!
//! Rules: exactly one message start (a resumed attempt's is swallowed); continued text lands
//! in the interrupted block (seam repaired, see `seam`), later blocks are renumbered to follow
//! what the client has; a block the continuation never closes is closed before the stop;
//! empty text deltas at the seam are dropped; the final usage (Converse/Nova `metadata`,
//! Claude `message_delta` usage and `amazon-bedrock-invocationMetrics`) is the sum over
//! attempts, failed attempts estimated (see [`Splicer::carried_usage`]).

use super::accounting::{Accounting, LimitGuard};
use super::event::{self, BlockKind, Delta, Edits, Msg, Parsed};
use super::out::Out;
pub use super::out::{Divergence, Spliced};
use super::replay::{Opaque, Replay};
use super::seam::Seam;
use super::transcript::Transcript;
use super::{StreamFormat, Usage};

enum Mode {
    Passthrough,
    Continue(Box<Continue>),
    Replay(Replay),
    Opaque(Opaque),
}

/// Splices one attempt onto what the client has. Created by [`super::plan`] (or
/// [`Splicer::passthrough`] for the first attempt).
pub struct Splicer {
    format: StreamFormat,
    mode: Mode,
    acct: Accounting,
    carried: Option<Usage>,
    /// Added to running output counters (continuations of Llama and Titan streams).
    running_offset: Option<u64>,
    guard: Option<LimitGuard>,
}

impl std::fmt::Debug for Splicer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            Mode::Passthrough => "passthrough",
            Mode::Continue(_) => "continue",
            Mode::Replay(_) => "replay",
            Mode::Opaque(_) => "opaque-replay",
        };
        f.debug_struct("Splicer")
            .field("format", &self.format)
            .field("mode", &mode)
            .finish()
    }
}

impl Splicer {
    /// First attempt: every message forwarded unchanged.
    pub fn passthrough(format: StreamFormat) -> Splicer {
        Splicer {
            format,
            mode: Mode::Passthrough,
            acct: Accounting::default(),
            carried: None,
            running_offset: None,
            guard: None,
        }
    }

    /// A prefill or instructed continuation; `guard_limit`: its limit was only a bound (see
    /// [`LimitGuard`]).
    pub(crate) fn continuation(
        format: StreamFormat,
        t: &Transcript,
        seam: Seam,
        guard_limit: bool,
    ) -> Splicer {
        let mode = Mode::Continue(Box::new(Continue::new(format, t, seam)));
        let running_offset = t.exact_output().filter(|n| *n > 0 && t.shape().is_some());
        Splicer {
            format,
            mode,
            acct: Accounting::after(t.tallies(), t.delivered_count()),
            carried: None,
            running_offset,
            guard: guard_limit.then(LimitGuard::default),
        }
    }

    pub(crate) fn replay(format: StreamFormat, t: &Transcript) -> Splicer {
        let mode = if t.opaque() {
            Mode::Opaque(Opaque::new(t))
        } else {
            Mode::Replay(Replay::new(format, t))
        };
        Splicer {
            format,
            mode,
            acct: Accounting::after(t.tallies(), 0),
            carried: None,
            running_offset: None,
            guard: None,
        }
    }

    /// Usage added to the final usage report for failed attempts (`None` until that report
    /// passed, or on the first attempt). Input of a failed attempt is what it announced,
    /// else the final attempt's input minus the delivered text it carried (one token per
    /// delta) plus what that attempt carried; output is one token per delta it generated.
    pub fn carried_usage(&self) -> Option<Usage> {
        self.carried
    }

    /// Every message is forwarded unchanged (the first attempt).
    pub fn is_passthrough(&self) -> bool {
        matches!(self.mode, Mode::Passthrough)
    }

    /// The messages to send the client for one upstream message, in order; may be empty.
    pub fn accept(&mut self, msg: &Msg) -> Result<Vec<Spliced>, Divergence> {
        if let Mode::Passthrough = self.mode {
            return Ok(vec![Spliced::Unchanged]);
        }
        let parsed = event::parse(self.format, msg);
        let ev = &parsed.event;
        if let Some(n) = ev.known_input {
            self.acct.known_input.get_or_insert(n);
        }
        if let (true, Some(c)) = (ev.start, ev.cache) {
            self.acct.known_cache.get_or_insert(c);
        }
        let mut out = match &mut self.mode {
            Mode::Passthrough => return Ok(vec![Spliced::Unchanged]),
            Mode::Opaque(o) => {
                return o.accept(ev).map(|keep| {
                    if keep {
                        vec![Spliced::Unchanged]
                    } else {
                        vec![]
                    }
                })
            }
            Mode::Continue(c) => {
                let out = c.accept(msg, &parsed);
                // The instructed seam refused (a restarted answer that differs): nothing of
                // it was sent; the pump ends the stream with the typed error.
                if let Some(why) = c.seam.take_failure() {
                    return Err(Divergence::seam(c.target.map(|t| t.0), why));
                }
                out
            }
            Mode::Replay(r) => r.accept(ev)?,
        };
        if let (Some((input, _)), false) = (ev.usage, out.drop || self.acct.failed.is_empty()) {
            let (carry, more) = self.acct.carry(input, ev.cache);
            out.edits.add_usage = Some(carry);
            out.edits.add_more = Some(more);
            self.carried = Some(carry);
        }
        if ev.running.is_some() {
            out.edits.running_offset = self.running_offset;
        }
        let mut result: Vec<Spliced> = out.pre.into_iter().map(Spliced::Rewritten).collect();
        if !out.drop {
            if out.edits.is_empty() {
                result.push(Spliced::Unchanged);
            } else {
                match event::rewrite(self.format, msg, &parsed, &out.edits) {
                    Some(m) => result.push(Spliced::Rewritten(m)),
                    None => result.push(Spliced::Unchanged),
                }
            }
        }
        if let Some(guard) = &mut self.guard {
            let msgs = result.into_iter().map(|s| s.into_message(msg)).collect();
            return Ok(guard
                .filter(ev, msgs)
                .into_iter()
                .map(Spliced::Rewritten)
                .collect());
        }
        Ok(result)
    }
}

/// Where a block of the continuation goes on the client side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Map {
    /// Continues the client's last text block.
    Cont,
    Fresh(u32),
}

/// Prefill / instructed splicing state.
struct Continue {
    format: StreamFormat,
    /// Single-text chunks (no block structure, whatever the family).
    single: bool,
    swallow_start: bool,
    /// The client's last block when it is text: (index, still open).
    target: Option<(u32, bool)>,
    /// Client index given to the continued text when the target was already closed.
    cont_fresh: Option<u32>,
    /// Claude's swallowed `content_block_start` of the continued block (re-sent if needed).
    cont_start: Option<Msg>,
    seam: Seam,
    /// The message whose text the seam is holding (template for the held text).
    held: Option<Msg>,
    map: Vec<(u32, Map)>,
    next_index: u32,
    /// The new attempt's reasoning blocks before the continued text: dropped, since the
    /// client already has its own reasoning, signed, before the text being continued.
    dropped: Vec<u32>,
    /// The client has reasoning before the continued text (then the new attempt's is dropped).
    after_reasoning: bool,
}

impl Continue {
    fn new(format: StreamFormat, t: &Transcript, seam: Seam) -> Continue {
        let target = t
            .blocks()
            .last()
            .filter(|b| b.kind.is_text())
            .map(|b| (b.index, !b.stopped));
        let next_index = t.blocks().iter().map(|b| b.index + 1).max().unwrap_or(0);
        Continue {
            format,
            single: t.single(),
            swallow_start: t.started(),
            target,
            cont_fresh: None,
            cont_start: None,
            seam,
            held: None,
            map: Vec::new(),
            next_index,
            dropped: Vec::new(),
            after_reasoning: t.blocks().iter().any(|b| b.kind == BlockKind::Reasoning),
        }
    }

    /// A reasoning block of the new attempt, before anything was continued: its index.
    fn new_reasoning(&self, ev: &event::Event) -> Option<u32> {
        if !self.after_reasoning || !self.map.is_empty() || self.target.is_none() {
            return None;
        }
        match (&ev.block_start, &ev.delta) {
            (Some((i, BlockKind::Reasoning)), _) => Some(*i),
            (Some((i, BlockKind::Other(json))), _) if json.contains("redacted_thinking") => {
                Some(*i)
            }
            (None, Some((i, Delta::Reasoning(_) | Delta::Signature(_) | Delta::Redacted(_)))) => {
                Some(*i)
            }
            _ => None,
        }
    }

    fn accept(&mut self, msg: &Msg, parsed: &Parsed) -> Out {
        let ev = &parsed.event;
        let mut out = Out::default();
        if ev.start && self.swallow_start && !ev.is_content() {
            return Out::drop();
        }
        if let Some(i) = self.new_reasoning(ev) {
            if !self.dropped.contains(&i) {
                self.dropped.push(i);
            }
        }
        let of_dropped = |i: &u32| self.dropped.contains(i);
        if ev.block_start.as_ref().is_some_and(|(i, _)| of_dropped(i))
            || ev.delta.as_ref().is_some_and(|(i, _)| of_dropped(i))
            || ev.block_stop.as_ref().is_some_and(of_dropped)
        {
            return Out::drop();
        }
        let single = self.single;
        let fin = ev.stop.is_some() || ev.terminal;
        let to_cont =
            matches!(&ev.delta, Some((i, Delta::Text(_))) if self.lookup(*i, true) == Map::Cont);
        // Held seam text goes out once the stream moves on (not for pings and the like).
        if !to_cont && (ev.is_content() || fin) {
            self.flush(&mut out.pre);
        }
        if let Some((i, kind)) = &ev.block_start {
            match self.map_index(*i, kind.is_text(), &mut out.pre) {
                Map::Cont => {
                    self.cont_start = Some(msg.clone());
                    return Out { drop: true, ..out };
                }
                Map::Fresh(n) => out.edits.index = (n != *i).then_some(n),
            }
        }
        if let Some((i, delta)) = &ev.delta {
            match self.map_index(*i, matches!(delta, Delta::Text(_)), &mut out.pre) {
                Map::Fresh(n) => out.edits.index = (n != *i).then_some(n),
                Map::Cont => match delta {
                    Delta::Text(t) => match self.seam.feed(t, fin && single) {
                        Some(text) if !text.is_empty() => {
                            self.held = None;
                            let dest = self.cont_dest(&mut out.pre);
                            out.edits.index = (dest != *i).then_some(dest);
                            out.edits.text = (text != *t).then_some(text);
                        }
                        pending => {
                            self.held = pending.is_none().then(|| msg.clone());
                            if !(single && fin) {
                                return Out { drop: true, ..out };
                            }
                            out.edits.text = (!t.is_empty()).then(String::new);
                        }
                    },
                    _ => {
                        let dest = self.cont_dest(&mut out.pre);
                        out.edits.index = (dest != *i).then_some(dest);
                    }
                },
            }
        }
        if let Some(i) = ev.block_stop {
            // A stop for the new stream's first block, before anything mapped it, closes the
            // continued block (some streams send a bare stop when nothing was left to say).
            match self.lookup(i, true) {
                Map::Fresh(n) => out.edits.index = (n != i).then_some(n),
                Map::Cont => match (self.target, self.cont_fresh) {
                    (Some((t, true)), _) => {
                        self.target = Some((t, false));
                        out.edits.index = (t != i).then_some(t);
                    }
                    (_, Some(n)) => out.edits.index = (n != i).then_some(n),
                    _ => return Out { drop: true, ..out },
                },
            }
        }
        if ev.stop.is_some() || ev.terminal {
            self.close_target(&mut out.pre);
        }
        out
    }

    /// Mapping of a known continuation index (`Cont` for an unknown one if `text` would make it so).
    fn lookup(&self, i: u32, text: bool) -> Map {
        match self.map.iter().find(|(k, _)| *k == i) {
            Some((_, m)) => *m,
            None if text && self.map.is_empty() && self.target.is_some() => Map::Cont,
            None => Map::Fresh(i),
        }
    }

    fn map_index(&mut self, i: u32, text: bool, pre: &mut Vec<Msg>) -> Map {
        if let Some((_, m)) = self.map.iter().find(|(k, _)| *k == i) {
            return *m;
        }
        let m = if text && self.map.is_empty() && self.target.is_some() {
            Map::Cont
        } else {
            self.close_target(pre);
            let n = self.next_index;
            self.next_index += 1;
            Map::Fresh(n)
        };
        self.map.push((i, m));
        m
    }

    /// Client index for continued text: the open target, else a fresh block (its start
    /// re-sent for formats that announce blocks).
    fn cont_dest(&mut self, pre: &mut Vec<Msg>) -> u32 {
        if let Some((t, true)) = self.target {
            return t;
        }
        if let Some(n) = self.cont_fresh {
            return n;
        }
        let n = self.next_index;
        self.next_index += 1;
        self.cont_fresh = Some(n);
        if let Some(start) = self.cont_start.take() {
            let parsed = event::parse(self.format, &start);
            let edits = Edits {
                index: Some(n),
                ..Edits::default()
            };
            pre.push(event::rewrite(self.format, &start, &parsed, &edits).unwrap_or(start));
        }
        n
    }

    /// Emit held seam text (the block or stream is moving on).
    fn flush(&mut self, pre: &mut Vec<Msg>) {
        if !self.seam.holding() {
            return;
        }
        let text = self.seam.flush();
        if let (Some(held), false) = (self.held.take(), text.is_empty()) {
            let dest = self.cont_dest(pre);
            let parsed = event::parse(self.format, &held);
            let edits = Edits {
                index: Some(dest),
                text: Some(text),
                ..Edits::default()
            };
            pre.push(event::rewrite(self.format, &held, &parsed, &edits).unwrap_or(held));
        }
    }

    /// Close the client's interrupted block if the continuation never did.
    fn close_target(&mut self, pre: &mut Vec<Msg>) {
        if self.single {
            return;
        }
        if let Some((t, true)) = self.target {
            self.target = Some((t, false));
            if let Some(m) = event::block_stop(self.format, t) {
                pre.push(m);
            }
        }
    }
}
