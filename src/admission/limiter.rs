//! What one quota admits, learned from the throttles Bedrock sends: a token bucket whose
//! rate is found by additive increase and multiplicative decrease (AIMD).
//!
//! Unknown at first (nothing is held until the first throttle). At the first throttle the
//! rate starts from what was admitted over the last minute (measured), times [`DECREASE`];
//! each later throttle (at most one per [`COOLDOWN`]: one congestion event throttles every
//! request in flight at once) multiplies it by [`DECREASE`] and empties the bucket, since
//! Bedrock's is empty then too. While requests wait (the quota is the bottleneck) the rate
//! grows by [`INCREASE`] of itself per second, so it keeps probing for a raised quota or a
//! refill. The bucket holds [`BURST`] seconds of the rate: what leaves at once is small
//! next to Bedrock's minute, so a wrong estimate costs a few throttles, not a wave.

use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Multiplicative decrease on a throttle.
pub const DECREASE: f64 = 0.85;
/// Additive increase while saturated: this share of the last decreased rate, per second.
pub const INCREASE: f64 = 0.03;
/// Least growth while saturated, as a share of the rate per second.
pub const GROWTH: f64 = 0.10;
/// One decrease per congestion event.
pub const COOLDOWN: Duration = Duration::from_secs(1);
/// Seconds of the rate the bucket may hold.
pub const BURST: f64 = 1.0;
/// How far back admitted cost is measured (Bedrock's quotas are per minute).
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Limiter {
    /// Learned rate, per second; `None` until the first throttle.
    rate: Option<f64>,
    /// The rate right after the last decrease: the unit of the additive increase.
    floor: f64,
    level: f64,
    last: Instant,
    last_decrease: Option<Instant>,
    /// Cost admitted over the last [`WINDOW`] (what the first estimate is measured from).
    history: VecDeque<(Instant, f64)>,
    history_sum: f64,
    started: Option<Instant>,
}

impl Limiter {
    pub fn new(now: Instant) -> Self {
        Limiter {
            rate: None,
            floor: 0.0,
            level: 0.0,
            last: now,
            last_decrease: None,
            history: VecDeque::new(),
            history_sum: 0.0,
            started: None,
        }
    }

    /// A limiter that starts from a rate learned elsewhere (the same model's quota in
    /// another region: Bedrock's default quotas are the same in each region), its bucket
    /// full; throttles correct it as they would a learned one.
    pub fn seeded(now: Instant, rate: f64) -> Self {
        Limiter {
            rate: Some(rate),
            floor: rate,
            level: Self::capacity(rate),
            ..Limiter::new(now)
        }
    }

    /// The learned rate per second, if a throttle taught one.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    fn capacity(rate: f64) -> f64 {
        rate * BURST
    }

    /// Refill up to now; `saturated`: requests are waiting, so the rate may grow.
    pub fn refill(&mut self, now: Instant, saturated: bool) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        if let Some(rate) = self.rate.as_mut() {
            if saturated {
                // Additive in the floor, but at least GROWTH of the rate itself per second, so a
                // first estimate far too low (reservations are much larger than what Bedrock
                // finally charges) is outgrown in seconds, not minutes.
                *rate += (INCREASE * self.floor).max(GROWTH * *rate) * dt;
            }
            let cap = Self::capacity(*rate);
            self.level = (self.level + *rate * dt).min(cap);
        }
    }

    /// How long until `cost` may be admitted (zero: now).
    pub fn wait_for(&self, cost: f64) -> Duration {
        match self.rate {
            None => Duration::ZERO,
            Some(rate) => {
                // A request costing more than the bucket holds goes when the bucket is full.
                let need = cost.min(Self::capacity(rate));
                if self.level >= need {
                    Duration::ZERO
                } else {
                    Duration::from_secs_f64(((need - self.level) / rate.max(1e-9)).min(3600.0))
                }
            }
        }
    }

    pub fn take(&mut self, cost: f64, now: Instant) {
        self.started.get_or_insert(now);
        if self.rate.is_some() {
            self.level -= cost;
        }
        self.history.push_back((now, cost));
        self.history_sum += cost;
        while let Some(&(t, c)) = self.history.front() {
            if now.saturating_duration_since(t) <= WINDOW {
                break;
            }
            self.history.pop_front();
            self.history_sum -= c;
        }
    }

    /// A request that was admitted but never sent gives its cost back.
    pub fn give_back(&mut self, cost: f64) {
        if let Some(rate) = self.rate {
            self.level = (self.level + cost).min(Self::capacity(rate));
        }
    }

    /// Bedrock throttled a request: decrease (once per congestion event), empty the bucket.
    pub fn throttled(&mut self, now: Instant) {
        if self
            .last_decrease
            .is_some_and(|t| now.saturating_duration_since(t) < COOLDOWN)
        {
            return;
        }
        self.last_decrease = Some(now);
        let rate = match self.rate {
            Some(r) => r * DECREASE,
            None => {
                // Measured: what Bedrock admitted over the last minute (at least 250 ms of it):
                // an overestimate is cheap (throttles are absorbed, and decrease it again).
                let since = self
                    .started
                    .map(|s| now.saturating_duration_since(s))
                    .unwrap_or_default()
                    .clamp(Duration::from_millis(250), WINDOW);
                (self.history_sum / since.as_secs_f64()) * DECREASE
            }
        };
        let rate = rate.max(0.01);
        self.rate = Some(rate);
        self.floor = rate;
        self.level = 0.0;
        self.last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn aimd_learns_and_probes() {
        let t0 = Instant::now();
        let mut l = Limiter::new(t0);
        assert_eq!(l.wait_for(1e9), Duration::ZERO, "unknown: nothing held");
        for i in 0..10 {
            l.take(100.0, t0 + Duration::from_millis(i * 100));
        }
        // 1000 admitted over (at least) 1 s, then a throttle.
        l.throttled(t0 + Duration::from_secs(1));
        assert!((l.rate().unwrap() - 850.0).abs() < 1e-6);
        // A second throttle in the same event does not decrease again.
        l.throttled(t0 + Duration::from_millis(1500));
        assert!((l.rate().unwrap() - 850.0).abs() < 1e-6);
        assert!(l.wait_for(100.0) > Duration::ZERO, "bucket emptied");
        l.refill(t0 + Duration::from_secs(2), true);
        assert!(l.rate().unwrap() > 850.0, "grows while saturated");
        l.throttled(t0 + Duration::from_secs(3));
        assert!(l.rate().unwrap() < 850.0);
    }
}
