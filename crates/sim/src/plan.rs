//! What the simulated model answers to one request attempt: a [`Plan`].
//!
//! Owns Bedrock's prefill rules (with its real error messages), prefill continuation,
//! instructed continuation (the continuation protocol's turn, worded by `phrasing`; the old
//! plain "continue" ask with a deterministic repeated-words overlap), extended thinking's
//! limits, the tool call and reasoning block, the `maxTokens` cap, and the token model
//! ([`count`]). Rendering into wire shapes lives in `render`.

use super::gen;
use super::phrasing::{self, Class};
use super::request::{Family, Prompt};
use super::sampled;
use super::styles::{self, Style};
use super::SimError;
use regex::Regex;

/// Bedrock's message for a prefill that ends in whitespace.
pub const TRAILING_WHITESPACE: &str = "The model returned the following errors: messages: final assistant content cannot end with trailing whitespace";
/// Bedrock's message for a prefill sent to a model that does not support it.
pub const NO_PREFILL: &str = "This model does not support assistant message prefill. The conversation must end with a user message.";
/// Message for a prefill combined with extended thinking.
pub const PREFILL_WITH_THINKING: &str = "The model returned the following errors: messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `text`. When `thinking` is enabled, a final `assistant` message must start with a thinking block. We recommend you include thinking blocks from previous turns.";

/// Bedrock's message for a thinking budget under 1024 tokens.
pub const BUDGET_TOO_SMALL: &str = "The model returned the following errors: thinking.enabled.budget_tokens: Input should be greater than or equal to 1024";
/// Bedrock's message for a `max_tokens` at or under the thinking budget.
pub const MAX_TOKENS_UNDER_BUDGET: &str = "The model returned the following errors: `max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size";
/// Bedrock's message for enabled thinking without a budget.
pub const BUDGET_MISSING: &str =
    "The model returned the following errors: thinking.enabled.budget_tokens: Field required";

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    EndTurn,
    ToolUse,
    MaxTokens,
    /// A stop sequence ended the answer.
    Sequence,
}

/// A deterministic tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// Differs per attempt, as real ids are random.
    pub id: String,
    pub name: String,
    /// The whole input JSON object, as text.
    pub input: String,
    /// `input` split into the partial-JSON pieces that are streamed.
    pub input_pieces: Vec<String>,
}

/// One attempt's answer, independent of the wire shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Reasoning text pieces and the signature, when reasoning was requested.
    pub reasoning: Option<(Vec<String>, String)>,
    /// Text pieces to emit (one piece = one output token).
    pub text: Vec<String>,
    pub tool: Option<ToolCall>,
    pub stop: Stop,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// The prefill text, when the request had one.
    pub prefill: Option<String>,
    /// The request was an instructed continuation.
    pub continuation: bool,
    /// The class of an instructed continuation under the continuation protocol
    /// (`phrasing::Class::name`).
    pub phrasing: Option<&'static str>,
    /// The whole answer the model means (prefill or delivered text included), unless cut by
    /// `maxTokens` or a stop sequence: what a correctly spliced stream gives the client.
    pub intended: Option<String>,
    /// The stop sequence that ended the answer (`Stop::Sequence`).
    pub stop_sequence: Option<String>,
    /// Which of the family's APIs the request used.
    pub style: Style,
    /// Output tokens per text piece (`sim:tpp=K`, default 1): streams whose chunks carry
    /// several tokens, as real ones do.
    pub tokens_per_piece: u32,
    /// Input tokens reported as read from the prompt cache (`sim:cache=N`), besides
    /// `input_tokens`.
    pub cache_read: u32,
}

impl Plan {
    pub fn text(&self) -> String {
        self.text.concat()
    }
}

/// Extended thinking's limits on Claude, with Bedrock's messages: a budget of at least 1024
/// tokens, and `max_tokens` (when set) above it.
pub fn check_thinking(model_id: &str, prompt: &Prompt) -> Result<(), SimError> {
    if Family::of(model_id) != Some(Family::Claude) || !prompt.reasoning {
        return Ok(());
    }
    let Some(budget) = prompt.thinking_budget else {
        return match prompt.thinking_enabled {
            true => Err(SimError::Validation(BUDGET_MISSING.into())),
            false => Ok(()),
        };
    };
    if budget < 1024 {
        return Err(SimError::Validation(BUDGET_TOO_SMALL.into()));
    }
    match prompt.max_tokens {
        Some(max) if u64::from(max) <= budget => {
            Err(SimError::Validation(MAX_TOKENS_UNDER_BUDGET.into()))
        }
        _ => Ok(()),
    }
}

