//! The sampled models' behaviours. How replies heal through the relay's seam is tested in
//! the relay: `src/resume/seam/tests.rs` (replies from its own generator, independent of
//! this simulator) and, end to end against this simulator, `tests/no_prefill_heal.rs`.

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
