//! Replay on Kafka: a position becomes one offset per partition (the low or
//! high watermark, `offsets_for_times`, or, for a message id
//! `partition:offset`, that offset and, on the other partitions, the first
//! offsets at that message's timestamp). Readers assign the partitions at
//! those offsets without joining a group; a seek moves this consumer's
//! partitions and commits there. Log positions are watermarks and
//! committed offsets.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use pubsub_core::{ensure_open, Error, LogPosition, Message, MessageId, NoAck, Position, Reader, Result, Topic};
use rdkafka::consumer::{BaseConsumer, Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use crate::admin::blocking;
use crate::backend::{is_transient, kafka_topic, map_err, Inner, NAME};
use crate::consumer::record_parts;

/// A client that reads without a group: offsets are given, never committed.
fn groupless<C: rdkafka::config::FromClientConfig>(inner: &Inner) -> Result<C> {
    inner
        .config
        .client_config_with(&[("fetch.wait.max.ms", "100")])
        .set("group.id", format!("pubsub-reader-{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .map_err(|e| Error::InvalidConfiguration(format!("kafka consumer settings: {e}")))
}

/// Partition → (low, high) watermark.
pub(crate) type Watermarks = BTreeMap<i32, (i64, i64)>;

/// Low and high watermarks of every partition of `name`.
pub(crate) fn watermarks(inner: &Inner, name: &str) -> Result<Watermarks> {
    let client: BaseConsumer = groupless(inner)?;
    let timeout = Timeout::After(inner.config.timeout);
    let md = client
        .fetch_metadata(Some(name), timeout)
        .map_err(|e| map_err("fetch metadata", e))?;
    let topic = md
        .topics()
        .iter()
        .find(|t| t.name() == name && t.error().is_none())
        .ok_or_else(|| Error::NotFound(format!("kafka topic {name}")))?;
    let mut out = BTreeMap::new();
    for p in topic.partitions() {
        let w = client
            .fetch_watermarks(name, p.id(), timeout)
            .map_err(|e| map_err(format!("watermarks of {name}"), e))?;
        out.insert(p.id(), w);
    }
    Ok(out)
}

/// The first offset at or after `ms` in each partition (the high
/// watermark where there is none). Each answer is checked against the
/// record's own timestamp: Tansu 0.6 answers offset 0, not "none", for a
/// partition whose messages are all older than `ms`.
fn offsets_at(inner: &Inner, name: &str, marks: &Watermarks, ms: i64) -> Result<BTreeMap<i32, i64>> {
    let client: BaseConsumer = groupless(inner)?;
    let mut tpl = TopicPartitionList::new();
    for &p in marks.keys() {
        tpl.add_partition_offset(name, p, Offset::Offset(ms))
            .map_err(|e| map_err("offsets for times", e))?;
    }
    let found = client
        .offsets_for_times(tpl, Timeout::After(inner.config.timeout))
        .map_err(|e| map_err(format!("offsets for times of {name}"), e))?;
    let mut out = BTreeMap::new();
    for (&p, &(_, high)) in marks {
        let answered = found.find_partition(name, p).and_then(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 && o < high => Some(o),
            _ => None,
        });
        let at = match answered {
            Some(o) if timestamp_of(inner, name, p, o)? >= ms => o,
            _ => high,
        };
        out.insert(p, at);
    }
    Ok(out)
}

/// `partition:offset`, as the adapter writes message ids.
fn parse_id(id: &MessageId) -> Result<(i32, i64)> {
    let text = id.to_string();
    text.split_once(':')
        .and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)))
        .ok_or_else(|| Error::InvalidConfiguration(format!("{id} is not a Kafka message id (partition:offset)")))
}

/// The timestamp (ms) of the record at `partition:offset`.
fn timestamp_of(inner: &Inner, name: &str, partition: i32, offset: i64) -> Result<i64> {
    let client: BaseConsumer = groupless(inner)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(name, partition, Offset::Offset(offset))
        .map_err(|e| map_err("assign", e))?;
    client.assign(&tpl).map_err(|e| map_err("assign", e))?;
    let deadline = std::time::Instant::now() + inner.config.timeout;
    while std::time::Instant::now() < deadline {
        match client.poll(Duration::from_millis(100)) {
            Some(Ok(m)) if m.partition() == partition && m.offset() == offset => {
                return m
                    .timestamp()
                    .to_millis()
                    .ok_or_else(|| Error::broker_msg(NAME, format!("message {partition}:{offset} has no timestamp")));
            }
            Some(Ok(_)) | None => {}
            Some(Err(e)) => return Err(map_err(format!("read {partition}:{offset}"), e)),
        }
    }
    Err(Error::NotFound(format!("message {partition}:{offset} of {name}")))
}

