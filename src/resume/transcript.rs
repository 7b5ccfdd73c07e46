//! The client's view of a response: every message the pump forwarded, folded into content
//! blocks (kind, text or tool input, reasoning signature, stopped?), the stop reason, whether
//! the terminal events arrived, and a per-attempt tally for usage accounting.
//!
//! Owner: the pump, one per client request, alive across all attempts. It grows with the
//! delivered content up to the limit given to [`Transcript::with_limit`]
//! (`max_transcript_bytes`); past it the content is dropped (memory freed), only the stream
//! structure is kept, and [`super::plan`] refuses with `CannotResume::TranscriptTooLarge`.

use super::accounting::AttemptUsage;
pub(crate) use super::accounting::Tally;
use super::chunks::Shape;
use super::event::{self, BlockKind, Delta, Msg};
use super::limit::Delivered;
use super::{Family, Strategy, StreamFormat};
use std::hash::{Hash, Hasher};

/// One content block as the client received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block {
    /// Client-visible index.
    pub index: u32,
    pub kind: BlockKind,
    /// Text, reasoning text, or partial tool input JSON, concatenated.
    pub text: String,
    /// Reasoning signature, when delivered.
    pub signature: Option<String>,
    /// Redacted or unknown deltas, in order (JSON text).
    pub others: Vec<Delta>,
    pub stopped: bool,
}

/// What the client has received so far. Call [`Transcript::observe`] with every message
/// AFTER it was forwarded to the client (never with swallowed or failed messages).
#[derive(Debug, Clone)]
pub struct Transcript {
    format: StreamFormat,
    started: bool,
    blocks: Vec<Block>,
    stop: Option<String>,
    terminal: bool,
    forwarded: u64,
    /// Invoke streams: a hash of the decoded bytes of every forwarded chunk (byte-exact
    /// replay of a stream the relay did not fully understand).
    chunks: Vec<u64>,
    /// A forwarded event was not understood: only byte-exact replay may resume the stream.
    unknown: bool,
    /// Single-text chunks were forwarded (no block structure); the last one's shape.
    shape: Option<Shape>,
    bytes: usize,
    limit: usize,
    overflowed: bool,
    tallies: Vec<Tally>,
    /// The count of the output tokens the client has (CountTokens) tried at `forwarded`
    /// events: the count, or `None` when it failed (never tried twice for the same
    /// delivered output); stale once another event is recorded.
    counted: Option<(u64, Option<u64>)>,
    /// Usage numbers in what the client received (its final usage report).
    seen: super::tokens::Seen,
}

impl Transcript {
    /// A transcript without a size limit (tests, tools); the relay uses [`Transcript::with_limit`].
    pub fn new(format: StreamFormat) -> Self {
        Self::with_limit(format, usize::MAX)
    }

    /// A transcript that keeps at most `max_bytes` of delivered content for resumption.
    pub fn with_limit(format: StreamFormat, max_bytes: usize) -> Self {
        Transcript {
            format,
            started: false,
            blocks: Vec::new(),
            stop: None,
            terminal: false,
            forwarded: 0,
            chunks: Vec::new(),
            unknown: false,
            shape: None,
            bytes: 0,
            limit: max_bytes,
            overflowed: false,
            counted: None,
            seen: Default::default(),
            tallies: vec![Tally::default()],
        }
    }

    pub fn format(&self) -> StreamFormat {
        self.format
    }

    /// Record a message the client received.
    pub fn observe(&mut self, msg: &Msg) {
        self.record(event::observe(self.format, msg));
    }

    /// Record a frame the client received as it came from upstream.
    pub fn observe_frame(&mut self, frame: &crate::eventstream::Frame) {
        self.record(event::observe_frame(self.format, frame));
    }

    /// What a frame says, for deciding before it is forwarded (then [`Transcript::record`]).
    pub(crate) fn read_frame(&self, frame: &crate::eventstream::Frame) -> event::Event {
        event::observe_frame(self.format, frame)
    }

    /// What a message says (see [`Transcript::read_frame`]).
    pub(crate) fn read(&self, msg: &Msg) -> event::Event {
        event::observe(self.format, msg)
    }

