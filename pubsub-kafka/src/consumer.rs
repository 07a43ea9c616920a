//! A Kafka consumer: one group member per `KafkaConsumer`, group id = the
//! subscription.
//!
//! A background loop polls rdkafka without pause (so rebalances are served
//! even while the application is not receiving) into a local buffer of
//! about `batch_size` messages; when the buffer is full the loop pauses the
//! assigned partitions instead of stopping to poll.
//!
//! On assignment, a partition without a committed offset gets its start
//! committed at once (the high watermark for `Latest`, the low one for
//! `Earliest`), so the subscription's position is fixed when
//! `create_consumer` returns; acks recorded in the commit metadata are
//! restored (see `offsets`). On revocation the current position is
//! committed and buffered messages of the partition are dropped (the new
//! owner gets them).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use pubsub_core::{
    ensure_open, AckTarget, Consumer, ConsumerOptions, Error, InitialPosition, Message, MessageId, MessageParts, NoAck,
    Position, Qos, Result, Topic,
};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::Notify;

use crate::backend::{is_transient, map_err, Inner, NAME};
use crate::groups::group_id;
use crate::headers::from_headers;
use crate::offsets::{Fetched, PartitionOffsets};

type Partitions = Arc<std::sync::Mutex<HashMap<i32, PartitionOffsets>>>;

#[derive(Clone, Copy)]
enum Which<'a> {
    All,
    Changed,
    These(&'a [i32]),
}

/// State the rebalance callbacks and the receive path share.
struct Shared {
    topic: Topic,
    name: String,
    subscription: String,
    /// The subscription's consumer group ([`group_id`]).
    group: String,
    options: ConsumerOptions,
    timeout: Duration,
    partitions: Partitions,
    /// Revoked partitions' states, by the offset committed on revoke: a
    /// rebalance revokes every partition and gives most of them back, and
    /// one that comes back at that offset keeps its state (what the
    /// application holds is not delivered again; see [`park`]).
    parked: std::sync::Mutex<HashMap<i32, (i64, PartitionOffsets)>>,
    buffer: std::sync::Mutex<VecDeque<Message>>,
    /// Something was buffered, or the consumer closed.
    arrived: Notify,
    /// The application took from the buffer.
    drained: Notify,
    closed: AtomicBool,
    /// At least one assignment (possibly empty) was handled.
    assigned: tokio::sync::watch::Sender<bool>,
    consumer: std::sync::OnceLock<Weak<StreamConsumer<Ctx>>>,
    /// Held while choosing a nack's seek target and seeking, so seeks run
    /// in the order their targets were chosen (see [`Shared::rewind`]).
    rewinding: tokio::sync::Mutex<()>,
}

impl Shared {
    fn ensure_open(&self) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "consumer")
    }

    fn acked_mode(&self) -> bool {
        self.topic.qos() != Qos::AtMostOnce
    }

    /// Commit positions (and acks above them, as metadata): of every
    /// partition, of the changed ones, or of the listed ones.
    fn commit_list(&self, which: Which<'_>) -> TopicPartitionList {
        let mut parts = self.partitions.lock().expect("partitions lock");
        let mut tpl = TopicPartitionList::new();
        for (p, st) in parts.iter_mut() {
            let wanted = match which {
                Which::All => true,
                Which::Changed => st.dirty,
                Which::These(list) => list.contains(p),
            };
            if !wanted {
                continue;
            }
            st.dirty = false;
            if tpl
                .add_partition_offset(&self.name, *p, Offset::Offset(st.position()))
                .is_ok()
            {
                if let Some(mut e) = tpl.find_partition(&self.name, *p) {
                    e.set_metadata(st.metadata());
                }
            }
        }
        tpl
    }

    /// Seeks `partition` back to its lowest due (nacked, delay over) offset,
    /// so it and every later record are fetched again; what is acked or
    /// still out is skipped on the way. The target is taken under
    /// `rewinding`, right before the seek: a seek chosen earlier for a
    /// higher offset can then never run after this one and jump over it.
    /// Nothing to do if the due offsets were fetched again already, or will
    /// be by the fetch from an earlier seek (see
    /// [`PartitionOffsets::rewind_target`]).
    async fn rewind(self: &Arc<Self>, partition: i32) {
        let _order = self.rewinding.lock().await;
        for attempt in 0..20 {
            let target = match self.partitions.lock().expect("partitions lock").get_mut(&partition) {
                Some(st) => st.rewind_target(),
                None => None, // revoked: the new owner fetches from the committed position
            };
            let (Some(target), Some(consumer)) = (target, self.consumer.get().and_then(Weak::upgrade)) else {
                return;
            };
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            let name = self.name.clone();
            let done = tokio::task::spawn_blocking(move || {
                consumer.seek(
                    &name,
                    partition,
                    Offset::Offset(target),
                    Timeout::After(Duration::from_secs(2)),
                )
            })
            .await;
            match done {
                Ok(Ok(())) => return,
                _ if self.closed.load(Ordering::Acquire) => return,
                Ok(Err(e)) if attempt == 19 => {
                    self.unrewind(partition, target);
                    tracing::warn!(topic = %self.topic, partition, offset = target, error = %e, "seek for a nack failed; redelivered after a rebalance or restart");
                }
                _ => {
                    self.unrewind(partition, target);
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
            }
        }
    }

    /// A seek to `target` failed: the next rewind must seek again.
    fn unrewind(&self, partition: i32, target: i64) {
        if let Some(st) = self.partitions.lock().expect("partitions lock").get_mut(&partition) {
            st.seek_failed(target);
        }
    }
}

