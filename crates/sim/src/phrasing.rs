//! Instructed continuations under the continuation protocol (`docs/continuation.md`): how the
//! simulated model words its reply to the relay's "repeat «ANCHOR», then continue" turn.
//!
//! The reply is one of the [`Class`]es (the name is logged as `phrasing`), drawn from a seed
//! of the conversation and attempt, or forced for a conversation's first instructed
//! continuation by `sim:phrase=CLASS`. Most classes follow the protocol (the anchor, placed so
//! that the delivered text's end is where it ends, then the rest; or the completion marker),
//! with the words around it generated ([`opener`]): echoes of different lengths, openers in
//! several languages, quotes, fences, list markers, restarts. A few break it (0.5% of the
//! default mix), as real models sometimes ignore instructions.

use super::gen::{self, Rng};

/// The completion marker of the protocol.
pub const MARKER: &str = "[[ANSWER COMPLETE]]";

/// Broken replies in the default mix, per 10,000.
pub const BROKEN_PER_10000: u64 = 50;

/// The anchor of a protocol continuation turn: the text between its first `«` and its last
/// `»`, when the turn also names the completion marker. `None` for any other turn.
pub fn anchor_of(ask: &str) -> Option<&str> {
    if !ask.contains(MARKER) {
        return None;
    }
    let start = ask.find('«')? + '«'.len_utf8();
    let end = ask.rfind('»')?;
    (end > start).then(|| &ask[start..end])
}

/// The protocol's normal form: letters and digits only, lower-cased.
pub fn normal(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

macro_rules! classes {
    ($($variant:ident = $name:literal,)*) => {
        /// How a reply to an instructed continuation is worded.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Class { $($variant,)* }

        /// Every class.
        pub const CLASSES: &[Class] = &[$(Class::$variant,)*];

        impl Class {
            /// The name as in `sim:phrase=NAME` and the log's `phrasing`.
            pub fn name(self) -> &'static str {
                match self { $(Class::$variant => $name,)* }
            }

            /// By name (`random` and unknown names: `None`).
            pub fn from_name(name: &str) -> Option<Class> {
                match name { $($name => Some(Class::$variant),)* _ => None }
            }
        }
    };
}

classes! {
    Anchor = "anchor",
    EchoWords = "echo-words",
    EchoSentence = "echo-sentence",
    EchoTwoSentences = "echo-two-sentences",
    Recapitalised = "recapitalised",
    Punctuation = "punctuation",
    Ellipsis = "ellipsis",
    Whitespace = "whitespace",
    Opener = "opener",
    QuotedOpener = "quoted-opener",
    Restart = "restart",
    NearRestart = "near-restart",
    Fence = "fence",
    List = "list",
    CompleteMarker = "complete-marker",
    CompleteOpener = "complete-opener",
    CompleteAnchor = "complete-anchor",
    CompleteAnchorMarker = "complete-anchor-marker",
    CompleteEmpty = "complete-empty",
    BrokenClean = "broken-clean",
    BrokenShortEcho = "broken-short-echo",
    BrokenPreamble = "broken-preamble",
    BrokenDoneSentence = "broken-done-sentence",
}

impl Class {
    /// A class for an answer that was already complete (nothing left to say).
    pub fn for_complete(self) -> bool {
        matches!(
            self,
            Class::CompleteMarker
                | Class::CompleteOpener
                | Class::CompleteAnchor
                | Class::CompleteAnchorMarker
                | Class::CompleteEmpty
                | Class::BrokenDoneSentence
        )
    }

    /// The reply does not follow the protocol: the relay must not splice it.
    pub fn broken(self) -> bool {
        self.name().starts_with("broken-")
    }
}

/// A class from the default mix: the protocol-following classes of the side (`complete`: the
/// delivered text was the whole answer) with equal weight, the broken ones at
/// [`BROKEN_PER_10000`] in total.
pub fn draw(seed: u64, complete: bool) -> Class {
    let side = |broken: bool| -> Vec<Class> {
        CLASSES
            .iter()
            .copied()
            .filter(|c| c.for_complete() == complete && c.broken() == broken)
            .collect()
    };
    let mut rng = Rng::new(seed ^ 0x00DE_FA01_7C1A_55E5);
    let broken = rng.below(10_000) < BROKEN_PER_10000;
    let pool = side(broken);
    pool[rng.below(pool.len() as u64) as usize]
}

