//! Claude 4.6 and later as the simulator plays them: sampled by default, streamed in
//! sub-word tokens, and — asked to continue a cut answer (instructed continuation) — doing
//! what real models do at the seam.
//!
//! - **Sampled by default**: for models matching `no_prefill_models` an unset temperature is
//!   1, so the text varies per attempt (seeded: the same conversation and attempt number give
//!   the same text). Prefill is rejected by `plan` with Bedrock's exact 400.
//! - **Sub-word tokens**: words of 7 letters or more stream in pieces of 4 letters (" ligh"
//!   "thouse" is " ligh" "thou" "se"), so a cut can fall inside a word, as with real
//!   tokenizers ([`gen::tokens`], which CountTokens counts by).
//! - **Replies to the continuation protocol** are worded by `phrasing` (see `plan`).
//! - **Continuation behaviours** ([`Behaviour`], the old plain "continue" ask only; kept
//!   while the relay's seam tests feed them): chosen by `sim:cont=NAME` in the
//!   conversation, else at random from the seed of the attempt. The sampled answer the
//!   delivered text came from (any earlier attempt of the conversation) is continued; the
//!   model then streams that rest, dressed by the behaviour. [`Continued::intended`] is the
//!   whole answer the model means (delivered text + rest): a relay that splices correctly
//!   gives the client exactly that.
//! - [`reference_text`]: the answer the default simulator gives on a conversation's first
//!   attempt, computed without a request (greedy, or these models' first sample).

use super::gen;

/// Turns as `(role, text)`.
pub type Turns<'a> = [(&'a str, &'a str)];

/// The temperature a request samples at: as sent, else 1 for sampled-by-default models.
pub fn temperature(requested: Option<f64>, sampled_by_default: bool) -> Option<f64> {
    requested.or(sampled_by_default.then_some(1.0))
}

/// A sampled answer: the generator's pieces for `seed`, with a word that completes an
/// immediate repetition of the last 1-3 words (case and punctuation aside) replaced, as
/// natural text rarely says "meadow meadow" or "bright tide bright tide" (a repetition at a
/// cut is indistinguishable from an echo; README, Limits).
pub fn answer(seed: u64, n: usize) -> Vec<String> {
    let mut pieces = gen::pieces(seed, n);
    let bare = |p: &str| -> String {
        p.trim()
            .trim_end_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase()
    };
    let mut words: Vec<String> = pieces.iter().map(|p| bare(p)).collect();
    let repeats = |w: &[String], i: usize| {
        (1..=3).any(|k| i + 1 >= 2 * k && w[i + 1 - k..=i] == w[i + 1 - 2 * k..=i - k])
    };
    for i in 1..pieces.len() {
        if words[i].is_empty() || !repeats(&words, i) {
            continue;
        }
        let word = words[i].clone();
        for alt in ["harbor", "lantern", "meadow", "willow"] {
            words[i] = alt.to_owned();
            if !repeats(&words, i) {
                break;
            }
        }
        let alt = words[i].as_str();
        let piece = &pieces[i];
        let at = piece.to_lowercase().find(&word).unwrap_or(0);
        let mut replaced = piece[..at].to_owned();
        if piece[at..].starts_with(char::is_uppercase) {
            replaced.push_str(&alt[..1].to_uppercase());
            replaced.push_str(&alt[1..]);
        } else {
            replaced.push_str(alt);
        }
        replaced.push_str(&piece[at + word.len()..]);
        pieces[i] = replaced;
    }
    pieces
}

/// Split words of 7 letters or more into sub-word pieces of 4 letters (the simulator's
/// tokenizer, [`gen::tokens`]), keeping everything else as it is.
pub fn subwords(pieces: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(pieces.len() + pieces.len() / 4);
    for p in pieces {
        if p.split_whitespace().count() == 1 {
            out.extend(gen::tokens(&p, true));
        } else {
            out.push(p);
        }
    }
    out
}