pub(crate) struct Ctx {
    shared: std::sync::OnceLock<Arc<Shared>>,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    /// rust-rdkafka's own rebalance (pre_rebalance, assign or unassign,
    /// post_rebalance), except that a q0 consumer's partitions are assigned
    /// at explicit offsets ([`start_live`]).
    fn rebalance(&self, base: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        use rdkafka::consumer::RebalanceProtocol;
        let assign = err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
        if assign {
            if let Some(shared) = self.shared.get().filter(|s| !s.acked_mode()) {
                start_live(base, shared, tpl);
            }
        }
        let rebalance = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl),
            other => Rebalance::Error(rdkafka::error::KafkaError::Rebalance(other.into())),
        };
        self.pre_rebalance(base, &rebalance);
        let cooperative = matches!(base.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let done = match (assign, cooperative) {
            (true, true) => base.incremental_assign(tpl),
            (true, false) => base.assign(tpl),
            (false, true) => base.incremental_unassign(tpl),
            (false, false) => base.unassign(),
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, assign, "kafka rebalance: applying the assignment failed");
        }
        self.post_rebalance(base, &rebalance);
    }

    fn pre_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Some(shared) = self.shared.get() else { return };
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::debug!(topic = %shared.topic, ?revoked, lost = base.assignment_lost(), "kafka partitions revoked");
                // Fetched but not yet taken by the application: dropped, the
                // partition's next owner fetches them.
                let undelivered: Vec<(i32, i64)> = {
                    let mut buffer = shared.buffer.lock().expect("buffer lock");
                    let (dropped, kept) = buffer.drain(..).partition(|m| revoked.contains(&partition_of(m)));
                    *buffer = kept;
                    dropped.iter().filter_map(partition_and_offset).collect()
                };
                if shared.acked_mode() {
                    // A lost assignment (the session timed out, e.g. while the
                    // broker was down) cannot commit: the group has a new
                    // generation. The acks are in the last periodic commit,
                    // the rest is redelivered to whoever owns it now.
                    let commit = if base.assignment_lost() {
                        TopicPartitionList::new()
                    } else {
                        shared.commit_list(Which::These(&revoked))
                    };
                    let committed = commit.count() > 0
                        && match base.commit(&commit, CommitMode::Sync) {
                            Ok(()) => true,
                            Err(e) => {
                                tracing::warn!(topic = %shared.topic, error = %e, "commit on revoke failed");
                                false
                            }
                        };
                    park(shared, &revoked, committed.then_some(&commit), &undelivered);
                }
            }
            Rebalance::Assign(tpl) => {
                let assigned: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::debug!(topic = %shared.topic, ?assigned, "kafka partitions assigned");
                if shared.acked_mode() {
                    prepare_assignment(base, shared, tpl);
                }
            }
            Rebalance::Error(e) => tracing::warn!(topic = %shared.topic, error = %e, "kafka rebalance error"),
        }
    }

    fn post_rebalance(&self, _base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let (Some(shared), Rebalance::Assign(_)) = (self.shared.get(), rebalance) {
            shared.assigned.send_replace(true);
        }
    }
}

/// The consumers' `session.timeout.ms`.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `create_consumer` waits for the group to assign partitions:
/// what a rebalance on Apache Kafka takes at worst without anything being
/// wrong, plus the client's `timeout` for the requests themselves.
///
/// A join is a rebalance of the whole group. Live members rejoin within a
/// heartbeat (1 s for ours). A new group first waits the broker's
/// `group.initial.rebalance.delay.ms` (3 s by default), 3 s more for every
/// member joining meanwhile: measured on Apache Kafka 4.4 with the default,
/// 3.1 s for one consumer of a new group (6.1 s for the first group of a
/// fresh broker), 6.1 s for eight joining one within 2 s; a further member
/// joins in 1 s. A member that went away without leaving (a killed
/// process) holds the rebalance until its session times out: 9.9 s after
/// one of ours ([`SESSION_TIMEOUT`]); other clients' sessions may be longer
/// (45 s for the Java client), and a live member that does not rejoin
/// holds it up to its `max.poll.interval.ms`. Hence the wait covers our own
/// session timeout and five initial delays, and when it runs out with the
/// position already fixed (see [`fix_start`]) the consumer is returned
/// anyway and gets its partitions when the rebalance ends. (The wait was
/// `timeout * 3` before: 15 s with a 5 s timeout, just above the 9.9 s.)
fn join_wait(timeout: Duration) -> Duration {
    SESSION_TIMEOUT + Duration::from_secs(15) + timeout
}

