//! Which offsets of a partition were delivered and acked, and what to commit.
//!
//! Acks may come in any order. Kafka keeps one committed offset per
//! partition, so the adapter commits the *contiguous prefix*: the lowest
//! offset not yet acked (never an offset past an unacked message). The acks
//! above that point travel in the commit's metadata string (`"5,7-9"`,
//! relative to nothing: absolute offsets), so a consumer that takes the
//! partition over skips what was already acked instead of redelivering it.
//! Metadata is bounded ([`MAX_METADATA`]); acks that do not fit are simply
//! redelivered (at least once still holds).

use std::collections::BTreeMap;

/// Kafka's default `offset.metadata.max.bytes` is 4096.
pub(crate) const MAX_METADATA: usize = 3500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Outstanding,
    Acked,
    /// Nacked; its redelivery delay is still running.
    Nacked,
    /// Nacked and its delay is over: to be fetched again (the partition is
    /// sought back to the lowest such offset).
    Due,
}

/// What to do with a fetched offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fetched {
    /// Hand it to the application, with this redelivery count.
    Deliver(u32),
    /// Already acked, or already in the application's hands: skip it.
    Skip,
}

/// One partition's delivery state while this consumer owns it.
#[derive(Debug, Default)]
pub(crate) struct PartitionOffsets {
    /// Offsets at or past the committed position that we know of.
    states: BTreeMap<i64, State>,
    redeliveries: BTreeMap<i64, u32>,
    /// One past the highest offset seen.
    high: i64,
    /// Everything below this is acked: the committed position when we took
    /// the partition over, raised as the acked prefix grows.
    start: i64,
    /// The target of the last seek for a nack, until a record at or past
    /// it is fetched: the fetch from there will bring every due offset at
    /// or above it, so no other seek is needed for those.
    rewound_to: Option<i64>,
    /// Changed since the last commit.
    pub dirty: bool,
}

impl PartitionOffsets {
    /// State restored from a committed offset (negative: none) and its metadata.
    pub(crate) fn restore(committed: i64, metadata: &str) -> Self {
        let start = committed.max(0);
        let mut states = BTreeMap::new();
        for o in decode_acked(metadata) {
            if o >= start {
                states.insert(o, State::Acked);
            }
        }
        PartitionOffsets {
            states,
            redeliveries: BTreeMap::new(),
            high: start,
            start,
            rewound_to: None,
            dirty: false,
        }
    }

    /// Decides what to do with a fetched offset.
    pub(crate) fn fetched(&mut self, offset: i64) -> Fetched {
        if self.rewound_to.is_some_and(|t| offset >= t) {
            // The fetch from the last seek got this far (or a record fetched
            // before it did: then the next due offset seeks again, harmless).
            self.rewound_to = None;
        }
        if offset < self.start {
            return Fetched::Skip;
        }
        self.high = self.high.max(offset + 1);
        match self.states.get(&offset).copied() {
            None => {
                self.states.insert(offset, State::Outstanding);
                Fetched::Deliver(0)
            }
            Some(State::Due) => {
                self.states.insert(offset, State::Outstanding);
                // Nacked ones count their nacks; one never delivered (see
                // `undeliver`) has none.
                Fetched::Deliver(self.redeliveries.get(&offset).copied().unwrap_or(0))
            }
            // A nacked offset whose delay still runs is fetched again by the
            // seek for its own delay (see `due`), not by another's.
            Some(State::Acked) | Some(State::Outstanding) | Some(State::Nacked) => Fetched::Skip,
        }
    }

    /// Marks an offset acked. False if it was not outstanding or nacked.
    pub(crate) fn ack(&mut self, offset: i64) -> bool {
        match self.states.get_mut(&offset) {
            Some(s @ (State::Outstanding | State::Nacked | State::Due)) => {
                *s = State::Acked;
                self.redeliveries.remove(&offset);
                self.compact();
                self.dirty = true;
                true
            }
            _ => false,
        }
    }

    /// Marks an outstanding offset for redelivery. False if not outstanding.
    pub(crate) fn nack(&mut self, offset: i64) -> bool {
        match self.states.get_mut(&offset) {
            Some(s @ State::Outstanding) => {
                *s = State::Nacked;
                *self.redeliveries.entry(offset).or_insert(0) += 1;
                true
            }
            _ => false,
        }
    }

    /// Ends the redelivery delay of a nacked offset. False if it is not
    /// nacked (acked meanwhile, or its partition was taken over).
    pub(crate) fn due(&mut self, offset: i64) -> bool {
        match self.states.get_mut(&offset) {
            Some(s @ State::Nacked) => {
                *s = State::Due;
                true
            }
            _ => false,
        }
    }

