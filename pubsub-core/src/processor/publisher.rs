//! Buffered sending with back-pressure.

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::backend::Producer;
use crate::error::{Error, Result};
use crate::message::OutgoingMessage;

enum Command {
    Send(OutgoingMessage),
    Flush(oneshot::Sender<Result<()>>),
}

/// Sends in the background, in batches, from a bounded queue: `publish`
/// returns once the message is queued and waits while the queue is full
/// (back-pressure). `flush` waits until everything queued before it was
/// sent and reports the first failure since the last flush; `close`
/// flushes, then closes the producer.
///
/// ```
/// # async fn demo(producer: Box<dyn pubsub_core::Producer>) -> pubsub_core::Result<()> {
/// use pubsub_core::{processor::Publisher, OutgoingMessage};
/// let publisher = Publisher::new(producer, 1000);
/// for i in 0..10_000 {
///     publisher.publish(OutgoingMessage::new(format!("event {i}"))).await?;
/// }
/// publisher.close().await?; // everything sent, or the first error
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Publisher {
    tx: mpsc::Sender<Command>,
    task: JoinHandle<Box<dyn Producer>>,
}

impl Publisher {
    /// A publisher queueing up to `capacity` messages for `producer`.
    pub fn new(producer: Box<dyn Producer>, capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let task = tokio::spawn(drive(producer, rx));
        Publisher { tx, task }
    }

    /// Queues a message, waiting while the queue is full.
    pub async fn publish(&self, message: OutgoingMessage) -> Result<()> {
        self.tx
            .send(Command::Send(message))
            .await
            .map_err(|_| Error::Closed("publisher"))
    }

    /// Waits until everything queued so far is sent.
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Flush(tx))
            .await
            .map_err(|_| Error::Closed("publisher"))?;
        rx.await.map_err(|_| Error::Closed("publisher"))?
    }

    /// Flushes and closes the producer.
    pub async fn close(self) -> Result<()> {
        let flushed = self.flush().await;
        drop(self.tx);
        let producer = self
            .task
            .await
            .map_err(|e| Error::broker("publisher", "publisher task failed", e))?;
        let closed = producer.close().await;
        flushed.and(closed)
    }
}

async fn drive(producer: Box<dyn Producer>, mut rx: mpsc::Receiver<Command>) -> Box<dyn Producer> {
    let mut failure: Option<Error> = None;
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut flushes = Vec::new();
        let mut next = Some(first);
        // Take what is queued right now (up to a batch), in order.
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Send(m) => batch.push(m),
                Command::Flush(done) => flushes.push(done),
            }
            if batch.len() >= 100 || !flushes.is_empty() {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !batch.is_empty() {
            let n = batch.len();
            if let Err(e) = producer.send_batch(std::mem::take(&mut batch)).await {
                tracing::warn!(error = %e, messages = n, "publisher: batch not (fully) sent");
                failure.get_or_insert(e);
            }
        }
        for done in flushes {
            let result = match failure.take() {
                Some(e) => Err(e),
                None => producer.flush().await,
            };
            let _ = done.send(result);
        }
    }
    producer
}
