//! One topic: its log, its subscriptions, and (in data-dir mode) its files.
//!
//! All state sits behind one short-held lock; file writes happen under it
//! (they only reach the OS page cache), fsyncs outside it, shared by every
//! send that is waiting (group commit). With [`FsyncPolicy::Always`] a
//! record becomes visible to consumers only once it is fsynced, so nothing
//! a consumer acted on can vanish in a crash.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use pubsub_core::{
    ConsumerOptions, Error, InitialPosition, MessageId, OutgoingMessage, Position, Qos, Result, SubscriptionInfo, Topic,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::{EmbeddedConfig, FsyncPolicy};
use crate::log::Log;
use crate::record::{Record, RecordMeta};
use crate::storage::{write_subscription_file, SubscriptionState, TopicStore};
use crate::subscription::{ConsumerSlot, Delivery, Now, Subscription};

/// How often (at most) a q1 subscription's position is written to disk
/// while acks flow; q2 writes (and fsyncs) on every ack.
const LAZY_PERSIST_EVERY: Duration = Duration::from_millis(500);

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) struct TopicHandle {
    pub topic: Topic,
    state: Mutex<TopicState>,
    /// Woken on every change a waiting consumer may care about.
    pub notify: Notify,
    config: Arc<EmbeddedConfig>,
    /// fsync before a send returns and before consumers see a record.
    durable: bool,
    sync_lock: tokio::sync::Mutex<()>,
    synced_end: AtomicU64,
    /// Serialises durable subscription writes: name -> last version written.
    persist_lock: tokio::sync::Mutex<HashMap<String, u64>>,
    /// Deleted through the admin API: handles still held fail with `NotFound`.
    deleted: AtomicBool,
}

struct TopicState {
    log: Log,
    /// q0 topics keep no log; this numbers their messages.
    next_volatile: u64,
    visible_end: u64,
    /// Looked up by name on every receive and ack: a fast hasher.
    subscriptions: foldhash::HashMap<String, Subscription>,
    dedup: HashMap<String, u64>,
    dedup_order: VecDeque<String>,
    store: Option<TopicStore>,
    last_persist: Instant,
    persist_version: u64,
}

/// What a receive got: deliveries, the messages to dead-letter, and when to look again.
pub(crate) struct Taken {
    pub deliveries: Vec<Delivery>,
    pub dead: Vec<Arc<Record>>,
    pub next_wake: Option<Instant>,
}

impl TopicHandle {
    /// A topic in memory, or opened from (and recovered in) `dir`.
    pub(crate) fn open(topic: Topic, config: Arc<EmbeddedConfig>, dir: Option<PathBuf>) -> Result<Self> {
        let mut state = TopicState {
            log: Log::default(),
            next_volatile: 0,
            visible_end: 0,
            subscriptions: Default::default(),
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            store: None,
            last_persist: Instant::now(),
            persist_version: 0,
        };
        if let Some(dir) = dir.filter(|_| topic.qos() != Qos::AtMostOnce) {
            let recovered = TopicStore::open(dir, config.segment_bytes)?;
            let base = recovered.records.first().map_or(recovered.next_offset, |r| r.offset);
            state.log = Log::starting_at(base);
            for r in recovered.records {
                if let Some(id) = r.dedup_id() {
                    state.remember_dedup(id.to_string(), r.offset, config.dedup_window);
                }
                state.log.push(Arc::new(r));
            }
            state.visible_end = state.log.end();
            for (name, s) in recovered.subscriptions {
                let mut sub = Subscription::restore(s.kind, s.cursor, s.acks);
                sub.forget_below(base);
                state.subscriptions.insert(name, sub);
            }
            state.store = Some(recovered.store);
        }
        let durable = state.store.is_some() && config.fsync == FsyncPolicy::Always;
        let end = state.log.end();
        let handle = TopicHandle {
            topic,
            state: Mutex::new(state),
            notify: Notify::new(),
            config,
            durable,
            sync_lock: tokio::sync::Mutex::new(()),
            synced_end: AtomicU64::new(end),
            persist_lock: tokio::sync::Mutex::new(HashMap::new()),
            deleted: AtomicBool::new(false),
        };
        handle.state.lock().trim(&handle.config)?;
        Ok(handle)
    }

