//! Seam repair where a continuation meets the delivered text, on streamed deltas.
//!
//! **Prefill** (exact): the delivered text's trailing whitespace was trimmed from the prefill
//! (Bedrock rejects it) but the client has it; exactly the common prefix of that remembered
//! whitespace and the continuation is removed.
//!
//! **Instructed** continuation: real models asked to continue repeat what they wrote, add a
//! preamble, re-type a cut word, change the whitespace or reopen a code fence. The head of
//! the continuation goes through these bounded rules, in order (each is a case of the seam
//! corpus, `seam/corpus.toml`, that fails without it):
//! 1. `preamble`: one sentence at the very start that starts like a preamble ("Continuing",
//!    "Here's", "Sure", "(continued", …) and names continuing ("continu", "left off", "rest
//!    of", …), ends in `:` `.` `…` `)` or the line end, at most `MAX_PREAMBLE_BYTES` (160), is
//!    removed with the whitespace after it; so is an ellipsis glued to text ("...ld").
//! 2. `fence`: while the delivered text is inside a code fence opened with an info string
//!    (```` ```rust ````), a first line reopening the same fence is removed.
//! 3. `restart`: a continuation that starts with the first [`RESTART_PROBE_BYTES`] of the
//!    delivered text restarted the answer; it must reproduce the delivered text exactly (it
//!    is swallowed as it streams, nothing held), and what follows is the continuation. If it
//!    differs, the seam fails: the pump ends the stream with the typed error, so the
//!    duplicate never reaches the client. (A delivered text shorter than the probe is too
//!    short to tell a restart from text: only its exact repetition is removed, by `echo`.)
//! 4. `echo`: the longest suffix of the delivered text that starts on a word, spans at most
//!    [`MAX_OVERLAP_WORDS`] words and [`MAX_OVERLAP_BYTES`] bytes and begins the continuation
//!    is removed (the last words, the last sentence, the list item). When the echo goes on
//!    into a longer word ("bro" → "brown") it re-typed a cut word and the join keeps the
//!    rest ("wn"); after a single space or a preamble a one-word match is a new word instead
//!    ("an" → "answer"), unless it is the whole delivered text (the answer restarted).
//! 5. `whitespace`: whitespace extending the client's trailing whitespace is kept, other
//!    leading whitespace is dropped (the client's wins), except the indentation of a new line;
//!    after a removed preamble a space separates words.
//! 6. `block`: a continuation opening a markdown block (list item, heading, fence, quote)
//!    while the client is mid-line in a list or after a colon gets a line break first.
//!
//! Echoes and restarts are compared exactly except whitespace: a run of whitespace matches
//! any run (the client keeps its own). Limits: a genuine repetition of the last words is
//! indistinguishable from an echo and is removed; no case or punctuation folding; a
//! renumbered list is not renumbered back. Look-ahead: at most [`MAX_BUFFER`] bytes are held, and only while
//! a rule is undecided.

pub use super::seam_rules::RESTART_PROBE_BYTES;
use super::seam_rules::{self as rules, Advance, Loose, Verdict};

/// At most this many words of the delivered text are considered repeated.
pub const MAX_OVERLAP_WORDS: usize = 64;
/// At most this many bytes of the delivered text are considered repeated.
pub const MAX_OVERLAP_BYTES: usize = 512;
/// Past this much held text every rule decides with what is there.
pub const MAX_BUFFER: usize = 1024;

/// Which instructed rules run (all of them, except in the corpus test that proves each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rules {
    pub preamble: bool,
    pub fence: bool,
    pub restart: bool,
    pub echo: bool,
    pub whitespace: bool,
    pub block: bool,
}

impl Rules {
    pub const ALL: Rules = Rules {
        preamble: true,
        fence: true,
        restart: true,
        echo: true,
        whitespace: true,
        block: true,
    };
}

#[derive(Debug, Clone)]
struct Instructed {
    delivered: String,
    /// Byte offsets of echo candidates in `delivered`, longest first.
    candidates: Vec<usize>,
    rules: Rules,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Deciding the head; `after_restart`: the delivered text was reproduced already.
    Head {
        after_restart: bool,
    },
    /// Matching a restarted answer against the delivered text, at this byte (`in_ws`: in a
    /// whitespace run that may go on).
    Restart {
        pos: usize,
        in_ws: bool,
    },
    Done,
    /// Refused: nothing more is emitted.
    Failed,
}

enum Step {
    NeedMore,
    Emit(String),
    Restart { skip: usize },
}

