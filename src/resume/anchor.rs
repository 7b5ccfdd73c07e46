//! The anchor of an instructed continuation (docs/continuation.md): the last words of the
//! delivered text that the continuation turn asks the model to repeat, and how to find them
//! in a reply whatever surrounds them.
//!
//! Everything here is compared in **normal form**: letters and digits only, lower-cased, so
//! a repeat with other case, punctuation or whitespace ("Mike, tango!" for "mike tango") is
//! still the anchor. The anchor is chosen to occur exactly once in the delivered text's
//! normal form, so in any echo or restart of that text its first occurrence is where the
//! delivered text ends.

/// An anchor has at least this many words (unless the delivered text has fewer).
pub const MIN_WORDS: usize = 4;
/// An anchor's normal form has at least this many characters.
pub const MIN_NORMAL_CHARS: usize = 16;
/// A delivered text with fewer letters and digits has no anchor at all.
pub const MIN_STRICT_CHARS: usize = 8;
/// Longest anchor, in words and bytes.
pub const MAX_WORDS: usize = 48;
pub const MAX_BYTES: usize = 320;

/// The marker a model replies with when its answer was already complete.
pub const COMPLETE_MARKER: &str = "[[ANSWER COMPLETE]]";

/// The anchor chosen for a delivered text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The anchor as quoted in the instruction: the delivered suffix, whitespace runs
    /// collapsed to one space.
    pub quoted: String,
    /// Its normal form.
    pub normal: Vec<char>,
    /// The opening quotes in the delivered text right before the anchor's first letter or
    /// digit: the answer quotes the anchor itself (a reply repeating them is no mention).
    pub open_before: Vec<char>,
    /// The whole delivered text is shorter than an anchor should be: the reply must begin
    /// with it (nothing but punctuation or spaces before it), as words that short could
    /// occur in an opener.
    pub strict: bool,
}

/// The user turn asking for the rest of an answer, anchored on `anchor`.
pub fn instruction(anchor: &Anchor) -> String {
    format!(
        "Your previous response was cut off. Reply in exactly this form: first repeat, verbatim, \
the last words you wrote, \u{ab}{}\u{bb}, then continue your response from exactly where it \
stopped, adding no introduction or comment (if it stopped inside a word, finish that word). \
If your previous response was already complete, reply with only {COMPLETE_MARKER} instead.",
        anchor.quoted
    )
}

/// One character of a normal form and the raw bytes it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormChar {
    pub c: char,
    /// Byte range of the raw character in the text.
    pub start: usize,
    pub end: usize,
}

/// The normal form of `text` with where each character came from.
pub fn normal_map(text: &str) -> Vec<NormChar> {
    let mut out = Vec::with_capacity(text.len());
    for (i, ch) in text.char_indices() {
        if ch.is_alphanumeric() {
            let end = i + ch.len_utf8();
            out.extend(ch.to_lowercase().map(|c| NormChar { c, start: i, end }));
        }
    }
    out
}

/// The normal form of `text`.
pub fn normal(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Where `needle` occurs in `hay` (overlapping occurrences included).
pub fn occurrences<'a>(hay: &'a [char], needle: &'a [char]) -> impl Iterator<Item = usize> + 'a {
    let n = needle.len();
    (0..(hay.len() + 1).saturating_sub(n.max(1)))
        .filter(move |&i| n > 0 && &hay[i..i + n] == needle)
}

/// Choose the anchor of `delivered` (its trailing whitespace already trimmed): the shortest
/// run of its last words with at least [`MIN_WORDS`] words and [`MIN_NORMAL_CHARS`] normal
/// characters (or the whole text) whose normal form occurs once in the whole text's.
/// `None` when no suffix within the bounds is unique, or the text is too short to anchor on.
pub fn choose(delivered: &str) -> Option<Anchor> {
    let whole = normal(delivered);
    // Fewer letters and digits than this cannot be told from the start of an opener
    // ("c" from "Continuing"): no instructed continuation (replay, or the typed error).
    if whole.len() < MIN_STRICT_CHARS {
        return None;
    }
    if whole.len() < MIN_NORMAL_CHARS {
        let quoted = delivered.split_whitespace().collect::<Vec<_>>().join(" ");
        if quoted.contains(['\u{ab}', '\u{bb}']) || delivered.len() > MAX_BYTES {
            return None;
        }
        return Some(Anchor {
            quoted,
            normal: whole,
            open_before: Vec::new(),
            strict: true,
        });
    }
    let starts = word_starts(delivered);
    for (words, &start) in starts.iter().rev().enumerate() {
        let words = words + 1;
        let suffix = &delivered[start..];
        if words > MAX_WORDS || suffix.len() > MAX_BYTES {
            return None;
        }
        let norm = normal(suffix);
        let long_enough = (words >= MIN_WORDS && norm.len() >= MIN_NORMAL_CHARS) || start == 0;
        if !long_enough || norm.is_empty() {
            continue;
        }
        if occurrences(&whole, &norm).nth(1).is_none() {
            let quoted = suffix.split_whitespace().collect::<Vec<_>>().join(" ");
            if quoted.contains(['\u{ab}', '\u{bb}']) {
                return None;
            }
            let first = start
                + suffix
                    .char_indices()
                    .find(|(_, c)| c.is_alphanumeric())
                    .map_or(0, |(i, _)| i);
            let open_before = opening_quotes(delivered, None, first);
            return Some(Anchor {
                quoted,
                normal: norm,
                open_before,
                strict: false,
            });
        }
    }
    None
}

/// The characters right before byte `at` of `text` that are not letters or digits, at
/// most 8 (the nearest last).
pub fn run_before(text: &str, at: usize) -> String {
    let run: Vec<char> = text[..at]
        .chars()
        .rev()
        .take_while(|c| !c.is_alphanumeric())
        .take(8)
        .collect();
    run.into_iter().rev().collect()
}

/// The opening quotes among the characters right before byte `start` of `text` that are not
/// letters or digits (`prev`: the character before `text`, when `text` is a window). A
/// straight quote (`"` `'`) right after a word closes (`"…": echo`); after a space or at
/// the start it opens; curly and angle quotes say which they are.
pub fn opening_quotes(text: &str, prev: Option<char>, start: usize) -> Vec<char> {
    let run = run_before(text, start);
    let at = start - run.len();
    let before_run = text[..at]
        .chars()
        .last()
        .or(if at == 0 { prev } else { None });
    let mut attached = before_run.is_some_and(char::is_alphanumeric);
    let mut out = Vec::new();
    for c in run.chars() {
        if c.is_whitespace() {
            attached = false;
            continue;
        }
        let opening = match c {
            '"' | '\'' => !attached,
            c => is_open_quote(c),
        };
        if opening {
            out.push(c);
        }
    }
    out
}

/// Byte offsets where words start (a non-space character after a space or at the start).
fn word_starts(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut prev_ws = true;
    for (i, ch) in text.char_indices() {
        let ws = ch.is_whitespace();
        if prev_ws && !ws {
            out.push(i);
        }
        prev_ws = ws;
    }
    out
}

/// Opening quotation marks: an anchor right after one of these (that the delivered text
/// does not have there) is mentioned, not repeated.
pub fn is_open_quote(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | '\u{ab}' | '\u{201c}' | '\u{2018}' | '\u{201e}' | '\u{2039}'
    )
}