/// The class of a reply: `sim:phrase=CLASS` in `all_text` when this is the conversation's
/// first instructed continuation (`first`) and the class fits the side, else [`draw`].
pub fn choose(all_text: &str, first: bool, seed: u64, complete: bool) -> Class {
    let forced = gen::directive(all_text, "phrase").and_then(Class::from_name);
    match forced {
        Some(c) if first && c.for_complete() == complete => c,
        _ => draw(seed, complete),
    }
}

/// A worded reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Phrased {
    /// The class the text is (a class that cannot be made here falls back to a near one:
    /// `near-restart` with no word to change is a `restart`, `broken-short-echo` of a
    /// one-word anchor is `broken-clean`).
    pub class: Class,
    pub text: String,
}

/// Where the delivered text's words are, and its anchor.
struct Delivered<'a> {
    /// The delivered text without its trailing whitespace.
    body: &'a str,
    /// Its trailing whitespace.
    ws: &'a str,
    anchor: &'a str,
    /// Where the anchor starts in `body`.
    anchor_start: usize,
    /// Start of every word of `body`.
    word_starts: Vec<usize>,
}

impl<'a> Delivered<'a> {
    fn new(delivered: &'a str, anchor: &'a str) -> Self {
        let body = delivered.trim_end();
        let ws = &delivered[body.len()..];
        let word_starts: Vec<usize> = body
            .char_indices()
            .filter(|&(i, c)| {
                !c.is_whitespace() && (i == 0 || body[..i].ends_with(char::is_whitespace))
            })
            .map(|(i, _)| i)
            .collect();
        let want = normal(anchor);
        let anchor_words = anchor.split_whitespace().count().max(1);
        let anchor_start = word_starts
            .iter()
            .rev()
            .copied()
            .find(|&i| normal(&body[i..]).len() >= want.len())
            .filter(|&i| normal(&body[i..]) == want)
            .unwrap_or_else(|| {
                let k = word_starts.len().saturating_sub(anchor_words);
                word_starts.get(k).copied().unwrap_or(0)
            });
        Delivered {
            body,
            ws,
            anchor,
            anchor_start,
            word_starts,
        }
    }

    fn anchor_words(&self) -> usize {
        self.anchor.split_whitespace().count().max(1)
    }

    /// The start of the `k`-th last word (the first word when there are fewer).
    fn last_words_start(&self, k: usize) -> usize {
        let n = self.word_starts.len();
        self.word_starts
            .get(n.saturating_sub(k))
            .copied()
            .unwrap_or(0)
    }

    /// Start of the `n`-th last sentence (1: the last one).
    fn sentence_start(&self, n: usize) -> usize {
        let mut starts = vec![0];
        let b = self.body.as_bytes();
        for i in 1..b.len() {
            if matches!(b[i - 1], b'.' | b'!' | b'?') && b[i].is_ascii_whitespace() {
                let next = self.body[i..]
                    .find(|c: char| !c.is_whitespace())
                    .map(|j| i + j);
                if let Some(j) = next {
                    if starts.last() != Some(&j) {
                        starts.push(j);
                    }
                }
            }
        }
        starts[starts.len().saturating_sub(n)]
    }

    /// The delivered text from `start` (never after the anchor's start).
    fn echo_from(&self, start: usize) -> &'a str {
        &self.body[start.min(self.anchor_start)..]
    }

    /// An echo: the anchor or more of the delivered text's end.
    fn some_echo(&self, rng: &mut Rng) -> &'a str {
        match rng.below(4) {
            0 => self.echo_from(self.anchor_start),
            1 => self.echo_from(self.sentence_start(1)),
            _ => {
                let k = self.anchor_words() + 1 + rng.below(6) as usize;
                self.echo_from(self.last_words_start(k))
            }
        }
    }
}

const EXCLAMATIONS: &[&str] = &[
    "Absolutely!",
    "No problem.",
    "Got it —",
    "Sure!",
    "Of course.",
    "Certainly!",
    "Right.",
    "Okay —",
    "Alright,",
    "Understood.",
    "Bien sûr !",
    "D'accord.",
    "Pas de souci !",
    "Klar —",
    "Natürlich!",
    "Gerne.",
    "¡Claro!",
    "Por supuesto.",
    "¡Entendido!",
];

