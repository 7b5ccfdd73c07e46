//! Every class produces what it says; the default mix and the forced-then-random rule. How
//! the replies go through the relay's seam is tested with the seam (`resume`).

use super::*;
use crate::sampled;

/// Byte position in `reply` right after the character that gives the last letter or digit of
/// the first occurrence of `anchor`'s normal form that is not a mention (an opening quote
/// right before it), as the relay's seam reads it.
fn anchor_end(reply: &str, anchor: &str) -> Option<usize> {
    let want: Vec<char> = normal(anchor).chars().collect();
    let mut norm: Vec<(char, usize, usize)> = Vec::new();
    for (i, c) in reply.char_indices() {
        if c.is_alphanumeric() {
            for l in c.to_lowercase() {
                norm.push((l, i, i + c.len_utf8()));
            }
        }
    }
    (0..norm.len().saturating_sub(want.len() - 1))
        .filter(|&s| (0..want.len()).all(|j| norm[s + j].0 == want[j]))
        .find(|&s| !reply[..norm[s].1].ends_with(['“', '"', '«']))
        .map(|s| norm[s + want.len() - 1].2)
}

/// Cases: (delivered, anchor, rest) from sampled answers cut after various pieces.
fn cases() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for seed in 0..24u64 {
        let pieces = sampled::subwords(sampled::answer(seed * 7919 + 3, 90));
        for k in (6..pieces.len()).step_by(7) {
            let delivered = pieces[..k].concat();
            let Some(anchor) = anchor_for(&delivered) else {
                continue;
            };
            out.push((delivered, anchor, pieces[k..].concat()));
        }
    }
    assert!(out.len() > 200, "{}", out.len());
    out
}

const FOLLOWING_REST: &[Class] = &[
    Class::Anchor,
    Class::EchoWords,
    Class::EchoSentence,
    Class::EchoTwoSentences,
    Class::Recapitalised,
    Class::Punctuation,
    Class::Ellipsis,
    Class::Whitespace,
    Class::Opener,
    Class::QuotedOpener,
    Class::Restart,
    Class::NearRestart,
    Class::Fence,
    Class::List,
];

#[test]
fn names_round_trip_and_sides_split_the_classes() {
    assert_eq!(CLASSES.len(), 23);
    for c in CLASSES {
        assert_eq!(Class::from_name(c.name()), Some(*c));
    }
    assert_eq!(Class::from_name("random"), None);
    let rest: Vec<Class> = CLASSES
        .iter()
        .copied()
        .filter(|c| !c.for_complete() && !c.broken())
        .collect();
    assert_eq!(rest, FOLLOWING_REST);
    assert_eq!(
        CLASSES.iter().filter(|c| c.broken()).count(),
        4,
        "broken-clean, -short-echo, -preamble, -done-sentence"
    );
}

#[test]
fn the_protocol_turn_is_recognised_and_its_anchor_read() {
    let ask = ask_for("bright tide over the «x» meadow");
    assert_eq!(anchor_of(&ask), Some("bright tide over the «x» meadow"));
    assert_eq!(anchor_of(&ask_for("a b c d")), Some("a b c d"));
    assert_eq!(anchor_of("Please continue «where you were»."), None);
    assert_eq!(anchor_of("Reply with [[ANSWER COMPLETE]] if done."), None);
    assert_eq!(normal("…Mike, tango!"), "miketango");
}

