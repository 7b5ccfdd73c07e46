//! The client's view of a response: every message the pump forwarded, folded into content
//! blocks (kind, text or tool input, reasoning signature, stopped?), the stop reason, whether
//! the terminal events arrived, and a per-attempt tally for usage accounting.
//!
//! Owner: the pump, one per client request, alive across all attempts. It grows with the
//! delivered content up to the limit given to [`Transcript::with_limit`]
//! (`max_transcript_bytes`); past it the content is dropped (memory freed), only the stream
//! structure is kept, and [`super::plan`] refuses with `CannotResume::TranscriptTooLarge`.

use super::event::{self, BlockKind, Delta};
use super::{Family, Strategy, StreamFormat};
use aws_smithy_types::event_stream::Message;
use bytes::Bytes;

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

/// Tokens one attempt consumed, as far as the stream tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Tally {
    /// How the attempt was made (`None`: the original request).
    pub strategy: Option<Strategy>,
    /// Deltas the client had before this attempt started.
    pub delivered_before: u64,
    /// Deltas this attempt forwarded.
    pub deltas: u64,
    /// Input tokens the attempt announced (Claude message_start, Llama, Titan).
    pub known_input: Option<u64>,
}

impl Tally {
    /// Estimated output tokens: one per delta forwarded; a replay that got as far as
    /// forwarding something also regenerated what was delivered before it. (A replay that
    /// failed while still verifying counts 0: it may as well have been refused before
    /// streaming, which is not billed.)
    pub fn output(&self) -> u64 {
        let regenerated = match self.strategy {
            Some(Strategy::Replay) if self.deltas > 0 => self.delivered_before,
            _ => 0,
        };
        self.deltas + regenerated
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
    /// Output tokens, estimated as the number of deltas generated.
    pub output: u64,
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
    /// Unknown invoke family: the decoded bytes of every forwarded chunk.
    opaque: Vec<Bytes>,
    bytes: usize,
    limit: usize,
    overflowed: bool,
    tallies: Vec<Tally>,
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
            opaque: Vec::new(),
            bytes: 0,
            limit: max_bytes,
            overflowed: false,
            tallies: vec![Tally::default()],
        }
    }

    pub fn format(&self) -> StreamFormat {
        self.format
    }

    /// Record a message the client received.
    pub fn observe(&mut self, msg: &Message) {
        self.record(event::observe(self.format, msg));
    }

    /// Record a frame the client received as it came from upstream.
    pub fn observe_frame(&mut self, frame: &crate::eventstream::Frame) {
        self.record(event::observe_frame(self.format, frame));
    }

    fn record(&mut self, ev: event::Event) {
        self.forwarded += 1;
        if self.format == StreamFormat::Invoke(Family::Other) {
            if let Some(raw) = ev.raw_chunk.clone() {
                self.bytes += raw.len();
                if !self.overflowed {
                    self.opaque.push(raw);
                }
            }
        }
        if ev.start {
            self.started = true;
        }
        if let Some(n) = ev.known_input {
            self.current().known_input.get_or_insert(n);
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
            self.opaque = Vec::new();
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
    /// `message_stop`; Llama/Mistral/Titan a chunk with a stop reason or invocation metrics;
    /// unknown invoke families a chunk with invocation metrics.
    pub fn is_complete(&self) -> bool {
        match self.format {
            StreamFormat::Converse | StreamFormat::Invoke(Family::Nova) => {
                self.stop.is_some() && self.terminal
            }
            StreamFormat::Invoke(Family::Claude | Family::Other) => self.terminal,
            StreamFormat::Invoke(_) => self.stop.is_some() || self.terminal,
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

    pub(crate) fn opaque(&self) -> &[Bytes] {
        &self.opaque
    }

    pub(crate) fn tallies(&self) -> &[Tally] {
        &self.tallies
    }

    fn delivered_deltas(&self) -> u64 {
        self.tallies.iter().map(|t| t.deltas).sum()
    }

    /// Close the current attempt and open one made with `strategy` (called by `plan`).
    pub(crate) fn begin_attempt(&mut self, strategy: Strategy) {
        let delivered_before = self.delivered_deltas();
        self.tallies.push(Tally {
            strategy: Some(strategy),
            delivered_before,
            ..Tally::default()
        });
    }
}