/// What a model does when asked to continue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Exactly the rest.
    Clean,
    /// Repeats its last `k` words (a cut word is typed again whole).
    Echo(usize),
    /// Restarts the last sentence.
    Sentence,
    /// "Continuing from where I left off:" and a blank line, then the rest.
    Preamble,
    /// A preamble, then the last word again.
    PreambleEcho,
    /// Other whitespace where the delivered text ended in whitespace.
    Whitespace,
    /// An ellipsis glued to the rest ("…brown fox").
    Ellipsis,
    /// The whole answer again from its first word.
    Restart,
    /// The answer again from its first word, but sampled differently half-way (only by
    /// directive: the relay cannot splice it and must end the stream with a typed error).
    RestartDiverging,
}

/// Behaviours drawn at random, with their weights (out of 100).
const RANDOM: [(Behaviour, u64); 9] = [
    (Behaviour::Clean, 20),
    (Behaviour::Echo(1), 10),
    (Behaviour::Echo(3), 10),
    (Behaviour::Sentence, 15),
    (Behaviour::Preamble, 10),
    (Behaviour::PreambleEcho, 10),
    (Behaviour::Whitespace, 10),
    (Behaviour::Ellipsis, 5),
    (Behaviour::Restart, 10),
];

const PREAMBLES: [&str; 4] = [
    "Continuing from where I left off:",
    "Sure, here is the rest of the response:",
    "(continued)",
    "Picking up where it stopped:",
];

impl Behaviour {
    /// By name, as in `sim:cont=NAME`: clean, echo1 … echo9, sentence, preamble,
    /// preamble-echo, whitespace, ellipsis, restart, restart-diverging.
    pub fn from_name(name: &str) -> Option<Behaviour> {
        Some(match name {
            "clean" => Behaviour::Clean,
            "sentence" => Behaviour::Sentence,
            "preamble" => Behaviour::Preamble,
            "preamble-echo" => Behaviour::PreambleEcho,
            "whitespace" => Behaviour::Whitespace,
            "ellipsis" => Behaviour::Ellipsis,
            "restart" => Behaviour::Restart,
            "restart-diverging" => Behaviour::RestartDiverging,
            n => Behaviour::Echo(n.strip_prefix("echo")?.parse().ok().filter(|k| *k > 0)?),
        })
    }

    /// The directive's choice, else one drawn from `seed`.
    pub fn choose(all_text: &str, seed: u64) -> Behaviour {
        if let Some(b) = gen::directive(all_text, "cont").and_then(Behaviour::from_name) {
            return b;
        }
        let mut roll = gen::Rng::new(seed ^ 0xC0_471E).below(100);
        for (b, w) in RANDOM {
            if roll < w {
                return b;
            }
            roll -= w;
        }
        Behaviour::Clean
    }
}

/// An instructed continuation as streamed, and the answer it means.
#[derive(Debug, Clone, PartialEq)]
pub struct Continued {
    pub pieces: Vec<String>,
    /// Delivered text + the rest: what the client must end up with.
    pub intended: String,
}

/// Continue `delivered` (the assistant turn before the "continue" request): find the sample
/// it came from among the attempts `1..attempt` (`reference(a)` gives attempt `a`'s pieces),
/// take the rest, dress it as `behaviour`. `None` when no earlier sample starts with it.
pub fn continue_after(
    delivered: &str,
    attempt: u32,
    reference: &dyn Fn(u32) -> Vec<String>,
    behaviour: Behaviour,
    alt_seed: u64,
) -> Option<Continued> {
    let rest = (1..attempt.max(2)).find_map(|a| gen::continuation(&reference(a), delivered))?;
    let intended = format!("{delivered}{}", rest.concat());
    let pieces = dress(delivered, rest, behaviour, alt_seed);
    Some(Continued { pieces, intended })
}

fn words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, w) in text.split(' ').enumerate() {
        out.push(if i == 0 {
            w.to_owned()
        } else {
            format!(" {w}")
        });
    }
    out.retain(|w| !w.is_empty());
    out
}