#[test]
fn every_following_class_puts_the_anchor_where_the_delivered_text_ends() {
    for (i, (d, anchor, rest)) in cases().iter().enumerate() {
        for &class in FOLLOWING_REST {
            let seed = i as u64 * 31 + class as u64;
            let p = phrase(class, d, anchor, rest, seed);
            let reply = &p.text;
            let ctx = || format!("{class:?} {d:?} anchor {anchor:?}\n  reply {reply:?}");
            assert!(reply.ends_with(rest.as_str()), "{}", ctx());
            let end = anchor_end(reply, anchor).unwrap_or_else(|| panic!("{}", ctx()));
            assert_eq!(normal(&reply[end..]), normal(rest), "{}", ctx());
            let head = &reply[..reply.len() - rest.len()];
            match p.class {
                Class::Anchor => assert!(head.starts_with(anchor.as_str()), "{}", ctx()),
                Class::EchoWords => {
                    let words = head.split_whitespace().count();
                    let all = d.split_whitespace().count();
                    assert!(
                        words > anchor.split_whitespace().count() || words == all,
                        "{}",
                        ctx()
                    );
                    assert!(words <= 20.max(anchor.split_whitespace().count() + 1));
                    assert!(d.ends_with(head), "{}", ctx());
                }
                Class::EchoSentence | Class::EchoTwoSentences | Class::Restart => {
                    assert!(d.ends_with(head), "{}", ctx());
                    assert!(head.len() >= anchor.len(), "{}", ctx());
                    if p.class == Class::Restart {
                        assert_eq!(head, d, "{}", ctx());
                    }
                }
                Class::NearRestart => {
                    assert_ne!(head, d);
                    let (a, b): (Vec<&str>, Vec<&str>) = (
                        head.split_whitespace().collect(),
                        d.split_whitespace().collect(),
                    );
                    assert_eq!(a.len(), b.len(), "{}", ctx());
                    let changed = a.iter().zip(&b).filter(|(x, y)| x != y).count();
                    assert!((1..=3).contains(&changed), "{changed} {}", ctx());
                    let n = anchor.split_whitespace().count();
                    assert_eq!(a[a.len() - n..], b[b.len() - n..], "{}", ctx());
                }
                Class::Recapitalised => {
                    assert!(head.starts_with(char::is_uppercase), "{}", ctx());
                    assert_eq!(
                        head.to_lowercase(),
                        d[d.len() - head.len()..].to_lowercase()
                    );
                }
                Class::Punctuation => {
                    assert!(!d.ends_with(head), "something changed: {}", ctx());
                    assert!(
                        normal(d).ends_with(&normal(head)),
                        "only punctuation: {}",
                        ctx()
                    );
                    let strip = |s: &str| s.replace(|c: char| c.is_ascii_punctuation(), "");
                    assert!(strip(d).ends_with(&strip(head)), "{}", ctx());
                }
                Class::Whitespace => {
                    assert!(!d.ends_with(head), "something changed: {}", ctx());
                    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
                    assert!(squash(d).ends_with(&squash(head)), "{}", ctx());
                }
                Class::Ellipsis => assert!(
                    head.starts_with('…') || head.starts_with("..."),
                    "{}",
                    ctx()
                ),
                Class::Fence => assert!(head.starts_with("```"), "{}", ctx()),
                Class::List => assert!(
                    ["- ", "* ", "1. "].iter().any(|m| head.starts_with(m)),
                    "{}",
                    ctx()
                ),
                Class::Opener | Class::QuotedOpener => {
                    assert!(!normal(d).contains(&normal(&head[..head.len() - 1])));
                    if p.class == Class::QuotedOpener {
                        let first = normal(head).find(&normal(anchor)).unwrap();
                        assert!(first < normal(head).rfind(&normal(anchor)).unwrap());
                    }
                }
                c => panic!("{c:?}"),
            }
        }
    }
}