/// One start offset per partition of `name` for `position`. Blocking.
pub(crate) fn resolve(inner: &Inner, name: &str, position: &Position) -> Result<BTreeMap<i32, i64>> {
    let marks = watermarks(inner, name)?;
    Ok(match position {
        Position::Earliest => marks.iter().map(|(&p, &(low, _))| (p, low)).collect(),
        Position::Latest => marks.iter().map(|(&p, &(_, high))| (p, high)).collect(),
        Position::Timestamp(t) => {
            let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            offsets_at(inner, name, &marks, ms)?
        }
        Position::Id(id) => {
            let (partition, offset) = parse_id(id)?;
            let &(low, high) = marks
                .get(&partition)
                .ok_or_else(|| Error::NotFound(format!("partition {partition} of {name}")))?;
            if offset < low || offset >= high {
                return Err(Error::NotFound(format!(
                    "message {id} of {name} (retained: {low}..{high})"
                )));
            }
            let ms = timestamp_of(inner, name, partition, offset)?;
            let mut at = offsets_at(inner, name, &marks, ms)?;
            at.insert(partition, offset);
            at
        }
        other => return Err(Error::unsupported(NAME, format!("position {other:?}"))),
    })
}

/// Positions as counts per partition.
pub(crate) fn log_position(offsets: impl IntoIterator<Item = (i32, i64)>) -> LogPosition {
    LogPosition::from_partitions(
        offsets
            .into_iter()
            .map(|(p, o)| (u32::try_from(p).unwrap_or(0), u64::try_from(o).unwrap_or(0))),
    )
}

/// A reader: a consumer assigned to every partition at the resolved offsets.
pub(crate) struct KafkaReader {
    inner: Arc<Inner>,
    topic: Topic,
    name: String,
    consumer: std::sync::Mutex<Option<Arc<StreamConsumer>>>,
    /// Partition → the next offset the application gets.
    next: std::sync::Mutex<HashMap<i32, i64>>,
    buffer: tokio::sync::Mutex<VecDeque<Message>>,
    closed: AtomicBool,
}

impl fmt::Debug for KafkaReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaReader").field("topic", &self.topic).finish()
    }
}

impl KafkaReader {
    pub(crate) async fn open(inner: Arc<Inner>, topic: &Topic, start: Position) -> Result<Self> {
        let name = kafka_topic(topic);
        let (starts, consumer) = {
            let (inner, name) = (inner.clone(), name.clone());
            blocking(move || {
                let starts = resolve(&inner, &name, &start)?;
                let consumer: StreamConsumer = groupless(&inner)?;
                let mut tpl = TopicPartitionList::new();
                for (&p, &o) in &starts {
                    tpl.add_partition_offset(&name, p, Offset::Offset(o))
                        .map_err(|e| map_err("assign", e))?;
                }
                consumer.assign(&tpl).map_err(|e| map_err("assign", e))?;
                Ok((starts, consumer))
            })
            .await?
        };
        Ok(KafkaReader {
            inner,
            topic: topic.clone(),
            name,
            consumer: std::sync::Mutex::new(Some(Arc::new(consumer))),
            next: std::sync::Mutex::new(starts.into_iter().collect()),
            buffer: Default::default(),
            closed: AtomicBool::new(false),
        })
    }

    fn ensure_open(&self) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "reader")?;
        self.inner.ensure_open()
    }

    fn consumer(&self) -> Result<Arc<StreamConsumer>> {
        self.consumer
            .lock()
            .expect("consumer lock")
            .clone()
            .ok_or(Error::Closed("reader"))
    }
}

#[async_trait]
impl Reader for KafkaReader {
    fn topic(&self) -> &Topic {
        &self.topic
    }

    async fn next(&self) -> Result<Message> {
        let mut buffer = self.buffer.lock().await;
        loop {
            self.ensure_open()?;
            if let Some(m) = buffer.pop_front() {
                return Ok(m);
            }
            let consumer = self.consumer()?;
            // Wake now and then to notice a close.
            let m = match tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
                Err(_) => continue,
                // The broker is away: librdkafka reconnects, the reader waits.
                Ok(Err(e)) if is_transient(&e) => {
                    tracing::debug!(topic = %self.topic, error = %e, "kafka reader waits for the broker");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Ok(r) => r.map_err(|e| map_err("read", e))?,
            };
            {
                let mut next = self.next.lock().expect("next lock");
                let expected = next.entry(m.partition()).or_insert(m.offset());
                // After a reconnect librdkafka may fetch again from an older
                // position: what was read already is not read twice.
                if m.offset() < *expected {
                    continue;
                }
                *expected = m.offset() + 1;
            }
            buffer.push_back(Message::new(record_parts(&m, &self.topic), Arc::new(NoAck)));
        }
    }

    async fn has_next(&self) -> Result<bool> {
        self.ensure_open()?;
        if !self.buffer.lock().await.is_empty() {
            return Ok(true);
        }
        let (inner, name) = (self.inner.clone(), self.name.clone());
        let marks = blocking(move || watermarks(&inner, &name)).await?;
        let next = self.next.lock().expect("next lock");
        Ok(marks
            .iter()
            .any(|(p, &(_, high))| next.get(p).copied().unwrap_or(0) < high))
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        if let Some(consumer) = self.consumer.lock().expect("consumer lock").take() {
            // Never drop an rdkafka consumer on the async runtime (it can hang).
            std::thread::spawn(move || drop(consumer));
        }
        Ok(())
    }
}