    fn is_volatile(&self) -> bool {
        self.topic.qos() == Qos::AtMostOnce
    }

    /// Appends messages (already validated); returns their ids once they
    /// are as durable as the configuration promises.
    pub(crate) async fn append(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<MessageId>> {
        let now = now_ms();
        let target = {
            let mut st = self.state.lock();
            self.ensure_not_deleted()?;
            let dedup = self.topic.qos() == Qos::ExactlyOnce;
            let mut ids = Vec::with_capacity(messages.len());
            let mut fresh: Vec<Arc<Record>> = Vec::with_capacity(messages.len());
            let mut next = if self.is_volatile() {
                st.next_volatile
            } else {
                st.log.end()
            };
            for m in messages {
                if let Some(id) = m.dedup_id.as_ref().filter(|_| dedup) {
                    let earlier = st.dedup.get(id).copied().or_else(|| {
                        fresh
                            .iter()
                            .find(|r| r.dedup_id() == Some(id.as_str()))
                            .map(|r| r.offset)
                    });
                    if let Some(o) = earlier {
                        ids.push(MessageId::from_seq(o));
                        continue;
                    }
                }
                ids.push(MessageId::from_seq(next));
                let meta = RecordMeta {
                    deliver_at_ms: m.deliver_after.map(|d| now + d.as_millis() as u64),
                    key: m.key,
                    dedup_id: m.dedup_id.filter(|_| dedup),
                    properties: m.properties,
                };
                fresh.push(Arc::new(Record::new(next, now, m.payload, meta)));
                next += 1;
            }
            if self.is_volatile() {
                st.next_volatile = next;
                let cap = self.config.q0_buffer;
                for sub in st.subscriptions.values_mut() {
                    for r in &fresh {
                        sub.offer_volatile(r.clone(), cap);
                    }
                }
                drop(st);
                self.notify.notify_waiters();
                return Ok(ids);
            }
            if let Some(store) = st.store.as_mut() {
                store.append(&fresh)?;
            }
            for r in fresh {
                if let Some(id) = r.dedup_id() {
                    st.remember_dedup(id.to_string(), r.offset, self.config.dedup_window);
                }
                st.log.push(r);
            }
            let end = st.log.end();
            if !self.durable {
                st.visible_end = end;
            }
            st.trim(&self.config)?;
            if !self.durable {
                drop(st);
                self.notify.notify_waiters();
                return Ok(ids);
            }
            (end, ids)
        };
        let (end, ids) = target;
        self.sync_to(end).await?;
        Ok(ids)
    }

    /// Makes everything below `target` durable and visible (group commit).
    async fn sync_to(&self, target: u64) -> Result<()> {
        if self.synced_end.load(Ordering::Acquire) >= target {
            return Ok(());
        }
        let _turn = self.sync_lock.lock().await;
        if self.synced_end.load(Ordering::Acquire) >= target {
            return Ok(());
        }
        let (file, end) = {
            let st = self.state.lock();
            let store = st.store.as_ref().expect("durable topics have a store");
            (store.active_file(), st.log.end())
        };
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(|e| Error::broker("embedded", "fsync task failed", e))?
            .map_err(|e| Error::broker("embedded", format!("fsync segment: {e}"), e))?;
        self.synced_end.fetch_max(end, Ordering::AcqRel);
        {
            let mut st = self.state.lock();
            st.visible_end = st.visible_end.max(end);
        }
        self.notify.notify_waiters();
        Ok(())
    }

    /// Joins (creating if needed) a subscription.
    pub(crate) fn attach(&self, name: &str, consumer: u64, opts: &ConsumerOptions) -> Result<()> {
        let mut st = self.state.lock();
        self.ensure_not_deleted()?;
        if !st.subscriptions.contains_key(name) {
            let start = match opts.initial_position {
                InitialPosition::Earliest => st.log.base(),
                InitialPosition::Latest => st.log.end(),
            };
            let sub = Subscription::new(opts.subscription_type, start);
            if let Some(store) = &st.store {
                // Durable at once: a Latest subscription must not forget
                // where it started if the process dies before its first ack.
                store.write_subscription(name, &snapshot(&sub), true)?;
            }
            st.subscriptions.insert(name.to_string(), sub);
        }
        let slot = ConsumerSlot {
            id: consumer,
            ack_timeout: opts.ack_timeout,
            max_redeliveries: opts.max_redeliveries,
        };
        st.subscriptions
            .get_mut(name)
            .expect("just ensured")
            .attach(name, opts.subscription_type, slot)
    }

    /// Takes up to `max` messages for a consumer.
    pub(crate) fn take(&self, name: &str, consumer: u64, max: usize) -> Result<Taken> {
        let now = Now {
            instant: Instant::now(),
            wall_ms: now_ms(),
        };
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let sub = st
            .subscriptions
            .get_mut(name)
            .ok_or(Error::Closed("consumer (its subscription was deleted)"))?;
        let mut deliveries = Vec::new();
        sub.take(consumer, &st.log, st.visible_end, now, max, &mut deliveries);
        let dead = std::mem::take(&mut sub.dead);
        Ok(Taken {
            deliveries,
            dead,
            next_wake: sub.next_wake(),
        })
    }

    /// Acknowledges `offset` on subscription `name`.
    pub(crate) async fn ack(&self, name: &str, offset: u64) -> Result<()> {
        self.ack_many(name, &[offset]).await
    }

    /// Acknowledges `offsets` on subscription `name`, under one lock and
    /// with at most one write of the subscription's state.
    pub(crate) async fn ack_many(&self, name: &str, offsets: &[u64]) -> Result<()> {
        if self.is_volatile() {
            return Ok(());
        }
        let durable_write = {
            let mut st = self.state.lock();
            let Some(sub) = st.subscriptions.get_mut(name) else {
                return Ok(());
            };
            let mut changed = false;
            for &offset in offsets {
                changed |= sub.ack(offset);
            }
            if !changed {
                return Ok(());
            }
            if st.store.is_none() {
                return Ok(());
            }
            if self.topic.qos() == Qos::ExactlyOnce {
                st.persist_version += 1;
                let sub = &st.subscriptions[name];
                Some((
                    st.persist_version,
                    snapshot(sub),
                    st.store.as_ref().expect("checked").subs_dir(),
                ))
            } else {
                if st.last_persist.elapsed() >= LAZY_PERSIST_EVERY {
                    st.persist_lazily();
                }
                None
            }
        };
        if let Some((version, state, dir)) = durable_write {
            self.persist_durably(name, version, state, dir).await?;
        }
        Ok(())
    }

    /// Writes a q2 subscription's state and fsyncs it; skipped if a newer
    /// version (which includes this ack) was already written.
    async fn persist_durably(&self, name: &str, version: u64, state: SubscriptionState, dir: PathBuf) -> Result<()> {
        let mut written = self.persist_lock.lock().await;
        if written.get(name).is_some_and(|&v| v >= version) {
            return Ok(());
        }
        let owned_name = name.to_string();
        tokio::task::spawn_blocking(move || write_subscription_file(&dir, &owned_name, &state, true))
            .await
            .map_err(|e| Error::broker("embedded", "subscription write task failed", e))??;
        written.insert(name.to_string(), version);
        Ok(())
    }

    /// Restarts the ack timeout of a message `consumer` holds.
    pub(crate) fn extend(&self, name: &str, offset: u64, consumer: u64) {
        let mut st = self.state.lock();
        if let Some(sub) = st.subscriptions.get_mut(name) {
            sub.extend(offset, consumer, Instant::now());
        }
    }

    pub(crate) fn nack(&self, name: &str, offset: u64, consumer: u64, delay: Duration) {
        if self.is_volatile() {
            return;
        }
        {
            let mut st = self.state.lock();
            if let Some(sub) = st.subscriptions.get_mut(name) {
                sub.nack(offset, consumer, delay, Instant::now());
            }
        }
        self.notify.notify_waiters();
    }

    /// Leaves a subscription; what the consumer held goes to the others.
    pub(crate) fn detach(&self, name: &str, consumer: u64) {
        {
            let mut st = self.state.lock();
            if let Some(sub) = st.subscriptions.get_mut(name) {
                sub.detach(consumer);
            }
            if self.topic.qos() != Qos::ExactlyOnce {
                st.persist_lazily();
            }
        }
        self.notify.notify_waiters();
    }

    /// Deletes a subscription; fails if other consumers still use it.
    pub(crate) fn unsubscribe(&self, name: &str, consumer: u64) -> Result<()> {
        {
            let mut st = self.state.lock();
            let Some(sub) = st.subscriptions.get_mut(name) else {
                return Ok(());
            };
            sub.detach(consumer);
            if sub.consumer_count() > 0 {
                return Err(Error::broker_msg(
                    "embedded",
                    format!(
                        "subscription {name:?} still has {} other consumer(s); close them first",
                        sub.consumer_count()
                    ),
                ));
            }
            st.subscriptions.remove(name);
            if let Some(store) = &st.store {
                store.delete_subscription(name)?;
            }
        }
        self.notify.notify_waiters();
        Ok(())
    }

    fn ensure_not_deleted(&self) -> Result<()> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(Error::NotFound(format!("topic {} was deleted", self.topic)));
        }
        Ok(())
    }

    /// The subscriptions with their backlog, sorted by name.
    pub(crate) fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        let st = self.state.lock();
        let mut out: Vec<_> = st
            .subscriptions
            .iter()
            .map(|(name, sub)| SubscriptionInfo::new(name, Some(sub.backlog(st.visible_end, self.is_volatile()))))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Marks the topic deleted, unless a consumer is attached to it; later
    /// sends and subscribes through handles still held fail with `NotFound`.
    pub(crate) fn mark_deleted(&self) -> Result<()> {
        let st = self.state.lock();
        let attached: usize = st.subscriptions.values().map(Subscription::consumer_count).sum();
        if attached > 0 {
            return Err(Error::broker_msg(
                "embedded",
                format!(
                    "topic {} still has {attached} consumer(s); close them first",
                    self.topic
                ),
            ));
        }
        self.deleted.store(true, Ordering::Release);
        Ok(())
    }

    /// The log offset a position names, within the retained records.
    pub(crate) fn resolve(&self, position: &Position) -> Result<u64> {
        let st = self.state.lock();
        let (base, end) = (st.log.base(), st.visible_end);
        let offset = match position {
            Position::Earliest => base,
            Position::Latest => end,
            Position::Id(id) => id
                .as_seq()
                .ok_or_else(|| Error::InvalidConfiguration(format!("{id} is not an id of the embedded backend")))?,
            Position::Timestamp(t) => {
                let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                // Publish times only grow along the log (one clock, one lock).
                let (mut lo, mut hi) = (base, end);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    match st.log.get(mid) {
                        Some(r) if r.publish_ms < ms => lo = mid + 1,
                        _ => hi = mid,
                    }
                }
                lo
            }
            _ => return Err(Error::unsupported("embedded", format!("position {position:?}"))),
        };
        Ok(offset.clamp(base, end))
    }

    /// The record at `*cursor` if it is visible (moving past trimmed ones),
    /// advancing the cursor.
    pub(crate) fn read_at(&self, cursor: &mut u64) -> Result<Option<Arc<Record>>> {
        self.ensure_not_deleted()?;
        let st = self.state.lock();
        *cursor = (*cursor).max(st.log.base());
        if *cursor >= st.visible_end {
            return Ok(None);
        }
        let record = st.log.get(*cursor).cloned();
        *cursor += 1;
        Ok(record)
    }

    /// Whether a record at or after `cursor` is visible.
    pub(crate) fn has_from(&self, cursor: u64) -> bool {
        cursor < self.state.lock().visible_end
    }

    /// Moves subscription `name` to `offset` and saves its state durably.
    pub(crate) fn seek(&self, name: &str, offset: u64) -> Result<()> {
        {
            let mut guard = self.state.lock();
            let st = &mut *guard;
            let Some(sub) = st.subscriptions.get_mut(name) else {
                return Err(Error::NotFound(format!("subscription {name} of {}", self.topic)));
            };
            sub.reset(offset);
            if let Some(store) = &st.store {
                store.write_subscription(name, &snapshot(sub), true)?;
                sub.dirty = false;
            }
        }
        self.notify.notify_waiters();
        Ok(())
    }

    /// (oldest retained, next to be written) offsets.
    pub(crate) fn bounds(&self) -> (u64, u64) {
        let st = self.state.lock();
        (st.log.base(), st.visible_end)
    }

    /// The first offset `name` has not acked.
    pub(crate) fn subscription_floor(&self, name: &str) -> Option<u64> {
        self.state
            .lock()
            .subscriptions
            .get(name)
            .map(Subscription::low_watermark)
    }

    /// Writes every subscription's state durably (on backend close).
    pub(crate) fn persist_all(&self) -> Result<()> {
        let st = self.state.lock();
        if let Some(store) = &st.store {
            for (name, sub) in &st.subscriptions {
                store.write_subscription(name, &snapshot(sub), true)?;
            }
        }
        Ok(())
    }
}