#[test]
fn complete_classes_say_so_and_broken_ones_do_not_follow_the_protocol() {
    for (i, (d, anchor, rest)) in cases().iter().enumerate() {
        let seed = i as u64;
        let complete = |c| phrase(c, d, anchor, "", seed).text;
        assert_eq!(complete(Class::CompleteMarker), MARKER);
        let opener = complete(Class::CompleteOpener);
        assert!(opener.ends_with(MARKER) && opener.len() > MARKER.len() + 2);
        assert!(!normal(&opener).contains(&normal(anchor)));
        assert_eq!(complete(Class::CompleteAnchor), *anchor);
        let am = complete(Class::CompleteAnchorMarker);
        assert!(am.starts_with(anchor.as_str()) && am.ends_with(MARKER));
        assert!(complete(Class::CompleteEmpty).trim().is_empty());
        let done = complete(Class::BrokenDoneSentence);
        assert!(!done.contains(MARKER) && !done.is_empty());

        let broken = |c| phrase(c, d, anchor, rest, seed);
        for c in [
            Class::BrokenClean,
            Class::BrokenShortEcho,
            Class::BrokenPreamble,
        ] {
            let p = broken(c);
            assert!(p.text.ends_with(rest.trim_start()), "{c:?} {p:?}");
            assert!(anchor_end(&p.text, anchor).is_none(), "{c:?} {p:?}");
        }
        assert_eq!(broken(Class::BrokenClean).text, *rest);
        let short = broken(Class::BrokenShortEcho);
        assert_eq!(short.class, Class::BrokenShortEcho);
        let echoed = short.text.len() - rest.len();
        assert!(echoed > 0 && d.ends_with(&short.text[..echoed]));
    }
}

#[test]
fn replies_and_draws_are_seeded() {
    let cases = cases();
    let (d, anchor, rest) = &cases[5];
    for &c in CLASSES {
        let r = if c.for_complete() { "" } else { rest.as_str() };
        assert_eq!(phrase(c, d, anchor, r, 9), phrase(c, d, anchor, r, 9));
    }
    let openers: std::collections::HashSet<String> = (0..300)
        .map(|s| phrase(Class::Opener, d, anchor, rest, s).text)
        .collect();
    assert!(
        openers.len() > 150,
        "generated, not a short list: {}",
        openers.len()
    );
    for s in 0..100 {
        assert_eq!(draw(s, false), draw(s, false));
    }
}

#[test]
fn a_directive_forces_the_first_instructed_continuation_only() {
    let text = "Tell me sim:phrase=fence please";
    assert_eq!(choose(text, true, 1, false), Class::Fence);
    for seed in 0..50 {
        assert_eq!(choose(text, false, seed, false), draw(seed, false));
        // A class of the other side falls back to the default draw.
        assert_eq!(choose(text, true, seed, true), draw(seed, true));
        let complete = "x sim:phrase=complete-anchor";
        assert_eq!(choose(complete, true, seed, true), Class::CompleteAnchor);
        assert_eq!(choose(complete, true, seed, false), draw(seed, false));
        assert_eq!(
            choose("sim:phrase=random", true, seed, false),
            draw(seed, false)
        );
    }
    assert_eq!(
        choose("sim:phrase=broken-preamble", true, 3, false),
        Class::BrokenPreamble
    );
}

#[test]
fn the_default_mix_draws_every_class_and_breaks_the_protocol_half_a_percent_of_the_time() {
    for complete in [false, true] {
        let n = 40_000u64;
        let draws: Vec<Class> = (0..n)
            .map(|s| draw(gen::hash_parts([s.to_string().as_str()]), complete))
            .collect();
        let broken = draws.iter().filter(|c| c.broken()).count() as f64 / n as f64;
        assert!((0.0035..0.0065).contains(&broken), "{complete} {broken}");
        let side: Vec<Class> = CLASSES
            .iter()
            .copied()
            .filter(|c| c.for_complete() == complete)
            .collect();
        for c in &side {
            let share = draws.iter().filter(|d| *d == c).count() as f64 / n as f64;
            if !c.broken() {
                let fair = (1.0 - 0.005)
                    / (side.len() - side.iter().filter(|c| c.broken()).count()) as f64;
                assert!((share - fair).abs() < fair * 0.2, "{c:?} {share} {fair}");
            } else {
                assert!(share > 0.0, "{c:?} drawn");
            }
        }
        assert!(draws.iter().all(|c| c.for_complete() == complete));
    }
}
