//! The heal step: one upstream event in, the client's bytes out. The only place that runs an
//! event through the current attempt's [`Splicer`], the tool-call hold ([`ToolHold`]) and the
//! [`Transcript`], in the order production uses; the stream pump (`crate::proxy::stream`),
//! every resume test and the crate's doctest go through it.
//!
//! ```text
//!   upstream event ─► Codec::read ─► core messages ─► Splicer::accept ─► Codec::item
//!        ─► ToolHold::offer ─► Transcript::record ─► Codec::write ─► client bytes
//!   fault ─► Heal::fault (held tool call dropped) ─► Heal::finish_at_limit or Heal::plan
//!        ─► next attempt ─► Heal::resumed(splicer)
//! ```
//!
//! A [`Codec`] is how one wire carries the core's messages ([`Msg`]): EventStream frames
//! ([`EventStreamCodec`]: a frame is a message; an unchanged frame goes out byte for byte)
//! or one Server-Sent Events API ([`super::sse::SseCodec`]: an event's data is a Claude
//! messages event's JSON, or is read into some). What the hold keeps is the
//! codec's *item*, turned into the client's bytes only once released, so a held and then
//! discarded event never advances what the client was told (an SSE API's sequence numbers).

use super::event::{Event as Observed, Msg};
use super::hold::ToolHold;
use super::{
    finish_at_limit, plan, AttemptUsage, CannotResume, Continuation, Divergence, ModelCaps,
    Spliced, Splicer, StreamFormat, Transcript,
};
use crate::eventstream::{self, Frame, FrameError};
use bytes::Bytes;

/// An error event the upstream sent mid-stream, read by a codec (a fault, resumed like a
/// reset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    pub kind: String,
    pub message: String,
}

/// What one upstream event is, to the core.
pub enum Read {
    /// Core messages for the splicer (maybe none: an event the client gets from the codec).
    Messages(Vec<Msg>),
    /// Not an API event (a comment, a keep-alive): forwarded as it came.
    Raw,
}

/// How one wire carries the core's messages.
pub trait Codec: Send {
    /// One whole upstream event as the wire delivers it.
    type Event: Send;

    /// The event's bytes as they came.
    fn raw(event: &Self::Event) -> &Bytes;

    /// Read one upstream event into core messages.
    fn read(&mut self, event: &Self::Event) -> Result<Read, UpstreamError>;

    /// The passthrough fast path: the client's item for an event of the first attempt and
    /// what it says, without decoding it whole. `None`: read it.
    fn pass(&self, _event: &Self::Event, _transcript: &Transcript) -> Option<(Bytes, Observed)> {
        None
    }

    /// The item the hold keeps for a message the splicer passed on unchanged.
    fn unchanged(&self, event: &Self::Event, msg: &Msg) -> Bytes;

    /// The item for a message the splicer rewrote or made.
    fn rewritten(&self, msg: &Msg) -> Result<Bytes, FrameError>;

    /// The client's bytes for a released item (maybe none).
    fn write(&mut self, item: Bytes) -> Bytes;

    /// The next rung of the ladder for this wire's request body.
    fn plan(
        &self,
        original: &[u8],
        transcript: &mut Transcript,
        caps: &ModelCaps,
    ) -> Result<Continuation, CannotResume>;

    /// The terminal events that end the answer when the client's output limit is used up.
    fn finish_at_limit(&self, original: &[u8], transcript: &Transcript) -> Option<Vec<Msg>>;

    /// A new upstream attempt starts.
    fn begin_attempt(&mut self) {}

    /// The format CountTokens can count the delivered answer in (`None`: not counted).
    fn counted_format(&self) -> Option<StreamFormat>;
}

/// Why an event could not be passed on.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    /// The upstream's own error event, mid-stream (`raw`: the event as it came).
    #[error("Bedrock sent {} mid-stream ({})", .error.kind, .error.message)]
    Upstream { error: UpstreamError, raw: Bytes },
    /// The resumed answer differs from what the client has.
    #[error(transparent)]
    Diverged(Divergence),
    /// An instructed continuation did not follow the continuation protocol; nothing of it
    /// reached the client.
    #[error("the continuation did not follow the continuation protocol ({})", .0.reason)]
    Refused(Divergence),
    /// A rewritten event cannot be encoded (an upstream header over the encoder's limits).
    #[error("an upstream event could not be re-framed ({0})")]
    Encode(#[source] FrameError),
}

/// One stream's healing state: its codec, what the client has, how the current attempt is
/// spliced on, the tool call being held.
pub struct Heal<C: Codec> {
    codec: C,
    transcript: Transcript,
    splicer: Splicer,
    hold: Option<ToolHold>,
}

impl<C: Codec> Heal<C> {
    /// `hold`: tool-use blocks are held until whole (`resume.hold_tool_use`).
    pub fn new(codec: C, transcript: Transcript, hold: bool) -> Self {
        let splicer = Splicer::passthrough(transcript.format());
        Heal {
            codec,
            transcript,
            splicer,
            hold: hold.then(ToolHold::default),
        }
    }

