//! Deterministic "model output": the reference text of a conversation and its pieces.
//!
//! Owns the generator that makes the simulator a fixed point for resume tests. The
//! reference of a conversation is a pure function of a 64-bit seed (see [`seed`]) and a
//! piece count; one piece is one output token. Pieces look like tokens: most carry a leading
//! space, the first of a paragraph does not, and a paragraph ends with a piece like
//! `" word.\n\n"`, so trailing-whitespace seams occur as they do with real models.
//!
//! [`continuation`] gives the pieces that follow a prefix of the reference with the same
//! boundaries the uninterrupted run has, so a resumed stream can be byte-identical.

/// Pieces in an answer without a `sim:len=N` directive.
pub const DEFAULT_PIECES: usize = 40;
/// Upper bound on `sim:len=N`, to keep one response bounded.
pub const MAX_PIECES: usize = 100_000;

const WORDS: &[&str] = &[
    "the", "river", "quiet", "model", "stream", "signal", "harbor", "lantern", "copper", "meadow",
    "engine", "window", "silver", "orbit", "garden", "thread", "pattern", "winter", "canvas",
    "echo", "bridge", "falcon", "marble", "circuit", "ember", "horizon", "atlas", "willow",
    "prism", "cinder", "a", "of", "and", "to", "in", "over", "under", "bright", "slow", "deep",
    "little", "ancient", "morning", "tide", "stone", "voice", "field", "north", "cloud", "map",
];

/// SplitMix64: tiny, fast and stable across versions (the output must never change).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// FNV-1a over the parts, with a separator so `["ab","c"]` and `["a","bc"]` differ.
pub fn hash_parts<'a>(parts: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    h
}

/// Seed of a conversation's reference: model id, system text, every turn (role and text),
/// and — only when `temperature > 0` — the temperature and attempt number, so sampled
/// output varies per attempt while greedy output (absent or zero temperature) never does. `maxTokens` is deliberately not
/// part of it: a capped answer is a prefix of the uncapped one.
pub fn seed(
    model_id: &str,
    system: &str,
    turns: &[(&str, &str)],
    temperature: Option<f64>,
    attempt: u32,
) -> u64 {
    let sampled = match temperature {
        Some(t) if t > 0.0 => format!("{t}/{attempt}"),
        _ => String::new(),
    };
    let mut parts: Vec<&str> = vec![model_id, system, &sampled];
    for (role, text) in turns {
        parts.push(role);
        parts.push(text);
    }
    hash_parts(parts)
}

/// The `n` pieces of the reference for `seed`. Concatenated, they are the reference text.
pub fn pieces(seed: u64, n: usize) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    let mut sentence_left = 0u64;
    let mut new_paragraph = true;
    for i in 0..n {
        let start_of_sentence = sentence_left == 0;
        if start_of_sentence {
            sentence_left = 4 + rng.below(9);
        }
        let word = WORDS[rng.below(WORDS.len() as u64) as usize];
        let mut piece = String::with_capacity(word.len() + 4);
        if !new_paragraph {
            piece.push(' ');
        }
        if start_of_sentence {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                piece.extend(first.to_uppercase());
                piece.push_str(chars.as_str());
            }
        } else {
            piece.push_str(word);
        }
        new_paragraph = false;
        sentence_left -= 1;
        let last = i + 1 == n;
        if sentence_left == 0 || last {
            piece.push('.');
            sentence_left = 0;
            if !last && rng.below(4) == 0 {
                piece.push_str("\n\n");
                new_paragraph = true;
            }
        } else if rng.below(7) == 0 {
            piece.push(',');
        }
        out.push(piece);
    }
    out
}

/// The pieces that follow `prefix` in `reference`, with the uninterrupted run's boundaries.
/// When `prefix` ends mid-piece the rest of that piece comes first. `None` when `prefix` is
/// not a prefix of the reference text.
pub fn continuation(reference: &[String], prefix: &str) -> Option<Vec<String>> {
    let mut pos = 0;
    for (i, piece) in reference.iter().enumerate() {
        let rest = &prefix[pos..];
        if rest.is_empty() {
            return Some(reference[i..].to_vec());
        }
        if rest.len() >= piece.len() {
            if !rest.starts_with(piece.as_str()) {
                return None;
            }
            pos += piece.len();
        } else {
            let tail = piece.strip_prefix(rest)?;
            let mut out = Vec::with_capacity(reference.len() - i);
            out.push(tail.to_owned());
            out.extend_from_slice(&reference[i + 1..]);
            return Some(out);
        }
    }
    (pos == prefix.len()).then(Vec::new)
}

