//! Seam repair where a continuation meets the delivered text.
//!
//! Two repairs, applied to the first text of the continued block:
//! 1. **Remembered whitespace.** The delivered text's trailing whitespace was trimmed from the
//!    prefill (Bedrock rejects it), but the client already has it. The continuation usually
//!    starts with that whitespace again; exactly the common prefix of the remembered whitespace
//!    and the continuation is removed, so nothing is doubled or lost.
//! 2. **Overlap** (instructed continuation only). Models asked to continue often repeat their
//!    last few words. The longest suffix of the delivered text that starts on a word boundary,
//!    spans at most [`MAX_OVERLAP_WORDS`] words and [`MAX_OVERLAP_BYTES`] bytes, and equals a
//!    prefix of the continuation (after its leading whitespace) is removed.
//!    Limit: a genuine repetition of the last words ("very, very") is indistinguishable from
//!    such an echo and is removed too; text is compared exactly (no case or punctuation
//!    folding), so an echo that differs in any character is kept.
//!
//! Text is buffered until the decision is certain (at most ~200 bytes plus whitespace).

/// At most this many words of the delivered text are considered repeated.
pub const MAX_OVERLAP_WORDS: usize = 10;
/// At most this many bytes of the delivered text are considered repeated.
pub const MAX_OVERLAP_BYTES: usize = 200;
/// Past this much buffered text the overlap decision is taken with what is there.
const MAX_BUFFER: usize = 1024;

#[derive(Debug, Clone, Default)]
pub(crate) struct Seam {
    /// Remembered whitespace not yet matched by the continuation.
    ws: String,
    /// Overlap candidates, longest first; `None` once decided (or for prefill).
    candidates: Option<Vec<String>>,
    buf: String,
    done: bool,
}

impl Seam {
    /// Prefill seam: only the remembered whitespace.
    pub fn prefill(trailing_ws: &str) -> Seam {
        Seam {
            ws: trailing_ws.to_owned(),
            done: trailing_ws.is_empty(),
            ..Seam::default()
        }
    }

    /// Instructed seam: overlap with `delivered` (already trimmed), then whitespace.
    pub fn instructed(delivered: &str, trailing_ws: &str) -> Seam {
        let candidates = overlap_candidates(delivered);
        let done = trailing_ws.is_empty() && candidates.is_empty();
        Seam {
            ws: trailing_ws.to_owned(),
            candidates: Some(candidates),
            done,
            ..Seam::default()
        }
    }

    /// Text is being held back.
    pub fn holding(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Feed the next continuation text. `None`: held back, more is needed to decide. `fin`:
    /// no more text will come for this block (decide now).
    pub fn feed(&mut self, text: &str, fin: bool) -> Option<String> {
        if self.done {
            return Some(text.to_owned());
        }
        self.buf.push_str(text);
        if let Some(candidates) = &self.candidates {
            let body = self.buf.trim_start();
            let lead = self.buf.len() - body.len();
            let undecided = candidates
                .iter()
                .any(|c| c.len() > body.len() && c.starts_with(body));
            if undecided && !fin && self.buf.len() < MAX_BUFFER {
                return None;
            }
            if let Some(c) = candidates.iter().find(|c| body.starts_with(c.as_str())) {
                self.buf.replace_range(..lead + c.len(), "");
            }
            self.candidates = None;
        }
        let common = common_prefix(&self.ws, &self.buf);
        self.ws.replace_range(..common, "");
        self.buf.replace_range(..common, "");
        let out = std::mem::take(&mut self.buf);
        if !out.is_empty() || self.ws.is_empty() {
            self.done = true;
        }
        Some(out)
    }

    /// Decide with what is held (the block or stream ends): the text to emit, maybe empty.
    pub fn flush(&mut self) -> String {
        if self.buf.is_empty() {
            return String::new();
        }
        self.feed("", true).unwrap_or_default()
    }
}

/// Byte length of the common prefix of `a` and `b` (on char boundaries).
fn common_prefix(a: &str, b: &str) -> usize {
    a.chars()
        .zip(b.chars())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len_utf8())
        .sum()
}

