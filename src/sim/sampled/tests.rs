//! How the behaviours heal through the relay's seam is tested in `resume::seam`'s tests,
//! which feed every behaviour at every cut through it.

use super::*;

#[test]
fn unset_temperature_is_one_for_sampled_models_only() {
    assert_eq!(temperature(None, true), Some(1.0));
    assert_eq!(temperature(Some(0.0), true), Some(0.0));
    assert_eq!(temperature(None, false), None);
}

#[test]
fn sampled_answers_never_repeat_the_last_words_at_once() {
    for seed in 0..300 {
        let words: Vec<String> = answer(seed, 200)
            .iter()
            .map(|p| p.trim().trim_end_matches(['.', ',', '\n']).to_lowercase())
            .collect();
        for i in 1..words.len() {
            for k in 1..=3 {
                if i + 1 >= 2 * k {
                    assert_ne!(
                        words[i + 1 - k..=i],
                        words[i + 1 - 2 * k..=i - k],
                        "{seed} {i}"
                    );
                }
            }
        }
    }
}

#[test]
fn long_words_stream_in_two_pieces_and_the_text_is_unchanged() {
    let pieces: Vec<String> = ["The", " lantern", " glowed,", " ancient.\n\n", "Copper"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let split = subwords(pieces.clone());
    assert_eq!(split.concat(), pieces.concat());
    assert_eq!(split[1..3], [" lant".to_string(), "ern".to_string()]);
    assert!(split.contains(&" anci".to_string()), "{split:?}");
    assert_eq!(split.len(), pieces.len() + 2);
}

#[test]
fn behaviours_by_name_or_at_random_with_every_one_drawn() {
    assert_eq!(Behaviour::from_name("echo2"), Some(Behaviour::Echo(2)));
    assert_eq!(Behaviour::from_name("echo0"), None);
    assert_eq!(
        Behaviour::from_name("restart-diverging"),
        Some(Behaviour::RestartDiverging)
    );
    assert_eq!(
        Behaviour::choose("x sim:cont=preamble y", 1),
        Behaviour::Preamble
    );
    assert_eq!(
        Behaviour::choose("x", 42),
        Behaviour::choose("x", 42),
        "seeded"
    );
    let drawn: std::collections::HashSet<String> = (0..2000)
        .map(|s| format!("{:?}", Behaviour::choose("", s)))
        .collect();
    assert_eq!(drawn.len(), RANDOM.len(), "{drawn:?}");
    assert!(!drawn.contains("RestartDiverging"), "only by directive");
}

#[test]
fn a_continuation_continues_the_sample_the_delivered_text_came_from() {
    let reference = |a: u32| gen::pieces(1000 + u64::from(a), 60);
    let second = reference(2).concat();
    let delivered = second[..second.len() / 2].trim_end();
    let c = continue_after(delivered, 4, &reference, Behaviour::Clean, 7).expect("found");
    assert_eq!(c.intended, second);
    assert_eq!(format!("{delivered}{}", c.pieces.concat()), second);
    assert!(continue_after("Not from any sample", 4, &reference, Behaviour::Clean, 7).is_none());
    let echo = continue_after(delivered, 4, &reference, Behaviour::Echo(2), 7).unwrap();
    assert!(echo
        .pieces
        .concat()
        .starts_with(gen::last_words(delivered, 2)));
    let pre = continue_after(delivered, 4, &reference, Behaviour::Preamble, 0).unwrap();
    assert!(pre.pieces[0].starts_with("Continuing from where I left off:"));
    let restart = continue_after(delivered, 4, &reference, Behaviour::Restart, 0).unwrap();
    assert_eq!(restart.pieces.concat(), second, "the whole answer again");
}
