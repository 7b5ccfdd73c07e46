//! Exponential backoff with full jitter: `rand(0,1) * min(base * 2^(n-1), max)`.
//! The exponential ceiling comes from `backon`; the full jitter is applied here (backon's
//! own jitter is additive, which would exceed the ceiling).

use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::Duration;

/// Longest exponent computed; past it the ceiling is `max` anyway for any sane base.
const MAX_STEPS: u32 = 64;

/// Backoff policy; cheap to copy and share.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max }
    }

    /// Upper bound of the delay before retry number `retry` (1 = first retry):
    /// `min(base * 2^(retry-1), max)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let n = retry.clamp(1, MAX_STEPS) as usize;
        ExponentialBuilder::new()
            .with_min_delay(self.base)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .without_max_times()
            .build()
            .nth(n - 1)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// Delay before retry number `retry` (1 = first retry), uniformly drawn from
    /// `[0, ceiling(retry)]`.
    pub fn delay(&self, retry: u32) -> Duration {
        self.ceiling(retry).mul_f64(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_then_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let c: Vec<u128> = (1..=6).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(c, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(
            b.ceiling(0).as_millis(),
            100,
            "0 treated as the first retry"
        );
        assert_eq!(b.ceiling(10_000), Duration::from_secs(1));
    }

    #[test]
    fn delays_within_full_jitter_bounds() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(20));
        for n in 1..=12 {
            let cap = Duration::from_millis(100 * (1u64 << (n - 1))).min(Duration::from_secs(20));
            let mut below_half = false;
            for _ in 0..200 {
                let d = b.delay(n);
                assert!(d <= cap, "retry {n}: {d:?} > {cap:?}");
                below_half |= d < cap / 2;
            }
            assert!(
                below_half,
                "retry {n}: jitter is not full (never below half the cap)"
            );
        }
    }

    #[test]
    fn zero_base_gives_zero() {
        let b = Backoff::new(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(b.delay(3), Duration::ZERO);
    }
}
