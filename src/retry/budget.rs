//! The retry token bucket shared by every request (AWS SDK standard mode): capacity N,
//! a retry costs 5 tokens, a retry after a timeout 10. A request that ends in success gives
//! back what its retries took ([`RetryBudget::release`]), or 1 when it never retried
//! ([`RetryBudget::on_success`]), so only failures drain the bucket (botocore
//! `retries/standard.py`, `RetryQuotaChecker.release_retry_quota`, does the same for the
//! last retry's cost; the relay returns every retry's, since a healed stream may need several).
//! Lock-free: one `AtomicU32` updated with compare-exchange, since it is on every request.
//!
//! A broken upstream connection is paid for once: over h2 one connection carries hundreds of
//! streams and its reset breaks them all at once. The first stream to report the connection
//! pays ([`RetryBudget::first_failure_of`]); the others that report it within
//! [`SHARED_FAILURE_WINDOW`] retry on that payment (each still with its own jittered backoff
//! and attempt and resume caps). Otherwise a single reset of a shared connection would drain
//! the bucket and leave most of its streams unhealed. Resets of single streams on a healthy
//! connection, spread over time, each pay as before.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Broken connections remembered for [`RetryBudget::first_failure_of`].
const REMEMBERED_CONNECTIONS: usize = 256;
/// How long after a connection's first reported failure further failures of streams on it
/// count as the same failure. A dead connection fails all its streams at once (one read
/// error wakes them together), so a second is generous.
pub const SHARED_FAILURE_WINDOW: Duration = Duration::from_secs(1);

/// What kind of retry is being paid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCost {
    /// Any retryable failure other than a timeout (5 tokens).
    Retry,
    /// A retry after a timeout or stall (10 tokens).
    Timeout,
}

impl RetryCost {
    pub fn tokens(self) -> u32 {
        match self {
            RetryCost::Retry => 5,
            RetryCost::Timeout => 10,
        }
    }
}

/// Token bucket limiting retries across all requests, so an outage does not turn into a
/// retry storm. Share it behind an `Arc`.
#[derive(Debug)]
pub struct RetryBudget {
    capacity: u32,
    tokens: AtomicU32,
    /// Upstream connections whose failure was paid for, and when; newest last.
    broken: Mutex<VecDeque<(u64, Instant)>>,
}

impl RetryBudget {
    /// A full bucket of `capacity` tokens.
    pub fn new(capacity: u32) -> Self {
        RetryBudget {
            capacity,
            tokens: AtomicU32::new(capacity),
            broken: Mutex::new(VecDeque::new()),
        }
    }

    /// Whether a failure reported `now` for upstream connection `id` is a new one (the retry
    /// pays), or the same failure as one paid for within [`SHARED_FAILURE_WINDOW`] (among
    /// the last 256 connections that failed).
    pub fn first_failure_of(&self, id: u64, now: Instant) -> bool {
        let mut broken = self.broken.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = broken.iter_mut().find(|(c, _)| *c == id).map(|(_, at)| at) {
            if now.saturating_duration_since(*at) < SHARED_FAILURE_WINDOW {
                return false;
            }
            *at = now;
            return true;
        }
        if broken.len() == REMEMBERED_CONNECTIONS {
            broken.pop_front();
        }
        broken.push_back((id, now));
        true
    }

    /// Take the tokens for one retry; false (and nothing taken) when not enough are left.
    pub fn try_acquire(&self, cost: RetryCost) -> bool {
        let need = cost.tokens();
        self.tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(need))
            .is_ok()
    }

    /// Refund one token after a request that succeeded without retrying, up to capacity.
    pub fn on_success(&self) {
        self.release(1);
    }

    /// Give back `tokens` (what a request that finally succeeded spent on its retries),
    /// up to capacity.
    pub fn release(&self, tokens: u32) {
        let cap = self.capacity;
        // Err only means the bucket is already full: nothing to do.
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t < cap).then(|| t.saturating_add(tokens).min(cap))
            });
    }

    /// Tokens left now.
    pub fn available(&self) -> u32 {
        self.tokens.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_connection_failure_is_paid_once() {
        let b = RetryBudget::new(10);
        let t0 = Instant::now();
        let later = |ms| t0 + Duration::from_millis(ms);
        assert!(b.first_failure_of(7, t0));
        assert!(!b.first_failure_of(7, later(5)), "the same failure");
        assert!(!b.first_failure_of(7, later(900)));
        assert!(b.first_failure_of(8, later(900)), "another connection");
        assert!(
            b.first_failure_of(7, later(1_000)),
            "a stream reset a second later on a live connection pays again"
        );
        assert!(!b.first_failure_of(7, later(1_100)));
        for id in 100..100 + REMEMBERED_CONNECTIONS as u64 {
            assert!(b.first_failure_of(id, later(1_200)));
        }
        assert!(
            b.first_failure_of(7, later(1_300)),
            "forgotten after 256 newer failures"
        );
    }

    #[test]
    fn hundred_retries_exhaust_500() {
        let b = RetryBudget::new(500);
        for i in 0..100 {
            assert!(b.try_acquire(RetryCost::Retry), "retry {i} should pass");
        }
        assert_eq!(b.available(), 0);
        assert!(!b.try_acquire(RetryCost::Retry));
        assert_eq!(b.available(), 0, "a refused acquire takes nothing");
    }

    #[test]
    fn timeouts_cost_ten_and_partial_is_refused() {
        let b = RetryBudget::new(25);
        assert!(b.try_acquire(RetryCost::Timeout));
        assert!(b.try_acquire(RetryCost::Timeout));
        assert_eq!(b.available(), 5);
        assert!(!b.try_acquire(RetryCost::Timeout));
        assert!(b.try_acquire(RetryCost::Retry));
        assert_eq!(b.available(), 0);
    }

    #[test]
    fn refunds_cap_at_capacity() {
        let b = RetryBudget::new(10);
        b.on_success();
        assert_eq!(b.available(), 10);
        assert!(b.try_acquire(RetryCost::Retry));
        for _ in 0..3 {
            b.on_success();
        }
        assert_eq!(b.available(), 8);
        for _ in 0..10 {
            b.on_success();
        }
        assert_eq!(b.available(), 10);
    }

    #[test]
    fn a_request_that_healed_gives_back_what_its_retries_took() {
        let b = RetryBudget::new(500);
        // 150 requests in a row, each retried once and then successful: nothing drains.
        for i in 0..150 {
            assert!(b.try_acquire(RetryCost::Retry), "request {i}");
            b.release(RetryCost::Retry.tokens());
        }
        assert_eq!(b.available(), 500);
        assert!(b.try_acquire(RetryCost::Timeout));
        b.release(RetryCost::Timeout.tokens() + 100);
        assert_eq!(b.available(), 500, "never above capacity");
    }

    #[test]
    fn concurrent_acquires_never_overdraw() {
        let b = Arc::new(RetryBudget::new(500));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    (0..60).filter(|_| b.try_acquire(RetryCost::Retry)).count()
                })
            })
            .collect();
        let won: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(won, 100);
        assert_eq!(b.available(), 0);
    }
}
