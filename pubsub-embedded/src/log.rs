//! The in-memory part of a topic's log and the per-subscription ack set.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use crate::record::Record;

/// The retained records of a topic, `base..end`.
#[derive(Debug, Default)]
pub(crate) struct Log {
    base: u64,
    records: VecDeque<Arc<Record>>,
}

impl Log {
    pub(crate) fn starting_at(base: u64) -> Self {
        Log {
            base,
            records: VecDeque::new(),
        }
    }

    /// Offset of the oldest retained record.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// Offset the next record gets.
    pub(crate) fn end(&self) -> u64 {
        self.base + self.records.len() as u64
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    pub(crate) fn get(&self, offset: u64) -> Option<&Arc<Record>> {
        offset.checked_sub(self.base).and_then(|i| self.records.get(i as usize))
    }

    pub(crate) fn push(&mut self, record: Arc<Record>) {
        debug_assert_eq!(record.offset, self.end());
        self.records.push_back(record);
    }

    /// Drops records below `offset`.
    pub(crate) fn trim_to(&mut self, offset: u64) {
        while self.base < offset && self.records.pop_front().is_some() {
            self.base += 1;
        }
    }
}

/// Which offsets a subscription has acknowledged: everything below `floor`,
/// plus the out-of-order acks above it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AckSet {
    floor: u64,
    above: BTreeSet<u64>,
}

impl AckSet {
    pub(crate) fn new(floor: u64, above: impl IntoIterator<Item = u64>) -> Self {
        let mut set = AckSet {
            floor,
            above: BTreeSet::new(),
        };
        for o in above {
            set.insert(o);
        }
        set
    }

    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    pub(crate) fn above(&self) -> impl Iterator<Item = u64> + '_ {
        self.above.iter().copied()
    }

    pub(crate) fn contains(&self, offset: u64) -> bool {
        offset < self.floor || self.above.contains(&offset)
    }

    /// Marks `offset` acknowledged; false if it already was.
    pub(crate) fn insert(&mut self, offset: u64) -> bool {
        if offset < self.floor {
            return false;
        }
        if offset > self.floor {
            return self.above.insert(offset);
        }
        self.floor += 1;
        while self.above.remove(&self.floor) {
            self.floor += 1;
        }
        true
    }

    /// Raises the floor to at least `offset` (records below it are gone).
    pub(crate) fn raise_floor(&mut self, offset: u64) {
        if offset > self.floor {
            self.floor = offset;
            self.above = self.above.split_off(&offset);
            while self.above.remove(&self.floor) {
                self.floor += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_acks_advance_the_floor_only_when_contiguous() {
        let mut a = AckSet::new(0, []);
        assert!(a.insert(2));
        assert!(a.insert(1));
        assert_eq!(a.floor(), 0);
        assert!(a.insert(0));
        assert_eq!(a.floor(), 3);
        assert!(!a.insert(1));
        assert!(a.insert(5));
        assert!(a.contains(5) && !a.contains(4) && a.contains(2));
        a.raise_floor(4);
        assert_eq!((a.floor(), a.above().count()), (4, 1), "4 itself is not acked");
        a.raise_floor(5);
        assert_eq!(
            (a.floor(), a.above().count()),
            (6, 0),
            "5 was acked, so the floor passes it"
        );
    }
}
