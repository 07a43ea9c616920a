//! Replay on Pulsar: readers are non-durable subscriptions started at a
//! message id (inclusive, on Apache Pulsar and on pulsar-lite alike), and a
//! subscription moves with the protocol's `Seek`.
//!
//! Every reader also filters on the client: it drops what lies before its
//! start or was delivered before. The broker starts a non-durable cursor
//! over again when its consumer reconnects, so this keeps a reader exact
//! across broker restarts. A reader from a publish time reads from the
//! earliest message and skips the older ones: pulsar-lite's `Seek` by time
//! fails (and drops the connection) when no message is that new, and a
//! non-durable cursor takes no time at all.
//!
//! Seek targets:
//!
//! | position | `Seek` (Apache Pulsar) | on pulsar-lite |
//! |---|---|---|
//! | `Earliest` | message id `0:0`, before every ledger | the same |
//! | `Latest` | message id `i64::MAX:i64::MAX`, Pulsar's own "latest" | the entry after the newest |
//! | `Id` | that message id (it is delivered again) | the same |
//! | `Timestamp` | that publish time | the same, or `Latest` when no message is that new |
//!
//! pulsar-lite fails a seek on an empty topic (nothing to move there, so
//! none is sent). Only pulsar-lite runs here: the Apache column follows
//! Pulsar's protocol and the Java client, untested.
//!
//! There are no log positions: message ids are not counts, and backlogs are
//! in the HTTP admin API only.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use pubsub_core::{ensure_open, Error, Message, NoAck, Position, Reader, Result, Topic};
use pulsar::consumer::InitialPosition as PulsarPosition;
use pulsar::proto::MessageIdData;
use pulsar::SubType;
use tokio::sync::Mutex;

use crate::backend::Inner;
use crate::config::PulsarBroker;
use crate::consumer::{id_key, message_parts, ordered_name, IdKey, RawConsumer};
use crate::errors::{convert, is_no_messages};
use crate::naming::{parse_message_id, pulsar_topic};

/// How long a reader waits for a message before it checks for close.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// Longest wait between attempts to subscribe a reader again.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Pulsar's "latest" message id (`MessageId.latest` in the Java client).
fn latest_id() -> MessageIdData {
    MessageIdData {
        ledger_id: i64::MAX as u64,
        entry_id: i64::MAX as u64,
        ..Default::default()
    }
}

/// Before every ledger: a seek there starts at the oldest retained message.
fn earliest_id() -> MessageIdData {
    MessageIdData::default()
}

fn millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The id of the newest message of the consumer's topic; `None` for an
/// empty topic (Apache answers a negative entry, pulsar-lite an error).
pub(crate) async fn last_message_id(consumer: &mut RawConsumer) -> Result<Option<MessageIdData>> {
    match consumer.get_last_message_id().await {
        Ok(ids) => Ok(ids.into_iter().next().filter(|id| (id.entry_id as i64) >= 0)),
        Err(e) if is_no_messages(&e) => Ok(None),
        Err(e) => Err(convert("get the last message id", e)),
    }
}

/// Subscribes a non-durable, exclusive cursor of its own to `ptopic`,
/// starting at `start` (inclusive) or, without one, at `initial`.
async fn subscribe_reader(
    inner: &Inner,
    ptopic: &str,
    start: Option<MessageIdData>,
    initial: PulsarPosition,
) -> Result<RawConsumer> {
    let mut options = pulsar::ConsumerOptions::default()
        .durable(false)
        .with_initial_position(initial);
    options.start_message_id = start;
    let build = inner
        .client
        .consumer()
        .with_topic(ptopic)
        .with_subscription(ordered_name("pubsub-reader"))
        .with_subscription_type(SubType::Exclusive)
        .with_options(options)
        .build();
    tokio::time::timeout(inner.config.timeout, build)
        .await
        .map_err(|_| Error::Timeout(inner.config.timeout))?
        .map_err(|e| convert(format!("create a reader of {ptopic}"), e))
}

/// The publish time (ms) of message `id`, read by a short-lived reader.
async fn publish_time_of(inner: &Inner, ptopic: &str, id: MessageIdData) -> Result<u64> {
    let mut reader = subscribe_reader(inner, ptopic, Some(id), PulsarPosition::Earliest).await?;
    let wait = inner.config.timeout;
    let first = tokio::time::timeout(wait, reader.next()).await;
    let _ = reader.close().await;
    match first {
        Ok(Some(Ok(m))) => Ok(m.payload.metadata.publish_time),
        Ok(Some(Err(e))) => Err(convert(format!("read the last message of {ptopic}"), e)),
        Ok(None) => Err(Error::Connection {
            backend: crate::errors::NAME,
            message: format!("read the last message of {ptopic}: the connection closed"),
            source: None,
        }),
        Err(_) => Err(Error::Timeout(wait)),
    }
}

/// What a subscription's `Seek` is given: a message id or a publish time.
pub(crate) type SeekTarget = (Option<MessageIdData>, Option<u64>);

