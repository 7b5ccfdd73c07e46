//! Tool calls are atomic to the client: the frames of a tool-use block (Converse `toolUse`,
//! Claude `tool_use` with `input_json_delta`) are held back until the block's stop arrives,
//! then forwarded together. A cut inside the block is then invisible: the held frames are
//! dropped, the client (and so the [`Transcript`](super::Transcript)) never had any of the
//! call, and the resumed answer brings it again, whole, with valid JSON input.
//!
//! Bounded: a held block larger than [`MAX_HELD_BYTES`], or any frame that is not part of the
//! open block (a stop, metadata, another block), releases what is held in order, so a
//! malformed stream is forwarded as it came rather than kept back.
//!
//! ```text
//!   frame ─► ToolHold::offer ─► Offer::Forward(frames…) ─► client + transcript
//!                         └──► Offer::Held (inside a tool-use block)
//!   fault ─► ToolHold::discard (the partial call never reaches the client)
//! ```

use super::event::{BlockKind, Event};
use bytes::Bytes;

/// Most bytes a held tool-use block may reach before it is released as it stands.
pub(crate) const MAX_HELD_BYTES: usize = 4 * 1024 * 1024;

/// A client-bound frame and what it says.
pub(crate) type Item = (Bytes, Event);

/// What to do with an offered frame: iterate it for the frames to forward now, in order.
// A value returned and consumed at once, per frame: boxing the common `Pass` would cost
// the allocation per frame this enum exists to avoid.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Offer {
    /// Not part of a tool-use block: forward it now (the common case, no allocation).
    Pass(Item),
    /// A held tool-use block is complete (or must be released): these frames, the offered
    /// one last.
    Release(Vec<Item>),
    /// Kept until its tool-use block is complete.
    Held,
}

impl IntoIterator for Offer {
    type Item = Item;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Item>, std::vec::IntoIter<Item>>;

    fn into_iter(self) -> Self::IntoIter {
        let (one, many) = match self {
            Offer::Pass(item) => (Some(item), Vec::new()),
            Offer::Release(items) => (None, items),
            Offer::Held => (None, Vec::new()),
        };
        one.into_iter().chain(many)
    }
}

/// The tool-use block being held, if any.
#[derive(Debug, Default)]
pub(crate) struct ToolHold {
    open: Option<u32>,
    held: Vec<Item>,
    bytes: usize,
}

impl ToolHold {
    /// [`ToolHold::offer`] through a hold that may be off (`None`: every frame passes).
    pub(crate) fn offer_through(hold: Option<&mut ToolHold>, bytes: Bytes, event: Event) -> Offer {
        match hold {
            Some(hold) => hold.offer(bytes, event),
            None => Offer::Pass((bytes, event)),
        }
    }

    /// The next frame the client would get, with its parsed event.
    pub(crate) fn offer(&mut self, bytes: Bytes, event: Event) -> Offer {
        let Some(index) = self.open else {
            return match &event.block_start {
                Some((i, BlockKind::ToolUse { .. })) => {
                    self.open = Some(*i);
                    self.push(bytes, event);
                    Offer::Held
                }
                _ => Offer::Pass((bytes, event)),
            };
        };
        let inside = event.block_start.is_none()
            && event.delta.as_ref().is_none_or(|(i, _)| *i == index)
            && event.block_stop.is_none_or(|i| i == index)
            && event.stop.is_none()
            && !event.terminal;
        let closes = event.block_stop == Some(index);
        self.push(bytes, event);
        if closes || !inside || self.bytes > MAX_HELD_BYTES {
            return Offer::Release(self.release());
        }
        Offer::Held
    }

    /// Whether a tool-use block is being held.
    #[cfg(test)]
    pub(crate) fn holding(&self) -> bool {
        self.open.is_some()
    }

    /// The stream broke: what is held never reaches the client.
    pub(crate) fn discard(&mut self) {
        self.open = None;
        self.held.clear();
        self.bytes = 0;
    }

    fn push(&mut self, bytes: Bytes, event: Event) {
        self.bytes += bytes.len();
        self.held.push((bytes, event));
    }

    fn release(&mut self) -> Vec<Item> {
        self.open = None;
        self.bytes = 0;
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resume::event::Delta;

    fn ev(f: impl FnOnce(&mut Event)) -> Event {
        let mut e = Event::default();
        f(&mut e);
        e
    }

    fn tool_start(i: u32) -> Event {
        ev(|e| {
            e.block_start = Some((
                i,
                BlockKind::ToolUse {
                    id: "t1".into(),
                    name: "get_weather".into(),
                },
            ))
        })
    }

    fn forwarded(o: Offer) -> Vec<Bytes> {
        o.into_iter().map(|(b, _)| b).collect()
    }

    #[test]
    fn a_tool_block_is_forwarded_whole_when_it_closes() {
        let mut h = ToolHold::default();
        let text = ev(|e| e.delta = Some((0, Delta::Text("Let me check.".into()))));
        assert_eq!(forwarded(h.offer("t".into(), text)), vec![Bytes::from("t")]);
        assert!(matches!(h.offer("s".into(), tool_start(1)), Offer::Held));
        let input = ev(|e| e.delta = Some((1, Delta::ToolInput("{\"city\":".into()))));
        assert!(matches!(h.offer("d1".into(), input.clone()), Offer::Held));
        assert!(matches!(h.offer("d2".into(), input), Offer::Held));
        assert!(h.holding());
        let stop = ev(|e| e.block_stop = Some(1));
        assert_eq!(
            forwarded(h.offer("e".into(), stop)),
            vec![
                Bytes::from("s"),
                Bytes::from("d1"),
                Bytes::from("d2"),
                Bytes::from("e")
            ]
        );
        assert!(!h.holding());
    }

    #[test]
    fn a_cut_inside_the_block_drops_it() {
        let mut h = ToolHold::default();
        assert!(matches!(h.offer("s".into(), tool_start(0)), Offer::Held));
        h.discard();
        assert!(!h.holding());
        let text = ev(|e| e.delta = Some((0, Delta::Text("x".into()))));
        assert_eq!(forwarded(h.offer("t".into(), text)), vec![Bytes::from("t")]);
    }

    #[test]
    fn anything_outside_the_block_releases_it_in_order() {
        let mut h = ToolHold::default();
        assert!(matches!(h.offer("s".into(), tool_start(0)), Offer::Held));
        let stop = ev(|e| e.stop = Some("tool_use".into()));
        assert_eq!(
            forwarded(h.offer("m".into(), stop)),
            vec![Bytes::from("s"), Bytes::from("m")]
        );
        assert!(matches!(h.offer("s".into(), tool_start(2)), Offer::Held));
        let other = ev(|e| e.delta = Some((3, Delta::Text("y".into()))));
        assert_eq!(forwarded(h.offer("o".into(), other)).len(), 2);
    }

    #[test]
    fn a_huge_block_is_released_not_kept() {
        let mut h = ToolHold::default();
        assert!(matches!(h.offer("s".into(), tool_start(0)), Offer::Held));
        let big = Bytes::from(vec![b'x'; MAX_HELD_BYTES + 1]);
        let input = ev(|e| e.delta = Some((0, Delta::ToolInput("x".into()))));
        assert_eq!(forwarded(h.offer(big, input)).len(), 2);
    }
}
