//! The bounded rules of the instructed seam, as pure functions over the delivered text and
//! the head of the continuation (see `seam` for the order they run in).
//!
//! Each rule answers [`Verdict::NeedMore`] while more continuation text could change its
//! answer, so the seam holds text back only as long as a rule is undecided, and never past
//! its look-ahead bound.

/// Longest preamble removed ("Continuing from where I left off:").
pub const MAX_PREAMBLE_BYTES: usize = 160;
/// Longest fence line removed when a code fence is reopened.
pub const MAX_FENCE_LINE_BYTES: usize = 64;
/// A continuation that starts with this many bytes of the delivered text (or all of it, when
/// shorter) restarted the answer.
pub const RESTART_PROBE_BYTES: usize = 24;

/// A rule's answer for the head of a continuation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// More text is needed to decide.
    NeedMore,
    /// The rule applies to the first `n` bytes.
    Found(usize),
    /// The rule does not apply.
    No,
}

/// How preambles start (case-sensitive: a model's preamble opens a sentence).
const PREAMBLE_STARTS: &[&str] = &[
    "Continuing",
    "Continued",
    "Continuation",
    "Resuming",
    "Picking up",
    "Here is",
    "Here's",
    "Here\u{2019}s",
    "Sure",
    "Okay",
    "OK",
    "Ok,",
    "Certainly",
    "Of course",
    "Apologies",
    "Sorry",
    "I'll continue",
    "I will continue",
    "Let me continue",
    "(continued",
    "(Continued",
    "[continued",
    "[Continued",
    "...",
    "\u{2026}",
];

/// A preamble names what it does (lowercase; a word stem, or a phrase ending a word:
/// "the rest" but not "the restaurant").
const PREAMBLE_STEMS: &[&str] = &["continu", "resum"];
const PREAMBLE_WORDS: &[&str] = &[
    "pick up",
    "picking up",
    "left off",
    "where i stopped",
    "where it stopped",
    "rest of",
    "the rest",
    "remainder",
    "cut off",
];

/// Characters that end a preamble when followed by whitespace (or the end of the line).
const PREAMBLE_ENDS: &[char] = &[':', '.', '\u{2026}', ')', ']', '!'];

/// A preamble at the start of `head` (no leading whitespace): its length including the
/// whitespace after it. A bare leading ellipsis glued to text ("...ld fox") is one too.
pub fn preamble(head: &str, fin: bool) -> Verdict {
    if head.is_empty() {
        return if fin { Verdict::No } else { Verdict::NeedMore };
    }
    if !PREAMBLE_STARTS.iter().any(|s| head.starts_with(s)) {
        let could = PREAMBLE_STARTS.iter().any(|s| s.starts_with(head));
        return if could && !fin {
            Verdict::NeedMore
        } else {
            Verdict::No
        };
    }
    for dots in ["...", "\u{2026}"] {
        if let Some(rest) = head.strip_prefix(dots) {
            match rest.chars().next() {
                Some(c) if is_word(c) => return Verdict::Found(dots.len()),
                None if !fin => return Verdict::NeedMore,
                _ => {}
            }
        }
    }
    let line_end = head.find('\n').unwrap_or(head.len());
    let window = &head[..floor_boundary(head, line_end.min(MAX_PREAMBLE_BYTES))];
    for (i, c) in window.char_indices() {
        let end = i + c.len_utf8();
        // `:` `…` `)` `]` before whitespace; `.` `!` only before a line break (a sentence
        // that goes on is text: "Continuing the tradition, they sailed. Then …").
        let next = head[end..].chars().next();
        let ends = match c {
            '.' | '!' => next.map_or(fin, |n| n == '\n'),
            c if PREAMBLE_ENDS.contains(&c) => next.map_or(fin, char::is_whitespace),
            _ => false,
        };
        if !ends {
            // A sentence that ended without being a preamble: what follows is text.
            let sentence_end = matches!(c, '.' | '!' | '?')
                && !head[..i].ends_with('.')
                && next.is_some_and(char::is_whitespace);
            if sentence_end {
                return Verdict::No;
            }
            continue;
        }
        let lower = head[..end].to_lowercase();
        if names_continuing(&lower) {
            let ws = head[end..].len() - head[end..].trim_start().len();
            if end + ws == head.len() && !fin {
                return Verdict::NeedMore; // the whitespace after it may go on
            }
            return Verdict::Found(end + ws);
        }
    }
    let decided = head.len() >= MAX_PREAMBLE_BYTES || line_end < head.len() || fin;
    if decided {
        Verdict::No
    } else {
        Verdict::NeedMore
    }
}