#[derive(Debug, Clone)]
pub(crate) struct Seam {
    /// The client's trailing whitespace (trimmed from the request).
    ws: String,
    inst: Option<Box<Instructed>>,
    buf: String,
    phase: Phase,
    failure: Option<String>,
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
                Phase::Head {
                    after_restart: false,
                }
            },
            failure: None,
        }
    }

    /// Instructed seam after `delivered` (already trimmed) and its trailing whitespace.
    pub fn instructed(delivered: &str, trailing_ws: &str) -> Seam {
        Seam::instructed_with(delivered, trailing_ws, Rules::ALL)
    }

    pub(crate) fn instructed_with(delivered: &str, trailing_ws: &str, rules: Rules) -> Seam {
        Seam {
            ws: trailing_ws.to_owned(),
            inst: Some(Box::new(Instructed {
                delivered: delivered.to_owned(),
                candidates: overlap_candidates(delivered),
                rules,
            })),
            buf: String::new(),
            phase: Phase::Head {
                after_restart: false,
            },
            failure: None,
        }
    }

    /// Text is being held back, or a restarted answer is being matched.
    pub fn holding(&self) -> bool {
        !self.buf.is_empty() || matches!(self.phase, Phase::Restart { .. })
    }

    /// Why the continuation cannot be spliced (taken once): it restarted the answer and
    /// differed from the delivered text.
    pub fn take_failure(&mut self) -> Option<String> {
        self.failure.take()
    }

    /// Feed the next continuation text. `None`: held back, more is needed to decide. `fin`:
    /// no more text will come for this block (decide now).
    pub fn feed(&mut self, text: &str, fin: bool) -> Option<String> {
        match self.phase {
            Phase::Done => Some(text.to_owned()),
            Phase::Failed => Some(String::new()),
            Phase::Restart { pos, in_ws } => {
                let Some(inst) = self.inst.as_ref() else {
                    self.phase = Phase::Done;
                    return Some(text.to_owned());
                };
                let d = inst.delivered.as_str();
                match rules::advance(d, pos, in_ws, text) {
                    Advance::Done(n) => {
                        // Reproduced whole: what follows is the continuation (a bounded
                        // recursion: a head after a restart never restarts again).
                        self.phase = Phase::Head {
                            after_restart: true,
                        };
                        self.feed(&text[n..], fin)
                    }
                    Advance::Consumed { pos, in_ws } if !fin => {
                        self.phase = Phase::Restart { pos, in_ws };
                        Some(String::new())
                    }
                    a @ (Advance::Consumed { pos, .. } | Advance::Mismatch { pos }) => {
                        let how = match a {
                            Advance::Mismatch { .. } => "differed from it",
                            _ => "stopped",
                        };
                        self.failure = Some(format!(
                            "the instructed continuation restarted the answer and {how} after {pos} of the {} delivered bytes",
                            d.len()
                        ));
                        self.phase = Phase::Failed;
                        Some(String::new())
                    }
                }
            }
            Phase::Head { after_restart } => {
                self.buf.push_str(text);
                let decide_now = fin || self.buf.len() >= MAX_BUFFER;
                let step = match &self.inst {
                    None => self.decide_prefill(decide_now),
                    Some(inst) => decide(inst, &self.ws, &self.buf, decide_now, after_restart),
                };
                match step {
                    Step::NeedMore => None,
                    Step::Emit(out) => {
                        self.buf.clear();
                        self.phase = Phase::Done;
                        Some(out)
                    }
                    Step::Restart { skip } => {
                        let rest = self.buf.split_off(skip);
                        self.buf.clear();
                        self.phase = Phase::Restart {
                            pos: 0,
                            in_ws: false,
                        };
                        self.feed(&rest, fin)
                    }
                }
            }
        }
    }

    fn decide_prefill(&self, fin: bool) -> Step {
        if self.buf.trim_start().is_empty() && !fin {
            return Step::NeedMore;
        }
        let common = common_prefix(&self.ws, &self.buf);
        Step::Emit(self.buf[common..].to_owned())
    }

    /// Decide with what is held (the block or stream ends): the text to emit, maybe empty.
    pub fn flush(&mut self) -> String {
        if !self.holding() {
            return String::new();
        }
        self.feed("", true).unwrap_or_default()
    }
}

