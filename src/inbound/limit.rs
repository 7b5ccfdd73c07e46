//! Per-client concurrency: each client (access key id, token digest, or peer IP) may have
//! at most `max_concurrency_per_client` requests in flight; one more is refused at once
//! with `ThrottlingException` (429) rather than queued, so SDKs back off themselves.
//!
//! A [`Slot`] is the permission for one request; dropping it frees the place. Counters of
//! clients with nothing in flight are removed, so the map stays as small as the number of
//! active clients.

use super::Denied;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// In-flight counters per client.
#[derive(Debug)]
pub struct ClientSlots {
    limit: u32,
    counts: Arc<Mutex<HashMap<String, u32>>>,
}

/// One request's place in its client's limit; released on drop.
#[derive(Debug)]
pub struct Slot {
    client: String,
    counts: Arc<Mutex<HashMap<String, u32>>>,
}

impl ClientSlots {
    /// `limit` 0 counts nothing and never refuses.
    pub fn new(limit: u32) -> Self {
        ClientSlots {
            limit,
            counts: Default::default(),
        }
    }

    /// Take a place for `client`, or refuse when it already has `limit` in flight.
    /// `Ok(None)` when unlimited.
    pub fn acquire(&self, client: &str) -> Result<Option<Slot>, Denied> {
        if self.limit == 0 {
            return Ok(None);
        }
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(client.to_string()).or_insert(0);
        if *n >= self.limit {
            return Err(Denied::TooManyConcurrent { limit: self.limit });
        }
        *n += 1;
        Ok(Some(Slot {
            client: client.to_string(),
            counts: self.counts.clone(),
        }))
    }

    /// Requests in flight over all clients.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.values().map(|n| *n as usize).sum()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_per_client_and_release_on_drop() {
        let slots = ClientSlots::new(2);
        let a1 = slots.acquire("a").unwrap();
        let _a2 = slots.acquire("a").unwrap();
        assert_eq!(
            slots.acquire("a").unwrap_err(),
            Denied::TooManyConcurrent { limit: 2 }
        );
        let _b1 = slots.acquire("b").expect("other clients are unaffected");
        assert_eq!(slots.in_flight(), 3);
        drop(a1);
        let _a3 = slots.acquire("a").expect("a place was freed");
        assert_eq!(slots.in_flight(), 3);
    }

    #[test]
    fn unlimited_counts_nothing() {
        let slots = ClientSlots::new(0);
        for _ in 0..100 {
            assert!(slots.acquire("a").unwrap().is_none());
        }
        assert_eq!(slots.in_flight(), 0);
    }

    #[test]
    fn idle_clients_leave_the_map() {
        let slots = ClientSlots::new(1);
        for i in 0..50 {
            drop(slots.acquire(&format!("c{i}")).unwrap());
        }
        assert!(slots.counts.lock().unwrap().is_empty());
    }
}