/// Text to continue with when the prefix is not the reference's: `n` fresh pieces from a
/// seed that includes the prefix, all with a leading space.
pub fn fallback_continuation(seed: u64, prefix: &str, n: usize) -> Vec<String> {
    let seed = hash_parts([seed.to_string().as_str(), prefix]);
    let mut p = pieces(seed, n + 1);
    p.remove(0);
    for piece in &mut p {
        if !piece.starts_with(' ') {
            piece.insert(0, ' ');
        }
    }
    p
}

/// Value of a `sim:NAME=<digits>` directive anywhere in `text`.
pub fn directive_num(text: &str, name: &str) -> Option<u64> {
    directive(text, name).and_then(|v| v.parse().ok())
}

/// Value of a `sim:NAME=<value>` directive: the characters up to whitespace or a quote.
pub fn directive<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("sim:{name}=");
    let at = text.find(&key)? + key.len();
    let rest = &text[at..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == '\\' || c == ',')
        .unwrap_or(rest.len());
    Some(&rest[..end]).filter(|v| !v.is_empty())
}

/// Alphanumeric characters per sub-word piece of a long word.
pub const SUBWORD_CHARS: usize = 4;
/// Words whose leading letters and digits number at least this are split into sub-words.
pub const SUBWORD_MIN: usize = 7;

/// The simulator's tokenizer: `text` split into the pieces the simulated model streams (one
/// piece = one output token). Each piece holds one word (a run of non-whitespace); the
/// whitespace between two words goes to the earlier word up to and including its last
/// newline, the rest (spaces) to the later one; whitespace at either end stays with the
/// nearest word. With `subword`, a word whose leading letters and digits number
/// [`SUBWORD_MIN`] or more is split every [`SUBWORD_CHARS`] of them (`" lant"` `"ern,"`).
///
/// It is prefix-stable: cut `text` after any of its pieces and the prefix splits into exactly
/// those pieces. So counting an assistant turn (CountTokens) gives exactly the output tokens
/// the simulator billed for streaming it. The generator's answers are already in this form
/// (`gen::pieces` without sub-words, `sampled::subwords(sampled::answer(..))` with them).
pub fn tokens(text: &str, subword: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut chars = text.char_indices().peekable();
    // Leading whitespace belongs to the first word.
    while let Some(&(_, c)) = chars.peek() {
        if !c.is_whitespace() {
            break;
        }
        cur.push(c);
        chars.next();
    }
    while chars.peek().is_some() {
        // One word: its letters and digits first (chunked), then the rest of it.
        let mut alnum = 0usize;
        let mut in_lead = true;
        let mut word = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            word.push(c);
            chars.next();
        }
        let lead_len = word.chars().take_while(|c| c.is_alphanumeric()).count();
        let split = subword && lead_len >= SUBWORD_MIN;
        for c in word.chars() {
            if in_lead && !c.is_alphanumeric() {
                in_lead = false;
            }
            if split && in_lead && alnum > 0 && alnum % SUBWORD_CHARS == 0 {
                out.push(std::mem::take(&mut cur));
            }
            if in_lead {
                alnum += 1;
            }
            cur.push(c);
        }
        // The whitespace after it: up to the last newline stays, the rest moves on.
        let mut ws = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if !c.is_whitespace() {
                break;
            }
            ws.push(c);
            chars.next();
        }
        if chars.peek().is_none() {
            cur.push_str(&ws);
            break;
        }
        let keep = ws.rfind('\n').map_or(0, |i| i + 1);
        cur.push_str(&ws[..keep]);
        out.push(std::mem::take(&mut cur));
        cur.push_str(&ws[keep..]);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// How many pieces [`tokens`] splits `text` into.
pub fn token_count(text: &str, subword: bool) -> usize {
    let mut n = 0;
    for word in text.split_whitespace() {
        let lead = word.chars().take_while(|c| c.is_alphanumeric()).count();
        n += if subword && lead >= SUBWORD_MIN {
            lead.div_ceil(SUBWORD_CHARS)
        } else {
            1
        };
    }
    // Whitespace alone is one piece, as [`tokens`] keeps it.
    if n == 0 && !text.is_empty() {
        1
    } else {
        n
    }
}