/// Fixes the subscription's start before joining: partitions without a
/// committed offset get the start (`Earliest`: low watermark; `Latest`: high
/// watermark) committed now, outside the group (generation -1), which Kafka
/// accepts while the group has no members. True when every partition has a
/// committed offset afterwards, i.e. the position no longer depends on when
/// the group assigns the partitions. False otherwise (the group has members,
/// a request failed or timed out): then the first assignment fixes it, in
/// [`prepare_assignment`].
async fn fix_start(consumer: Arc<StreamConsumer<Ctx>>, shared: Arc<Shared>) -> bool {
    let timeout = shared.timeout;
    let work = tokio::task::spawn_blocking(move || -> std::result::Result<bool, rdkafka::error::KafkaError> {
        let t = Timeout::After(timeout);
        let metadata = consumer.fetch_metadata(Some(&shared.name), t)?;
        let mut all = TopicPartitionList::new();
        for topic in metadata.topics().iter().filter(|m| m.name() == shared.name) {
            for p in topic.partitions() {
                all.add_partition(&shared.name, p.id());
            }
        }
        if all.count() == 0 {
            return Ok(false);
        }
        let committed = consumer.committed_offsets(all, t)?;
        let mut fresh = TopicPartitionList::new();
        for e in committed.elements() {
            if !matches!(e.offset(), Offset::Offset(_)) {
                let (low, high) = watermarks_settled(consumer.as_ref(), &shared.name, e.partition(), timeout)?;
                let start = match shared.options.initial_position {
                    InitialPosition::Earliest => low,
                    InitialPosition::Latest => high,
                };
                fresh.add_partition_offset(&shared.name, e.partition(), Offset::Offset(start))?;
            }
        }
        if fresh.count() > 0 {
            consumer.commit(&fresh, CommitMode::Sync)?;
        }
        Ok(true)
    });
    match tokio::time::timeout(timeout * 2, work).await {
        Ok(Ok(Ok(fixed))) => {
            tracing::debug!(fixed, "kafka subscription start fixed outside the group");
            fixed
        }
        Ok(Ok(Err(e))) => {
            tracing::debug!(error = %e, "fixing the start outside the group failed; the first assignment fixes it");
            false
        }
        _ => false,
    }
}

/// A partition's low and high watermarks, asked again while the partition
/// has no leader yet (a topic just created, a leader moving) or the broker
/// is unreachable, up to `timeout`: a start taken later than asked would
/// skip what was sent meanwhile.
fn watermarks_settled<C: rdkafka::consumer::Consumer<Ctx>>(
    consumer: &C,
    name: &str,
    partition: i32,
    timeout: Duration,
) -> rdkafka::error::KafkaResult<(i64, i64)> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match consumer.fetch_watermarks(name, partition, Timeout::After(timeout)) {
            Err(e) if std::time::Instant::now() < deadline && leader_pending(&e) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            result => return result,
        }
    }
}

/// Whether `e` says the partition's leader is not known yet.
fn leader_pending(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    is_transient(e)
        || matches!(
            e.rdkafka_error_code(),
            Some(Code::NotLeaderForPartition | Code::LeaderNotAvailable | Code::UnknownTopicOrPartition)
        )
}

/// A q0 consumer receives what is sent while it is subscribed, so each
/// partition it is assigned starts at its high watermark now, not at a
/// committed offset (that would replay what was sent while nobody
/// listened) and not at `auto.offset.reset=latest`, which librdkafka
/// resolves only when it starts fetching: on Apache Kafka the first quarter
/// second of messages sent after `create_consumer` returned was skipped (a
/// benchmark run of 20,000 received 60%). A partition whose watermarks
/// cannot be read keeps librdkafka's resolution.
fn start_live(base: &BaseConsumer<Ctx>, shared: &Shared, tpl: &mut TopicPartitionList) {
    let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    for p in partitions {
        match watermarks_settled(base, &shared.name, p, shared.timeout) {
            Ok((_, high)) => {
                if let Err(e) = tpl.set_partition_offset(&shared.name, p, Offset::Offset(high)) {
                    tracing::warn!(topic = %shared.topic, partition = p, error = %e, "q0 start not set");
                }
            }
            Err(e) => tracing::warn!(topic = %shared.topic, partition = p, error = %e, "q0 start: watermarks failed"),
        }
    }
}

