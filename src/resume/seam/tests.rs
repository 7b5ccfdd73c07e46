//! Tests of the seam: the corpus (`corpus.toml`) fed whole, by characters and in random
//! pieces, each rule proven needed by a case that fails without it; plus the prefill seam
//! and the look-ahead bounds.

use super::*;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Corpus {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    #[allow(dead_code)]
    note: Option<String>,
    rules: Vec<String>,
    delivered: String,
    continuation: String,
    expected: Option<String>,
    #[serde(default)]
    error: bool,
}

const RULES: [&str; 6] = [
    "preamble",
    "fence",
    "restart",
    "echo",
    "whitespace",
    "block",
];

fn without(rule: &str) -> Rules {
    let mut r = Rules::ALL;
    match rule {
        "preamble" => r.preamble = false,
        "fence" => r.fence = false,
        "restart" => r.restart = false,
        "echo" => r.echo = false,
        "whitespace" => r.whitespace = false,
        "block" => r.block = false,
        other => panic!("unknown rule {other:?} in the corpus"),
    }
    r
}

fn corpus() -> Vec<Case> {
    let text = include_str!("corpus.toml");
    toml::from_str::<Corpus>(text)
        .expect("seam corpus parses")
        .case
}

/// The client's whole text, or `Err` when the seam refused.
fn splice(c: &Case, rules: Rules, pieces: &[&str]) -> Result<String, String> {
    let d = c.delivered.trim_end();
    let mut seam = Seam::instructed_with(d, &c.delivered[d.len()..], rules);
    let mut out = c.delivered.clone();
    for p in pieces {
        if let Some(t) = seam.feed(p, false) {
            out.push_str(&t);
        }
        if let Some(f) = seam.take_failure() {
            return Err(f);
        }
    }
    out.push_str(&seam.flush());
    match seam.take_failure() {
        Some(f) => Err(f),
        None => Ok(out),
    }
}

/// Deterministic splits of `s` on char boundaries: whole, by chars, and random pieces.
fn splits(s: &str) -> Vec<Vec<&str>> {
    let mut all = vec![
        vec![s],
        s.char_indices()
            .map(|(i, c)| &s[i..i + c.len_utf8()])
            .collect(),
    ];
    let mut rng = crate::sim::gen::Rng::new(s.len() as u64);
    for _ in 0..8 {
        let mut v = Vec::new();
        let mut at = 0;
        while at < s.len() {
            let mut end = (at + 1 + rng.below(12) as usize).min(s.len());
            while !s.is_char_boundary(end) {
                end += 1;
            }
            v.push(&s[at..end]);
            at = end;
        }
        all.push(v);
    }
    all
}

#[test]
fn corpus_cases_splice_as_expected_however_the_text_is_streamed() {
    let cases = corpus();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    for c in &cases {
        for pieces in splits(&c.continuation) {
            let got = splice(c, Rules::ALL, &pieces);
            match (&c.expected, c.error) {
                (_, true) => assert!(got.is_err(), "{}: expected an error, got {got:?}", c.name),
                (Some(e), false) => assert_eq!(got.as_ref(), Ok(e), "{} in {pieces:?}", c.name),
                (None, false) => panic!("{}: no expected text", c.name),
            }
        }
    }
}

#[test]
fn every_rule_is_needed_by_a_corpus_case() {
    let cases = corpus();
    for rule in RULES {
        let proving: Vec<&Case> = cases
            .iter()
            .filter(|c| c.rules.iter().any(|r| r == rule))
            .collect();
        assert!(!proving.is_empty(), "no corpus case proves the {rule} rule");
        for c in proving {
            let with = splice(c, Rules::ALL, &[&c.continuation]);
            let off = splice(c, without(rule), &[&c.continuation]);
            assert_ne!(with, off, "{}: passes without the {rule} rule", c.name);
        }
    }
}

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
    let mut s = Seam::prefill(" ");
    assert_eq!(s.feed(" a", false).as_deref(), Some("a"));
    assert_eq!(s.feed(" b", false).as_deref(), Some(" b"));
}

