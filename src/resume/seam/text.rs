//! Text helpers of the seam: where a match starts, whether it is quoted, whitespace and
//! punctuation at the join.

use crate::resume::anchor;

/// The match at byte `start` of `buf` begins a word (`prev`: the character before `buf`).
pub(super) fn starts_word(buf: &str, prev: Option<char>, start: usize) -> bool {
    let before = buf[..start].chars().last().or(prev);
    !before.is_some_and(char::is_alphanumeric)
}

/// The match at `start` is quoted: an opening quote in the punctuation right before it that
/// the delivered text does not open there itself.
pub(super) fn quoted(buf: &str, prev: Option<char>, start: usize, delivered_open: &[char]) -> bool {
    anchor::opening_quotes(buf, prev, start)
        .iter()
        .any(|c| !delivered_open.contains(c))
}

pub(super) enum Loose {
    /// The whole pattern matched the first `n` bytes.
    Matched(usize),
    /// The text ran out while matching.
    Partial,
    No,
}

/// `pattern` at the start of `text`, a whitespace run matching any whitespace run.
pub(super) fn loose_prefix(pattern: &str, text: &str) -> Loose {
    let (mut p, mut t) = (pattern, text);
    loop {
        let Some(pc) = p.chars().next() else {
            return Loose::Matched(text.len() - t.len());
        };
        let Some(tc) = t.chars().next() else {
            return Loose::Partial;
        };
        if pc.is_whitespace() && tc.is_whitespace() {
            p = p.trim_start();
            t = t.trim_start();
            if t.is_empty() {
                return Loose::Partial;
            }
        } else if pc == tc {
            p = &p[pc.len_utf8()..];
            t = &t[tc.len_utf8()..];
        } else {
            return Loose::No;
        }
    }
}

/// Only sentence-ending punctuation.
pub(super) fn sentence_end(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| matches!(c, '.' | '!' | '?' | '\u{2026}'))
}

/// Byte length of the common prefix of `a` and `b` (on char boundaries).
pub(super) fn common_prefix(a: &str, b: &str) -> usize {
    a.chars()
        .zip(b.chars())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len_utf8())
        .sum()
}

pub(super) fn floor_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The continuation's leading whitespace `v`, given the client's trailing whitespace `w`:
/// what of it to emit. Whitespace that extends the client's is kept (`w`="\n", `v`="\n\n":
/// one more newline); other whitespace is the model's different choice and the client's
/// wins, except the indentation of a new line when the client stands at a line start.
pub(crate) fn join_whitespace<'a>(w: &str, v: &'a str) -> &'a str {
    if w.is_empty() {
        return v;
    }
    if let Some(rest) = v.strip_prefix(w) {
        return rest;
    }
    if w.ends_with('\n') {
        let indent = &v[v.rfind('\n').map_or(0, |i| i + 1)..];
        if indent.chars().count() >= 2 || indent.contains('\t') {
            return indent;
        }
    }
    ""
}