/// Moves the revoked partitions' states aside: those committed on revoke
/// (`commit`) to [`Shared::parked`], by the offset committed, with the
/// records dropped from the buffer (`undelivered`) marked to be delivered when
/// fetched again; the others are dropped (their next owner, maybe this
/// consumer again, starts from what is committed).
fn park(shared: &Shared, revoked: &[i32], commit: Option<&TopicPartitionList>, undelivered: &[(i32, i64)]) {
    let mut states = States::lock(shared);
    for p in revoked {
        let Some(mut st) = states.owned.remove(p) else { continue };
        let at = commit
            .and_then(|c| c.find_partition(&shared.name, *p))
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        if let Some(at) = at {
            for (_, o) in undelivered.iter().filter(|(q, _)| q == p) {
                st.undeliver(*o);
            }
            states.parked.insert(*p, (at, st));
        }
    }
}

/// The partitions' states, owned and parked, locked together.
struct States<'a> {
    owned: std::sync::MutexGuard<'a, HashMap<i32, PartitionOffsets>>,
    parked: std::sync::MutexGuard<'a, HashMap<i32, (i64, PartitionOffsets)>>,
}

impl<'a> States<'a> {
    fn lock(shared: &'a Shared) -> Self {
        States {
            owned: shared.partitions.lock().expect("partitions lock"),
            parked: shared.parked.lock().expect("parked lock"),
        }
    }

    /// The state of `partition`, owned or parked; `None` if the consumer has
    /// neither (the partition is another consumer's, which redelivers it).
    fn get(&mut self, partition: i32) -> Option<&mut PartitionOffsets> {
        match self.owned.get_mut(&partition) {
            Some(st) => Some(st),
            None => self.parked.get_mut(&partition).map(|(_, st)| st),
        }
    }
}

/// Runs `f` on the state of `partition`, owned or parked (see [`States::get`]).
fn with_state<R>(shared: &Shared, partition: i32, f: impl FnOnce(&mut PartitionOffsets) -> R) -> Option<R> {
    States::lock(shared).get(partition).map(f)
}

/// Fixes the start of partitions that have no committed offset yet and
/// restores the acks above the committed ones, or the whole state of a
/// partition that comes back at the offset it was parked at.
fn prepare_assignment(base: &BaseConsumer<Ctx>, shared: &Shared, tpl: &TopicPartitionList) {
    let committed = match base.committed_offsets(tpl.clone(), Timeout::After(shared.timeout)) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(topic = %shared.topic, error = %e, "reading committed offsets failed");
            return;
        }
    };
    let mut fresh = TopicPartitionList::new();
    let mut parts = shared.partitions.lock().expect("partitions lock");
    // Partitions parked and not given back went to other consumers.
    let mut parked = std::mem::take(&mut *shared.parked.lock().expect("parked lock"));
    for e in committed.elements() {
        let p = e.partition();
        match e.offset() {
            Offset::Offset(o) => match parked.remove(&p) {
                Some((at, mut st)) if at == o => {
                    tracing::debug!(topic = %shared.topic, partition = p, committed = o, "kafka partition back, state kept");
                    st.refetched();
                    parts.insert(p, st);
                }
                _ => {
                    tracing::debug!(topic = %shared.topic, partition = p, committed = o, "kafka partition resumes");
                    parts.insert(p, PartitionOffsets::restore(o, e.metadata()));
                }
            },
            _ => {
                let start = match watermarks_settled(base, &shared.name, p, shared.timeout) {
                    Ok((low, high)) => match shared.options.initial_position {
                        InitialPosition::Earliest => low,
                        InitialPosition::Latest => high,
                    },
                    Err(e) => {
                        tracing::warn!(topic = %shared.topic, partition = p, error = %e, "watermarks failed");
                        continue;
                    }
                };
                tracing::debug!(topic = %shared.topic, partition = p, start, "kafka partition starts at assignment");
                let _ = fresh.add_partition_offset(&shared.name, p, Offset::Offset(start));
                parts.insert(p, PartitionOffsets::restore(start, ""));
            }
        }
    }
    drop(parts);
    if fresh.count() > 0 {
        if let Err(e) = base.commit(&fresh, CommitMode::Sync) {
            tracing::warn!(topic = %shared.topic, error = %e, "committing the start of new partitions failed");
        }
    }
}

fn partition_of(m: &Message) -> i32 {
    partition_and_offset(m).map_or(-1, |(p, _)| p)
}

/// A message's partition and offset, from its id `partition:offset`.
fn partition_and_offset(m: &Message) -> Option<(i32, i64)> {
    let id = m.id().to_string();
    let (p, o) = id.split_once(':')?;
    Some((p.parse().ok()?, o.parse().ok()?))
}

pub(crate) struct KafkaConsumer {
    inner: Arc<Inner>,
    shared: Arc<Shared>,
    consumer: std::sync::Mutex<Option<Arc<StreamConsumer<Ctx>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("topic", &self.shared.topic)
            .field("subscription", &self.shared.subscription)
            .finish()
    }
}