#[test]
fn instructed_holds_text_only_while_a_rule_is_undecided() {
    let mut s = Seam::instructed("one two three", " ");
    assert_eq!(s.feed("two", false), None);
    assert_eq!(s.feed(" thr", false), None);
    assert_eq!(s.feed("ee four", false).as_deref(), Some("four"));
    assert_eq!(s.feed(" five", false).as_deref(), Some(" five"));
    // Text no rule can apply to goes out at once.
    let mut s = Seam::instructed("one two three", "");
    assert_eq!(s.feed("n four", false).as_deref(), Some("n four"));
    // A short answer that ends while undecided is flushed as is.
    let mut s = Seam::instructed("one two three", "");
    assert_eq!(s.feed("two", false), None);
    assert_eq!(s.flush(), "two");
}

#[test]
fn look_ahead_is_bounded_and_a_restart_is_matched_without_holding() {
    let mut s = Seam::instructed("word", "");
    let start = "Continuing";
    assert_eq!(s.feed(start, false), None, "could be a preamble");
    let filler = "x".repeat(MAX_BUFFER);
    let out = s.feed(&filler, false).expect("decided at the bound");
    assert_eq!(out.len(), start.len() + filler.len());
    let long = "lorem ".repeat(120);
    let d = long.trim_end();
    let mut s = Seam::instructed(d, " ");
    for chunk in d.as_bytes().chunks(7) {
        let chunk = std::str::from_utf8(chunk).unwrap();
        assert_eq!(
            s.feed(chunk, false).as_deref().filter(|t| !t.is_empty()),
            None
        );
        assert!(s.buf.len() <= RESTART_PROBE_BYTES, "held {}", s.buf.len());
    }
    assert_eq!(s.feed(" ipsum", false).as_deref(), Some("ipsum"));
    assert!(s.take_failure().is_none());
}

#[test]
fn candidates_respect_the_word_and_byte_limits() {
    let d = (1..=80)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let c = overlap_candidates(&d);
    assert_eq!(c.len(), MAX_OVERLAP_WORDS);
    assert_eq!(
        &d[c[0]..],
        (17..=80)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert!(overlap_candidates(&"x".repeat(MAX_OVERLAP_BYTES + 1)).is_empty());
}

#[test]
fn every_simulated_model_behaviour_heals_at_every_cut() {
    use crate::sim::{gen, sampled};
    // The simulator's Claude 4.6+ streams: sampled answers in sub-word pieces, cut at every
    // fifth piece, continued in each way a model continues.
    let behaviours = [
        sampled::Behaviour::Clean,
        sampled::Behaviour::Echo(1),
        sampled::Behaviour::Echo(3),
        sampled::Behaviour::Sentence,
        sampled::Behaviour::Preamble,
        sampled::Behaviour::PreambleEcho,
        sampled::Behaviour::Whitespace,
        sampled::Behaviour::Ellipsis,
        sampled::Behaviour::Restart,
    ];
    let mut checked = 0;
    for seed in 0..12u64 {
        let pieces = sampled::subwords(sampled::answer(seed * 7919, 120));
        let reference = |_: u32| sampled::answer(seed * 7919, 120);
        for k in (1..pieces.len()).step_by(5) {
            let client = pieces[..k].concat();
            let d = client.trim_end();
            for (i, b) in behaviours.iter().enumerate() {
                let c = sampled::continue_after(d, 2, &reference, *b, seed + i as u64)
                    .expect("a prefix of the sample");
                let mut seam = Seam::instructed(d, &client[d.len()..]);
                let mut got = client.clone();
                for p in &c.pieces {
                    got.push_str(&seam.feed(p, false).unwrap_or_default());
                }
                got.push_str(&seam.flush());
                assert!(seam.take_failure().is_none(), "{b:?} at {k}");
                assert_eq!(
                    got, c.intended,
                    "{b:?} after {d:?}\n  streamed {:?}",
                    c.pieces
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 2000, "{checked}");
    // A restart that is sampled differently never reaches the client: the seam refuses.
    let pieces = gen::pieces(5, 200);
    let client = pieces[..150].concat();
    let d = client.trim_end();
    let diverging = sampled::Behaviour::RestartDiverging;
    let c = sampled::continue_after(d, 2, &|_| gen::pieces(5, 200), diverging, 1).unwrap();
    let mut seam = Seam::instructed(d, &client[d.len()..]);
    let sent: String = c
        .pieces
        .iter()
        .filter_map(|p| seam.feed(p, false))
        .collect();
    let sent = sent + &seam.flush();
    assert!(seam.take_failure().is_some(), "refused");
    assert_eq!(sent, "", "nothing of the duplicate was emitted");
}