/// `lower` names continuing: a stem anywhere, or a phrase ending at a word boundary.
fn names_continuing(lower: &str) -> bool {
    PREAMBLE_STEMS.iter().any(|w| lower.contains(w))
        || PREAMBLE_WORDS.iter().any(|w| {
            lower
                .match_indices(w)
                .any(|(i, _)| !lower[i + w.len()..].starts_with(char::is_alphanumeric))
        })
}

/// The info string of the code fence still open at the end of `text`, if one is.
pub fn open_fence(text: &str) -> Option<&str> {
    let mut open: Option<&str> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(info) = t.strip_prefix("```") {
            open = match open {
                Some(_) => None,
                None => Some(info.trim()),
            };
        }
    }
    open
}

/// A reopened fence at the start of `head`: a line "```info" with the same non-empty info
/// string as the fence still open in the delivered text; its length with the newline.
pub fn reopened_fence(head: &str, info: &str, fin: bool) -> Verdict {
    if info.is_empty() {
        return Verdict::No;
    }
    let want = format!("```{info}");
    let Some(nl) = head.find('\n') else {
        let could = want.starts_with(head.trim_end()) || head.starts_with(&want);
        return if could && !fin && head.len() <= MAX_FENCE_LINE_BYTES {
            Verdict::NeedMore
        } else {
            Verdict::No
        };
    };
    if head[..nl].trim_end() == want {
        Verdict::Found(nl + 1)
    } else {
        Verdict::No
    }
}

/// A word character: letters, digits, `_` (any script).
pub fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Largest char boundary of `s` at or below `i`.
pub fn floor_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Whether an echo of `candidate` (a suffix of the delivered text starting on a word),
/// followed in the continuation by `next`, is removed. `lead`: the continuation's whitespace
/// before it; `before`: the delivered whitespace before the candidate.
pub fn echo_accepted(candidate: &str, next: Option<char>, lead: &str, before: &str) -> bool {
    let extends_word = candidate.chars().last().is_some_and(is_word) && next.is_some_and(is_word);
    if !extends_word {
        return true;
    }
    // The echo re-types a cut word ("bro" → "brown"): certain with no whitespace before it,
    // with two words or more, or with the same line break / indentation as before it; a
    // single word after a single space is a new word ("an" → " answer").
    lead.is_empty()
        || candidate.split_whitespace().nth(1).is_some()
        || (before.ends_with(lead) && (lead.contains('\n') || lead.chars().count() >= 2))
}

/// The continuation's leading whitespace `v`, given the client's trailing whitespace `w`:
/// what of it to emit. Whitespace that extends the client's is kept (`w`="\n", `v`="\n\n":
/// one more newline); other whitespace is the model's different choice and the client's
/// wins, except the indentation of a new line when the client stands at a line start.
pub fn join_whitespace<'a>(w: &str, v: &'a str) -> &'a str {
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