impl KafkaConsumer {
    pub(crate) async fn start(
        inner: Arc<Inner>,
        topic: Topic,
        name: String,
        subscription: &str,
        options: ConsumerOptions,
    ) -> Result<Self> {
        let acked = topic.qos() != Qos::AtMostOnce;
        let ctx = Ctx {
            shared: std::sync::OnceLock::new(),
        };
        let group = group_id(&name, subscription);
        let consumer: StreamConsumer<Ctx> = inner
            .config
            // fetch.wait.max.ms only bounds a fetch that finds nothing (the
            // broker answers at once when there is data): 10, 100 and 500 ms
            // gave the same throughput and latency on Apache Kafka 4.4.
            .client_config_with(&[("fetch.wait.max.ms", "100")])
            .set("group.id", &group)
            .set("enable.auto.commit", if acked { "false" } else { "true" })
            .set("enable.auto.offset.store", if acked { "false" } else { "true" })
            .set(
                "auto.offset.reset",
                match options.initial_position {
                    InitialPosition::Earliest => "earliest",
                    InitialPosition::Latest => "latest",
                },
            )
            .set("session.timeout.ms", SESSION_TIMEOUT.as_millis().to_string())
            .set("heartbeat.interval.ms", "1000")
            .create_with_context(ctx)
            .map_err(|e| Error::InvalidConfiguration(format!("kafka consumer settings: {e}")))?;
        let consumer = Arc::new(consumer);
        let (assigned, mut assigned_rx) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared {
            topic,
            name: name.clone(),
            subscription: subscription.to_string(),
            group,
            timeout: inner.config.timeout,
            options,
            partitions: Default::default(),
            parked: Default::default(),
            buffer: Default::default(),
            arrived: Notify::new(),
            drained: Notify::new(),
            closed: AtomicBool::new(false),
            assigned,
            consumer: std::sync::OnceLock::new(),
            rewinding: tokio::sync::Mutex::new(()),
        });
        let _ = consumer.context().shared.set(shared.clone());
        let _ = shared.consumer.set(Arc::downgrade(&consumer));
        let fixed = acked && fix_start(consumer.clone(), shared.clone()).await;
        consumer
            .subscribe(&[&name])
            .map_err(|e| map_err(format!("subscribe to {name}"), e))?;
        let mut tasks = vec![tokio::spawn(poll_loop(shared.clone(), consumer.clone()))];
        if acked {
            tasks.push(tokio::spawn(commit_loop(shared.clone())));
        }
        let this = KafkaConsumer {
            inner: inner.clone(),
            shared,
            consumer: std::sync::Mutex::new(Some(consumer)),
            tasks,
        };
        // Wait for the group to take us in, so the consumer has its share
        // (and `seek` its partitions) when this returns. See `join_wait`.
        let wait = join_wait(inner.config.timeout);
        if tokio::time::timeout(wait, assigned_rx.wait_for(|a| *a)).await.is_err() {
            if fixed {
                // The position is fixed already: the partitions come with
                // the rebalance, whenever the group finishes it.
                tracing::warn!(topic = %this.shared.topic, group = %this.shared.group, ?wait, "the group has not assigned partitions yet; the consumer receives once it does");
                return Ok(this);
            }
            this.shut().await;
            return Err(Error::Connection {
                backend: NAME,
                message: format!(
                    "the group {} did not assign partitions within {wait:?} (a member that went away \
                     without leaving holds a rebalance for its session timeout, a live one that does not rejoin \
                     for its max.poll.interval.ms)",
                    this.shared.group
                ),
                source: None,
            });
        }
        Ok(this)
    }

    /// Stops polling, commits, leaves the group and drops the rdkafka
    /// consumer on a blocking thread with a bounded wait: dropping a
    /// StreamConsumer can hang (a known rdkafka issue), and must not block
    /// the async runtime.
    async fn shut(&self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.arrived.notify_waiters();
        self.shared.drained.notify_waiters();
        for t in &self.tasks {
            t.abort();
        }
        let Some(consumer) = self.consumer.lock().expect("consumer lock").take() else {
            return;
        };
        let shared = self.shared.clone();
        let timeout = self.shared.timeout;
        let closing = tokio::task::spawn_blocking(move || {
            if shared.acked_mode() {
                let tpl = shared.commit_list(Which::All);
                if tpl.count() > 0 {
                    if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                        tracing::warn!(topic = %shared.topic, error = %e, "final commit failed");
                    }
                }
            }
            consumer.unsubscribe();
            // Wait for other holders (a receive in progress) to let go, then drop here.
            let deadline = std::time::Instant::now() + timeout;
            let mut consumer = consumer;
            loop {
                match Arc::try_unwrap(consumer) {
                    Ok(c) => {
                        drop(c);
                        break;
                    }
                    Err(c) if std::time::Instant::now() < deadline => {
                        consumer = c;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(c) => {
                        drop_when_sole_owner(c);
                        break;
                    }
                }
            }
        });
        if tokio::time::timeout(self.shared.timeout * 2, closing).await.is_err() {
            tracing::warn!(topic = %self.shared.topic, "closing the kafka consumer did not finish in time; left to a background thread");
        }
    }

    fn take(&self, max: usize) -> Vec<Message> {
        let mut buffer = self.shared.buffer.lock().expect("buffer lock");
        let n = buffer.len().min(max);
        let out: Vec<Message> = buffer.drain(..n).collect();
        drop(buffer);
        if !out.is_empty() {
            self.shared.drained.notify_one();
        }
        out
    }

    async fn take_waiting(&self, max: usize, deadline: Option<tokio::time::Instant>) -> Result<Vec<Message>> {
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            self.shared.ensure_open()?;
            let got = self.take(max);
            if !got.is_empty() {
                return Ok(got);
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, arrived).await.is_err() {
                        return Ok(Vec::new());
                    }
                }
                None => arrived.await,
            }
        }
    }
}

