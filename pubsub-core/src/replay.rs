//! Replay: reading a topic from any position, moving a subscription, and
//! positions to compute lag with.
//!
//! - [`Position`] names where to start: the oldest retained message, the
//!   end, a message id, or a publish time.
//! - A [`Reader`] ([`PubSubBackend::create_reader`](crate::PubSubBackend::create_reader))
//!   reads without a subscription and without acks.
//! - [`Consumer::seek`](crate::Consumer::seek) moves a whole subscription.
//! - [`LogPosition`] ([`Admin::latest_position`](crate::Admin::latest_position),
//!   [`Admin::subscription_position`](crate::Admin::subscription_position))
//!   counts messages, so two positions give a lag.
//!
//! A backend without it says so in [`Capabilities::replay`](crate::Capabilities::replay)
//! and refuses with [`Error::Unsupported`].

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use crate::error::{Error, Result};
use crate::message::{Message, MessageId};
use crate::topic::Topic;

/// Where reading (or a subscription) starts.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use pubsub_core::{MessageId, Position};
///
/// let an_hour_ago = Position::Timestamp(SystemTime::now() - Duration::from_secs(3600));
/// let at_id = Position::Id(MessageId::from_seq(42));
/// assert_ne!(an_hour_ago, Position::Earliest);
/// assert_ne!(at_id, Position::Latest);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Position {
    /// The oldest message the broker retains.
    Earliest,
    /// After the newest message: only messages published from now on.
    Latest,
    /// At this message (it is read again), by the id a send or receive returned.
    Id(MessageId),
    /// At the first message published at or after this time.
    Timestamp(SystemTime),
}

/// Reads a topic from a [`Position`]: no subscription, no acks, nothing
/// changes on the broker. Messages come in log order; acking one is a no-op.
#[async_trait]
pub trait Reader: Send + Sync + fmt::Debug {
    /// The topic read.
    fn topic(&self) -> &Topic;

    /// Waits for the next message.
    async fn next(&self) -> Result<Message>;

    /// Like [`next`](Reader::next) but gives [`Error::Timeout`] after `timeout`.
    async fn next_timeout(&self, timeout: Duration) -> Result<Message> {
        match tokio::time::timeout(timeout, self.next()).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    /// Whether a message published before this call is still unread:
    /// `false` means the reader is at the end of the topic.
    async fn has_next(&self) -> Result<bool>;

    /// Closes the reader. Later calls fail with [`Error::Closed`].
    async fn close(&self) -> Result<()>;
}

/// The [`Stream`] view of a reader.
pub trait ReaderExt {
    /// A stream of messages; it ends when the reader is closed.
    ///
    /// ```
    /// # async fn demo(backend: &dyn pubsub_core::PubSubBackend) -> pubsub_core::Result<()> {
    /// use futures::StreamExt;
    /// use pubsub_core::{Position, ReaderExt};
    ///
    /// let reader = backend.create_reader(&"q1/tg/flow/orders".parse()?, Position::Earliest).await?;
    /// let mut messages = reader.into_stream().take(3);
    /// while let Some(msg) = messages.next().await {
    ///     println!("{:?}", msg?.payload());
    /// }
    /// # Ok(()) }
    /// ```
    fn into_stream(self) -> ReaderStream;
}

impl ReaderExt for Box<dyn Reader> {
    fn into_stream(self) -> ReaderStream {
        let reader: Arc<dyn Reader> = Arc::from(self);
        let inner = futures::stream::unfold(reader, |r| async move {
            match r.next().await {
                Err(Error::Closed(_)) => None,
                m => Some((m, r)),
            }
        })
        .boxed();
        ReaderStream { inner }
    }
}

/// A reader as a [`Stream`]; see [`ReaderExt::into_stream`].
pub struct ReaderStream {
    inner: BoxStream<'static, Result<Message>>,
}

impl Stream for ReaderStream {
    type Item = Result<Message>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl fmt::Debug for ReaderStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReaderStream")
    }
}

/// A position in a topic's log as message counts, one per partition
/// (one partition `0` where the broker does not partition). The distance
/// between two positions is the number of messages between them.
///
/// ```
/// use pubsub_core::LogPosition;
///
/// let earliest = LogPosition::single(10);
/// let latest = LogPosition::from_partitions([(0, 15), (1, 7)]);
/// assert_eq!(earliest.messages_until(&latest), 5 + 7);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPosition {
    /// Partition → the count of messages before this position.
    pub partitions: BTreeMap<u32, u64>,
}

impl LogPosition {
    /// A position of an unpartitioned log.
    pub fn single(offset: u64) -> Self {
        Self::from_partitions([(0, offset)])
    }

    /// A position from (partition, offset) pairs.
    pub fn from_partitions(parts: impl IntoIterator<Item = (u32, u64)>) -> Self {
        LogPosition {
            partitions: parts.into_iter().collect(),
        }
    }

    /// How many messages lie from `self` up to `later` (partitions missing
    /// from `self` count from 0; none is ever negative).
    pub fn messages_until(&self, later: &LogPosition) -> u64 {
        later
            .partitions
            .iter()
            .map(|(p, &to)| to.saturating_sub(self.partitions.get(p).copied().unwrap_or(0)))
            .sum()
    }
}