/// The instructed head decision over the held text `buf` (rules 1-6 of the module doc).
fn decide(inst: &Instructed, w: &str, buf: &str, fin: bool, after_restart: bool) -> Step {
    let r = inst.rules;
    let d = inst.delivered.as_str();
    let mut at = 0;
    let mut preamble = false;
    if !after_restart && r.preamble {
        let lead = ws_len(buf);
        match rules::preamble(&buf[lead..], fin) {
            Verdict::NeedMore => return Step::NeedMore,
            Verdict::Found(n) => {
                at = lead + n;
                preamble = true;
            }
            Verdict::No => {}
        }
    }
    if let (false, true, Some(info)) = (after_restart, r.fence, rules::open_fence(d)) {
        let lead = ws_len(&buf[at..]);
        match rules::reopened_fence(&buf[at + lead..], info, fin) {
            Verdict::NeedMore => return Step::NeedMore,
            Verdict::Found(n) => at += lead + n,
            Verdict::No => {}
        }
    }
    let lead_len = ws_len(&buf[at..]);
    let lead = &buf[at..at + lead_len];
    let body = &buf[at + lead_len..];
    let mut echoed = after_restart;
    if !after_restart && r.restart && d.len() >= RESTART_PROBE_BYTES {
        let probe = &d[..rules::floor_boundary(d, RESTART_PROBE_BYTES)];
        match rules::loose_match(probe.trim_end(), body) {
            Loose::Prefix if !fin => return Step::NeedMore,
            Loose::Matched(_) => {
                return Step::Restart {
                    skip: at + lead_len,
                }
            }
            _ => {}
        }
    }
    if !after_restart && r.echo {
        // After a preamble the model starts afresh: a one-word match going on into a longer
        // word is a new word ("a" → "atlas"), as after a space.
        let lead = if preamble && lead.is_empty() {
            " "
        } else {
            lead
        };
        match echo(inst, lead, body, fin) {
            Err(()) => return Step::NeedMore,
            Ok(Some(n)) => {
                at += lead_len + n;
                echoed = true;
            }
            Ok(None) => {}
        }
    }
    let rest = &buf[at..];
    let v_len = ws_len(rest);
    if v_len == rest.len() && !fin {
        return Step::NeedMore;
    }
    let (v, text) = rest.split_at(v_len);
    let mut out = String::with_capacity(rest.len() + 1);
    if r.whitespace {
        if preamble && !echoed && w.is_empty() && v.is_empty() && rules::needs_space(d, text) {
            out.push(' ');
        } else {
            out.push_str(rules::join_whitespace(w, v));
        }
    } else {
        out.push_str(&v[common_prefix(w, v)..]);
    }
    let mid_line = !w.contains('\n') && !out.contains('\n');
    if r.block && mid_line && rules::in_block_context(d) {
        if !fin && rules::may_open_block(text) {
            return Step::NeedMore;
        }
        if rules::opens_block(text) {
            out = "\n".to_owned();
        }
    }
    out.push_str(text);
    Step::Emit(out)
}

/// The echo to remove from `body` (after the lead whitespace): its length; `Err` when more
/// text is needed to decide.
fn echo(inst: &Instructed, lead: &str, body: &str, fin: bool) -> Result<Option<usize>, ()> {
    let d = inst.delivered.as_str();
    for &start in &inst.candidates {
        let c = &d[start..];
        let n = match rules::loose_match(c, body) {
            Loose::Prefix if !fin => return Err(()),
            Loose::Matched(n) => n,
            _ => continue,
        };
        let next = body[n..].chars().next();
        if next.is_none() && !fin {
            return Err(());
        }
        let before_start = d[..start].trim_end().len();
        // The whole delivered text again is a restart, whatever precedes it.
        if start == 0 || rules::echo_accepted(c, next, lead, &d[before_start..start]) {
            return Ok(Some(n));
        }
    }
    Ok(None)
}

fn ws_len(s: &str) -> usize {
    s.len() - s.trim_start().len()
}

/// Byte length of the common prefix of `a` and `b` (on char boundaries).
fn common_prefix(a: &str, b: &str) -> usize {
    a.chars()
        .zip(b.chars())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len_utf8())
        .sum()
}

/// Offsets of the suffixes of `delivered` that start on a word and are within the limits,
/// longest first.
pub(crate) fn overlap_candidates(delivered: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut prev_ws = true;
    for (i, ch) in delivered.char_indices() {
        let is_ws = ch.is_whitespace();
        if prev_ws && !is_ws {
            let suffix = &delivered[i..];
            if suffix.len() <= MAX_OVERLAP_BYTES
                && suffix.split_whitespace().count() <= MAX_OVERLAP_WORDS
            {
                out.push(i);
            }
        }
        prev_ws = is_ws;
    }
    out
}

#[cfg(test)]
mod tests;