/// The fewest messages the local buffer holds before the poll loop pauses.
const MIN_HIGH_WATER: usize = 1000;

/// How long a full buffer waits for the application before the poll loop
/// pauses the assignment (and so serves rebalances again).
const PAUSE_AFTER: Duration = Duration::from_millis(250);

/// The buffer's bounds: the poll loop pauses the assignment at the high
/// water mark (twice `batch_size`, at least [`MIN_HIGH_WATER`]) and resumes
/// at the low one, half of it.
///
/// Pausing a partition makes librdkafka drop what it prefetched for it, and
/// resuming fetches again from the last record taken. With the bounds at
/// 200 and 199 (the default `batch_size` of 100, as before) every record
/// the application took resumed the partitions, one fetch brought back
/// thousands of records, the first took the buffer to 200 again and the
/// rest were dropped: one fetch per record, about 2,300 msg/s from a backlog
/// on Apache Kafka and 170-200 on Tansu, against 100,000 with a larger
/// `batch_size`. With the gap, one fetch refills half the buffer; and the
/// loop pauses only when the application stopped taking (see
/// [`PAUSE_AFTER`]), so a consumer that keeps up never drops a prefetch.
fn water_marks(batch_size: usize) -> (usize, usize) {
    let high = batch_size.max(1).saturating_mul(2).max(MIN_HIGH_WATER);
    (high, high / 2)
}