    /// An offset fetched but never handed to the application (dropped from
    /// the consumer's buffer when its partition was revoked): delivered,
    /// as new, when fetched again. False if it was not outstanding.
    pub(crate) fn undeliver(&mut self, offset: i64) -> bool {
        match self.states.get_mut(&offset) {
            Some(s @ State::Outstanding) => {
                *s = State::Due;
                true
            }
            _ => false,
        }
    }

    /// The partition is fetched again from the committed position (it came
    /// back after a rebalance): that fetch brings every due offset, so no
    /// seek is pending.
    pub(crate) fn refetched(&mut self) {
        self.rewound_to = None;
    }

    /// Where to seek so that every due offset is fetched again: the lowest
    /// one (a seek to any higher offset would skip the lower ones, so the
    /// seeks of several nacks each go to this, taken right before seeking,
    /// in order). None if there is none, or if the fetch from the last
    /// seek has not reached it yet and so will bring it. The caller seeks
    /// to the target returned, or reports [`seek_failed`](Self::seek_failed).
    pub(crate) fn rewind_target(&mut self) -> Option<i64> {
        let lowest = self.states.iter().find(|(_, s)| **s == State::Due).map(|(o, _)| *o)?;
        if self.rewound_to.is_some_and(|t| t <= lowest) {
            return None;
        }
        self.rewound_to = Some(lowest);
        Some(lowest)
    }

    /// The seek to `target` did not happen.
    pub(crate) fn seek_failed(&mut self, target: i64) {
        if self.rewound_to == Some(target) {
            self.rewound_to = None;
        }
    }

    /// The offset to commit: the lowest not acked, else one past the highest seen.
    pub(crate) fn position(&self) -> i64 {
        self.states
            .iter()
            .find(|(_, s)| **s != State::Acked)
            .map(|(o, _)| *o)
            .unwrap_or(self.high)
    }

    /// The acks above [`position`](Self::position), for the commit metadata.
    pub(crate) fn metadata(&self) -> String {
        let pos = self.position();
        encode_acked(
            self.states
                .range(pos..)
                .filter(|(_, s)| **s == State::Acked)
                .map(|(o, _)| *o),
        )
    }

    /// Forgets acked offsets below the commit position.
    fn compact(&mut self) {
        let pos = self.position();
        self.states = self.states.split_off(&pos);
        self.start = self.start.max(pos);
    }
}

/// `"5,7-9"`, cut at [`MAX_METADATA`] bytes (later acks are then redelivered).
pub(crate) fn encode_acked(offsets: impl Iterator<Item = i64>) -> String {
    let mut out = String::new();
    let mut run: Option<(i64, i64)> = None;
    let push = |out: &mut String, (a, b): (i64, i64)| -> bool {
        let piece = if a == b { a.to_string() } else { format!("{a}-{b}") };
        if out.len() + piece.len() + 1 > MAX_METADATA {
            return false;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&piece);
        true
    };
    for o in offsets {
        run = match run {
            Some((a, b)) if o == b + 1 => Some((a, o)),
            Some(r) => {
                if !push(&mut out, r) {
                    return out;
                }
                Some((o, o))
            }
            None => Some((o, o)),
        };
    }
    if let Some(r) = run {
        push(&mut out, r);
    }
    out
}