fn snapshot(sub: &Subscription) -> SubscriptionState {
    SubscriptionState {
        kind: sub.kind,
        cursor: sub.cursor(),
        acks: sub.acks().clone(),
    }
}

impl TopicState {
    fn remember_dedup(&mut self, id: String, offset: u64, window: usize) {
        self.dedup.insert(id.clone(), offset);
        self.dedup_order.push_back(id);
        while self.dedup_order.len() > window {
            if let Some(old) = self.dedup_order.pop_front() {
                self.dedup.remove(&old);
            }
        }
    }

    /// Writes dirty q1 subscription states without fsync (a process crash
    /// keeps them; a lost one only means some redeliveries).
    fn persist_lazily(&mut self) {
        self.last_persist = Instant::now();
        let Some(store) = &self.store else { return };
        for (name, sub) in self.subscriptions.iter_mut().filter(|(_, s)| s.dirty) {
            match store.write_subscription(name, &snapshot(sub), false) {
                Ok(()) => sub.dirty = false,
                Err(e) => tracing::warn!(subscription = %name, error = %e, "could not save subscription position"),
            }
        }
    }

    /// Drops records every subscription acknowledged, beyond the retention count.
    fn trim(&mut self, config: &EmbeddedConfig) -> Result<()> {
        if self.log.len() <= config.retained_messages {
            return Ok(());
        }
        let low = self
            .subscriptions
            .values()
            .map(Subscription::low_watermark)
            .min()
            .unwrap_or(u64::MAX);
        let by_count = self.log.end() - config.retained_messages as u64;
        let new_base = low.min(by_count).min(self.visible_end);
        if new_base <= self.log.base() {
            return Ok(());
        }
        self.log.trim_to(new_base);
        if let Some(store) = self.store.as_mut() {
            store.delete_below(new_base)?;
        }
        Ok(())
    }
}