    /// Record what the client received, already read.
    pub(crate) fn record(&mut self, ev: event::Event) {
        self.seen.see(ev.start, ev.known_input, ev.usage, ev.cache);
        self.forwarded += 1;
        if let Some(raw) = &ev.raw_chunk {
            if ev.unknown || self.format == StreamFormat::Invoke(Family::Other) {
                self.bytes += raw.len();
            }
            if !self.overflowed {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                raw.hash(&mut h);
                self.chunks.push(h.finish());
                // The hashes count towards the limit too (8 bytes a chunk).
                self.bytes += std::mem::size_of::<u64>();
            }
        }
        self.unknown |= ev.unknown;
        if ev.single.is_some() {
            self.shape = ev.single;
        }
        if ev.start {
            self.started = true;
        }
        if let Some(n) = ev.known_input {
            self.current().known_input.get_or_insert(n);
        }
        if let (true, Some(cache)) = (ev.start, ev.cache) {
            self.current().cache = (cache.0.unwrap_or(0), cache.1.unwrap_or(0));
        }
        if let Some(n) = ev.running {
            self.current().running = Some(n);
        }
        if let Some((i, kind)) = ev.block_start {
            self.block(i, || kind);
        }
        if let Some((i, delta)) = ev.delta {
            self.delta(i, delta);
        }
        if let Some(i) = ev.block_stop {
            if let Some(b) = self.blocks.iter_mut().find(|b| b.index == i) {
                b.stopped = true;
            }
        }
        if let Some(reason) = ev.stop {
            self.stop = Some(reason);
        }
        self.terminal |= ev.terminal;
        if self.bytes > self.limit && !self.overflowed {
            self.overflowed = true;
            self.chunks = Vec::new();
            for b in &mut self.blocks {
                b.text = String::new();
                b.signature = None;
                b.others = Vec::new();
            }
        }
    }

    fn current(&mut self) -> &mut Tally {
        if self.tallies.is_empty() {
            self.tallies.push(Tally::default());
        }
        let last = self.tallies.len() - 1;
        &mut self.tallies[last]
    }

    fn block(&mut self, index: u32, kind: impl FnOnce() -> BlockKind) -> &mut Block {
        let pos = match self.blocks.iter().position(|b| b.index == index) {
            Some(pos) => pos,
            None => {
                self.blocks.push(Block {
                    index,
                    kind: kind(),
                    text: String::new(),
                    signature: None,
                    others: Vec::new(),
                    stopped: false,
                });
                self.blocks.len() - 1
            }
        };
        &mut self.blocks[pos]
    }

    fn delta(&mut self, index: u32, delta: Delta) {
        let counts = !matches!(&delta, Delta::Text(t) | Delta::ToolInput(t) | Delta::Reasoning(t) if t.is_empty());
        let kind_of = |d: &Delta| match d {
            Delta::Text(_) => BlockKind::Text,
            Delta::ToolInput(_) => BlockKind::ToolUse {
                id: String::new(),
                name: String::new(),
            },
            Delta::Reasoning(_) | Delta::Signature(_) | Delta::Redacted(_) => BlockKind::Reasoning,
            Delta::Other(j) => BlockKind::Other(j.clone()),
        };
        let kind = kind_of(&delta);
        let added;
        let keep = !self.overflowed;
        {
            let block = self.block(index, || kind);
            match delta {
                Delta::Text(t) | Delta::ToolInput(t) | Delta::Reasoning(t) => {
                    added = t.len();
                    if keep {
                        block.text.push_str(&t);
                    }
                }
                Delta::Signature(s) => {
                    added = s.len();
                    if keep {
                        block.signature.get_or_insert_with(String::new).push_str(&s);
                    }
                }
                other => {
                    added = 16;
                    if keep {
                        block.others.push(other);
                    }
                }
            }
        }
        self.bytes += added;
        if counts {
            self.current().deltas += 1;
        }
    }

    /// Anything forwarded yet? If not, a plain retry is exact.
    pub fn forwarded_any(&self) -> bool {
        self.forwarded > 0
    }

    /// The terminal events arrived: Converse and Nova `messageStop` AND `metadata`; Claude
    /// `message_stop` (also the SSE APIs'); Llama/Mistral/Titan a chunk with a stop reason or
    /// invocation metrics; unknown invoke families a chunk with invocation metrics.
    pub fn is_complete(&self) -> bool {
        match self.format {
            StreamFormat::Converse | StreamFormat::Invoke(Family::Nova) => {
                self.stop.is_some() && self.terminal
            }
            StreamFormat::Invoke(Family::Llama | Family::Mistral | Family::Titan) => {
                self.stop.is_some() || self.terminal
            }
            StreamFormat::Invoke(_) | StreamFormat::Messages => self.terminal,
        }
    }

    /// The stop reason was delivered but the stream is not complete (Converse `metadata` or
    /// Claude `message_stop` missing). All content is there; [`super::plan`] then uses replay
    /// only (it verifies everything, swallows the stop, forwards the fresh terminal events
    /// with summed usage). Without replay the pump ends the stream with a typed exception:
    /// synthesising usage numbers would put made-up token counts in front of the client.
    pub fn saw_message_stop(&self) -> bool {
        self.stop.is_some() && !self.is_complete()
    }

    /// Size of the content delivered so far in bytes (text, tool input, signatures, chunks).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The delivered content passed the limit and was dropped: no resumption possible.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// The usage the client was told (the final report, summed over attempts), if any.
    pub fn client_usage(&self) -> Option<super::tokens::Tokens> {
        self.seen.tokens()
    }

    /// Input a continuation carried that the original request did not: the delivered
    /// output the current attempt's request holds (prefill, instructed continuation).
    pub fn continuation_overhead(&self) -> u64 {
        self.tallies.last().map(Tally::extra_input).unwrap_or(0)
    }