/// Polls rdkafka continuously; pauses the assignment while the buffer is full.
async fn poll_loop(shared: Arc<Shared>, consumer: Arc<StreamConsumer<Ctx>>) {
    let (high_water, low_water) = water_marks(shared.options.batch_size);
    let mut paused = false;
    // Errors in a row, so an outage is logged once, not once per event.
    let mut failures = 0u32;
    while !shared.closed.load(Ordering::Acquire) {
        let buffered = shared.buffer.lock().expect("buffer lock").len();
        let full = if paused {
            buffered > low_water
        } else {
            buffered >= high_water
        };
        if full && !paused {
            // The application is behind. Wait for it to take before polling
            // more (librdkafka keeps prefetching meanwhile, within its own
            // bounds); pause only when it takes nothing for a while, since
            // that drops the prefetch, and not polling longer would hold up
            // the group's rebalances.
            if tokio::time::timeout(PAUSE_AFTER, shared.drained.notified())
                .await
                .is_ok()
            {
                continue;
            }
        }
        if full != paused {
            if let Ok(assignment) = consumer.assignment() {
                let r = if full {
                    consumer.pause(&assignment)
                } else {
                    consumer.resume(&assignment)
                };
                if r.is_ok() {
                    paused = full;
                }
            }
        }
        let received = tokio::select! {
            r = consumer.recv() => r.map(|m| m.detach()),
            _ = shared.drained.notified(), if paused => continue,
        };
        match received {
            Ok(m) => {
                if failures > 0 {
                    tracing::info!(topic = %shared.topic, after = failures, "kafka consumer receives again");
                    failures = 0;
                }
                if let Some(msg) = convert(&shared, m) {
                    shared.buffer.lock().expect("buffer lock").push_back(msg);
                    shared.arrived.notify_waiters();
                }
            }
            Err(e) => {
                // librdkafka reconnects and rejoins the group by itself, and
                // queues one error event per failed attempt: keep polling, or
                // the rebalance that follows an outage waits behind stale
                // errors (a growing backoff here once stalled a consumer for a
                // minute after its broker came back). The short pause only
                // keeps a persistent error from spinning.
                if failures == 0 {
                    tracing::warn!(topic = %shared.topic, error = %e, "kafka consumer poll failed; librdkafka retries");
                } else {
                    tracing::debug!(topic = %shared.topic, error = %e, "kafka consumer poll failed again");
                }
                failures = failures.saturating_add(1);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A fetched record as a message, unless it was acked already or is still out.
fn convert(shared: &Arc<Shared>, m: OwnedMessage) -> Option<Message> {
    let (p, o) = (m.partition(), m.offset());
    let redeliveries = if shared.acked_mode() {
        let mut parts = shared.partitions.lock().expect("partitions lock");
        let st = parts.entry(p).or_insert_with(|| PartitionOffsets::restore(o, ""));
        match st.fetched(o) {
            Fetched::Deliver(n) => n,
            Fetched::Skip => {
                tracing::trace!(topic = %shared.topic, partition = p, offset = o, "fetched record skipped (acked or out)");
                return None;
            }
        }
    } else {
        0
    };
    let mut parts = record_parts(&m, &shared.topic);
    parts.redelivery_count = redeliveries;
    if !shared.acked_mode() {
        return Some(Message::new(parts, Arc::new(NoAck)));
    }
    Some(Message::new(
        parts,
        Arc::new(KafkaAck {
            shared: shared.clone(),
            partition: p,
            offset: o,
        }),
    ))
}

/// A fetched record's id (`partition:offset`), payload, key, properties
/// and timestamp.
pub(crate) fn record_parts(m: &impl rdkafka::message::Message, topic: &Topic) -> MessageParts {
    let (p, o) = (m.partition(), m.offset());
    let mut parts = MessageParts::new(MessageId::from_text(format!("{p}:{o}")), topic.clone());
    parts.payload = m.payload().map(bytes::Bytes::copy_from_slice).unwrap_or_default();
    parts.key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
    parts.properties = from_headers(m.headers());
    if let Some(ms) = m.timestamp().to_millis() {
        parts.publish_time = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    }
    parts
}

/// Commits changed positions every 100 ms (asynchronously).
async fn commit_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let Some(consumer) = shared.consumer.get().and_then(Weak::upgrade) else {
            return;
        };
        let tpl = shared.commit_list(Which::Changed);
        if tpl.count() > 0 {
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                tracing::warn!(topic = %shared.topic, error = %e, "commit failed; retried with the next change");
            }
        }
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    fn topic(&self) -> &Topic {
        &self.shared.topic
    }

    fn subscription(&self) -> &str {
        &self.shared.subscription
    }

    /// Marks every message's offset in its partition's state under one
    /// lock; the commit loop then commits the new positions in one commit.
    async fn ack_all(&self, messages: &[Message]) -> Result<()> {
        let own = |a: &KafkaAck| Arc::ptr_eq(&a.shared, &self.shared);
        pubsub_core::ack_all_with(messages, own, |acks: Vec<&KafkaAck>| async move {
            self.shared.ensure_open()?;
            let mut states = States::lock(&self.shared);
            for a in acks {
                if let Some(st) = states.get(a.partition) {
                    st.ack(a.offset);
                }
            }
            Ok(())
        })
        .await
    }

    async fn receive(&self) -> Result<Message> {
        let mut got = self.take_waiting(1, None).await?;
        got.pop().ok_or(Error::Closed("consumer"))
    }

    async fn receive_timeout(&self, timeout: Duration) -> Result<Message> {
        let mut got = self
            .take_waiting(1, Some(tokio::time::Instant::now() + timeout))
            .await?;
        got.pop().ok_or(Error::Timeout(timeout))
    }

    async fn receive_batch(&self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.take_waiting(max, Some(tokio::time::Instant::now() + timeout))
            .await
    }

    /// Moves the partitions this consumer owns to `position` and commits
    /// there. Partitions other members of the group own keep their
    /// positions: Kafka moves a group's offsets for everyone only while the
    /// group is inactive.
    async fn seek(&self, position: Position) -> Result<()> {
        self.shared.ensure_open()?;
        self.inner.caps.check_replay(&self.shared.topic)?;
        let consumer = self
            .consumer
            .lock()
            .expect("consumer lock")
            .clone()
            .ok_or(Error::Closed("consumer"))?;
        let (inner, shared) = (self.inner.clone(), self.shared.clone());
        crate::admin::blocking(move || {
            let targets = crate::replay::resolve(&inner, &shared.name, &position)?;
            let assignment = consumer.assignment().map_err(|e| map_err("assignment", e))?;
            let mine: Vec<i32> = assignment
                .elements()
                .iter()
                .map(|e| e.partition())
                .filter(|p| targets.contains_key(p))
                .collect();
            {
                let mut parts = shared.partitions.lock().expect("partitions lock");
                for p in &mine {
                    let mut st = PartitionOffsets::restore(targets[p], "");
                    st.dirty = true;
                    parts.insert(*p, st);
                }
            }
            shared
                .buffer
                .lock()
                .expect("buffer lock")
                .retain(|m| !mine.contains(&partition_of(m)));
            for p in &mine {
                consumer
                    .seek(
                        &shared.name,
                        *p,
                        Offset::Offset(targets[p]),
                        Timeout::After(shared.timeout),
                    )
                    .map_err(|e| map_err(format!("seek partition {p}"), e))?;
            }
            let tpl = shared.commit_list(Which::These(&mine));
            if tpl.count() > 0 {
                consumer
                    .commit(&tpl, CommitMode::Sync)
                    .map_err(|e| map_err("commit after seek", e))?;
            }
            Ok(())
        })
        .await
    }

    async fn unsubscribe(&self) -> Result<()> {
        self.shared.ensure_open()?;
        self.shut().await;
        // The group and its committed offsets go; a new subscription of the
        // same name starts at its initial position.
        let opts = rdkafka::admin::AdminOptions::new().operation_timeout(Some(Timeout::After(self.shared.timeout)));
        let results = self
            .inner
            .admin
            .delete_groups(&[&self.shared.group], &opts)
            .await
            .map_err(|e| map_err(format!("delete group {}", self.shared.group), e))?;
        for r in results {
            if let Err((group, code)) = r {
                if code != rdkafka::types::RDKafkaErrorCode::GroupIdNotFound {
                    return Err(Error::broker_msg(NAME, format!("delete group {group}: {code}")));
                }
            }
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.shut().await;
        Ok(())
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        if self.shared.closed.load(Ordering::Acquire) {
            return;
        }
        self.shared.closed.store(true, Ordering::Release);
        for t in &self.tasks {
            t.abort();
        }
        if let Some(consumer) = self.consumer.lock().ok().and_then(|mut c| c.take()) {
            drop_when_sole_owner(consumer);
        }
    }
}

/// Drops an rdkafka consumer on a thread of its own once nothing else holds
/// it. Its drop closes it, and librdkafka's close waits for the group
/// coordinator, for ever when the broker is gone: so it must never run on
/// the async runtime, nor be left to whichever holder lets go last (an
/// aborted poll task, dropped by a runtime worker: a test's runtime once
/// hung at shutdown this way, after its broker had been stopped).
fn drop_when_sole_owner<T: Send + Sync + 'static>(consumer: Arc<T>) {
    std::thread::spawn(move || {
        let mut consumer = consumer;
        let mut pause = Duration::from_millis(10);
        loop {
            match Arc::try_unwrap(consumer) {
                Ok(c) => return drop(c),
                Err(c) => {
                    consumer = c;
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    });
}

/// Acks one record: marks it in the partition's offsets; the commit loop
/// commits the contiguous prefix. Nack marks it, and after the delay seeks
/// the partition back to the lowest nacked offset whose delay is over.
struct KafkaAck {
    shared: Arc<Shared>,
    partition: i32,
    offset: i64,
}

impl fmt::Debug for KafkaAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KafkaAck({} {}:{})", self.shared.name, self.partition, self.offset)
    }
}

#[async_trait]
impl AckTarget for KafkaAck {
    async fn ack(&self) -> Result<()> {
        self.shared.ensure_open()?;
        with_state(&self.shared, self.partition, |st| st.ack(self.offset));
        Ok(())
    }

    async fn nack(&self, delay: Option<Duration>) -> Result<()> {
        self.shared.ensure_open()?;
        let nacked = with_state(&self.shared, self.partition, |st| st.nack(self.offset)).unwrap_or(false);
        if !nacked {
            return Ok(());
        }
        let delay = delay.unwrap_or(self.shared.options.nack_redelivery_delay);
        let (shared, p, o) = (self.shared.clone(), self.partition, self.offset);
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            // A parked partition's due offset is fetched when it comes back.
            let due = with_state(&shared, p, |st| st.due(o)).unwrap_or(false);
            if due {
                shared.rewind(p).await;
            }
        });
        Ok(())
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the thread it was dropped on.
    struct Probe(std::sync::mpsc::Sender<std::thread::ThreadId>);

    impl Drop for Probe {
        fn drop(&mut self) {
            let _ = self.0.send(std::thread::current().id());
        }
    }

    #[test]
    fn the_client_is_dropped_on_its_own_thread_even_when_another_holder_lets_go_last() {
        let (tx, dropped_on) = std::sync::mpsc::channel();
        let client = Arc::new(Probe(tx));
        let other_holder = client.clone();
        drop_when_sole_owner(client);
        // The other holder (a poll task on a runtime worker, say) lets go last.
        std::thread::sleep(Duration::from_millis(50));
        drop(other_holder);
        let thread = dropped_on.recv_timeout(Duration::from_secs(10)).expect("dropped");
        assert_ne!(
            thread,
            std::thread::current().id(),
            "the last holder's thread closed the client"
        );
    }
}
