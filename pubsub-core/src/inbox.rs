//! The receiving end of adapters whose messages arrive through a
//! background task: cancel-safe `receive` and `receive_batch` over a
//! channel, interrupted by the consumer's stop signal. One implementation
//! for every adapter that needs it. [`SeekGeneration`] and [`CurrentOnly`]
//! let a seek drop what the task fetched for the old position.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex, Notify};

use crate::error::{Error, Result};
use crate::message::Message;

/// A channel the [`Inbox`] can read: bounded or unbounded tokio mpsc.
pub trait MessageReceiver: Send {
    /// Waits for the next message; `None` once every sender is gone.
    fn recv(&mut self) -> impl std::future::Future<Output = Option<Message>> + Send;
    /// The next message if one is ready.
    fn try_recv(&mut self) -> Option<Message>;
}

impl MessageReceiver for mpsc::Receiver<Message> {
    fn recv(&mut self) -> impl std::future::Future<Output = Option<Message>> + Send {
        mpsc::Receiver::recv(self)
    }
    fn try_recv(&mut self) -> Option<Message> {
        mpsc::Receiver::try_recv(self).ok()
    }
}

impl MessageReceiver for mpsc::UnboundedReceiver<Message> {
    fn recv(&mut self) -> impl std::future::Future<Output = Option<Message>> + Send {
        mpsc::UnboundedReceiver::recv(self)
    }
    fn try_recv(&mut self) -> Option<Message> {
        mpsc::UnboundedReceiver::try_recv(self).ok()
    }
}

/// Counts a consumer's seeks. The fetching task tags each message with the
/// generation it was fetched in (read before the fetch starts, and a seek
/// must not run during a fetch); [`CurrentOnly`] drops older ones.
#[derive(Debug, Clone, Default)]
pub struct SeekGeneration(Arc<AtomicU64>);

impl SeekGeneration {
    /// The generation messages fetched now belong to.
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// After a seek: everything fetched before is stale.
    pub fn advance(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// A message with the [`SeekGeneration`] it was fetched in.
pub type Tagged = (u64, Message);

/// A channel of [`Tagged`] messages that yields only those of the current
/// generation: what was fetched before the latest seek is dropped unread.
#[derive(Debug)]
pub struct CurrentOnly {
    rx: mpsc::Receiver<Tagged>,
    generation: SeekGeneration,
}

impl CurrentOnly {
    /// Reads `rx`, dropping messages older than `generation`.
    pub fn new(rx: mpsc::Receiver<Tagged>, generation: SeekGeneration) -> Self {
        CurrentOnly { rx, generation }
    }

    fn current(&self, (generation, m): Tagged) -> Option<Message> {
        (generation >= self.generation.current()).then_some(m)
    }
}

impl MessageReceiver for CurrentOnly {
    async fn recv(&mut self) -> Option<Message> {
        loop {
            let tagged = self.rx.recv().await?;
            if let Some(m) = self.current(tagged) {
                return Some(m);
            }
        }
    }

    fn try_recv(&mut self) -> Option<Message> {
        loop {
            let tagged = self.rx.try_recv().ok()?;
            if let Some(m) = self.current(tagged) {
                return Some(m);
            }
        }
    }
}

/// Messages waiting for the application, fed by an adapter's background task.
#[derive(Debug)]
pub struct Inbox<R> {
    rx: Mutex<R>,
}

impl<R: MessageReceiver> Inbox<R> {
    /// An inbox reading `rx`.
    pub fn new(rx: R) -> Self {
        Inbox { rx: Mutex::new(rx) }
    }

    /// The next message. `ensure_open` is checked after subscribing to
    /// `stop`, so a close racing with this call is never missed; a stop or
    /// a channel without senders is [`Error::Closed`]. Cancel safe.
    pub async fn receive(&self, stop: &Notify, ensure_open: impl FnOnce() -> Result<()>) -> Result<Message> {
        let stopped = stop.notified();
        tokio::pin!(stopped);
        stopped.as_mut().enable();
        ensure_open()?;
        let mut rx = self.rx.lock().await;
        tokio::select! {
            m = rx.recv() => m.ok_or(Error::Closed("consumer")),
            _ = stopped => Err(Error::Closed("consumer")),
        }
    }

    /// Waits up to `timeout` for a first message, then takes what else is
    /// ready, `max` in all; empty if nothing came.
    pub async fn receive_batch(
        &self,
        stop: &Notify,
        ensure_open: impl FnOnce() -> Result<()>,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<Message>> {
        let first = match tokio::time::timeout(timeout, self.receive(stop, ensure_open)).await {
            Ok(m) => m?,
            Err(_) => return Ok(Vec::new()),
        };
        let mut out = vec![first];
        let mut rx = self.rx.lock().await;
        while out.len() < max {
            match rx.try_recv() {
                Some(m) => out.push(m),
                None => break,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MessageId, MessageParts, NoAck};
    use std::sync::Arc;

    fn msg(n: u64) -> Message {
        Message::new(
            MessageParts::new(MessageId::from_seq(n), "q1/a/b/c".parse().unwrap()),
            Arc::new(NoAck),
        )
    }

    #[tokio::test]
    async fn batches_stop_and_closed_channels() {
        let (tx, rx) = mpsc::channel(8);
        let inbox = Inbox::new(rx);
        let stop = Notify::new();
        for n in 0..3 {
            tx.send(msg(n)).await.unwrap();
        }
        let batch = inbox
            .receive_batch(&stop, || Ok(()), 2, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(
            inbox.receive(&stop, || Ok(())).await.unwrap().id(),
            &MessageId::from_seq(2)
        );
        assert!(inbox
            .receive_batch(&stop, || Ok(()), 2, Duration::from_millis(10))
            .await
            .unwrap()
            .is_empty());
        assert!(matches!(
            inbox.receive(&stop, || Err(Error::Closed("consumer"))).await,
            Err(Error::Closed(_))
        ));
        drop(tx);
        assert!(matches!(inbox.receive(&stop, || Ok(())).await, Err(Error::Closed(_))));
    }

    #[tokio::test]
    async fn messages_of_an_older_seek_generation_are_dropped() {
        let (tx, rx) = mpsc::channel(8);
        let generation = SeekGeneration::default();
        let inbox = Inbox::new(CurrentOnly::new(rx, generation.clone()));
        let stop = Notify::new();
        let before = generation.current();
        tx.send((before, msg(1))).await.unwrap();
        tx.send((before, msg(2))).await.unwrap();
        generation.advance();
        tx.send((generation.current(), msg(3))).await.unwrap();
        tx.send((before, msg(4))).await.unwrap();
        tx.send((generation.current(), msg(5))).await.unwrap();
        let got = inbox
            .receive_batch(&stop, || Ok(()), 8, Duration::from_secs(1))
            .await
            .unwrap();
        let ids: Vec<_> = got.iter().map(|m| m.id().as_seq()).collect();
        assert_eq!(ids, [Some(3), Some(5)]);
    }
}
