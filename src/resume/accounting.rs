//! Per-attempt accounting: what each attempt consumed ([`Tally`], kept by the transcript),
//! what failed attempts add to the final usage report ([`Accounting`], kept by the splicer
//! of the current attempt), and the [`LimitGuard`] that withholds a `max_tokens` stop which
//! may be the relay's bound rather than the client's limit.

use super::event::{self, More, Msg};
use super::{Strategy, Usage};
use std::time::Instant;

/// Tokens one attempt consumed, as far as the stream tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    /// How the attempt was made (`None`: the original request).
    pub strategy: Option<Strategy>,
    /// Output tokens the client had before this attempt started (exact where the stream
    /// reports running counts, else one per delta).
    pub delivered_before: u64,
    /// Deltas this attempt forwarded.
    pub deltas: u64,
    /// Input tokens the attempt announced (Claude message_start, Llama, Titan).
    pub known_input: Option<u64>,
    /// Cache read / write input tokens the attempt announced (Claude message_start).
    pub cache: (u64, u64),
    /// The last running output count the client saw from this attempt (Llama, Titan);
    /// `offset` of it came from earlier attempts (a continuation's counter is shifted).
    pub running: Option<u64>,
    pub offset: u64,
    /// When the attempt began streaming to the relay (wall time for `latencyMs`).
    pub started: Instant,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            strategy: None,
            delivered_before: 0,
            deltas: 0,
            known_input: None,
            cache: (0, 0),
            running: None,
            offset: 0,
            started: Instant::now(),
        }
    }
}

impl Tally {
    /// Output tokens: the attempt's own running count where the stream reports one (a
    /// replay's counter counts what it regenerated too); else one per delta forwarded, and a
    /// replay that got as far as forwarding something also regenerated what was delivered
    /// before it. (A replay that failed while still verifying counts 0: it may as well have
    /// been refused before streaming, which is not billed.)
    pub fn output(&self) -> u64 {
        if let Some(r) = self.running {
            return r.saturating_sub(self.offset);
        }
        let regenerated = match self.strategy {
            Some(Strategy::Replay) if self.deltas > 0 => self.delivered_before,
            _ => 0,
        };
        self.deltas + regenerated
    }

    /// Milliseconds from the start of the attempt until now.
    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The attempt produced something billable (failures before any output are not billed).
    pub fn billed(&self) -> bool {
        self.output() > 0 || self.known_input.is_some()
    }

    /// Extra input this attempt's request carried (the delivered text, ~one token per delta).
    pub fn extra_input(&self) -> u64 {
        match self.strategy {
            Some(Strategy::Prefill | Strategy::Instructed) => self.delivered_before,
            _ => 0,
        }
    }
}

/// Usage of the current attempt as far as known: for `failed_attempt_tokens_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptUsage {
    /// Input tokens, when the stream announced them before failing.
    pub input: Option<u64>,
    /// Output tokens: the exact running count where Llama and Titan report it, else
    /// estimated as the number of deltas generated.
    pub output: u64,
}

/// Usage accounting over attempts, kept by the splicer of the current attempt.
#[derive(Debug, Clone, Default)]
pub(crate) struct Accounting {
    pub failed: Vec<Tally>,
    /// Wall time of each failed attempt, measured when this attempt was planned.
    failed_ms: u64,
    /// Extra input of the current attempt's request (the delivered text).
    extra: u64,
    pub known_input: Option<u64>,
    /// Cache tokens the current attempt announced early (Claude message_start).
    pub known_cache: Option<(Option<u64>, Option<u64>)>,
}

impl Accounting {
    /// Accounting for a new attempt after the failed ones (`tallies`); `extra`: the
    /// delivered output its request carries as input (0 for a replay).
    pub(crate) fn after(tallies: &[Tally], extra: u64) -> Accounting {
        let failed_ms = tallies.iter().map(Tally::elapsed_ms).sum();
        let failed: Vec<Tally> = tallies.iter().copied().filter(Tally::billed).collect();
        Accounting {
            failed,
            failed_ms,
            extra,
            known_input: None,
            known_cache: None,
        }
    }

    /// What failed attempts add to a usage report whose input and cache counts are
    /// `reported_input` and `reported_cache`. A failed attempt's input is what it announced,
    /// else the final attempt's whole prompt (input plus cache read and write: `inputTokens`
    /// already excludes cached tokens) minus the delivered text it carried, plus what the
    /// failed attempt carried; it is counted as input (whether it hit the cache is not
    /// reported). Cache tokens a failed attempt announced are summed; latency is the sum of
    /// the failed attempts' wall time.
    pub(crate) fn carry(
        &self,
        reported_input: Option<u64>,
        reported_cache: Option<(Option<u64>, Option<u64>)>,
    ) -> (Usage, More) {
        let cache = reported_cache.or(self.known_cache).unwrap_or_default();
        let cached = cache.0.unwrap_or(0) + cache.1.unwrap_or(0);
        let base = reported_input
            .or(self.known_input)
            .map(|i| (i + cached).saturating_sub(self.extra));
        let usage = self.failed.iter().fold(Usage::default(), |acc, t| Usage {
            input: acc.input
                + t.known_input
                    .or(base.map(|b| b + t.extra_input()))
                    .unwrap_or(0),
            output: acc.output + t.output(),
        });
        let more = More {
            cache_read: self.failed.iter().map(|t| t.cache.0).sum(),
            cache_write: self.failed.iter().map(|t| t.cache.1).sum(),
            latency_ms: self.failed_ms,
        };
        (usage, more)
    }
}

/// A continuation asked for less than the client's limit left (the delivered count was only
/// bounded): its `max_tokens` stop may be the relay's bound, not the client's. Such a stop,
/// with the block stops before it and everything after it, is withheld; the upstream stream
/// then ends without terminal events and the pump plans again (replay, which repeats the
/// client's own limit).
#[derive(Debug, Default)]
pub(crate) struct LimitGuard {
    held: Vec<Msg>,
    cut: bool,
}

impl LimitGuard {
    pub(crate) fn filter(&mut self, ev: &event::Event, out: Vec<Msg>) -> Vec<Msg> {
        if self.cut {
            return Vec::new();
        }
        if ev.stop.as_deref().is_some_and(super::chunks::is_limit_stop) {
            self.cut = true;
            self.held.clear();
            return Vec::new();
        }
        let ends_block = ev.block_stop.is_some() && ev.delta.is_none() && ev.block_start.is_none();
        if ends_block || (!self.held.is_empty() && !ev.is_content() && ev.stop.is_none()) {
            self.held.extend(out);
            return Vec::new();
        }
        let mut all = std::mem::take(&mut self.held);
        all.extend(out);
        all
    }
}
