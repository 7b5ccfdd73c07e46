//! Seam repair where a continuation meets the delivered text, on streamed deltas.
//!
//! **Prefill** (exact): the delivered text's trailing whitespace was trimmed from the prefill
//! (Bedrock rejects it) but the client has it; exactly the common prefix of that remembered
//! whitespace and the continuation is removed.
//!
//! **Instructed** continuation: decided by what the relay asked for (docs/continuation.md),
//! never by guessing the phrasing. The continuation turn asked the model to repeat the
//! [`Anchor`] (the delivered text's last words, unique in it) and go on, or to reply
//! [`anchor::COMPLETE_MARKER`] when the answer was complete:
//! 1. `search`: everything before the first occurrence of the anchor (normal form: letters
//!    and digits, lower-cased; starting on a word) is dropped, the anchor too. A quoted
//!    occurrence is a mention and the next counts. The anchor must start within the
//!    look-ahead ([`LOOKAHEAD`], or the length of a restart of the answer when the reply
//!    retraces it from its first words). Held meanwhile: only the window a match may still
//!    start in.
//! 2. `after`: the punctuation the delivered text ends with is dropped where the reply
//!    repeats it; the leading whitespace is joined with the client's (the client's wins);
//!    a marker right after the anchor means complete.
//! 3. `complete`: the marker (before any anchor, or right after it) or a reply with no text:
//!    nothing is added, and any text after the marker fails the seam.
//! 4. Anything else fails the seam: nothing of the reply was forwarded, and the pump asks
//!    once more with a fresh continuation, then ends with the typed error.
//!
//! The only phrasing rules left are certain ones: whitespace at the join, a cut word joined
//! (the normal form ignores where the model's word boundary falls).

use super::anchor::{self, Anchor};
pub(crate) use text::join_whitespace;
use text::{common_prefix, floor_boundary, loose_prefix, quoted, sentence_end, starts_word, Loose};

mod text;

/// Reply bytes the anchor must start within (unless the reply retraces the answer).
pub const LOOKAHEAD: usize = 1024;
/// Normal characters of the delivered text's start that show a reply retracing it.
const HEAD_CHARS: usize = 32;
/// Text held after the anchor while deciding punctuation, whitespace or a marker.
const MAX_AFTER: usize = 64;

/// Why a continuation could not be spliced (nothing of it reached the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeamError {
    #[error("the continuation did not repeat the anchor within {0} bytes")]
    NoAnchor(usize),
    #[error("the continuation ended before repeating the anchor")]
    EndedBeforeAnchor,
    #[error("the continuation said the answer was complete, then went on")]
    TextAfterMarker,
}

#[derive(Debug, Clone)]
struct Instructed {
    anchor: Anchor,
    /// Normal form of the delivered text's first words (a reply retracing the answer).
    head: Vec<char>,
    delivered_len: usize,
    /// The delivered text's punctuation after its last letter or digit.
    tail: String,
    /// Reply bytes dropped so far before `buf`, and the last character dropped.
    consumed: usize,
    prev: Option<char>,
    lookahead: usize,
    head_seen: bool,
    /// Any non-whitespace text in the reply so far.
    saw_text: bool,
    /// A letter or digit was dropped while searching.
    dropped_alnum: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Prefill: deciding the leading whitespace.
    Prefill,
    Search,
    After,
    Complete,
    Done,
    Failed,
}

#[derive(Debug, Clone)]
pub(crate) struct Seam {
    /// The client's trailing whitespace (trimmed from the request).
    ws: String,
    inst: Option<Box<Instructed>>,
    buf: String,
    phase: Phase,
    failure: Option<SeamError>,
}

impl Seam {
    /// Prefill seam: only the remembered whitespace.
    pub fn prefill(trailing_ws: &str) -> Seam {
        Seam {
            ws: trailing_ws.to_owned(),
            inst: None,
            buf: String::new(),
            phase: if trailing_ws.is_empty() {
                Phase::Done
            } else {
                Phase::Prefill
            },
            failure: None,
        }
    }