const SENTENCES: &[&str] = &[
    "Alright, from the cut-off point:",
    "Continuing from where I left off:",
    "Picking up where it stopped:",
    "Here is the rest.",
    "Here's the remainder of my response:",
    "Resuming:",
    "Happy to finish that thought.",
    "Let me complete that.",
    "Thanks for your patience.",
    "I'll finish the answer now.",
    "Sorry about that.",
    "Je reprends là où je m'étais arrêté :",
    "Voici la suite :",
    "Hier ist der Rest:",
    "Ich mache dort weiter, wo ich aufgehört habe:",
    "Continúo donde me quedé:",
    "Aquí está el resto:",
];

const DASHES: &[&str] = &["—", "–", "--", "..."];

fn pick<'a>(rng: &mut Rng, list: &[&'a str]) -> &'a str {
    list[rng.below(list.len() as u64) as usize]
}

/// A generated opener: an exclamation, an acknowledging sentence (with or without a word
/// about continuing), a dash, or two or three of them, in English, French, German or Spanish.
pub fn opener(rng: &mut Rng) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let shape = rng.below(6);
    if shape != 1 {
        parts.push(pick(rng, EXCLAMATIONS));
    }
    if shape >= 1 && shape != 5 {
        parts.push(pick(rng, SENTENCES));
    }
    if shape >= 4 || rng.below(8) == 0 {
        parts.push(pick(rng, DASHES));
    }
    parts.join(" ")
}

/// The separator between an opener and what follows.
fn gap(rng: &mut Rng) -> &'static str {
    ["\n\n", " ", "\n", "\n\n"][rng.below(4) as usize]
}

/// The reply of `class` to continue `delivered` (whose anchor is `anchor`) with `rest`
/// (empty: the answer was complete).
pub fn phrase(class: Class, delivered: &str, anchor: &str, rest: &str, seed: u64) -> Phrased {
    let d = Delivered::new(delivered, anchor);
    let mut rng = Rng::new(seed ^ 0x0051_A5E5);
    let tail = format!("{}{rest}", d.ws);
    let done = |class: Class, text: String| Phrased { class, text };
    let with_echo = |class: Class, head: &str, echo: &str| Phrased {
        class,
        text: format!("{head}{echo}{tail}"),
    };
    match class {
        Class::Anchor => with_echo(class, "", d.anchor),
        Class::EchoWords => {
            let k = d.anchor_words()
                + 1
                + rng.below(20_u64.saturating_sub(d.anchor_words() as u64).max(1)) as usize;
            with_echo(class, "", d.echo_from(d.last_words_start(k)))
        }
        Class::EchoSentence => with_echo(class, "", d.echo_from(d.sentence_start(1))),
        Class::EchoTwoSentences => with_echo(class, "", d.echo_from(d.sentence_start(2))),
        Class::Recapitalised => {
            let mut echo = d.some_echo(&mut rng);
            for _ in 0..4 {
                if echo.starts_with(char::is_lowercase) {
                    break;
                }
                echo = d.some_echo(&mut rng);
            }
            let mut chars = echo.chars();
            let first: String = chars
                .next()
                .map(|c| c.to_uppercase().collect())
                .unwrap_or_default();
            with_echo(class, "", &format!("{first}{}", chars.as_str()))
        }
        Class::Punctuation => with_echo(class, "", &punctuate(d.some_echo(&mut rng), &mut rng)),
        Class::Ellipsis => {
            let head = ["…", "...", "… ", "..."][rng.below(4) as usize];
            with_echo(class, head, d.some_echo(&mut rng))
        }
        Class::Whitespace => with_echo(class, "", &respace(d.some_echo(&mut rng), &mut rng)),
        Class::Opener => {
            let head = format!("{}{}", opener(&mut rng), gap(&mut rng));
            with_echo(class, &head, d.some_echo(&mut rng))
        }
        Class::QuotedOpener => {
            let (open, close) = [("“", "”"), ("\"", "\""), ("«", "»")][rng.below(3) as usize];
            let lead = [
                "Continuing from",
                "Picking up after",
                "Sure — resuming right after",
                "Je reprends après",
                "Weiter nach",
                "Continúo después de",
            ][rng.below(6) as usize];
            let head = format!("{lead} {open}{}{close}:{}", d.anchor, gap(&mut rng));
            with_echo(class, &head, d.some_echo(&mut rng))
        }
        Class::Restart => with_echo(class, "", d.body),
        Class::NearRestart => match near(&d, &mut rng) {
            Some(body) => with_echo(class, "", &body),
            None => with_echo(Class::Restart, "", d.body),
        },
        Class::Fence => {
            let head = ["```python\n", "```\n", "```text\n"][rng.below(3) as usize];
            with_echo(class, head, d.some_echo(&mut rng))
        }
        Class::List => {
            let head = ["- ", "* ", "1. "][rng.below(3) as usize];
            with_echo(class, head, d.some_echo(&mut rng))
        }
        Class::CompleteMarker => done(class, MARKER.to_owned()),
        Class::CompleteOpener => done(
            class,
            format!("{}{}{MARKER}", opener(&mut rng), gap(&mut rng)),
        ),
        Class::CompleteAnchor => done(class, d.anchor.to_owned()),
        Class::CompleteAnchorMarker => {
            done(class, format!("{}{}{MARKER}", d.anchor, gap(&mut rng)))
        }
        Class::CompleteEmpty => done(class, ["", "", " ", "\n"][rng.below(4) as usize].to_owned()),
        Class::BrokenClean => done(class, rest.to_owned()),
        Class::BrokenShortEcho => {
            let n = d.anchor_words();
            if n < 2 {
                return done(Class::BrokenClean, rest.to_owned());
            }
            let k = 1 + rng.below(n as u64 - 1) as usize;
            let start = match d.last_words_start(k) {
                s if s > d.anchor_start => s,
                s => d
                    .word_starts
                    .iter()
                    .copied()
                    .find(|&w| w > d.anchor_start)
                    .unwrap_or(s),
            };
            with_echo(class, "", &d.body[start..])
        }
        Class::BrokenPreamble => {
            let pre = pick(&mut rng, SENTENCES);
            done(
                class,
                format!("{pre}{}{}", gap(&mut rng), rest.trim_start()),
            )
        }
        Class::BrokenDoneSentence => {
            let s = [
                "That was the end of my answer.",
                "(End of response.)",
                "My previous response was already complete.",
                "Nothing more to add — that was the full answer.",
            ][rng.below(4) as usize];
            done(class, s.to_owned())
        }
    }
}

