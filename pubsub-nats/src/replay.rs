//! Replay on JetStream: a position is a deliver policy (all, new, from a
//! stream sequence, from a time). Readers are ephemeral pull consumers
//! without acks; a seek re-creates the subscription's durable consumer
//! with the new start (a consumer's start cannot be changed in place).
//! Log positions are stream sequences.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream;
use async_trait::async_trait;
use futures::StreamExt;
use pubsub_core::{ensure_open, Error, Message, MessageId, MessageParts, NoAck, Position, Reader, Result, Topic};

use crate::backend::{broker_err, Inner, NAME};
use crate::headers::from_headers;

/// How long an idle reader's consumer lives on the server.
const READER_INACTIVE: Duration = Duration::from_secs(300);
/// How long one fetch waits for messages before checking for close.
const FETCH_WAIT: Duration = Duration::from_millis(500);

/// The deliver policy that starts at `position`.
pub(crate) async fn deliver_policy(stream: &mut stream::Stream, position: &Position) -> Result<DeliverPolicy> {
    Ok(match position {
        Position::Earliest => DeliverPolicy::All,
        Position::Latest => {
            let info = stream.info().await.map_err(|e| broker_err("stream info", e))?;
            DeliverPolicy::ByStartSequence {
                start_sequence: info.state.last_sequence + 1,
            }
        }
        Position::Id(id) => DeliverPolicy::ByStartSequence {
            start_sequence: id
                .as_seq()
                .filter(|s| *s > 0)
                .ok_or_else(|| Error::InvalidConfiguration(format!("{id} is not a JetStream stream sequence")))?,
        },
        Position::Timestamp(t) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from(*t),
        },
        other => return Err(Error::unsupported(NAME, format!("position {other:?}"))),
    })
}

/// (earliest, latest) as stream sequences: messages before the oldest
/// retained one, and the newest one's sequence.
pub(crate) async fn stream_positions(stream: &mut stream::Stream) -> Result<(u64, u64)> {
    let info = stream.info().await.map_err(|e| broker_err("stream info", e))?;
    let s = &info.state;
    Ok((s.first_sequence.saturating_sub(1).min(s.last_sequence), s.last_sequence))
}

/// A reader: an ephemeral consumer fetched in batches into a buffer, so
/// "at the end" is exact: nothing buffered and nothing pending on the server.
pub(crate) struct NatsReader {
    inner: Arc<Inner>,
    topic: Topic,
    reads: tokio::sync::Mutex<(PullConsumer, VecDeque<Message>)>,
    closed: AtomicBool,
}

impl fmt::Debug for NatsReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsReader").field("topic", &self.topic).finish()
    }
}

impl NatsReader {
    pub(crate) async fn open(inner: Arc<Inner>, topic: &Topic, start: &Position) -> Result<Self> {
        let mut stream = inner.ensure_stream(topic).await?;
        let config = pull::Config {
            deliver_policy: deliver_policy(&mut stream, start).await?,
            ack_policy: AckPolicy::None,
            inactive_threshold: READER_INACTIVE,
            ..Default::default()
        };
        let consumer = stream
            .create_consumer(config)
            .await
            .map_err(|e| broker_err(format!("create a reader of {topic}"), e))?;
        Ok(NatsReader {
            inner,
            topic: topic.clone(),
            reads: tokio::sync::Mutex::new((consumer, VecDeque::new())),
            closed: AtomicBool::new(false),
        })
    }

    fn ensure_open(&self) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "reader")?;
        self.inner.ensure_open()
    }

    fn message(&self, m: async_nats::jetstream::Message) -> Result<Message> {
        let info = m
            .info()
            .map_err(|e| Error::broker(NAME, format!("message without JetStream info: {e}"), e))?;
        let (seq, published) = (info.stream_sequence, SystemTime::from(info.published));
        let (properties, key) = from_headers(m.message.headers.as_ref());
        let parts = MessageParts {
            payload: m.message.payload.clone(),
            properties,
            key,
            publish_time: published,
            ..MessageParts::new(MessageId::from_seq(seq), self.topic.clone())
        };
        Ok(Message::new(parts, Arc::new(NoAck)))
    }
}

#[async_trait]
impl Reader for NatsReader {
    fn topic(&self) -> &Topic {
        &self.topic
    }

    async fn next(&self) -> Result<Message> {
        let mut guard = self.reads.lock().await;
        let (consumer, buffer) = &mut *guard;
        loop {
            self.ensure_open()?;
            if let Some(m) = buffer.pop_front() {
                return Ok(m);
            }
            let mut batch = consumer
                .batch()
                .max_messages(100)
                .expires(FETCH_WAIT)
                .messages()
                .await
                .map_err(|e| broker_err("fetch", e))?;
            while let Some(m) = batch.next().await {
                match m {
                    Ok(m) => buffer.push_back(self.message(m)?),
                    Err(e) => tracing::debug!(topic = %self.topic, error = %e, "nats reader fetch"),
                }
            }
        }
    }

    async fn has_next(&self) -> Result<bool> {
        self.ensure_open()?;
        let mut guard = self.reads.lock().await;
        if !guard.1.is_empty() {
            return Ok(true);
        }
        let info = guard.0.info().await.map_err(|e| broker_err("reader info", e))?;
        Ok(info.num_pending > 0)
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // The server drops the ephemeral consumer after READER_INACTIVE anyway.
        let guard = self.reads.lock().await;
        let name = guard.0.cached_info().name.clone();
        let stream = guard.0.cached_info().stream_name.clone();
        if let Ok(s) = self.inner.js.get_stream(&stream).await {
            let _ = s.delete_consumer(&name).await;
        }
        Ok(())
    }
}
