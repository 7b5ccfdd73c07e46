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

/// An instructed continuation as streamed, and the answer it means.
#[derive(Debug, Clone, PartialEq)]
pub struct Continued {
    pub pieces: Vec<String>,
    /// Delivered text + the rest: what the client must end up with.
    pub intended: String,
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