/// The simulator's token model: the input tokens of a conversation, as CountTokens answers
/// and every response bills. System and user text count one token per word (with sub-words
/// for the models that stream them, see [`gen::tokens`]); an assistant turn counts exactly
/// the pieces the simulator streams for that text, times `sim:tpp=K`, so for a conversation
/// `C` and a text `D` the simulator streamed (cut after any piece),
/// `count(C + assistant D) - count(C)` is exactly the output tokens billed for `D`. At least 1.
pub fn count(model_id: &str, prompt: &Prompt, no_prefill: &Regex) -> u32 {
    let subword = no_prefill.is_match(model_id);
    let all_text: String = prompt.all_text().collect::<Vec<_>>().join("\n");
    let tpp = tokens_per_piece(&all_text);
    let mut n = gen::token_count(&prompt.system, subword);
    for t in &prompt.turns {
        let k = gen::token_count(&t.text, subword);
        n += if t.role == "assistant" { k * tpp } else { k };
    }
    u32::try_from(n.max(1)).unwrap_or(u32::MAX)
}

fn tokens_per_piece(all_text: &str) -> usize {
    gen::directive_num(all_text, "tpp").map_or(1, |k| k.clamp(1, 16) as usize)
}

/// Build the plan for a request. `attempt` (1-based, per conversation) varies sampled output
/// and tool ids; `nonce` makes tool ids unique across attempts; `first_instructed`: no
/// instructed continuation of this conversation was answered before (`sim:phrase=` forces
/// only that one).
pub fn plan(
    model_id: &str,
    prompt: &Prompt,
    attempt: u32,
    nonce: u64,
    no_prefill: &Regex,
    first_instructed: bool,
) -> Result<Plan, SimError> {
    check_thinking(model_id, prompt)?;
    let mut turns: Vec<(&str, &str)> = prompt
        .turns
        .iter()
        .map(|t| (t.role.as_str(), t.text.as_str()))
        .collect();
    let all_text: String = prompt.all_text().collect::<Vec<_>>().join("\n");
    let n = gen::directive_num(&all_text, "len")
        .map(|n| (n as usize).clamp(1, gen::MAX_PIECES))
        .unwrap_or(gen::DEFAULT_PIECES);

    let prefill = match turns.last() {
        Some(("assistant", text)) => Some(text.to_string()),
        _ => None,
    };
    if let Some(p) = &prefill {
        if no_prefill.is_match(model_id) {
            return Err(SimError::Validation(NO_PREFILL.into()));
        }
        if p.ends_with(char::is_whitespace) {
            return Err(SimError::Validation(TRAILING_WHITESPACE.into()));
        }
        if prompt.reasoning {
            return Err(SimError::Validation(PREFILL_WITH_THINKING.into()));
        }
        turns.pop();
    }

    // Claude 4.6+ samples at temperature 1 unless told otherwise (see `sampled`).
    let sampled_model = no_prefill.is_match(model_id);
    let temperature = sampled::temperature(prompt.temperature, sampled_model);
    let seed_at =
        |turns: &[(&str, &str)], a: u32| gen::seed(model_id, &prompt.system, turns, temperature, a);
    let seed_of = |turns: &[(&str, &str)]| seed_at(turns, attempt);
    let reference_at = |turns: &[(&str, &str)], a: u32| {
        let pieces = match sampled_model {
            true => sampled::answer(seed_at(turns, a), n),
            false => gen::pieces(seed_at(turns, a), n),
        };
        styles::with_inserts(pieces, &all_text)
    };
    let reference_of = |turns: &[(&str, &str)]| reference_at(turns, attempt);
    let mut continuation = false;
    let mut intended = None;
    let mut phrased = None;
    let mut text = match &prefill {
        Some(p) => {
            let reference = reference_of(&turns);
            gen::continuation(&reference, p).unwrap_or_else(|| {
                let used = p.split_whitespace().count();
                gen::fallback_continuation(seed_of(&turns), p, n.saturating_sub(used).max(1))
            })
        }
        None => match protocol(
            &turns,
            &seed_of,
            &reference_at,
            attempt,
            &all_text,
            sampled_model,
            first_instructed,
        ) {
            Some((c, class)) => {
                continuation = true;
                intended = Some(c.intended);
                phrased = Some(class.name());
                c.pieces
            }
            None => reference_of(&turns),
        },
    };
    if sampled_model {
        text = sampled::subwords(text);
    }
    let intended = intended
        .unwrap_or_else(|| format!("{}{}", prefill.as_deref().unwrap_or(""), text.concat()));

    let reasoning = prompt.reasoning.then(|| {
        let pieces = gen::pieces(seed_of(&turns) ^ 0x5EA5_0111, 12);
        let signature = gen::reasoning_signature(&pieces.concat());
        (pieces, signature)
    });
    let reasoning_tokens = reasoning.as_ref().map_or(0, |(p, _)| p.len());

    let mut stop = Stop::EndTurn;
    let stop_sequence = styles::apply_stops(&mut text, &prompt.stop_sequences);
    if stop_sequence.is_some() {
        stop = Stop::Sequence;
    }
    let tpp = tokens_per_piece(&all_text);
    if let Some(max) = prompt.max_tokens {
        let room = (max as usize / tpp).saturating_sub(reasoning_tokens).max(1);
        if text.len() > room {
            text.truncate(room);
            stop = Stop::MaxTokens;
        }
    }
    // The tool call ends every answer to a conversation with tools, including prefilled and
    // continued ones (the model finishes its text, then calls again with a fresh id), except
    // when the last user turn already carries a tool result.
    let wants_tool = prompt.tool.is_some()
        && stop == Stop::EndTurn
        && !prompt.turns.last().is_some_and(|t| t.tool_result);
    let tool = match (&prompt.tool, wants_tool) {
        (Some(t), true) => {
            stop = Stop::ToolUse;
            Some(tool_call(t, seed_of(&turns), attempt, nonce))
        }
        _ => None,
    };
    let intended = matches!(stop, Stop::EndTurn | Stop::ToolUse).then_some(intended);
    let tool_tokens = tool.as_ref().map_or(0, |t| t.input_pieces.len());
    let output = text.len() * tpp + reasoning_tokens + tool_tokens;
    Ok(Plan {
        reasoning,
        text,
        tool,
        stop,
        input_tokens: count(model_id, prompt, no_prefill),
        output_tokens: u32::try_from(output).unwrap_or(u32::MAX),
        prefill,
        continuation,
        phrasing: phrased,
        intended,
        stop_sequence: stop_sequence.filter(|_| stop == Stop::Sequence),
        style: prompt.style,
        tokens_per_piece: tpp as u32,
        cache_read: gen::directive_num(&all_text, "cache").map_or(0, |n| n.min(1 << 20) as u32),
    })
}