    /// Pass one upstream event on: what the client gets now goes to `out`, in order, and is
    /// recorded as delivered.
    pub fn feed(&mut self, event: C::Event, out: &mut impl Extend<Bytes>) -> Result<(), Stop> {
        if self.splicer.is_passthrough() {
            if let Some((item, seen)) = self.codec.pass(&event, &self.transcript) {
                self.offer(item, seen, out);
                return Ok(());
            }
        }
        let read = self.codec.read(&event).map_err(|error| Stop::Upstream {
            error,
            raw: C::raw(&event).clone(),
        });
        let msgs = match read? {
            Read::Raw => {
                out.extend(Some(C::raw(&event).clone()));
                return Ok(());
            }
            Read::Messages(msgs) => msgs,
        };
        for msg in msgs {
            let spliced = self.splicer.accept(&msg).map_err(|d| match d.reask {
                true => Stop::Refused(d),
                false => Stop::Diverged(d),
            })?;
            for s in spliced {
                let (item, seen) = match s {
                    Spliced::Unchanged => (
                        self.codec.unchanged(&event, &msg),
                        self.transcript.read(&msg),
                    ),
                    Spliced::Rewritten(m) => (
                        self.codec.rewritten(&m).map_err(Stop::Encode)?,
                        self.transcript.read(&m),
                    ),
                };
                self.offer(item, seen, out);
            }
        }
        Ok(())
    }

    /// Through the hold (when on); what it lets out is recorded and written.
    fn offer(&mut self, item: Bytes, seen: Observed, out: &mut impl Extend<Bytes>) {
        for (item, seen) in ToolHold::offer_through(self.hold.as_mut(), item, seen) {
            self.transcript.record(seen);
            self.write(item, out);
        }
    }

    /// The client's bytes for a released item, if it has any.
    fn write(&mut self, item: Bytes, out: &mut impl Extend<Bytes>) {
        let bytes = self.codec.write(item);
        if !bytes.is_empty() {
            out.extend(Some(bytes));
        }
    }

    /// The current attempt broke: a tool call the client has not received is dropped (the
    /// resumed answer brings it again, whole). Returns the estimate of what the broken
    /// attempt used.
    pub fn fault(&mut self) -> AttemptUsage {
        if let Some(hold) = self.hold.as_mut() {
            hold.discard();
        }
        self.transcript.attempt_usage_estimate()
    }

    /// When the client's output limit is used up, end the answer as Bedrock would: its
    /// terminal events go to `out`. `Ok(false)`: the limit is not reached.
    pub fn finish_at_limit(
        &mut self,
        original: &[u8],
        out: &mut impl Extend<Bytes>,
    ) -> Result<bool, Stop> {
        let Some(end) = self.codec.finish_at_limit(original, &self.transcript) else {
            return Ok(false);
        };
        for m in end {
            let item = self.codec.rewritten(&m).map_err(Stop::Encode)?;
            self.transcript.observe(&m);
            self.write(item, out);
        }
        Ok(true)
    }

    /// The next rung of the ladder, planned on what the client has.
    pub fn plan(
        &mut self,
        original: &[u8],
        caps: &ModelCaps,
    ) -> Result<Continuation, CannotResume> {
        self.codec.plan(original, &mut self.transcript, caps)
    }

    /// A new attempt answers: its events are spliced on by `splicer`.
    pub fn resumed(&mut self, splicer: Splicer) {
        self.codec.begin_attempt();
        self.splicer = splicer;
    }

    /// The answer is whole: its terminal events reached the client.
    pub fn is_complete(&self) -> bool {
        self.transcript.is_complete()
    }

    pub fn transcript(&self) -> &Transcript {
        &self.transcript
    }

    pub fn transcript_mut(&mut self) -> &mut Transcript {
        &mut self.transcript
    }

    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// How the current attempt is spliced on.
    pub fn splicer(&self) -> &Splicer {
        &self.splicer
    }
}

/// EventStream (ConverseStream, InvokeModelWithResponseStream): a frame is a message; an
/// unchanged frame goes out as it came.
#[derive(Debug, Clone, Copy)]
pub struct EventStreamCodec {
    pub format: StreamFormat,
}

impl Codec for EventStreamCodec {
    type Event = Frame;

    fn raw(event: &Frame) -> &Bytes {
        &event.raw
    }

    fn read(&mut self, frame: &Frame) -> Result<Read, UpstreamError> {
        Ok(Read::Messages(vec![Msg::Frame(frame.message())]))
    }

    fn pass(&self, frame: &Frame, transcript: &Transcript) -> Option<(Bytes, Observed)> {
        Some((frame.raw.clone(), transcript.read_frame(frame)))
    }

    fn unchanged(&self, frame: &Frame, _msg: &Msg) -> Bytes {
        frame.raw.clone()
    }

    /// A frame as encoded. The EventStream formats make no JSON events; one would be an
    /// error (the stream ends typed), never a guessed frame.
    fn rewritten(&self, msg: &Msg) -> Result<Bytes, FrameError> {
        match msg {
            Msg::Frame(m) => eventstream::try_encode(m),
            Msg::Json(_) => Err(FrameError::Corrupt("a JSON event in an EventStream".into())),
        }
    }

    fn write(&mut self, item: Bytes) -> Bytes {
        item
    }

    fn plan(
        &self,
        original: &[u8],
        transcript: &mut Transcript,
        caps: &ModelCaps,
    ) -> Result<Continuation, CannotResume> {
        plan(&self.format, original, transcript, caps)
    }

    fn finish_at_limit(&self, original: &[u8], transcript: &Transcript) -> Option<Vec<Msg>> {
        finish_at_limit(&self.format, original, transcript)
    }

    fn counted_format(&self) -> Option<StreamFormat> {
        Some(self.format)
    }
}
