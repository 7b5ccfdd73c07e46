//! The status page on the admin listener: `GET /` (one self-contained HTML page, inline CSS
//! and JS, nothing loaded from elsewhere) and `GET /status.json`, which the page fetches
//! every 2 s.
//!
//! [`Status`] keeps what the page shows beyond the metrics: per-minute buckets for the last
//! hour (requests, streams, interruptions and how they ended, upstream attempts), a ring of
//! the last [`MAX_INTERRUPTIONS`] interruptions, and usage by model. All of it is fed once
//! per request, when its `Record` finishes ([`finished`]). Nothing secret is kept: model
//! names are the bounded metric labels (base ids, no ARN, no account id), no prompt, answer,
//! key, signature or client identity.

use crate::resume::tokens::Tokens;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// How many interruptions the page lists.
pub const MAX_INTERRUPTIONS: usize = 50;
/// Minutes of history.
pub const MINUTES: usize = 60;

/// The page itself.
pub const PAGE: &str = include_str!("status_page.html");

/// One minute of traffic.
#[derive(Debug, Clone, Default, Serialize)]
struct Minute {
    /// Unix seconds of the minute's start.
    t: u64,
    requests: u64,
    /// Requests answered with a 5xx.
    errors: u64,
    streams: u64,
    interrupted: u64,
    healed: u64,
    failed: u64,
    client_gone: u64,
    tokens: u64,
    /// Cumulative upstream attempts (ok, not ok) when the minute's bucket was made.
    #[serde(skip)]
    attempts_at_start: (u64, u64),
}

/// One interruption, as it ended.
#[derive(Debug, Clone, Serialize)]
struct Interruption {
    /// Unix milliseconds when the request ended.
    t: u64,
    operation: &'static str,
    model: String,
    fault: &'static str,
    /// `healed`, `failed`, `client_gone`, or for a bidirectional session how it ended.
    outcome: &'static str,
    strategy: &'static str,
    resumes: u32,
    duration_ms: u64,
}

#[derive(Debug, Default)]
struct Inner {
    minutes: VecDeque<Minute>,
    interruptions: VecDeque<Interruption>,
    /// Usage since start, by model label: (as reported, healing).
    usage: BTreeMap<String, (Tokens, Tokens)>,
}

/// What the status page shows beyond the metrics. Shared by clones of `Metrics`.
#[derive(Debug)]
pub struct Status {
    started: Instant,
    inner: Mutex<Inner>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            started: Instant::now(),
            inner: Mutex::default(),
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A request as it ended, for the page.
#[derive(Debug, Clone, Copy)]
pub struct Ended<'a> {
    pub operation: &'static str,
    /// The bounded model label.
    pub model: &'a str,
    pub status: u16,
    pub secs: f64,
    /// A stream interrupted after bytes reached the client: whether it was healed.
    pub healed: Option<bool>,
    pub strategy: Option<&'static str>,
    pub resumes: u32,
    /// How a stream ended (`complete`, `client_gone`, …), the fault that interrupted it.
    pub end: Option<&'static str>,
    pub fault: Option<&'static str>,
    pub tokens: Option<Tokens>,
    pub heal: Tokens,
}

/// What the page reads from the metrics at the moment it is drawn.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Upstream attempts so far: (ok, not ok).
    pub attempts: (u64, u64),
    pub streams_open: i64,
    pub retry_budget_tokens: i64,
    pub retry_budget_exhausted: u64,
}

impl Status {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The current minute's bucket (made, and the old ones dropped, as time goes on).
    fn minute(
        inner: &mut Inner,
        now_ms: u64,
        attempts: impl FnOnce() -> (u64, u64),
    ) -> &mut Minute {
        let t = now_ms / 60_000 * 60;
        if inner.minutes.back().map(|m| m.t) != Some(t) {
            inner.minutes.push_back(Minute {
                t,
                attempts_at_start: attempts(),
                ..Default::default()
            });
            while inner.minutes.len() > MINUTES {
                inner.minutes.pop_front();
            }
        }
        inner.minutes.back_mut().expect("just pushed")
    }
}

impl Status {
    /// A request finished: feed the page (once per request; `attempts`: the upstream
    /// attempts so far, ok and not, read only when a new minute's bucket starts).
    pub fn finished(&self, e: &Ended<'_>, attempts: impl FnOnce() -> (u64, u64)) {
        let now = unix_ms();
        let outcome = match (e.healed, e.end) {
            (Some(true), _) => Some("healed"),
            (Some(false), _) => Some("failed"),
            (None, Some(end)) if e.fault.is_some() => Some(end),
            _ => None,
        };
        self.with(|inner| {
            let m = Status::minute(inner, now, attempts);
            m.requests += 1;
            m.errors += u64::from(e.status >= 500);
            m.streams += u64::from(e.end.is_some());
            m.client_gone += u64::from(e.end == Some("client_gone"));
            m.tokens += e.tokens.map(|t| t.total()).unwrap_or(0);
            if let (Some(outcome), Some(fault)) = (outcome, e.fault) {
                m.interrupted += 1;
                m.healed += u64::from(outcome == "healed");
                m.failed += u64::from(outcome == "failed");
                inner.interruptions.push_front(Interruption {
                    t: now,
                    operation: e.operation,
                    model: e.model.to_owned(),
                    fault,
                    outcome,
                    strategy: e.strategy.unwrap_or("-"),
                    resumes: e.resumes,
                    duration_ms: (e.secs * 1000.0) as u64,
                });
                inner.interruptions.truncate(MAX_INTERRUPTIONS);
            }
            if e.tokens.is_some() || e.heal.total() > 0 {
                let entry = inner.usage.entry(e.model.to_owned()).or_default();
                if let Some(t) = &e.tokens {
                    entry.0.add(t);
                }
                entry.1.add(&e.heal);
            }
        });
    }
}