    /// Instructed seam after `delivered` (already trimmed; `anchor` chosen from it) and its
    /// trailing whitespace.
    pub fn instructed(delivered: &str, trailing_ws: &str, anchor: Anchor) -> Seam {
        let mut head = anchor::normal(delivered);
        head.truncate(HEAD_CHARS);
        let last_alnum = delivered
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_alphanumeric())
            .map_or(0, |(i, c)| i + c.len_utf8());
        Seam {
            ws: trailing_ws.to_owned(),
            inst: Some(Box::new(Instructed {
                anchor,
                head,
                delivered_len: delivered.len(),
                tail: delivered[last_alnum..].to_owned(),
                consumed: 0,
                prev: None,
                lookahead: LOOKAHEAD,
                head_seen: false,
                saw_text: false,
                dropped_alnum: false,
            })),
            buf: String::new(),
            phase: Phase::Search,
            failure: None,
        }
    }

    /// Text is being held back.
    pub fn holding(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Why the continuation cannot be spliced (taken once).
    pub fn take_failure(&mut self) -> Option<SeamError> {
        self.failure.take()
    }

    /// Feed the next continuation text. `None`: held back, more is needed to decide. `fin`:
    /// no more text will come for this block (decide now).
    pub fn feed(&mut self, text: &str, fin: bool) -> Option<String> {
        match self.phase {
            Phase::Done => Some(text.to_owned()),
            Phase::Failed => Some(String::new()),
            Phase::Complete => {
                if !text.trim().is_empty() {
                    self.fail(SeamError::TextAfterMarker);
                }
                Some(String::new())
            }
            Phase::Prefill => {
                self.buf.push_str(text);
                if self.buf.trim_start().is_empty() && !fin {
                    return None;
                }
                let common = common_prefix(&self.ws, &self.buf);
                let out = self.buf[common..].to_owned();
                self.buf.clear();
                self.phase = Phase::Done;
                Some(out)
            }
            Phase::Search => {
                self.buf.push_str(text);
                self.search(fin)
            }
            Phase::After => {
                self.buf.push_str(text);
                self.after(fin)
            }
        }
    }

    /// Decide with what is held (the block or stream ends): the text to emit, maybe empty.
    pub fn flush(&mut self) -> String {
        if !self.holding() {
            return String::new();
        }
        self.feed("", true).unwrap_or_default()
    }

    fn fail(&mut self, e: SeamError) {
        self.failure = Some(e);
        self.phase = Phase::Failed;
        self.buf.clear();
    }

    /// The marker ends at byte `end` of the held text: complete, unless text follows it.
    fn complete(&mut self, end: usize) -> Option<String> {
        if !self.buf[end..].trim().is_empty() {
            self.fail(SeamError::TextAfterMarker);
            return Some(String::new());
        }
        self.phase = Phase::Complete;
        self.buf.clear();
        Some(String::new())
    }

    /// Look for the anchor (or the marker) in the held reply text.
    fn search(&mut self, fin: bool) -> Option<String> {
        let Some(inst) = self.inst.as_mut() else {
            self.phase = Phase::Done;
            return Some(std::mem::take(&mut self.buf));
        };
        inst.saw_text |= !self.buf.trim().is_empty();
        let map = anchor::normal_map(&self.buf);
        let hay: Vec<char> = map.iter().map(|n| n.c).collect();
        let marker = anchor::find_marker(&self.buf);
        if !inst.head_seen && inst.consumed < LOOKAHEAD {
            if let Some(i) = anchor::occurrences(&hay, &inst.head)
                .find(|&i| starts_word(&self.buf, inst.prev, map[i].start))
            {
                inst.head_seen = true;
                let at = inst.consumed + map[i].start;
                inst.lookahead = at + inst.delivered_len + inst.delivered_len / 4 + LOOKAHEAD;
            }
        }
        if inst.anchor.strict {
            // A short anchor must begin the reply.
            let n = inst.anchor.normal.len();
            let begins = inst.consumed == 0 || !inst.dropped_alnum;
            if hay.len() < n {
                if begins && inst.anchor.normal.starts_with(&hay) && !fin {
                    return None;
                }
            } else if begins && hay[..n] == inst.anchor.normal[..] {
                let end = map[n - 1].end;
                self.buf.drain(..end);
                self.phase = Phase::After;
                return self.after(fin);
            }
            if let Ok(Some((m, len))) = marker {
                if hay.is_empty() || map[0].start > m {
                    return self.complete(m + len);
                }
            }
            if fin && !inst.saw_text {
                return self.complete(0);
            }
            if let Err(m) = marker {
                if !fin && (hay.is_empty() || map[0].start >= m) {
                    return None;
                }
            }
            if !fin && hay.is_empty() {
                return None;
            }
            self.fail(SeamError::EndedBeforeAnchor);
            return Some(String::new());
        }
        let found = anchor::occurrences(&hay, &inst.anchor.normal).find(|&i| {
            let start = map[i].start;
            starts_word(&self.buf, inst.prev, start)
                && !quoted(&self.buf, inst.prev, start, &inst.anchor.open_before)
        });
        let marker_first = |start: usize| match marker {
            Ok(Some((m, _))) => m < start,
            _ => false,
        };
        if let Some(first) = found {
            // A preamble may mention the anchor, then the reply repeats it: an occurrence
            // starting right after another (within `REPEAT_GAP` bytes) is the one that counts.
            let n = inst.anchor.normal.len();
            let valid = |i: usize| {
                starts_word(&self.buf, inst.prev, map[i].start)
                    && !quoted(&self.buf, inst.prev, map[i].start, &inst.anchor.open_before)
            };
            let mut i = first;
            loop {
                let end = map[i + n - 1].end;
                let next = anchor::occurrences(&hay, &inst.anchor.normal)
                    .find(|&j| j >= i + n && valid(j) && map[j].start <= end + REPEAT_GAP);
                match next {
                    Some(j) => i = j,
                    None => {
                        // Undecided while a repeat may still start within the gap (text
                        // up to it not seen yet), or one that started there is still
                        // matching the anchor.
                        let anchor = &inst.anchor.normal;
                        let matching = (i + n..hay.len()).any(|j| {
                            map[j].start <= end + REPEAT_GAP
                                && anchor.starts_with(&hay[j..])
                                && valid(j)
                        });
                        let unseen = self.buf.len() < end + REPEAT_GAP;
                        if !fin && (matching || unseen) {
                            // Hold from the first occurrence on only (and what precedes
                            // it, which decides a quote).
                            let cut =
                                floor_boundary(&self.buf, map[first].start.saturating_sub(CONTEXT));
                            if cut > 0 {
                                if inst.consumed + cut > inst.lookahead {
                                    let n = inst.lookahead;
                                    self.fail(SeamError::NoAnchor(n));
                                    return Some(String::new());
                                }
                                inst.dropped_alnum |=
                                    self.buf[..cut].contains(char::is_alphanumeric);
                                inst.prev = self.buf[..cut].chars().last();
                                inst.consumed += cut;
                                self.buf.drain(..cut);
                            }
                            return None;
                        }
                        break;
                    }
                }
            }
            let start = map[first].start;
            if inst.consumed + start > inst.lookahead {
                let n = inst.lookahead;
                self.fail(SeamError::NoAnchor(n));
                return Some(String::new());
            }
            if let (true, Ok(Some((m, len)))) = (marker_first(start), marker) {
                return self.complete(m + len);
            }
            let end = map[i + inst.anchor.normal.len() - 1].end;
            self.buf.drain(..end);
            self.phase = Phase::After;
            return self.after(fin);
        }
        match marker {
            Ok(Some((m, len))) => return self.complete(m + len),
            // A marker may be arriving: hold (bounded by the look-ahead below).
            Err(_) if !fin => {}
            _ if fin => {
                if inst.saw_text {
                    self.fail(SeamError::EndedBeforeAnchor);
                    return Some(String::new());
                }
                return self.complete(0);
            }
            _ => {}
        }
        // Keep only the window an anchor, head or marker may still start in.
        let keep_chars = inst.anchor.normal.len().max(inst.head.len());
        let mut cut = match map.len().checked_sub(keep_chars) {
            Some(k) => map[k].start,
            None => 0,
        };
        if let Err(m) = marker {
            cut = cut.min(m);
        }
        cut = cut.min(self.buf.len().saturating_sub(COMPLETE_WINDOW));
        // Keep the punctuation before a possible match too (a quote, a list marker).
        cut = cut.saturating_sub(CONTEXT);
        cut = floor_boundary(&self.buf, cut);
        while let Some(c) = self.buf[..cut]
            .chars()
            .last()
            .filter(|c| !c.is_alphanumeric())
        {
            cut -= c.len_utf8();
        }
        cut = floor_boundary(&self.buf, cut);
        if cut > 0 {
            inst.dropped_alnum |= self.buf[..cut].contains(char::is_alphanumeric);
            inst.prev = self.buf[..cut].chars().last();
            inst.consumed += cut;
            self.buf.drain(..cut);
        }
        if inst.consumed > inst.lookahead {
            let n = inst.lookahead;
            self.fail(SeamError::NoAnchor(n));
            return Some(String::new());
        }
        None
    }

    /// After the anchor: drop its repeated punctuation, join the whitespace, or see a marker.
    fn after(&mut self, fin: bool) -> Option<String> {
        let Some(inst) = self.inst.as_ref() else {
            self.phase = Phase::Done;
            return Some(std::mem::take(&mut self.buf));
        };
        let decide = fin || self.buf.len() >= MAX_AFTER;
        let punct = self
            .buf
            .find(|c: char| c.is_alphanumeric() || c.is_whitespace())
            .unwrap_or(self.buf.len());
        if punct == self.buf.len() && !decide {
            return None;
        }
        let r = &self.buf[..punct];
        let t = inst.tail.as_str();
        let skip = match loose_prefix(t, &self.buf) {
            _ if t.is_empty() => 0,
            Loose::Matched(n) => n,
            Loose::Partial if !decide => return None,
            _ if sentence_end(t.trim()) && sentence_end(r) => r.len(),
            _ => 0,
        };
        let rest = &self.buf[skip..];
        let lead = rest.len() - rest.trim_start().len();
        let body = &rest[lead..];
        match anchor::marker_at(rest, lead) {
            Ok(Some(len)) => {
                let end = skip + lead + len;
                return self.complete(end);
            }
            Err(anchor::Partial) if !decide && !body.is_empty() => return None,
            _ => {}
        }
        if body.is_empty() && !decide {
            return None;
        }
        let mut out = String::with_capacity(rest.len());
        out.push_str(join_whitespace(&self.ws, &rest[..lead]));
        out.push_str(body);
        self.buf.clear();
        self.phase = Phase::Done;
        Some(out)
    }
}

/// A repeat of the anchor starting this close after an occurrence replaces it.
const REPEAT_GAP: usize = 24;

/// Raw bytes kept before where a match may start (what precedes it decides a quote).
const CONTEXT: usize = 16;

/// Raw bytes always kept while searching (a marker split across deltas).
const COMPLETE_WINDOW: usize = 24;

#[cfg(test)]
mod tests;
