//! One subscription's delivery state: what is in flight with which
//! consumer, what waits for (re)delivery, what is acknowledged.
//!
//! Pure and synchronous: the topic calls it under its lock, which keeps
//! every transition atomic and lets it be tested without I/O.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

// Offsets are hashed per delivery and per ack: a fast hasher, not SipHash.
use foldhash::HashMap;
use pubsub_core::{Error, Result, SubscriptionType};
use tokio::time::Instant;

use crate::log::{AckSet, Log};
use crate::record::Record;

/// How far past its cursor a `KeyShared` consumer looks for messages of its
/// keys before waiting; bounds the work per receive and the set of
/// messages parked for other consumers.
const KEY_SHARED_LOOKAHEAD: usize = 10_000;

/// The time of one receive: monotonic for timeouts and delays, wall clock
/// for `deliver_after` (which is persisted with the record).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    pub instant: Instant,
    pub wall_ms: u64,
}

/// A delivery handed to a consumer.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub record: Arc<Record>,
    pub redelivery_count: u32,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    consumer: u64,
    deadline: Option<Instant>,
}

/// Per-consumer settings the subscription needs.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerSlot {
    pub id: u64,
    pub ack_timeout: Option<Duration>,
    pub max_redeliveries: Option<u32>,
}

#[derive(Debug)]
pub(crate) struct Subscription {
    pub kind: SubscriptionType,
    consumers: Vec<ConsumerSlot>,
    /// Offsets at or past this were never dispatched.
    cursor: u64,
    ready: BTreeSet<u64>,
    delayed: BTreeSet<(Instant, u64)>,
    in_flight: HashMap<u64, InFlight>,
    timeouts: BinaryHeap<Reverse<(Instant, u64, u64)>>,
    acks: AckSet,
    redeliveries: HashMap<u64, u32>,
    /// q0 messages waiting for a consumer (q0 topics keep no log).
    volatile: VecDeque<Arc<Record>>,
    /// Dropped q0 messages (buffer full).
    pub dropped: u64,
    /// Offsets past max_redeliveries, to be dead-lettered by the caller.
    pub dead: Vec<Arc<Record>>,
    /// Changed since last persisted.
    pub dirty: bool,
}

impl Subscription {
    pub(crate) fn new(kind: SubscriptionType, start: u64) -> Self {
        Self::restore(kind, start, AckSet::new(start, []))
    }

    /// A subscription recovered from disk: every unacked offset below
    /// `cursor` had been delivered, so it comes back with a redelivery count of 1.
    pub(crate) fn restore(kind: SubscriptionType, cursor: u64, acks: AckSet) -> Self {
        let start = acks.floor().min(cursor);
        let mut redeliveries = HashMap::default();
        for o in start..cursor {
            if !acks.contains(o) {
                redeliveries.insert(o, 1);
            }
        }
        Subscription {
            kind,
            consumers: Vec::new(),
            cursor: start,
            ready: BTreeSet::new(),
            delayed: BTreeSet::new(),
            in_flight: HashMap::default(),
            timeouts: BinaryHeap::new(),
            acks,
            redeliveries,
            volatile: VecDeque::new(),
            dropped: 0,
            dead: Vec::new(),
            dirty: false,
        }
    }

    pub(crate) fn acks(&self) -> &AckSet {
        &self.acks
    }

    /// The persisted form of the cursor: nothing below it is undelivered.
    pub(crate) fn cursor(&self) -> u64 {
        self.cursor
    }

    pub(crate) fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// Adds a consumer, enforcing the subscription type.
    pub(crate) fn attach(&mut self, name: &str, kind: SubscriptionType, slot: ConsumerSlot) -> Result<()> {
        if !self.consumers.is_empty() {
            if self.kind == SubscriptionType::Exclusive {
                return Err(Error::ConsumerBusy {
                    subscription: name.to_string(),
                });
            }
            if kind != self.kind {
                return Err(Error::InvalidConfiguration(format!(
                    "subscription {name:?} is {:?} but a {kind:?} consumer asked to join it",
                    self.kind
                )));
            }
        }
        self.kind = kind;
        self.consumers.push(slot);
        Ok(())
    }