/// `echo` with its punctuation changed: a comma added after an inner word or one removed,
/// or a final `.` made a `!` or `?` (one or two of them; at least one whenever the echo has
/// two words or ends with a period).
fn punctuate(echo: &str, rng: &mut Rng) -> String {
    #[derive(Clone, Copy, PartialEq)]
    enum Op {
        Final,
        Insert(usize),
        Remove(usize),
    }
    let mut ops: Vec<Op> = Vec::new();
    if echo.ends_with('.') {
        ops.push(Op::Final);
    }
    for (i, c) in echo.char_indices() {
        let before = &echo[..i];
        if c.is_whitespace() && before.ends_with(char::is_alphanumeric) {
            ops.push(Op::Insert(i));
        }
        if c.is_whitespace() && before.ends_with(',') {
            ops.push(Op::Remove(i - 1));
        }
    }
    if ops.is_empty() {
        return echo.to_owned();
    }
    let n = 1 + rng.below(2.min(ops.len()) as u64) as usize;
    let mut chosen: Vec<Op> = Vec::new();
    while chosen.len() < n {
        let op = ops[rng.below(ops.len() as u64) as usize];
        if !chosen.contains(&op) {
            chosen.push(op);
        }
    }
    let mut out = echo.to_owned();
    // Right to left, so earlier positions stay valid.
    let key = |op: &Op| match op {
        Op::Final => usize::MAX,
        Op::Insert(i) | Op::Remove(i) => *i,
    };
    chosen.sort_by_key(|op| std::cmp::Reverse(key(op)));
    for op in chosen {
        match op {
            Op::Final => {
                out.pop();
                out.push(['!', '?'][rng.below(2) as usize]);
            }
            Op::Insert(i) => out.insert(i, ','),
            Op::Remove(i) => {
                out.remove(i);
            }
        }
    }
    out
}

