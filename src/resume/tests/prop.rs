//! Property test: random reference answers (text blocks with whitespace-ending pieces, tool-use
//! blocks) are streamed, cut at a random event (and maybe cut again on the next attempt), and
//! resumed against a model that honours prefill / instructed continuation (echoing its last
//! words at random) or replays exactly. The client must see exactly the reference, as one
//! well-formed stream; a replay that differs from the delivered content must be a Divergence.

use super::util::*;
use super::wire::Wire;
use crate::resume::{ModelCaps, Strategy as Rung};
use aws_smithy_types::event_stream::Message;
use proptest::prelude::*;
use proptest::strategy::Strategy;
use proptest::test_runner::FileFailurePersistence;
use serde_json::Value;

/// Deterministic choices for the model, from a proptest seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

/// Split `text` at random char boundaries into 1..=4 non-empty pieces.
fn rechunk(text: &str, rng: &mut Rng) -> Vec<String> {
    let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).skip(1).collect();
    let mut cuts: Vec<usize> = (0..rng.next(4))
        .map(|_| bounds.get(rng.next(bounds.len())).copied().unwrap_or(0))
        .collect();
    cuts.retain(|c| *c > 0);
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts.into_iter().chain([text.len()]) {
        if c > at {
            out.push(text[at..c].to_owned());
            at = c;
        }
    }
    out
}

fn rebuilt(b: &RefBlock, text: &str, rng: &mut Rng, attempt: usize) -> RefBlock {
    let pieces = rechunk(text, rng);
    match b {
        RefBlock::Text(_) => RefBlock::Text(pieces),
        RefBlock::Tool { name, .. } => RefBlock::Tool {
            id: format!("tooluse_{attempt}"),
            name: name.clone(),
            pieces,
        },
        RefBlock::Reasoning { signature, .. } => RefBlock::Reasoning {
            pieces,
            signature: signature.clone(),
        },
    }
}

/// The model replaying the original request: same content, new chunking, new tool ids.
fn replay_events(
    wire: Wire,
    reference: &[RefBlock],
    rng: &mut Rng,
    attempt: usize,
) -> Vec<Message> {
    let blocks: Vec<RefBlock> = reference
        .iter()
        .map(|b| rebuilt(b, &b.text(), rng, attempt))
        .collect();
    wire.stream(&blocks, stop_of(reference), 7)
}

/// The model continuing after the assistant text `prefill`, maybe echoing its last words.
fn continue_events(
    wire: Wire,
    reference: &[RefBlock],
    prefill: &str,
    echo: bool,
    rng: &mut Rng,
    attempt: usize,
) -> Vec<Message> {
    // The continued block: the first text block the delivered text begins (after any
    // reasoning, which the model writes again and the splicer drops).
    let c = reference
        .iter()
        .position(|b| matches!(b, RefBlock::Text(_)) && b.text().starts_with(prefill))
        .unwrap_or(0);
    let first = reference[c].text();
    assert!(
        first.starts_with(prefill),
        "prefill {prefill:?} is not a prefix of {first:?}"
    );
    let mut rest = first[prefill.len()..].to_owned();
    if echo {
        let starts: Vec<usize> = prefill
            .char_indices()
            .filter(|(i, ch)| {
                !ch.is_whitespace() && (*i == 0 || prefill[..*i].ends_with(char::is_whitespace))
            })
            .map(|(i, _)| i)
            .collect();
        // The protocol: the reply repeats at least the anchor (its words), maybe more.
        let anchor_words = crate::resume::anchor::choose(prefill.trim_end())
            .map_or(1, |a| a.quoted.split_whitespace().count());
        let k = (anchor_words + rng.next(3)).min(starts.len());
        if let Some(at) = starts.len().checked_sub(k).map(|i| starts[i]) {
            rest = format!("{}{rest}", &prefill[at..]);
        }
    }
    let mut out = Vec::new();
    wire.start(&mut out);
    let mut index = 0u32;
    for b in &reference[..c] {
        wire.block(&rebuilt(b, &b.text(), rng, attempt), index, &mut out);
        index += 1;
    }
    if !rest.is_empty() {
        wire.block(&RefBlock::Text(rechunk(&rest, rng)), index, &mut out);
        index += 1;
    } else if rng.next(2) == 0 || matches!(reference.get(c + 1), Some(RefBlock::Text(_))) {
        // With a prefill, the response's first text block IS the continued block: a model
        // only skips it when the next block is not text.
        wire.block(&RefBlock::Text(vec![String::new()]), index, &mut out);
        index += 1;
    }
    for b in &reference[c + 1..] {
        wire.block(&rebuilt(b, &b.text(), rng, attempt), index, &mut out);
        index += 1;
    }
    wire.tail(
        stop_of(reference),
        7 + prefill.len() as u64 / 3,
        5,
        &mut out,
    );
    out
}