/// The `Seek` that moves `consumer`'s subscription to `position`; `None`
/// when there is nothing to move (an empty topic, except for an id).
pub(crate) async fn seek_target(
    inner: &Inner,
    ptopic: &str,
    consumer: &mut RawConsumer,
    position: &Position,
) -> Result<Option<SeekTarget>> {
    if let Position::Id(id) = position {
        return Ok(Some((Some(parse_message_id(id)?), None)));
    }
    if inner.config.broker == PulsarBroker::Lite {
        return lite_seek_target(inner, ptopic, consumer, position).await;
    }
    Ok(Some(match position {
        Position::Earliest => (Some(earliest_id()), None),
        Position::Latest => (Some(latest_id()), None),
        Position::Timestamp(t) => (None, Some(millis(*t))),
        other => return Err(unsupported_position(other)),
    }))
}

/// pulsar-lite fails a seek on an empty topic and a seek by time past its
/// newest message (dropping the connection with it), and takes Pulsar's
/// "latest" id literally (nothing newer is ever delivered): its end is the
/// entry after the newest.
async fn lite_seek_target(
    inner: &Inner,
    ptopic: &str,
    consumer: &mut RawConsumer,
    position: &Position,
) -> Result<Option<SeekTarget>> {
    let Some(last) = last_message_id(consumer).await? else {
        return Ok(None); // an empty topic is at both ends already
    };
    let end = MessageIdData {
        entry_id: last.entry_id + 1,
        batch_index: None,
        ..last.clone()
    };
    Ok(Some(match position {
        Position::Earliest => (Some(earliest_id()), None),
        Position::Latest => (Some(end), None),
        Position::Timestamp(t) => {
            let t = millis(*t);
            if publish_time_of(inner, ptopic, last).await? >= t {
                (None, Some(t))
            } else {
                (Some(end), None)
            }
        }
        other => return Err(unsupported_position(other)),
    }))
}

fn unsupported_position(position: &Position) -> Error {
    Error::unsupported(crate::errors::NAME, format!("position {position:?}"))
}

/// Where a reader is: what it has passed, and what it still skips.
struct Cursor {
    consumer: Option<RawConsumer>,
    /// The newest message delivered or skipped: anything up to it that
    /// comes again (after a reconnect) is dropped.
    through: Option<MessageIdData>,
    /// Messages published before this (ms) are skipped, until one is not.
    from_time: Option<u64>,
    /// Where the reader started: it subscribes there again until it has
    /// passed a message.
    start: Option<MessageIdData>,
    /// Just below an `Id` start: what a broker delivers before the start
    /// is skipped like a repeat.
    floor: Option<IdKey>,
    /// A message `has_next` fetched, for the next `next`.
    peeked: Option<Message>,
    backoff: Duration,
}

impl Cursor {
    fn passed(&self) -> Option<IdKey> {
        self.through.as_ref().map(id_key).max(self.floor)
    }
}

/// A reader: a non-durable subscription of its own, filtered on the client.
pub(crate) struct PulsarReader {
    inner: Arc<Inner>,
    topic: Topic,
    ptopic: String,
    cursor: Mutex<Cursor>,
    closed: AtomicBool,
}

impl fmt::Debug for PulsarReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PulsarReader").field("topic", &self.topic).finish()
    }
}

impl PulsarReader {
    pub(crate) async fn open(inner: Arc<Inner>, topic: &Topic, start: &Position) -> Result<Self> {
        let ptopic = pulsar_topic(topic);
        let (start_id, from_time) = match start {
            Position::Earliest | Position::Latest => (None, None),
            Position::Id(id) => (Some(parse_message_id(id)?), None),
            Position::Timestamp(t) => (None, Some(millis(*t))),
            other => return Err(unsupported_position(other)),
        };
        let initial = match start {
            Position::Latest => PulsarPosition::Latest,
            _ => PulsarPosition::Earliest,
        };
        let mut consumer = subscribe_reader(&inner, &ptopic, start_id.clone(), initial).await?;
        // A `Latest` reader has passed the newest message: a reconnect
        // subscribes from it (dropped as a repeat), not from the end then,
        // so nothing published meanwhile is missed.
        let (resume_at, through) = match start {
            Position::Latest => {
                let last = last_message_id(&mut consumer).await?;
                (last.clone(), last)
            }
            _ => (start_id.clone(), None),
        };
        let cursor = Cursor {
            consumer: Some(consumer),
            through,
            from_time,
            start: resume_at,
            floor: start_id.as_ref().map(just_before),
            peeked: None,
            backoff: Duration::from_millis(50),
        };
        Ok(PulsarReader {
            inner,
            topic: topic.clone(),
            ptopic,
            cursor: Mutex::new(cursor),
            closed: AtomicBool::new(false),
        })
    }