/// `echo` with its inner whitespace changed (one to three runs): a space made a newline, a
/// blank line or two spaces, a line break made a space.
fn respace(echo: &str, rng: &mut Rng) -> String {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut start = None;
    for (i, c) in echo.char_indices() {
        match (c.is_whitespace(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if runs.is_empty() {
        return echo.to_owned();
    }
    let n = 1 + rng.below(3.min(runs.len()) as u64) as usize;
    let mut chosen: Vec<(usize, usize)> = Vec::new();
    while chosen.len() < n {
        let r = runs[rng.below(runs.len() as u64) as usize];
        if !chosen.contains(&r) {
            chosen.push(r);
        }
    }
    chosen.sort_unstable();
    let mut out = String::with_capacity(echo.len() + 8);
    let mut at = 0;
    for (s, e) in chosen {
        out.push_str(&echo[at..s]);
        out.push_str(if echo[s..e].contains('\n') {
            [" ", "  "][rng.below(2) as usize]
        } else {
            ["\n", "  ", "\n\n"][rng.below(3) as usize]
        });
        at = e;
    }
    out.push_str(&echo[at..]);
    out
}

/// The delivered text with one to three words changed, never in its first 32 letters and
/// digits (where a relay recognises a restart) nor in the anchor.
fn near(d: &Delivered<'_>, rng: &mut Rng) -> Option<String> {
    let mut seen = 0;
    let mut first_free = d.body.len();
    for (i, c) in d.body.char_indices() {
        if c.is_alphanumeric() {
            seen += 1;
            if seen == 32 {
                first_free = i + c.len_utf8();
                break;
            }
        }
    }
    let candidates: Vec<usize> = d
        .word_starts
        .iter()
        .copied()
        .filter(|&w| w >= first_free && w < d.anchor_start)
        .filter(|&w| d.body[w..].starts_with(char::is_alphabetic))
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let n = 1 + rng.below(3.min(candidates.len()) as u64) as usize;
    let mut chosen: Vec<usize> = Vec::new();
    while chosen.len() < n {
        let w = candidates[rng.below(candidates.len() as u64) as usize];
        if !chosen.contains(&w) {
            chosen.push(w);
        }
    }
    chosen.sort_unstable();
    let mut out = String::with_capacity(d.body.len() + 16);
    let mut at = 0;
    for w in chosen {
        let len = d.body[w..]
            .find(|c: char| !c.is_alphanumeric())
            .unwrap_or(d.body.len() - w);
        let old = &d.body[w..w + len];
        let mut new = pick(rng, &["gleaming", "hollow", "amber", "distant", "crimson"]).to_owned();
        if new.eq_ignore_ascii_case(old) {
            new = "quiet".into();
        }
        if old.starts_with(char::is_uppercase) {
            new = format!("{}{}", new[..1].to_uppercase(), &new[1..]);
        }
        out.push_str(&d.body[at..w]);
        out.push_str(&new);
        at = w + len;
    }
    out.push_str(&d.body[at..]);
    Some(out)
}

/// The anchor the relay would send for `delivered` (docs/continuation.md): the shortest run
/// of its last words, at least 4 (or all), whose normal form has 16 characters or more and
/// occurs once in the delivered text's; at most 48 words. For tests.
#[cfg(test)]
pub fn anchor_for(delivered: &str) -> Option<String> {
    let words: Vec<&str> = delivered.split_whitespace().collect();
    let whole = normal(delivered);
    for k in 4.min(words.len())..=48.min(words.len()) {
        let tail = words[words.len() - k..].join(" ");
        let n = normal(&tail);
        if n.len() >= 16 && whole.matches(n.as_str()).count() == 1 {
            return Some(tail);
        }
    }
    None
}

/// The relay's continuation turn for `anchor` (docs/continuation.md). For tests.
#[cfg(test)]
pub fn ask_for(anchor: &str) -> String {
    format!(
        "Your previous response was cut off. Reply in exactly this form: first repeat, verbatim, the last words you wrote, «{anchor}», then continue your response from exactly where it stopped, adding no introduction or comment (if it stopped inside a word, finish that word). If your previous response was already complete, reply with only {MARKER} instead."
    )
}

#[cfg(test)]
mod tests;
