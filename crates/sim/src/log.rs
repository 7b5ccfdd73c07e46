//! The per-attempt request log behind `GET /_sim/log` and [`super::SimHandle::log`].
//!
//! Owns the entry shape and the bound: the last `capacity` entries are kept, older ones are
//! dropped first. Sequence numbers keep counting across drops and clears.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;

/// One request attempt as the simulator saw it. `Default` leaves out everything a model
/// request adds (plan, fault, tag), for the calls that are not one (STS, the bidirectional
/// stream's head).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LogEntry {
    pub seq: u64,
    /// `ops::Operation::name()` of the request.
    pub operation: String,
    pub model_id: Option<String>,
    /// Conversation id (hex): hash of model id, system text and first user message.
    pub conversation: String,
    /// 1-based attempt number within the conversation.
    pub attempt: u32,
    /// Id of the connection the request came on (counted from 1 across HTTP/1.1 and h2).
    #[serde(default)]
    pub connection: u64,
    /// "valid" | "invalid" | "unknown_key" | "missing" | "bearer" | "unchecked"; STS calls:
    /// "unsigned" (as SDKs send their credential calls) or "unchecked".
    pub signature: String,
    /// The service a SigV4 signature was made for (its credential scope), if signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The prefill text, if the request had one.
    pub prefill: Option<String>,
    /// The request was an instructed continuation.
    pub continuation: bool,
    /// An instructed continuation under the continuation protocol: the class of its reply
    /// (`phrasing::Class::name`, e.g. `echo-words`, `complete-marker`, `broken-clean`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phrasing: Option<String>,
    /// The whole answer the model meant (see `plan::Plan::intended`).
    pub intended: Option<String>,
    /// Output tokens the answer reports (whether or not a fault cut it short).
    pub output_tokens: Option<u32>,
    /// Kind of the injected fault, if any.
    pub fault: Option<String>,
    /// `sim:tag=` value found in the body, if any.
    pub tag: Option<String>,
    /// HTTP status sent (0 when the connection was reset before headers).
    pub status: u16,
    /// The request body as received (JSON, or a string when it was not JSON).
    pub body: serde_json::Value,
    /// Bidirectional streams: input messages whose chained signature verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_verified: Option<u64>,
}

/// Bounded, thread-safe log.
#[derive(Debug)]
pub struct Log {
    capacity: usize,
    entries: Mutex<VecDeque<LogEntry>>,
}

impl Log {
    pub fn new(capacity: usize) -> Self {
        Log {
            capacity: capacity.max(1),
            entries: Mutex::new(VecDeque::new()),
        }
    }

    pub fn push(&self, entry: LogEntry) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    pub fn entries(&self) -> Vec<LogEntry> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.iter().cloned().collect()
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> LogEntry {
        LogEntry {
            seq,
            operation: "Converse".into(),
            conversation: "0".into(),
            attempt: 1,
            connection: 1,
            signature: "unchecked".into(),
            status: 200,
            ..LogEntry::default()
        }
    }

    #[test]
    fn keeps_the_newest_entries() {
        let log = Log::new(3);
        for i in 0..5 {
            log.push(entry(i));
        }
        let seqs: Vec<u64> = log.entries().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
        log.clear();
        assert!(log.entries().is_empty());
    }
}