/// Suffixes of `delivered` starting on a word boundary, within the limits, longest first.
pub(crate) fn overlap_candidates(delivered: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut prev_ws = true;
    for (i, ch) in delivered.char_indices() {
        let is_ws = ch.is_whitespace();
        if prev_ws && !is_ws {
            let suffix = &delivered[i..];
            if suffix.len() <= MAX_OVERLAP_BYTES
                && suffix.split_whitespace().count() <= MAX_OVERLAP_WORDS
                && !suffix.trim_end().is_empty()
            {
                out.push(suffix.to_owned());
            }
        }
        prev_ws = is_ws;
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seam: &mut Seam, pieces: &[&str]) -> String {
        let mut out = String::new();
        for p in pieces {
            if let Some(t) = seam.feed(p, false) {
                out.push_str(&t);
            }
        }
        out.push_str(&seam.flush());
        out
    }

    #[test]
    fn prefill_strips_exactly_the_remembered_whitespace_across_deltas() {
        assert_eq!(
            run(&mut Seam::prefill("\n\n"), &["\n", "\nNext", " word"]),
            "Next word"
        );
        assert_eq!(run(&mut Seam::prefill(" "), &[" How", " are"]), "How are");
        // The model chose different whitespace: keep what differs, nothing is lost.
        assert_eq!(run(&mut Seam::prefill(" "), &["\nHow"]), "\nHow");
        assert_eq!(run(&mut Seam::prefill("\n\n"), &["\n", "x"]), "x");
        assert_eq!(run(&mut Seam::prefill(""), &[" a"]), " a");
    }

    #[test]
    fn prefill_seam_passes_later_whitespace_through() {
        let mut s = Seam::prefill(" ");
        assert_eq!(s.feed(" a", false).as_deref(), Some("a"));
        assert_eq!(s.feed(" b", false).as_deref(), Some(" b"));
    }

    #[test]
    fn instructed_removes_the_longest_echo_on_a_word_boundary() {
        let d = "The quick brown";
        assert_eq!(
            run(&mut Seam::instructed(d, " "), &["quick ", "brown fox"]),
            "fox"
        );
        assert_eq!(run(&mut Seam::instructed(d, " "), &[" fox"]), "fox");
        assert_eq!(run(&mut Seam::instructed(d, ""), &[" fox"]), " fox");
        assert_eq!(
            run(&mut Seam::instructed(d, " "), &["fox jumps"]),
            "fox jumps"
        );
        // Mid-word cut: the echo starts at the word start.
        assert_eq!(
            run(&mut Seam::instructed("The quick bro", ""), &["brown fox"]),
            "wn fox"
        );
        // Not on a word boundary: "own" is not an echo of "brown".
        assert_eq!(run(&mut Seam::instructed(d, ""), &["own"]), "own");
    }

    #[test]
    fn instructed_holds_text_until_the_decision_is_certain() {
        let mut s = Seam::instructed("one two three", " ");
        assert_eq!(s.feed("two", false), None);
        assert_eq!(s.feed(" thr", false), None);
        assert_eq!(s.feed("ee four", false).as_deref(), Some("four"));
        // A short answer that ends while undecided is flushed as is.
        let mut s = Seam::instructed("one two three", "");
        assert_eq!(s.feed("two", false), None);
        assert_eq!(s.flush(), "two");
    }

    #[test]
    fn candidates_respect_the_word_and_byte_limits() {
        let d = (1..=15)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let c = overlap_candidates(&d);
        assert_eq!(c.len(), MAX_OVERLAP_WORDS);
        assert_eq!(c[0], "w6 w7 w8 w9 w10 w11 w12 w13 w14 w15");
        let long = "x".repeat(300);
        assert!(overlap_candidates(&long).is_empty());
    }
}