/// The pieces a model streams for `rest` after `delivered`, dressed as `b`.
fn dress(delivered: &str, rest: Vec<String>, b: Behaviour, alt_seed: u64) -> Vec<String> {
    let text = rest.concat();
    let mid_word =
        delivered.ends_with(char::is_alphanumeric) && text.starts_with(char::is_alphanumeric);
    let with_head = |head: &str, rest: Vec<String>| {
        let mut v = words(head);
        v.extend(rest);
        v
    };
    match b {
        Behaviour::Clean => rest,
        Behaviour::Echo(k) => with_head(gen::last_words(delivered, k), rest),
        Behaviour::Sentence => {
            let start = [". ", ".\n\n", "\n"]
                .iter()
                .filter_map(|s| delivered.rfind(s).map(|i| i + s.len()))
                .max()
                .unwrap_or(0);
            with_head(&delivered[start..], rest)
        }
        // Nothing left to say: an ellipsis glued to nothing is no continuation at all.
        Behaviour::Ellipsis if text.is_empty() => rest,
        Behaviour::Preamble | Behaviour::PreambleEcho | Behaviour::Ellipsis => {
            let head = match b {
                Behaviour::Ellipsis => "\u{2026}".to_owned(),
                _ => format!(
                    "{}\n\n",
                    PREAMBLES[(alt_seed % PREAMBLES.len() as u64) as usize]
                ),
            };
            // A cut word is typed again with the word before it (after a preamble a lone
            // word could be a new one).
            let body = if mid_word {
                format!("{}{text}", gen::last_words(delivered, 2))
            } else if b == Behaviour::PreambleEcho {
                format!("{}{text}", gen::last_words(delivered, 1))
            } else {
                text.trim_start().to_owned()
            };
            let mut v = vec![head];
            v.extend(words(&body));
            v
        }
        Behaviour::Whitespace => {
            // The client holds the whitespace only after a paragraph end (pieces carry their
            // spaces in front); elsewhere there is nothing to change.
            if !text.starts_with('\n') {
                return rest;
            }
            let alt = [" ", "\n ", ""][(alt_seed % 3) as usize];
            words(&format!("{alt}{}", text.trim_start()))
        }
        Behaviour::Restart => {
            let mut v = words(delivered);
            v.extend(rest);
            v
        }
        Behaviour::RestartDiverging => {
            let mut cut = delivered.len() / 2;
            while !delivered.is_char_boundary(cut) {
                cut -= 1;
            }
            let mut v = words(&delivered[..cut]);
            v.extend(gen::fallback_continuation(
                alt_seed,
                delivered,
                rest.len().max(3),
            ));
            v
        }
    }
}

/// The uninterrupted answer (no temperature, no `maxTokens` cap, attempt 1) the default
/// simulator gives to a conversation, computed without a request: greedy, except for the
/// models that sample by default (Claude 4.6+, see `sampled`), whose first sample it is.
/// `turns` are `(role, text)` pairs ending with a user turn; a Converse message's text is its
/// text blocks concatenated, Claude/Nova invoke messages likewise, Llama/Mistral/Titan prompts
/// split into turns as in `request`. The length is `sim:len=N` from any turn or the system
/// text, else [`gen::DEFAULT_PIECES`]. [`reference_pieces`] gives the same text as streamed
/// deltas.
pub fn reference_text(model_id: &str, system: &str, turns: &[(&str, &str)]) -> String {
    reference_pieces(model_id, system, turns).concat()
}

/// [`reference_text`] split into its pieces: exactly the text deltas of the stream.
pub fn reference_pieces(model_id: &str, system: &str, turns: &[(&str, &str)]) -> Vec<String> {
    reference_pieces_at(model_id, system, turns, None)
}

/// [`reference_pieces`] of a request that sets `temperature` (`Some(0.0)`: greedy for every
/// model; above 0, the first sample).
pub fn reference_pieces_at(
    model_id: &str,
    system: &str,
    turns: &[(&str, &str)],
    requested: Option<f64>,
) -> Vec<String> {
    let all: Vec<&str> = std::iter::once(system)
        .chain(turns.iter().map(|(_, t)| *t))
        .collect();
    let n = gen::directive_num(&all.join("\n"), "len")
        .map(|n| (n as usize).clamp(1, gen::MAX_PIECES))
        .unwrap_or(gen::DEFAULT_PIECES);
    let sampled_model =
        regex::Regex::new(super::DEFAULT_NO_PREFILL).is_ok_and(|r| r.is_match(model_id));
    if sampled_model {
        let t = temperature(requested, true);
        return subwords(answer(gen::seed(model_id, system, turns, t, 1), n));
    }
    gen::pieces(gen::seed(model_id, system, turns, requested, 1), n)
}

#[cfg(test)]
mod tests;