/// `text` opens a markdown block: a list item, a heading, a fence or a quote.
pub fn opens_block(text: &str) -> bool {
    let t = text;
    if ["- ", "* ", "+ ", "> ", "```"]
        .iter()
        .any(|m| t.starts_with(m))
    {
        return true;
    }
    let hashes = t.chars().take_while(|c| *c == '#').count();
    if (1..=6).contains(&hashes) && t[hashes..].starts_with(' ') {
        return true;
    }
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    (1..=3).contains(&digits) && (t[digits..].starts_with(". ") || t[digits..].starts_with(") "))
}

/// `text` may still become a block opener with more text ("1", "-", "##", "``").
pub fn may_open_block(text: &str) -> bool {
    let digits = text.chars().take_while(char::is_ascii_digit).count();
    let hashes = text.chars().take_while(|c| *c == '#').count();
    matches!(text, "-" | "*" | "+" | ">" | "`" | "``")
        || (text.len() == digits && (1..=3).contains(&digits))
        || (text.len() == digits + 1 && (1..=3).contains(&digits) && text.ends_with(['.', ')']))
        || (text.len() == hashes && (1..=6).contains(&hashes))
}

/// The delivered text's last line is a block (list item, heading, quote) or introduces one.
pub fn in_block_context(delivered: &str) -> bool {
    let last = delivered.rsplit('\n').next().unwrap_or("");
    !last.is_empty() && (opens_block(last.trim_start()) || delivered.ends_with(':'))
}

/// A space is needed between the delivered text and `next` (after a removed preamble).
pub fn needs_space(delivered: &str, next: &str) -> bool {
    let last = delivered.chars().last();
    let first = next.chars().next();
    last.is_some_and(|c| is_word(c) || ".,;:!?)".contains(c)) && first.is_some_and(is_word)
}

/// How a pattern matches the start of a text, whitespace runs matching any whitespace run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loose {
    /// The whole pattern matched the first `n` bytes of the text.
    Matched(usize),
    /// The text ran out first, matching so far.
    Prefix,
    No,
}

/// Match `pattern` against the start of `text`, where a run of whitespace on either side
/// matches any non-empty run on the other (a model echoing "quick brown\nfox" as "quick
/// brown fox"); everything else compares exactly.
pub fn loose_match(pattern: &str, text: &str) -> Loose {
    let (mut p, mut t) = (0, 0);
    loop {
        let Some(pc) = pattern[p..].chars().next() else {
            return Loose::Matched(t);
        };
        let Some(tc) = text[t..].chars().next() else {
            return Loose::Prefix;
        };
        if pc.is_whitespace() {
            if !tc.is_whitespace() {
                return Loose::No;
            }
            p += ws_run(&pattern[p..]);
            t += ws_run(&text[t..]);
        } else if pc == tc {
            p += pc.len_utf8();
            t += tc.len_utf8();
        } else {
            return Loose::No;
        }
    }
}

/// Streaming [`loose_match`] of the delivered text `d` from byte `pos`: `in_ws` says a
/// whitespace run of the text matched and may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// All of the text matched; the delivered text goes on at `pos`.
    Consumed { pos: usize, in_ws: bool },
    /// The delivered text was matched whole by the first `n` bytes of the text.
    Done(usize),
    /// The text differs after `pos` bytes of the delivered text.
    Mismatch { pos: usize },
}

pub fn advance(d: &str, mut pos: usize, mut in_ws: bool, text: &str) -> Advance {
    for (i, c) in text.char_indices() {
        if in_ws && c.is_whitespace() {
            continue;
        }
        in_ws = false;
        let Some(dc) = d[pos..].chars().next() else {
            return Advance::Done(i);
        };
        if dc.is_whitespace() && c.is_whitespace() {
            pos += ws_run(&d[pos..]);
            in_ws = true;
        } else if dc == c {
            pos += c.len_utf8();
        } else {
            return Advance::Mismatch { pos };
        }
    }
    if pos == d.len() && !in_ws {
        Advance::Done(text.len())
    } else {
        Advance::Consumed { pos, in_ws }
    }
}

fn ws_run(s: &str) -> usize {
    s.len() - s.trim_start().len()
}