fn stop_of(reference: &[RefBlock]) -> &'static str {
    if matches!(reference.last(), Some(RefBlock::Tool { .. })) {
        "tool_use"
    } else {
        "end_turn"
    }
}

fn piece() -> impl Strategy<Value = (u8, u8)> {
    (0u8..4, 0u8..6)
}

/// (kind: 0-5 text, 6-8 tool use, 9 reasoning; pieces).
fn block() -> impl Strategy<Value = (u8, Vec<(u8, u8)>)> {
    (0u8..10, prop::collection::vec(piece(), 1..7))
}

/// Unique words (so an echo is the only possible overlap), varied whitespace around them.
fn build_reference(spec: &[(u8, Vec<(u8, u8)>)]) -> Vec<RefBlock> {
    let mut n = 0;
    spec.iter()
        .map(|(kind, pieces)| {
            let texts: Vec<String> = pieces
                .iter()
                .map(|(lead, trail)| {
                    n += 1;
                    let lead = ["", " ", "\n", ""][*lead as usize];
                    let trail = ["", " ", "\n\n", ".", ". ", ""][*trail as usize];
                    if *trail == *"\n\n" && n % 3 == 0 {
                        "\n\n".to_owned() // whitespace-only piece
                    } else {
                        format!("{lead}w{n}{trail}")
                    }
                })
                .collect();
            if *kind < 6 {
                RefBlock::Text(texts)
            } else if *kind == 9 {
                RefBlock::Reasoning {
                    pieces: texts,
                    signature: format!("sig{n}"),
                }
            } else {
                let pieces = texts.iter().map(|t| t.replace('\n', "\\n")).collect();
                RefBlock::Tool {
                    id: "tooluse_0".into(),
                    name: "tool".into(),
                    pieces,
                }
            }
        })
        .collect()
}

fn expected(reference: &[RefBlock]) -> Vec<(String, String)> {
    reference
        .iter()
        .map(|b| match b {
            RefBlock::Text(_) => ("text".to_owned(), b.text()),
            RefBlock::Reasoning { .. } => ("reasoning".to_owned(), b.text()),
            RefBlock::Tool { .. } => ("tool:tool".to_owned(), b.text()),
        })
        .collect()
}