    fn ensure_open(&self) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "reader")?;
        self.inner.ensure_open()
    }

    /// Waits up to [`FETCH_WAIT`] for the next message the reader has not
    /// passed; `None` if none came (or the reader is subscribing again).
    async fn fetch(&self, cursor: &mut Cursor) -> Result<Option<Message>> {
        let consumer = match cursor.consumer.as_mut() {
            Some(c) => c,
            None => {
                // Again from the newest message passed (dropped as a repeat).
                let start = cursor.through.clone().or_else(|| cursor.start.clone());
                match subscribe_reader(&self.inner, &self.ptopic, start, PulsarPosition::Earliest).await {
                    Ok(c) => {
                        cursor.backoff = Duration::from_millis(50);
                        cursor.consumer.insert(c)
                    }
                    Err(e) => {
                        tracing::debug!(topic = %self.topic, error = %e, "pulsar reader subscribing again");
                        tokio::time::sleep(cursor.backoff).await;
                        cursor.backoff = (cursor.backoff * 2).min(MAX_BACKOFF);
                        return Ok(None);
                    }
                }
            }
        };
        let m = match tokio::time::timeout(FETCH_WAIT, consumer.next()).await {
            Err(_) => return Ok(None),
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => {
                tracing::warn!(topic = %self.topic, error = %e, "pulsar reader error");
                return Ok(None);
            }
            Ok(None) => {
                tracing::info!(topic = %self.topic, "pulsar reader lost its connection; subscribing again");
                cursor.consumer = None;
                return Ok(None);
            }
        };
        // Acked so the non-durable cursor moves on; nothing else depends on it.
        let _ = consumer.ack(&m).await;
        let id = m.message_id.id.clone();
        let key = id_key(&id);
        if cursor.passed().is_some_and(|p| key <= p) {
            return Ok(None);
        }
        cursor.through = Some(id);
        if cursor.from_time.is_some_and(|t| m.payload.metadata.publish_time < t) {
            return Ok(None);
        }
        cursor.from_time = None;
        Ok(Some(Message::new(
            message_parts(m, self.topic.clone(), 0),
            Arc::new(NoAck),
        )))
    }
}

/// A key just below `id`'s: a start at `id` has passed nothing from `id` on.
fn just_before(id: &MessageIdData) -> IdKey {
    let (ledger, entry, partition, batch) = id_key(id);
    if batch > 0 {
        (ledger, entry, partition, batch - 1)
    } else if entry > 0 {
        (ledger, entry - 1, partition, i32::MAX)
    } else {
        (ledger.saturating_sub(1), u64::MAX, partition, i32::MAX)
    }
}

#[async_trait]
impl Reader for PulsarReader {
    fn topic(&self) -> &Topic {
        &self.topic
    }

    async fn next(&self) -> Result<Message> {
        let mut cursor = self.cursor.lock().await;
        loop {
            self.ensure_open()?;
            if let Some(m) = cursor.peeked.take() {
                return Ok(m);
            }
            if let Some(m) = self.fetch(&mut cursor).await? {
                return Ok(m);
            }
        }
    }

    /// Compares the topic's newest message id with what the reader has
    /// passed; a reader that still skips (from a time) reads ahead.
    async fn has_next(&self) -> Result<bool> {
        self.ensure_open()?;
        let mut cursor = self.cursor.lock().await;
        let deadline = Instant::now() + self.inner.config.timeout;
        loop {
            if cursor.peeked.is_some() {
                return Ok(true);
            }
            let last = {
                let Some(consumer) = cursor.consumer.as_mut() else {
                    cursor.peeked = self.fetch(&mut cursor).await?;
                    continue;
                };
                last_message_id(consumer).await?
            };
            match last {
                None => return Ok(false),
                Some(last) if cursor.passed().is_some_and(|p| id_key(&last) <= p) => return Ok(false),
                Some(_) => {}
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(self.inner.config.timeout));
            }
            cursor.peeked = self.fetch(&mut cursor).await?;
            self.ensure_open()?;
        }
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let mut cursor = self.cursor.lock().await;
        if let Some(mut c) = cursor.consumer.take() {
            // A non-durable subscription goes with its last consumer.
            if let Err(e) = c.close().await {
                tracing::debug!(topic = %self.topic, error = %e, "closing a pulsar reader");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ledger: u64, entry: u64, batch: Option<i32>) -> MessageIdData {
        MessageIdData {
            ledger_id: ledger,
            entry_id: entry,
            batch_index: batch,
            ..Default::default()
        }
    }

    #[test]
    fn just_before_sorts_below_the_id_and_above_everything_earlier() {
        for (at, earlier) in [
            (id(3, 5, None), id(3, 4, None)),
            (id(3, 5, None), id(3, 4, Some(7))),
            (id(3, 0, None), id(2, 99, None)),
            (id(3, 5, Some(2)), id(3, 5, Some(1))),
            (id(3, 5, Some(0)), id(3, 4, Some(9))),
        ] {
            let bound = just_before(&at);
            assert!(bound < id_key(&at), "{at:?}");
            assert!(id_key(&earlier) <= bound, "{earlier:?} is before {at:?}");
        }
    }
}
