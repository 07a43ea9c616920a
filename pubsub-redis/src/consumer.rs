//! Consumers: Streams with a consumer group (q1/q2) and Pub/Sub (q0).
//!
//! A stream consumer runs a background fetcher with its own connection (a
//! blocking `XREADGROUP` would stall the shared one). It fills a bounded
//! channel of `batch_size` messages, so `receive` is cancel safe and a slow
//! consumer holds at most that many. Every `poll_interval` the fetcher also
//! moves due delayed messages into the stream and reclaims (`XAUTOCLAIM`)
//! entries idle past the ack timeout: those of crashed consumers, nacked
//! ones, and ones released by a closing consumer.
//!
//! Nack is `XCLAIM … IDLE n JUSTID`: the entry keeps its id and Redis's own
//! delivery counter, and its idle time is set so that the next reclaim
//! (after the requested delay) picks it up.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::conn::Conn;
use async_trait::async_trait;
use pubsub_core::inbox::{CurrentOnly, Inbox, SeekGeneration, Tagged};
use pubsub_core::{
    ensure_open, envelope, AckTarget, Consumer, ConsumerOptions, Error, InitialPosition, Message, MessageId,
    MessageParts, NoAck, Position, Result, Topic,
};
use redis::Value;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::acks::GroupAcker;
use crate::backend::{map_err, Inner};
use crate::fields::{fill_parts, items, read_reply_entries, text_of, to_fields};
use crate::keys::TopicKeys;
use crate::scripts;

/// Idle time (ms) given to a nacked or released entry: past any ack
/// timeout, so the next reclaim takes it. (Redis clamps an idle time
/// beyond the Unix epoch to zero, so it must stay below "now".)
const RELEASED_IDLE_MS: u64 = 1_000_000_000_000;
/// Reclaim threshold (ms) for consumers without an ack timeout: only
/// released entries are that idle.
const NO_TIMEOUT_MIN_IDLE_MS: u64 = RELEASED_IDLE_MS / 2;

pub(crate) struct Shared {
    inner: Arc<Inner>,
    topic: Topic,
    keys: TopicKeys,
    group: String,
    consumer: String,
    options: ConsumerOptions,
    closed: AtomicBool,
    stop: Notify,
    /// Held by each fetch and by a seek, so a seek never runs mid-fetch.
    fetching: tokio::sync::Mutex<()>,
    /// Seeks so far: each fetched message carries the one it was read in.
    generation: SeekGeneration,
    acker: GroupAcker,
}

impl Shared {
    fn min_idle_ms(&self) -> u64 {
        self.options
            .ack_timeout
            .map_or(NO_TIMEOUT_MIN_IDLE_MS, |t| t.as_millis().max(1) as u64)
    }

    fn ensure_open(&self) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "consumer")?;
        self.inner.ensure_open()
    }

    async fn create_group(&self, start: &str) -> Result<()> {
        let mut conn = self.inner.conn.clone();
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.keys.stream)
            .arg(&self.group)
            .arg(start)
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()), // exists: resume from its position
            Err(e) => Err(map_err(
                &format!("create subscription {} on {}", self.group, self.topic),
                e,
            )),
        }
    }

    fn message(self: &Arc<Self>, id: &str, fields: &Value, delivery_count: u64) -> Message {
        let mut parts = MessageParts::new(MessageId::from_text(id), self.topic.clone());
        fill_parts(&mut parts, id, fields);
        parts.redelivery_count = delivery_count.saturating_sub(1) as u32;
        Message::new(
            parts,
            Arc::new(RedisAck {
                shared: self.clone(),
                id: id.to_string(),
            }),
        )
    }

    async fn xack(&self, id: &str) -> Result<()> {
        self.acker.ack(id).await
    }

    /// Sets the idle time of pending entries so the next reclaim after
    /// `delay` takes them.
    async fn release(&self, ids: &[String], delay: Duration) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let idle = if delay.is_zero() {
            RELEASED_IDLE_MS
        } else {
            self.min_idle_ms().saturating_sub(delay.as_millis() as u64)
        };
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&self.keys.stream).arg(&self.group).arg(&self.consumer).arg(0);
        for id in ids {
            cmd.arg(id);
        }
        cmd.arg("IDLE").arg(idle).arg("JUSTID");
        let mut conn = self.inner.conn.clone();
        let _: Value = cmd.query_async(&mut conn).await.map_err(|e| map_err("nack", e))?;
        Ok(())
    }

    /// Restarts the ack timeout of entry `id`, if this consumer holds it.
    async fn extend(&self, id: &str) -> Result<()> {
        let mut conn = self.inner.conn.clone();
        let _: i64 = scripts::EXTEND
            .key(&self.keys.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(id)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| map_err("in progress", e))?;
        Ok(())
    }

    /// Entries this consumer holds unacked.
    async fn own_pending(&self) -> Result<Vec<String>> {
        let mut conn = self.inner.conn.clone();
        let reply: Value = redis::cmd("XPENDING")
            .arg(&self.keys.stream)
            .arg(&self.group)
            .arg("-")
            .arg("+")
            .arg(10_000)
            .arg(&self.consumer)
            .query_async(&mut conn)
            .await
            .map_err(|e| map_err("list pending", e))?;
        Ok(items(&reply)
            .iter()
            .filter_map(|e| items(e).first().and_then(text_of))
            .collect())
    }
}

