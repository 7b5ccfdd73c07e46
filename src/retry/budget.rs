//! The retry token bucket shared by every request (AWS SDK standard mode): capacity N,
//! a retry costs 5 tokens, a retry after a timeout 10. A request that ends in success gives
//! back what its retries took ([`RetryBudget::release`]), or 1 when it never retried
//! ([`RetryBudget::on_success`]), so only failures drain the bucket (botocore
//! `retries/standard.py`, `RetryQuotaChecker.release_retry_quota`, does the same for the
//! last retry's cost; the relay returns every retry's, since a healed stream may need several).
//! Lock-free: one `AtomicU32` updated with compare-exchange, since it is on every request.

use std::sync::atomic::{AtomicU32, Ordering};

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
}

impl RetryBudget {
    /// A full bucket of `capacity` tokens.
    pub fn new(capacity: u32) -> Self {
        RetryBudget {
            capacity,
            tokens: AtomicU32::new(capacity),
        }
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