/// An instructed continuation under the continuation protocol: the conversation ends with
/// [assistant D, user turn with «ANCHOR» and the completion marker]. The rest R of the sample
/// D came from (any earlier attempt; a fresh text when none) is worded by `phrasing`, split by
/// the simulator's tokenizer so the reply streams and bills like any answer.
fn protocol(
    turns: &[(&str, &str)],
    seed_of: &SeedOf<'_>,
    reference_at: &ReferenceAt<'_>,
    attempt: u32,
    all_text: &str,
    sampled_model: bool,
    first: bool,
) -> Option<(sampled::Continued, Class)> {
    let [before @ .., ("assistant", delivered), ("user", ask)] = turns else {
        return None;
    };
    let anchor = phrasing::anchor_of(ask)?;
    let base = seed_of(before);
    let seed = gen::hash_parts([
        base.to_string().as_str(),
        &attempt.to_string(),
        delivered,
        ask,
    ]);
    let rest = (1..attempt.max(2))
        .find_map(|a| gen::continuation(&reference_at(before, a), delivered))
        .unwrap_or_else(|| gen::fallback_continuation(base, delivered, gen::DEFAULT_PIECES))
        .concat();
    let class = phrasing::choose(all_text, first, seed, rest.is_empty());
    let reply = phrasing::phrase(class, delivered, anchor, &rest, seed);
    let continued = sampled::Continued {
        pieces: gen::tokens(&reply.text, sampled_model),
        intended: format!("{delivered}{rest}"),
    };
    Some((continued, reply.class))
}

/// Seed of the reference for a list of turns.
type SeedOf<'a> = dyn Fn(&[(&str, &str)]) -> u64 + 'a;
/// Reference pieces for a list of turns at an attempt.
type ReferenceAt<'a> = dyn Fn(&[(&str, &str)], u32) -> Vec<String> + 'a;

fn tool_call(tool: &super::request::Tool, seed: u64, attempt: u32, nonce: u64) -> ToolCall {
    let mut rng = gen::Rng::new(seed ^ 0x7001);
    let mut obj = serde_json::Map::new();
    for (name, ty) in &tool.properties {
        let v = match ty.as_str() {
            "integer" | "number" => serde_json::Value::from(rng.below(100)),
            "boolean" => serde_json::Value::from(rng.below(2) == 0),
            _ => serde_json::Value::from(gen::pieces(rng.next_u64(), 2).concat()),
        };
        obj.insert(name.clone(), v);
    }
    let input = serde_json::Value::Object(obj).to_string();
    let chars: Vec<char> = input.chars().collect();
    let input_pieces = chars.chunks(7).map(|c| c.iter().collect()).collect();
    let id_hash = gen::hash_parts([
        seed.to_string().as_str(),
        &attempt.to_string(),
        &nonce.to_string(),
    ]);
    ToolCall {
        id: format!("tooluse_{:022x}", id_hash as u128 * 0x1_0000_0001),
        name: tool.name.clone(),
        input,
        input_pieces,
    }
}

#[cfg(test)]
mod tests;