/// The text ended while it still matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partial;

/// The completion marker at `text[at..]`, whitespace runs standing for one space, case aside:
/// `Some(len)` matched, `None` no; `Err` the text ends while it still matches.
pub fn marker_at(text: &str, at: usize) -> Result<Option<usize>, Partial> {
    let mut m = COMPLETE_MARKER.chars().peekable();
    let mut t = text[at..].char_indices().peekable();
    loop {
        let Some(&mc) = m.peek() else {
            return Ok(Some(t.peek().map_or(text.len() - at, |(i, _)| *i)));
        };
        let Some(&(_, tc)) = t.peek() else {
            return Err(Partial);
        };
        if mc == ' ' {
            if !tc.is_whitespace() {
                return Ok(None);
            }
            while t.peek().is_some_and(|(_, c)| c.is_whitespace()) {
                t.next();
            }
            m.next();
        } else if mc.eq_ignore_ascii_case(&tc) {
            m.next();
            t.next();
        } else {
            return Ok(None);
        }
    }
}

/// Where the completion marker starts in `text`, if it does (or may, at its end: `Err`).
pub fn find_marker(text: &str) -> Result<Option<(usize, usize)>, usize> {
    for (i, _) in text.match_indices("[[") {
        match marker_at(text, i) {
            Ok(Some(len)) => return Ok(Some((i, len))),
            Ok(None) => {}
            Err(Partial) => return Err(i),
        }
    }
    if text.ends_with('[') {
        return Err(text.len() - 1);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[char]) -> String {
        v.iter().collect()
    }

    #[test]
    fn the_anchor_is_the_shortest_unique_run_of_last_words() {
        let a = choose("Alpha bravo charlie delta echo foxtrot golf hotel.").unwrap();
        assert_eq!(a.quoted, "echo foxtrot golf hotel.");
        assert_eq!(s(&a.normal), "echofoxtrotgolfhotel");
        // The last four words occur earlier too: the anchor grows until it is unique.
        let a = choose("tango mike tango mike tango mike tango mike, then tango mike tango mike")
            .unwrap();
        assert_eq!(a.quoted, "then tango mike tango mike");
        // Short texts anchor on all of it (strictly when very short); never unique: none.
        assert_eq!(
            choose("Hello wonderful world").unwrap().quoted,
            "Hello wonderful world"
        );
        assert!(!choose("Hello wonderful world").unwrap().strict);
        assert!(choose("Hi there you").unwrap().strict);
        assert_eq!(choose("Hi there"), None);
        assert_eq!(choose("c"), None);
        assert_eq!(choose(&"na ".repeat(200)), None);
        assert_eq!(choose("--- *** ---"), None);
    }

    #[test]
    fn normal_form_keeps_letters_and_digits_lowercased() {
        assert_eq!(s(&normal("…Mike, tango! 42 Ünïcode")), "miketango42ünïcode");
        let m = normal_map("a, B");
        assert_eq!(m.len(), 2);
        assert_eq!((m[1].c, m[1].start, m[1].end), ('b', 3, 4));
    }

    #[test]
    fn the_marker_is_found_with_any_case_and_spacing() {
        assert_eq!(find_marker("Sure. [[answer  complete]]"), Ok(Some((6, 20))));
        assert_eq!(find_marker("[[ANSWER COMP"), Err(0));
        assert_eq!(find_marker("x ["), Err(2));
        assert_eq!(find_marker("the answer is complete"), Ok(None));
        assert_eq!(find_marker("[[other]] text"), Ok(None));
    }

    #[test]
    fn the_instruction_quotes_the_anchor_with_collapsed_whitespace() {
        let a = choose("one two\nthree  four five six").unwrap();
        let text = instruction(&a);
        assert!(text.contains("\u{ab}three four five six\u{bb}"), "{text}");
        assert!(text.contains(COMPLETE_MARKER));
    }
}