/// `/status.json`: what the page shows.
pub fn json(status: &Status, g: Gauges) -> Value {
    let now = unix_ms();
    let (ok, bad) = g.attempts;
    status.with(|inner| {
        let horizon = (now / 60_000).saturating_sub(MINUTES as u64 - 1) * 60;
        let recent: Vec<&Minute> = inner.minutes.iter().filter(|m| m.t >= horizon).collect();
        let sum = |f: fn(&Minute) -> u64| recent.iter().map(|m| f(m)).sum::<u64>();
        let (healed, failed) = (sum(|m| m.healed), sum(|m| m.failed));
        let ended = healed + failed;
        let (hour_ok, hour_bad) = match recent.first() {
            Some(m) => (
                ok.saturating_sub(m.attempts_at_start.0),
                bad.saturating_sub(m.attempts_at_start.1),
            ),
            None => (0, 0),
        };
        let usage: Vec<Value> = inner
            .usage
            .iter()
            .map(|(model, (t, heal))| {
                json!({"model": model, "input": t.input, "output": t.output,
                    "cache_read": t.cache_read, "cache_write": t.cache_write,
                    "heal": heal.input + heal.output})
            })
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "now_ms": now,
            "uptime_s": status.started.elapsed().as_secs(),
            "streams_open": g.streams_open,
            "last_hour": {
                "requests": sum(|m| m.requests),
                "errors": sum(|m| m.errors),
                "streams": sum(|m| m.streams),
                "interrupted": sum(|m| m.interrupted),
                "healed": healed,
                "failed": failed,
                "client_gone": sum(|m| m.client_gone),
                "heal_ratio": (ended > 0).then(|| healed as f64 / ended as f64),
            },
            "minutes": recent,
            "interruptions": inner.interruptions,
            "usage": usage,
            "upstream": {
                "attempts_ok": hour_ok,
                "attempts_failed": hour_bad,
                "ok_ratio": (hour_ok + hour_bad > 0).then(|| hour_ok as f64 / (hour_ok + hour_bad) as f64),
                "attempts_ok_total": ok,
                "attempts_failed_total": bad,
            },
            "retry_budget": {
                "tokens": g.retry_budget_tokens,
                "exhausted_total": g.retry_budget_exhausted,
            },
        })
    })
}

/// The page, with the current status inlined so it shows at once (then refreshed live).
pub fn page(status: &Status, g: Gauges) -> String {
    // `</` cannot end the script element from inside the JSON.
    let data = json(status, g).to_string().replace("</", "<\\/");
    PAGE.replace("/*INITIAL*/null", &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended<'a>(model: &'a str, healed: Option<bool>, fault: Option<&'static str>) -> Ended<'a> {
        Ended {
            operation: "ConverseStream",
            model,
            status: 200,
            secs: 0.5,
            healed,
            strategy: healed.map(|_| "prefill"),
            resumes: u32::from(healed == Some(true)),
            end: Some(if healed == Some(false) {
                "failed"
            } else {
                "complete"
            }),
            fault,
            tokens: Some(Tokens {
                input: 10,
                output: 20,
                ..Default::default()
            }),
            heal: Tokens::default(),
        }
    }

    #[test]
    fn interruptions_ring_and_last_hour() {
        let s = Status::default();
        for i in 0..MAX_INTERRUPTIONS + 5 {
            let healed = i % 5 != 0;
            s.finished(&ended("x.model-a", Some(healed), Some("reset")), || (1, 0));
        }
        s.finished(&ended("x.model-b", None, None), || (1, 0));
        let v = json(&s, Gauges::default());
        assert_eq!(
            v["interruptions"].as_array().unwrap().len(),
            MAX_INTERRUPTIONS
        );
        assert_eq!(v["last_hour"]["interrupted"], 55);
        assert_eq!(v["last_hour"]["healed"], 44);
        assert_eq!(v["last_hour"]["failed"], 11);
        assert_eq!(v["last_hour"]["requests"], 56);
        assert_eq!(v["last_hour"]["heal_ratio"], 0.8);
        assert_eq!(v["usage"][0]["model"], "x.model-a");
        assert_eq!(v["usage"][0]["output"], 20 * 55);
        assert_eq!(v["interruptions"][0]["fault"], "reset");
    }

    #[test]
    fn the_page_is_self_contained_and_carries_the_data() {
        let s = Status::default();
        s.finished(&ended("x.model-</script>", Some(true), Some("eof")), || {
            (0, 0)
        });
        let page = page(&s, Gauges::default());
        assert!(page.contains("x.model-<\\/script>"), "escaped");
        for outside in ["http://", "https://", "//cdn", "<link", "src="] {
            assert!(!page.contains(outside), "{outside} in the page");
        }
        assert!(page.contains("/status.json"));
    }
}