/// The signature the simulated model gives its reasoning text: a request that sends a
/// reasoning block back with another signature is refused, as Bedrock refuses a signature
/// that does not belong to its text.
pub fn reasoning_signature(text: &str) -> String {
    format!("sig{:016x}", hash_parts([text]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_seed_dependent() {
        let a = pieces(seed("m", "s", &[("user", "hi")], None, 1), 200);
        let b = pieces(seed("m", "s", &[("user", "hi")], None, 7), 200);
        let c = pieces(seed("m", "s", &[("user", "hello")], None, 1), 200);
        assert_eq!(a, b, "greedy output does not depend on the attempt");
        assert_ne!(a, c);
        assert_eq!(a.len(), 200);
        let hot1 = pieces(seed("m", "s", &[("user", "hi")], Some(0.7), 1), 50);
        let hot2 = pieces(seed("m", "s", &[("user", "hi")], Some(0.7), 2), 50);
        assert_ne!(hot1, hot2, "sampled output varies per attempt");
    }

    #[test]
    fn pieces_look_like_tokens_with_whitespace_seams() {
        let p = pieces(42, 400);
        assert!(!p[0].starts_with(' '));
        assert!(p.iter().filter(|x| x.starts_with(' ')).count() > 300);
        assert!(
            p.iter().any(|x| x.ends_with("\n\n")),
            "paragraph breaks occur"
        );
        assert!(p.last().is_some_and(|x| x.ends_with('.')));
        assert!(p.iter().all(|x| !x.is_empty()));
    }

    #[test]
    fn longer_answers_extend_shorter_ones_except_the_final_period() {
        let short = pieces(9, 30);
        let long = pieces(9, 60);
        assert_eq!(short[..29], long[..29]);
    }

    #[test]
    fn continuation_after_every_prefix_equals_reference_suffix() {
        let reference = pieces(1234, 120);
        let text = reference.concat();
        for cut in (0..=text.len()).filter(|c| text.is_char_boundary(*c)) {
            let rest = continuation(&reference, &text[..cut]).expect("prefix of reference");
            assert_eq!(
                format!("{}{}", &text[..cut], rest.concat()),
                text,
                "cut {cut}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn continuation_holds_for_any_seed_length_and_trimmed_cut(seed: u64, n in 1usize..300, frac in 0.0f64..1.0) {
            let reference = pieces(seed, n);
            let text = reference.concat();
            let mut cut = (text.len() as f64 * frac) as usize;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let prefix = text[..cut].trim_end();
            let rest = continuation(&reference, prefix).expect("prefix of reference");
            proptest::prop_assert_eq!(format!("{prefix}{}", rest.concat()), text);
            // Everything after the first emitted piece keeps the reference boundaries.
            if rest.len() > 1 {
                proptest::prop_assert_eq!(&rest[1..], &reference[reference.len() + 1 - rest.len()..]);
            }
        }
    }

    #[test]
    fn continuation_on_a_piece_boundary_keeps_the_boundaries() {
        let reference = pieces(77, 50);
        let prefix = reference[..17].concat();
        assert_eq!(continuation(&reference, &prefix).unwrap(), reference[17..]);
        let mid = format!("{}{}", prefix, &reference[17][..2]);
        let rest = continuation(&reference, &mid).unwrap();
        assert_eq!(rest[0], reference[17][2..]);
        assert_eq!(rest[1..], reference[18..]);
    }

    #[test]
    fn continuation_rejects_non_prefixes() {
        let reference = pieces(5, 20);
        assert!(continuation(&reference, "Definitely not it").is_none());
        let too_long = format!("{} more", reference.concat());
        assert!(continuation(&reference, &too_long).is_none());
        let fb = fallback_continuation(5, "Definitely not it", 10);
        assert_eq!(fb.len(), 10);
        assert!(fb.iter().all(|p| p.starts_with(' ')));
    }

    #[test]
    fn the_tokenizer_splits_as_the_generator_streams_and_is_prefix_stable() {
        assert_eq!(
            tokens("The lantern,  glowed.\n\nAncient morningstar", true),
            [
                "The",
                " lant",
                "ern,",
                "  glowed.\n\n",
                "Anci",
                "ent",
                " morn",
                "ings",
                "tar"
            ]
        );
        assert_eq!(tokens(" a \n b ", false), [" a \n", " b "]);
        assert_eq!(tokens("", true), Vec::<String>::new());
        assert_eq!(tokens("\n", true), ["\n"]);
        for seed in 0..40u64 {
            let pieces = pieces(seed, 150);
            let text = pieces.concat();
            assert_eq!(tokens(&text, false), pieces, "{seed}");
            for k in 0..=pieces.len() {
                let prefix = pieces[..k].concat();
                assert_eq!(tokens(&prefix, false), pieces[..k], "{seed} {k}");
                assert_eq!(token_count(&prefix, false), k);
            }
        }
        let long = "Supercalifragilistic wordsmiths everywhere.";
        let t = tokens(long, true);
        assert_eq!(t.concat(), long);
        for k in 0..=t.len() {
            let prefix = t[..k].concat();
            assert_eq!(tokens(&prefix, true), t[..k], "{k}");
            assert_eq!(token_count(&prefix, true), k, "{k}");
        }
    }

    #[test]
    fn directives() {
        assert_eq!(directive_num("please sim:len=200 thanks", "len"), Some(200));
        assert_eq!(directive("x sim:tag=t1\"", "tag"), Some("t1"));
        assert_eq!(directive("nothing", "tag"), None);
    }
}