/// The offsets in metadata written by [`encode_acked`]; anything else is ignored.
pub(crate) fn decode_acked(metadata: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for piece in metadata.split(',').filter(|p| !p.is_empty()) {
        let parsed = match piece.split_once('-') {
            Some((a, b)) => a.parse::<i64>().ok().zip(b.parse::<i64>().ok()),
            None => piece.parse::<i64>().ok().map(|a| (a, a)),
        };
        match parsed {
            Some((a, b)) if a <= b && b - a < 1_000_000 => out.extend(a..=b),
            _ => return Vec::new(), // not ours: trust nothing in it
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_the_contiguous_prefix_and_carries_the_rest() {
        let mut p = PartitionOffsets::restore(-1, "");
        for o in 0..6 {
            assert_eq!(p.fetched(o), Fetched::Deliver(0));
        }
        assert!(p.ack(5) && p.ack(1) && p.ack(2));
        assert_eq!(p.position(), 0, "offset 0 is unacked: nothing past it is committed");
        assert_eq!(p.metadata(), "1-2,5");
        assert!(p.ack(0));
        assert_eq!((p.position(), p.metadata().as_str()), (3, "5"));
        assert!(!p.ack(0), "double ack is a no-op");
        // A new owner restores that and skips the acked ones.
        let mut q = PartitionOffsets::restore(3, "5");
        assert_eq!(q.fetched(3), Fetched::Deliver(0));
        assert_eq!(q.fetched(4), Fetched::Deliver(0));
        assert_eq!(q.fetched(5), Fetched::Skip);
        assert!(q.ack(3) && q.ack(4));
        assert_eq!(q.position(), 6);
    }

    #[test]
    fn undelivered_offsets_are_delivered_again_as_new() {
        // 10..15 fetched; 10 and 11 handed out, 12..15 were still buffered
        // when the partition was revoked.
        let mut st = PartitionOffsets::restore(10, "");
        for o in 10..15 {
            assert_eq!(st.fetched(o), Fetched::Deliver(0));
        }
        for o in 12..15 {
            assert!(st.undeliver(o));
        }
        assert!(!st.undeliver(20), "never fetched");
        assert!(st.ack(11));
        st.refetched();
        // Fetched again from the committed 10: the held one is skipped, the
        // acked one too, the undelivered ones come as new.
        assert_eq!(st.fetched(10), Fetched::Skip);
        assert_eq!(st.fetched(11), Fetched::Skip);
        for o in 12..15 {
            assert_eq!(st.fetched(o), Fetched::Deliver(0));
        }
        assert_eq!(st.position(), 10);
        assert!(st.ack(10));
        assert_eq!(st.position(), 12);
    }

    #[test]
    fn nack_redelivers_after_a_seek_with_a_count() {
        let mut p = PartitionOffsets::restore(10, "");
        assert_eq!(p.fetched(10), Fetched::Deliver(0));
        assert_eq!(p.fetched(11), Fetched::Deliver(0));
        assert!(p.nack(10));
        assert!(!p.nack(10), "only an outstanding offset can be nacked");
        assert_eq!(p.rewind_target(), None, "the delay still runs");
        assert_eq!(p.fetched(10), Fetched::Skip, "not before its delay is over");
        assert!(p.due(10));
        assert_eq!(p.rewind_target(), Some(10));
        // The seek fetches 10 and 11 again: 10 comes back, 11 is still out.
        assert_eq!(p.fetched(10), Fetched::Deliver(1));
        assert_eq!(p.rewind_target(), None);
        assert_eq!(p.fetched(11), Fetched::Skip);
        assert_eq!(p.position(), 10);
    }

    #[test]
    fn every_due_offset_is_fetched_again_whatever_the_nack_order() {
        let mut p = PartitionOffsets::restore(0, "");
        for o in 0..10 {
            assert_eq!(p.fetched(o), Fetched::Deliver(0));
        }
        // Nacked high first, then low: the seek target is always the lowest
        // due offset, so a later seek never jumps over an earlier nack.
        for o in [7, 2, 5] {
            assert!(p.nack(o) && p.due(o));
        }
        assert_eq!(p.rewind_target(), Some(2));
        assert!(p.nack(8) && p.due(8));
        assert_eq!(p.rewind_target(), None, "the fetch from 2 brings the later ones");
        let redelivered: Vec<i64> = (2..10).filter(|o| p.fetched(*o) == Fetched::Deliver(1)).collect();
        assert_eq!(redelivered, vec![2, 5, 7, 8]);
        // Nacked again after the fetch passed: a new seek.
        assert!(p.nack(5) && p.due(5));
        assert_eq!(p.rewind_target(), Some(5));
        p.seek_failed(5);
        assert_eq!(p.rewind_target(), Some(5), "a failed seek is retried");
        assert_eq!(p.fetched(5), Fetched::Deliver(2));
        // Acked ones below the committed prefix are never delivered again.
        for o in 0..10 {
            p.ack(o);
        }
        assert_eq!(p.position(), 10);
        assert_eq!(p.fetched(3), Fetched::Skip);
        assert_eq!(p.fetched(10), Fetched::Deliver(0));
    }

    #[test]
    fn metadata_round_trips_and_rejects_foreign_text() {
        let offsets = vec![1, 2, 3, 7, 9, 10];
        assert_eq!(decode_acked(&encode_acked(offsets.clone().into_iter())), offsets);
        assert!(decode_acked("hello").is_empty());
        assert!(decode_acked("5-1").is_empty());
        let many = encode_acked((0..100_000).step_by(2));
        assert!(many.len() <= MAX_METADATA);
    }
}