fn strip_ids(blocks: Vec<(String, String)>) -> Vec<(String, String)> {
    blocks
        .into_iter()
        .map(|(k, t)| {
            (
                k.rsplit_once(':')
                    .filter(|_| k.starts_with("tool:"))
                    .map_or(k.clone(), |(a, _)| a.to_owned()),
                t,
            )
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum ModelKind {
    Prefill,
    Instructed,
    Replay,
}

fn run(
    wire: Wire,
    spec: &[(u8, Vec<(u8, u8)>)],
    kind: ModelKind,
    cut: usize,
    cut2: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let reference = wire.reference(build_reference(spec));
    let full = wire.stream(&reference, stop_of(&reference), 7);
    let cut = cut % full.len();
    let caps = match kind {
        ModelKind::Prefill => ModelCaps {
            prefill: true,
            instructed: false,
            replay: true,
        },
        ModelKind::Instructed => INSTRUCTED,
        ModelKind::Replay => REPLAY_ONLY,
    };
    let mut rng = Rng(seed);
    let mut c = Client::new(wire.format());
    c.feed(&full[..cut])
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for attempt in 1..=3 {
        let (strategy, body) = c
            .resume(&wire.body(), caps)
            .map_err(|e| TestCaseError::fail(format!("plan: {e}")))?;
        let events = match strategy {
            Rung::Replay => replay_events(wire, &reference, &mut rng, attempt),
            Rung::Prefill => continue_events(
                wire,
                &reference,
                &wire.assistant_text(&body),
                false,
                &mut rng,
                attempt,
            ),
            Rung::Instructed => {
                let echo = true;
                continue_events(
                    wire,
                    &reference,
                    &wire.assistant_text(&body),
                    echo,
                    &mut rng,
                    attempt,
                )
            }
        };
        let k = if attempt == 1 && cut2 > 0 {
            cut2 % events.len()
        } else {
            events.len()
        };
        c.feed(&events[..k])
            .map_err(|e| TestCaseError::fail(format!("attempt {attempt} {strategy:?}: {e}")))?;
        if k == events.len() {
            break;
        }
    }
    let seen = wire
        .check(&c.received)
        .map_err(|e| TestCaseError::fail(e.0))?;
    prop_assert_eq!(strip_ids(seen.blocks), expected(&reference));
    prop_assert_eq!(seen.stop.as_str(), stop_of(&reference));
    prop_assert!(seen.usage.0 >= 7 && seen.usage.2 == seen.usage.0 + seen.usage.1);
    prop_assert!(c.transcript().is_complete());
    Ok(())
}

proptest! {
    // Failures are saved beside this file (src/resume/tests/prop.proptest-regressions).
    #![proptest_config(ProptestConfig {
        cases: 256,
        max_shrink_iters: 2000,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn resumed_stream_equals_the_reference(
        spec in prop::collection::vec(block(), 1..4),
        kind in prop_oneof![Just(ModelKind::Prefill), Just(ModelKind::Instructed), Just(ModelKind::Replay)],
        cut in 0usize..64,
        cut2 in prop_oneof![Just(0usize), 1usize..64],
        seed in any::<u64>(),
        wire in prop_oneof![Just(Wire::Converse), Just(Wire::Claude), Just(Wire::Llama)],
    ) {
        run(wire, &spec, kind, cut, cut2, seed)?;
    }

    #[test]
    fn replay_that_differs_in_delivered_content_diverges(
        spec in prop::collection::vec(block(), 1..4),
        cut in 1usize..64,
        which in any::<prop::sample::Index>(),
        seed in any::<u64>(),
        wire in prop_oneof![Just(Wire::Converse), Just(Wire::Claude), Just(Wire::Llama)],
    ) {
        let reference = wire.reference(build_reference(&spec));
        let full = wire.stream(&reference, stop_of(&reference), 7);
        let cut = 1 + cut % (full.len() - 1);
        // Content deltas the client received, as (block, piece or signature) in stream order.
        let mut delivered = Vec::new();
        let mut seen = 0;
        for (bi, b) in reference.iter().enumerate() {
            for pi in 0..b.pieces().len() {
                delivered.push((bi, pi));
            }
            if let RefBlock::Reasoning { .. } = b {
                delivered.push((bi, usize::MAX)); // the signature delta
            }
        }
        for m in &full[..cut] {
            if wire.is_delta(m) {
                seen += 1;
            }
        }
        if seen == 0 {
            return Ok(()); // only a start delivered: nothing to differ from
        }
        let (bi, pi) = delivered[which.index(seen)];
        let mut changed = reference.clone();
        match &mut changed[bi] {
            RefBlock::Reasoning { signature, .. } if pi == usize::MAX => *signature = format!("Z{signature}"),
            RefBlock::Text(p) | RefBlock::Tool { pieces: p, .. } | RefBlock::Reasoning { pieces: p, .. } => {
                p[pi] = format!("Z{}", p[pi]);
            }
        }
        // The tool-call hold off: every delta up to the cut reached the client.
        let mut c = Client::holding(wire.format(), false);
        c.feed(&full[..cut]).unwrap();
        let (strategy, _) = c.resume(&wire.body(), REPLAY_ONLY).unwrap();
        prop_assert_eq!(strategy, Rung::Replay);
        let mut rng = Rng(seed);
        let before = c.received.len();
        let res = c.feed(&replay_events(wire, &changed, &mut rng, 1));
        prop_assert!(res.is_err(), "a replay differing in delivered content must diverge");
        // Nothing after the difference reached the client: what it has is still a prefix.
        let new = &c.received[before..];
        let text: String = match wire {
            Wire::Converse => new.iter().map(|m| String::from_utf8_lossy(m.payload()).into_owned()).collect(),
            Wire::Claude | Wire::Llama => inner(new).iter().map(Value::to_string).collect(),
        };
        prop_assert!(!text.contains('Z'));
    }
}
