//! Readers: a cursor over a topic's log, with no subscription behind it.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pubsub_core::{ensure_open, Message, NoAck, Reader, Result, Topic};

use crate::backend::Broker;
use crate::record::Record;
use crate::topic::TopicHandle;

pub(crate) struct EmbeddedReader {
    topic: Arc<TopicHandle>,
    cursor: parking_lot::Mutex<u64>,
    /// Serialises `next` calls, so each record goes to exactly one of them.
    turn: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    broker: Arc<Broker>,
}

impl fmt::Debug for EmbeddedReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedReader")
            .field("topic", &self.topic.topic)
            .field("cursor", &*self.cursor.lock())
            .finish()
    }
}

impl EmbeddedReader {
    pub(crate) fn new(topic: Arc<TopicHandle>, start: u64, broker: Arc<Broker>) -> Self {
        EmbeddedReader {
            topic,
            cursor: parking_lot::Mutex::new(start),
            turn: Default::default(),
            closed: AtomicBool::new(false),
            broker,
        }
    }

    fn ensure_open(&self) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "reader")?;
        self.broker.ensure_open()
    }

    fn to_message(&self, record: &Record) -> Message {
        Message::new(record.parts(&self.topic.topic), Arc::new(NoAck))
    }
}

#[async_trait]
impl Reader for EmbeddedReader {
    fn topic(&self) -> &Topic {
        &self.topic.topic
    }

    async fn next(&self) -> Result<Message> {
        let _turn = self.turn.lock().await;
        loop {
            let notified = self.topic.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.ensure_open()?;
            let mut cursor = *self.cursor.lock();
            let record = self.topic.read_at(&mut cursor)?;
            *self.cursor.lock() = cursor;
            if let Some(r) = record {
                return Ok(self.to_message(&r));
            }
            notified.await;
        }
    }

    async fn has_next(&self) -> Result<bool> {
        self.ensure_open()?;
        Ok(self.topic.has_from(*self.cursor.lock()))
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.topic.notify.notify_waiters();
        Ok(())
    }
}