    /// Usage of the current attempt so far (call when it failed, for the failed-tokens metric).
    pub fn attempt_usage_estimate(&self) -> AttemptUsage {
        let t = self.tallies.last().copied().unwrap_or_default();
        AttemptUsage {
            input: t.known_input,
            output: t.output(),
        }
    }

    /// The text of the whole response as delivered, block by block (for logs and tests).
    pub fn texts(&self) -> Vec<&str> {
        self.blocks.iter().map(|b| b.text.as_str()).collect()
    }

    pub(crate) fn started(&self) -> bool {
        self.started
    }

    pub(crate) fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    pub(crate) fn stop(&self) -> Option<&str> {
        self.stop.as_deref()
    }

    /// Hashes of the forwarded chunks, in order (invoke streams).
    pub(crate) fn chunk_hashes(&self) -> &[u64] {
        &self.chunks
    }

    /// Something was forwarded that the relay did not understand.
    pub(crate) fn opaque(&self) -> bool {
        self.unknown
    }

    /// The stream had single-text chunks (one text, no blocks), whatever the family.
    pub(crate) fn single(&self) -> bool {
        self.format.single_block() || self.shape.is_some()
    }

    pub(crate) fn shape(&self) -> Option<Shape> {
        self.shape
    }

    /// Exact output tokens the client has, where every attempt that forwarded output
    /// reported running counts: the last counter it saw (continuations' counters are shifted
    /// by the splicer, a replay's count from the start).
    pub(crate) fn exact_output(&self) -> Option<u64> {
        if self
            .tallies
            .iter()
            .any(|t| t.deltas > 0 && t.running.is_none())
        {
            return None;
        }
        Some(
            self.tallies
                .iter()
                .rev()
                .find_map(|t| t.running)
                .unwrap_or(0),
        )
    }

    /// The text a count of the delivered output covers: the one text block the client has,
    /// when that is all it has (`None` otherwise: reasoning or tool blocks are not counted).
    pub fn countable_text(&self) -> Option<&str> {
        match self.blocks.as_slice() {
            [b] if b.kind.is_text() && !b.text.trim().is_empty() => Some(b.text.as_str()),
            _ => None,
        }
    }

    /// Record an exact count of the output tokens the client has now (CountTokens of
    /// [`Transcript::countable_text`]); used by the next [`super::plan`] for the continuation's
    /// limit, and forgotten as soon as more is delivered.
    pub fn set_counted_output(&mut self, tokens: u64) {
        self.counted = Some((self.forwarded, Some(tokens)));
    }

    /// Counting what the client has now failed (or was refused): not tried again until more
    /// is delivered.
    pub fn set_count_failed(&mut self) {
        self.counted = Some((self.forwarded, None));
    }

    /// Whether what the client has now was counted: `Some(Some(n))` exactly, `Some(None)`
    /// tried and failed, `None` not tried.
    pub fn count_tried(&self) -> Option<Option<u64>> {
        self.counted
            .filter(|(at, _)| *at == self.forwarded)
            .map(|(_, n)| n)
    }

    /// The exact count recorded for what the client has now, if any.
    pub(crate) fn counted_output(&self) -> Option<u64> {
        self.count_tried().flatten()
    }

    /// Bounds on the output tokens the client has (see `limit`).
    pub(crate) fn delivered(&self) -> Delivered {
        if let Some(n) = self.counted_output() {
            return Delivered { low: n, high: n };
        }
        if let Some(n) = self.exact_output() {
            return Delivered { low: n, high: n };
        }
        let low = self.delivered_deltas();
        let text: usize = self
            .blocks
            .iter()
            .map(|b| b.text.len() + b.others.len() * 16)
            .sum();
        Delivered {
            low,
            high: low.max(text as u64),
        }
    }

    /// Sum over attempts of the input tokens they announced, and their cache tokens.
    pub(crate) fn announced_input(&self) -> (u64, u64, u64) {
        self.tallies.iter().fold((0, 0, 0), |(i, r, w), t| {
            (i + t.known_input.unwrap_or(0), r + t.cache.0, w + t.cache.1)
        })
    }

    pub(crate) fn tallies(&self) -> &[Tally] {
        &self.tallies
    }

    fn delivered_deltas(&self) -> u64 {
        self.tallies.iter().map(|t| t.deltas).sum()
    }

    /// Output tokens the client has: exact where reported, else one per delta.
    pub(crate) fn delivered_count(&self) -> u64 {
        self.exact_output()
            .unwrap_or_else(|| self.delivered_deltas())
    }

    /// Close the current attempt and open one made with `strategy` (called by `plan`);
    /// `offset` is added to the new attempt's running counters by its splicer.
    pub(crate) fn begin_attempt(&mut self, strategy: Strategy, offset: u64) {
        let delivered_before = self.delivered_count();
        self.tallies.push(Tally {
            strategy: Some(strategy),
            delivered_before,
            offset,
            ..Tally::default()
        });
    }
}