    /// Removes a consumer; what it held unacked is redelivered to the others.
    pub(crate) fn detach(&mut self, consumer: u64) {
        self.consumers.retain(|c| c.id != consumer);
        if self.consumers.is_empty() {
            self.volatile.clear(); // q0: nobody is listening any more
        }
        let held: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.consumer == consumer)
            .map(|(o, _)| *o)
            .collect();
        for o in held {
            self.in_flight.remove(&o);
            *self.redeliveries.entry(o).or_insert(0) += 1;
            self.ready.insert(o);
        }
    }

    fn slot(&self, consumer: u64) -> Option<&ConsumerSlot> {
        self.consumers.iter().find(|c| c.id == consumer)
    }

    fn is_active(&self, consumer: u64) -> bool {
        match self.kind {
            SubscriptionType::Exclusive | SubscriptionType::Failover => {
                self.consumers.first().map(|c| c.id) == Some(consumer)
            }
            SubscriptionType::Shared | SubscriptionType::KeyShared => self.slot(consumer).is_some(),
        }
    }

    fn key_owner(&self, key: Option<&str>) -> Option<u64> {
        if self.consumers.is_empty() {
            return None;
        }
        let h = pubsub_core::stable_hash(key.unwrap_or("").as_bytes());
        Some(self.consumers[(h % self.consumers.len() as u64) as usize].id)
    }

    fn eligible(&self, consumer: u64, record: &Record) -> bool {
        match self.kind {
            SubscriptionType::KeyShared => self.key_owner(record.key()) == Some(consumer),
            _ => true,
        }
    }

    /// Moves due delayed messages and expired in-flight ones to `ready`.
    fn promote_due(&mut self, now: Instant) {
        while let Some(&(due, o)) = self.delayed.first() {
            if due > now {
                break;
            }
            self.delayed.pop_first();
            if !self.acks.contains(o) && !self.in_flight.contains_key(&o) {
                self.ready.insert(o);
            }
        }
        while let Some(&Reverse((due, o, consumer))) = self.timeouts.peek() {
            if due > now {
                break;
            }
            self.timeouts.pop();
            let expired =
                matches!(self.in_flight.get(&o), Some(f) if f.consumer == consumer && f.deadline == Some(due));
            if expired {
                self.in_flight.remove(&o);
                *self.redeliveries.entry(o).or_insert(0) += 1;
                self.ready.insert(o);
            }
        }
    }

    /// When the next delayed message or ack timeout falls due.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        let d = self.delayed.first().map(|(t, _)| *t);
        let t = self.timeouts.peek().map(|Reverse((t, _, _))| *t);
        match (d, t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes up to `max` messages for `consumer` into `out`.
    pub(crate) fn take(
        &mut self,
        consumer: u64,
        log: &Log,
        visible_end: u64,
        now: Now,
        max: usize,
        out: &mut Vec<Delivery>,
    ) {
        let Now {
            instant: now,
            wall_ms: now_ms,
        } = now;
        if !self.is_active(consumer) {
            return;
        }
        let start = out.len();
        let want = |out: &Vec<Delivery>| out.len() - start < max;
        if !self.volatile.is_empty() {
            while want(out) {
                let Some(record) = self.volatile.pop_front() else { break };
                out.push(Delivery {
                    record,
                    redelivery_count: 0,
                });
            }
            return;
        }
        self.promote_due(now);
        let (ack_timeout, max_redeliveries) = match self.slot(consumer) {
            Some(s) => (s.ack_timeout, s.max_redeliveries),
            None => return,
        };
        // Redeliveries first, oldest offset first.
        let mut picked = Vec::new();
        for &o in &self.ready {
            if picked.len() >= max - (out.len() - start) {
                break;
            }
            match log.get(o) {
                Some(r) if self.eligible(consumer, r) => picked.push(o),
                Some(_) => {}
                None => picked.push(o), // trimmed: dropped below
            }
        }
        for o in picked {
            self.ready.remove(&o);
            if let Some(r) = log.get(o).cloned() {
                self.hand_out(consumer, r, ack_timeout, max_redeliveries, now, out);
            }
        }
        // Then new messages.
        let mut parked = 0;
        while want(out) && self.cursor < visible_end {
            let o = self.cursor;
            let Some(r) = log.get(o).cloned() else {
                self.cursor += 1;
                continue;
            };
            if self.acks.contains(o) {
                self.cursor += 1;
                continue;
            }
            if let Some(at) = r.deliver_at_ms().filter(|&at| at > now_ms) {
                self.delayed.insert((now + Duration::from_millis(at - now_ms), o));
                self.cursor += 1;
                continue;
            }
            self.cursor += 1;
            self.dirty = true;
            if self.eligible(consumer, &r) {
                self.hand_out(consumer, r, ack_timeout, max_redeliveries, now, out);
            } else {
                self.ready.insert(o);
                parked += 1;
                if parked >= KEY_SHARED_LOOKAHEAD {
                    break;
                }
            }
        }
    }

    fn hand_out(
        &mut self,
        consumer: u64,
        record: Arc<Record>,
        ack_timeout: Option<Duration>,
        max_redeliveries: Option<u32>,
        now: Instant,
        out: &mut Vec<Delivery>,
    ) {
        let o = record.offset;
        let count = self.redeliveries.get(&o).copied().unwrap_or(0);
        if max_redeliveries.is_some_and(|max| count > max) {
            self.dead.push(record);
            return;
        }
        let deadline = ack_timeout.map(|t| now + t);
        self.in_flight.insert(o, InFlight { consumer, deadline });
        if let Some(d) = deadline {
            self.timeouts.push(Reverse((d, o, consumer)));
        }
        out.push(Delivery {
            record,
            redelivery_count: count,
        });
    }

    /// Acknowledges `offset`; false if it already was.
    pub(crate) fn ack(&mut self, offset: u64) -> bool {
        if !self.acks.insert(offset) {
            return false;
        }
        self.in_flight.remove(&offset);
        self.ready.remove(&offset);
        self.redeliveries.remove(&offset);
        self.dirty = true;
        true
    }

    /// Starts `offset`'s ack timeout again, if `consumer` still holds it
    /// (a long task telling us it is still at work); otherwise nothing: it
    /// was acked, or has already gone to another consumer.
    pub(crate) fn extend(&mut self, offset: u64, consumer: u64, now: Instant) {
        let Some(timeout) = self.slot(consumer).and_then(|s| s.ack_timeout) else {
            return;
        };
        if let Some(f) = self.in_flight.get_mut(&offset).filter(|f| f.consumer == consumer) {
            let due = now + timeout;
            f.deadline = Some(due);
            self.timeouts.push(Reverse((due, offset, consumer)));
        }
    }

    /// Returns `offset` for redelivery after `delay`, if `consumer` still holds it.
    pub(crate) fn nack(&mut self, offset: u64, consumer: u64, delay: Duration, now: Instant) {
        if self.acks.contains(offset) {
            return;
        }
        if !matches!(self.in_flight.get(&offset), Some(f) if f.consumer == consumer) {
            return; // already redelivered elsewhere (timeout or close)
        }
        self.in_flight.remove(&offset);
        *self.redeliveries.entry(offset).or_insert(0) += 1;
        if delay.is_zero() {
            self.ready.insert(offset);
        } else {
            self.delayed.insert((now + delay, offset));
        }
    }

    /// Offers a q0 message; dropped (oldest first) beyond `cap`.
    pub(crate) fn offer_volatile(&mut self, record: Arc<Record>, cap: usize) {
        if self.consumers.is_empty() {
            return;
        }
        if self.volatile.len() >= cap {
            self.volatile.pop_front();
            self.dropped += 1;
        }
        self.volatile.push_back(record);
    }

    /// Messages not yet acked: of a q1/q2 log ending at `end`, or (q0)
    /// those buffered and in flight.
    pub(crate) fn backlog(&self, end: u64, volatile: bool) -> u64 {
        if volatile {
            return (self.volatile.len() + self.in_flight.len()) as u64;
        }
        let floor = self.acks.floor().min(end);
        let acked_above = self.acks.above().filter(|&o| o < end).count() as u64;
        end - floor - acked_above
    }

    /// Moves the subscription to `offset` (a seek): everything from there is
    /// delivered again, nothing before it is; what consumers hold stays
    /// theirs to ack.
    pub(crate) fn reset(&mut self, offset: u64) {
        self.cursor = offset;
        self.acks = AckSet::new(offset, []);
        self.ready.clear();
        self.delayed.clear();
        self.in_flight.clear();
        self.timeouts.clear();
        self.redeliveries.clear();
        self.dirty = true;
    }

    /// Lowest offset this subscription may still need.
    pub(crate) fn low_watermark(&self) -> u64 {
        self.acks.floor()
    }

    /// Records below `offset` were trimmed; forget them.
    pub(crate) fn forget_below(&mut self, offset: u64) {
        self.acks.raise_floor(offset);
        self.cursor = self.cursor.max(offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordMeta;
    use bytes::Bytes;

    fn log_of(n: u64, keys: &[&str]) -> Log {
        let mut log = Log::starting_at(0);
        for o in 0..n {
            let meta = RecordMeta {
                key: keys.get(o as usize % keys.len().max(1)).map(|k| k.to_string()),
                ..Default::default()
            };
            log.push(Arc::new(Record::new(o, 0, Bytes::new(), meta)));
        }
        log
    }

    fn at(instant: Instant) -> Now {
        Now { instant, wall_ms: 0 }
    }

    fn slot(id: u64) -> ConsumerSlot {
        ConsumerSlot {
            id,
            ack_timeout: None,
            max_redeliveries: None,
        }
    }

    fn take(s: &mut Subscription, c: u64, log: &Log, max: usize) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        s.take(c, log, log.end(), at(Instant::now()), max, &mut out);
        out.into_iter().map(|d| (d.record.offset, d.redelivery_count)).collect()
    }

    #[test]
    fn shared_hands_each_message_once_and_nack_redelivers_first() {
        let log = log_of(4, &[]);
        let mut s = Subscription::new(SubscriptionType::Shared, 0);
        s.attach("s", SubscriptionType::Shared, slot(1)).unwrap();
        s.attach("s", SubscriptionType::Shared, slot(2)).unwrap();
        assert_eq!(take(&mut s, 1, &log, 2), vec![(0, 0), (1, 0)]);
        assert_eq!(take(&mut s, 2, &log, 1), vec![(2, 0)]);
        s.nack(1, 1, Duration::ZERO, Instant::now());
        s.nack(1, 1, Duration::ZERO, Instant::now()); // second nack is a no-op
        assert_eq!(take(&mut s, 2, &log, 5), vec![(1, 1), (3, 0)]);
        assert!(take(&mut s, 1, &log, 5).is_empty());
    }

    #[test]
    fn exclusive_refuses_and_failover_switches() {
        let log = log_of(3, &[]);
        let mut e = Subscription::new(SubscriptionType::Exclusive, 0);
        e.attach("e", SubscriptionType::Exclusive, slot(1)).unwrap();
        assert!(matches!(
            e.attach("e", SubscriptionType::Exclusive, slot(2)),
            Err(Error::ConsumerBusy { .. })
        ));

        let mut f = Subscription::new(SubscriptionType::Failover, 0);
        f.attach("f", SubscriptionType::Failover, slot(1)).unwrap();
        f.attach("f", SubscriptionType::Failover, slot(2)).unwrap();
        assert!(take(&mut f, 2, &log, 5).is_empty());
        assert_eq!(take(&mut f, 1, &log, 1), vec![(0, 0)]);
        f.detach(1);
        assert_eq!(take(&mut f, 2, &log, 5), vec![(0, 1), (1, 0), (2, 0)]);
        assert!(matches!(
            f.attach("f", SubscriptionType::Shared, slot(3)),
            Err(Error::InvalidConfiguration(_))
        ));
    }

    #[test]
    fn key_shared_keeps_a_key_on_one_consumer() {
        let log = log_of(40, &["a", "b", "c", "d", "e"]);
        let mut s = Subscription::new(SubscriptionType::KeyShared, 0);
        s.attach("k", SubscriptionType::KeyShared, slot(1)).unwrap();
        s.attach("k", SubscriptionType::KeyShared, slot(2)).unwrap();
        let a = take(&mut s, 1, &log, 100);
        let b = take(&mut s, 2, &log, 100);
        assert_eq!(a.len() + b.len(), 40);
        let keys = |v: &[(u64, u32)]| {
            v.iter()
                .map(|(o, _)| log.get(*o).unwrap().key().unwrap().to_string())
                .collect::<BTreeSet<_>>()
        };
        assert!(keys(&a).is_disjoint(&keys(&b)));
    }

    #[test]
    fn ack_timeout_redelivers_and_max_redeliveries_dead_letters() {
        let log = log_of(1, &[]);
        let mut s = Subscription::new(SubscriptionType::Shared, 0);
        let sl = ConsumerSlot {
            id: 1,
            ack_timeout: Some(Duration::from_secs(1)),
            max_redeliveries: Some(1),
        };
        s.attach("s", SubscriptionType::Shared, sl).unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        s.take(1, &log, 1, at(t0), 1, &mut out);
        assert_eq!(out.len(), 1);
        out.clear();
        s.take(1, &log, 1, at(t0 + Duration::from_millis(500)), 1, &mut out);
        assert!(out.is_empty());
        s.take(1, &log, 1, at(t0 + Duration::from_secs(2)), 1, &mut out);
        assert_eq!(out[0].redelivery_count, 1);
        out.clear();
        s.take(1, &log, 1, at(t0 + Duration::from_secs(4)), 1, &mut out);
        assert!(out.is_empty());
        assert_eq!(s.dead.len(), 1);
    }

    #[test]
    fn restore_marks_delivered_unacked_as_redelivered() {
        let log = log_of(5, &[]);
        let mut s = Subscription::restore(SubscriptionType::Shared, 3, AckSet::new(0, [1]));
        s.attach("s", SubscriptionType::Shared, slot(1)).unwrap();
        assert_eq!(take(&mut s, 1, &log, 10), vec![(0, 1), (2, 1), (3, 0), (4, 0)]);
    }
}