/// A q1/q2 consumer on a stream's consumer group.
pub(crate) struct StreamConsumer {
    shared: Arc<Shared>,
    inbox: Inbox<CurrentOnly>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for StreamConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStreamConsumer")
            .field("topic", &self.shared.topic)
            .field("subscription", &self.shared.group)
            .field("consumer", &self.shared.consumer)
            .finish()
    }
}

impl StreamConsumer {
    pub(crate) async fn start(
        inner: Arc<Inner>,
        topic: Topic,
        subscription: &str,
        options: ConsumerOptions,
    ) -> Result<Self> {
        let short = uuid::Uuid::new_v4().simple().to_string();
        let consumer = format!("{}-{}", options.name.as_deref().unwrap_or("consumer"), &short[..12]);
        let keys = TopicKeys::new(&topic);
        let acker = GroupAcker::start(inner.conn.clone(), keys.stream.clone(), subscription.to_string());
        let shared = Arc::new(Shared {
            keys,
            acker,
            inner,
            topic,
            group: subscription.to_string(),
            consumer,
            options,
            closed: AtomicBool::new(false),
            stop: Notify::new(),
            fetching: tokio::sync::Mutex::new(()),
            generation: SeekGeneration::default(),
        });
        let start = match shared.options.initial_position {
            InitialPosition::Earliest => "0",
            InitialPosition::Latest => "$",
        };
        shared.create_group(start).await?;
        let blocking = connect_blocking(&shared.inner).await?;
        let (tx, rx) = mpsc::channel(shared.options.batch_size);
        let task = tokio::spawn(fetch_loop(shared.clone(), tx, blocking));
        let generation = shared.generation.clone();
        Ok(StreamConsumer {
            shared,
            inbox: Inbox::new(CurrentOnly::new(rx, generation)),
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    /// Stops the fetcher and waits for it, so nothing more is read for us.
    async fn stop_fetching(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.stop.notify_waiters();
        let task = self.task.lock().expect("task lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// A connection of its own for blocking reads (`XREAD[GROUP] BLOCK`), which
/// would hold up a shared one. It does not reconnect: callers open another.
pub(crate) async fn connect_blocking(inner: &Inner) -> Result<Conn> {
    inner
        .clients
        .blocking(inner.config.timeout, inner.config.poll_interval)
        .await
        .map_err(|e| map_err("open a connection for blocking reads", e))
}

/// Fills the channel: delayed moves, reclaims, then new entries; reconnects
/// with backoff when the server goes away.
async fn fetch_loop(shared: Arc<Shared>, tx: mpsc::Sender<Tagged>, conn: Conn) {
    let mut conn = Some(conn);
    let mut backoff = Duration::from_millis(100);
    let mut next_housekeeping = Instant::now();
    let mut cursor = "0-0".to_string();
    let poll = shared.inner.config.poll_interval;
    while !shared.closed.load(Ordering::Acquire) {
        // Wait for room, so we never read more than we can hand out.
        let permit = tokio::select! {
            p = tx.reserve() => match p { Ok(p) => p, Err(_) => return },
            _ = shared.stop.notified() => return,
        };
        drop(permit);
        let room = tx.capacity().max(1);
        let result = async {
            if Instant::now() >= next_housekeeping {
                next_housekeeping = Instant::now() + poll;
                move_due(&shared).await?;
                let (next, got) = reclaim(&shared, &cursor, room).await?;
                cursor = next;
                if got.len() >= room || cursor != "0-0" {
                    next_housekeeping = Instant::now(); // more to reclaim
                }
                if !got.is_empty() {
                    return Ok(got);
                }
            }
            let c = match conn.as_mut() {
                Some(c) => c,
                None => conn.insert(connect_blocking(&shared.inner).await?),
            };
            read_new(&shared, c, room, poll).await
        };
        // A fetch under way is finished, not dropped, when the consumer
        // closes (it blocks at most `poll_interval`): a dropped XREADGROUP
        // may still be served after close has listed what this consumer
        // holds, and what it delivered would sit unseen until the ack
        // timeout instead of going back to the others at once.
        let (generation, outcome) = {
            let _fetch = shared.fetching.lock().await;
            let generation = shared.generation.current();
            (generation, result.await)
        };
        match outcome {
            Ok(messages) => {
                backoff = Duration::from_millis(100);
                for m in messages {
                    if tx.send((generation, m)).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) if is_no_group(&e) => {
                // The server lost the group (restart without persistence):
                // recreate it from the start of what the stream now holds.
                tracing::warn!(topic = %shared.topic, subscription = %shared.group, "consumer group vanished; recreating it");
                if let Err(e) = shared.create_group("0").await {
                    tracing::warn!(error = %e, "recreating the consumer group failed");
                    tokio::time::sleep(backoff).await;
                }
            }
            Err(e) => {
                tracing::warn!(topic = %shared.topic, error = %e, retry_in = ?backoff, "redis consumer: fetch failed");
                conn = None;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shared.stop.notified() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn is_no_group(e: &Error) -> bool {
    matches!(e, Error::Broker { message, .. } if message.contains("NOGROUP"))
}

async fn move_due(shared: &Shared) -> Result<()> {
    let mut conn = shared.inner.conn.clone();
    let _: i64 = scripts::MOVE_DUE
        .key(&shared.keys.delayed)
        .key(&shared.keys.stream)
        .arg(100)
        .invoke_async(&mut conn)
        .await
        .map_err(|e| map_err("move delayed messages", e))?;
    Ok(())
}

/// Reclaims idle entries; dead-letters those past `max_redeliveries`.
async fn reclaim(shared: &Arc<Shared>, cursor: &str, count: usize) -> Result<(String, Vec<Message>)> {
    let mut conn = shared.inner.conn.clone();
    let reply: Value = scripts::RECLAIM
        .key(&shared.keys.stream)
        .arg(&shared.group)
        .arg(&shared.consumer)
        .arg(shared.min_idle_ms())
        .arg(cursor)
        .arg(count)
        .invoke_async(&mut conn)
        .await
        .map_err(|e| map_err("reclaim pending messages", e))?;
    let parts = items(&reply);
    let next = parts.first().and_then(text_of).unwrap_or_else(|| "0-0".into());
    let entries = parts.get(1).map(items).unwrap_or_default();
    let counts = parts.get(2).map(items).unwrap_or_default();
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let e = items(entry);
        let (Some(id), Some(fields)) = (e.first().and_then(text_of), e.get(1)) else {
            continue;
        };
        let delivered = match counts.get(i) {
            Some(Value::Int(n)) => *n as u64,
            _ => 1,
        };
        if shared
            .options
            .max_redeliveries
            .is_some_and(|max| delivered.saturating_sub(1) > max as u64)
        {
            dead_letter(shared, &id, fields).await?;
            continue;
        }
        out.push(shared.message(&id, fields, delivered));
    }
    Ok((next, out))
}

async fn dead_letter(shared: &Shared, id: &str, fields: &Value) -> Result<()> {
    if let Some(dlq) = &shared.options.dead_letter_topic {
        let mut parts = MessageParts::new(MessageId::from_text(id), shared.topic.clone());
        fill_parts(&mut parts, id, fields);
        let mut m = pubsub_core::OutgoingMessage::new(parts.payload);
        m.properties = parts.properties;
        m.key = parts.key;
        let mut fields = to_fields(&m);
        fields.push(b"pubsub.dead-letter.origin".to_vec());
        fields.push(shared.topic.to_string().into_bytes());
        let mut cmd = redis::cmd("XADD");
        cmd.arg(TopicKeys::new(dlq).stream).arg("*");
        for f in fields {
            cmd.arg(f);
        }
        let mut conn = shared.inner.conn.clone();
        let _: Value = cmd
            .query_async(&mut conn)
            .await
            .map_err(|e| map_err("dead-letter", e))?;
    } else {
        tracing::warn!(topic = %shared.topic, id, "dropping a message past max_redeliveries (no dead_letter_topic)");
    }
    shared.xack(id).await
}

async fn read_new(shared: &Arc<Shared>, conn: &mut Conn, count: usize, block: Duration) -> Result<Vec<Message>> {
    let reply: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&shared.group)
        .arg(&shared.consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(block.as_millis().max(1) as u64)
        .arg("STREAMS")
        .arg(&shared.keys.stream)
        .arg(">")
        .query_async(conn)
        .await
        .map_err(|e| map_err("read", e))?;
    Ok(read_reply_entries(&reply)
        .into_iter()
        .map(|(id, fields)| shared.message(&id, fields, 1))
        .collect())
}

#[async_trait]
impl Consumer for StreamConsumer {
    fn topic(&self) -> &Topic {
        &self.shared.topic
    }

    fn subscription(&self) -> &str {
        &self.shared.group
    }

    async fn receive(&self) -> Result<Message> {
        self.inbox
            .receive(&self.shared.stop, || self.shared.ensure_open())
            .await
    }

    async fn receive_batch(&self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        self.inbox
            .receive_batch(&self.shared.stop, || self.shared.ensure_open(), max, timeout)
            .await
    }

    async fn ack_all(&self, messages: &[Message]) -> Result<()> {
        let own = |a: &RedisAck| Arc::ptr_eq(&a.shared, &self.shared);
        pubsub_core::ack_all_with(messages, own, |acks: Vec<&RedisAck>| async move {
            self.shared.ensure_open()?;
            self.shared
                .acker
                .ack_many(acks.iter().map(|a| a.id.clone()).collect())
                .await
        })
        .await
    }

    /// Moves the group between two fetches; what this consumer fetched
    /// but did not hand out yet is dropped. Entries delivered and not acked
    /// stay pending (`XGROUP SETID` keeps the PEL): they come back after
    /// the ack timeout, or when their consumer closes.
    async fn seek(&self, position: Position) -> Result<()> {
        self.shared.ensure_open()?;
        self.shared.inner.caps.check_replay(&self.shared.topic)?;
        let _no_fetch = self.shared.fetching.lock().await;
        crate::replay::set_group_position(&self.shared.inner, &self.shared.keys, &self.shared.group, &position).await?;
        self.shared.generation.advance();
        Ok(())
    }

    async fn unsubscribe(&self) -> Result<()> {
        self.shared.ensure_open()?;
        self.stop_fetching().await;
        let mut conn = self.shared.inner.conn.clone();
        let _: Value = redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(&self.shared.keys.stream)
            .arg(&self.shared.group)
            .query_async(&mut conn)
            .await
            .map_err(|e| map_err("unsubscribe", e))?;
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) && self.task.lock().expect("task lock").is_none() {
            return Ok(());
        }
        self.stop_fetching().await;
        // Hand everything this consumer still holds to the others now,
        // instead of after the ack timeout.
        let pending = self.shared.own_pending().await?;
        if pending.is_empty() {
            let mut conn = self.shared.inner.conn.clone();
            let _: redis::RedisResult<Value> = redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(&self.shared.keys.stream)
                .arg(&self.shared.group)
                .arg(&self.shared.consumer)
                .query_async(&mut conn)
                .await;
        } else {
            self.shared.release(&pending, Duration::ZERO).await?;
        }
        Ok(())
    }
}

impl Drop for StreamConsumer {
    fn drop(&mut self) {
        if self.task.lock().map(|t| t.is_none()).unwrap_or(true) {
            return;
        }
        self.shared.closed.store(true, Ordering::Release);
        self.shared.stop.notify_waiters();
        // Release what it held without waiting for the ack timeout, if a runtime is there to do it.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let shared = self.shared.clone();
            handle.spawn(async move {
                if let Ok(pending) = shared.own_pending().await {
                    let _ = shared.release(&pending, Duration::ZERO).await;
                }
            });
        }
    }
}

/// Acks one stream entry.
struct RedisAck {
    shared: Arc<Shared>,
    id: String,
}

impl fmt::Debug for RedisAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisAck({} {})", self.shared.group, self.id)
    }
}

#[async_trait]
impl AckTarget for RedisAck {
    async fn ack(&self) -> Result<()> {
        self.shared.ensure_open()?;
        self.shared.xack(&self.id).await
    }

    async fn nack(&self, delay: Option<Duration>) -> Result<()> {
        self.shared.ensure_open()?;
        let delay = delay.unwrap_or(self.shared.options.nack_redelivery_delay);
        self.shared.release(std::slice::from_ref(&self.id), delay).await
    }

    async fn in_progress(&self) -> Result<()> {
        self.shared.ensure_open()?;
        self.shared.extend(&self.id).await
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// A q0 consumer: Redis Pub/Sub. Every consumer of the topic gets every
/// message (Pub/Sub has no groups); nothing is kept for absent consumers.
pub(crate) struct PubSubConsumer {
    topic: Topic,
    subscription: String,
    closed: Arc<AtomicBool>,
    stop: Arc<Notify>,
    inbox: Inbox<mpsc::Receiver<Message>>,
}

impl fmt::Debug for PubSubConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPubSubConsumer")
            .field("topic", &self.topic)
            .finish()
    }
}

/// Messages a slow q0 consumer may have waiting before new ones are dropped.
const Q0_BUFFER: usize = 10_000;

impl PubSubConsumer {
    pub(crate) async fn start(
        inner: Arc<Inner>,
        topic: Topic,
        subscription: &str,
        _options: ConsumerOptions,
    ) -> Result<Self> {
        let channel = TopicKeys::new(&topic).channel;
        let mut pubsub = inner
            .clients
            .pubsub()
            .await
            .map_err(|e| map_err("open pub/sub connection", e))?;
        pubsub.subscribe(&channel).await.map_err(|e| map_err("subscribe", e))?;
        let (tx, rx) = mpsc::channel(Q0_BUFFER);
        let closed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(Notify::new());
        let counter = Arc::new(AtomicU64::new(0));
        let (t, c, s) = (topic.clone(), closed.clone(), stop.clone());
        tokio::spawn(async move {
            let mut pubsub = Some(pubsub);
            let mut backoff = Duration::from_millis(100);
            while !c.load(Ordering::Acquire) {
                let Some(ps) = pubsub.take() else {
                    tokio::select! { _ = tokio::time::sleep(backoff) => {}, _ = s.notified() => return }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    if let Ok(mut ps) = inner.clients.pubsub().await {
                        if ps.subscribe(&channel).await.is_ok() {
                            pubsub = Some(ps);
                        }
                    }
                    continue;
                };
                backoff = Duration::from_millis(100);
                let mut stream = ps.into_on_message();
                loop {
                    let msg = tokio::select! {
                        m = futures::StreamExt::next(&mut stream) => m,
                        _ = s.notified() => return,
                    };
                    let Some(msg) = msg else { break }; // connection lost: reconnect
                    let Ok(env) = envelope::decode(msg.get_payload_bytes()) else {
                        tracing::warn!(topic = %t, "dropping a q0 message that is not a pubsub envelope");
                        continue;
                    };
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let mut parts = MessageParts::new(MessageId::from_text(format!("q0-{n}")), t.clone());
                    parts.payload = env.payload;
                    parts.properties = env.properties;
                    parts.key = env.key;
                    if tx.try_send(Message::new(parts, Arc::new(NoAck))).is_err() {
                        tracing::debug!(topic = %t, "q0 consumer buffer full; dropping a message");
                    }
                }
            }
        });
        Ok(PubSubConsumer {
            topic,
            subscription: subscription.to_string(),
            closed,
            stop,
            inbox: Inbox::new(rx),
        })
    }
}

#[async_trait]
impl Consumer for PubSubConsumer {
    fn topic(&self) -> &Topic {
        &self.topic
    }

    fn subscription(&self) -> &str {
        &self.subscription
    }

    async fn receive(&self) -> Result<Message> {
        self.inbox
            .receive(&self.stop, || {
                ensure_open(self.closed.load(Ordering::Acquire), "consumer")
            })
            .await
    }

    async fn receive_batch(&self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        let open = || ensure_open(self.closed.load(Ordering::Acquire), "consumer");
        self.inbox.receive_batch(&self.stop, open, max, timeout).await
    }

    async fn unsubscribe(&self) -> Result<()> {
        self.close().await
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.stop.notify_waiters();
        Ok(())
    }
}

impl Drop for PubSubConsumer {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        self.stop.notify_waiters();
    }
}
