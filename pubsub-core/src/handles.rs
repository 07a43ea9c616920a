//! What a backend made, closed with it: [`Handles`] keeps a weak reference
//! to every producer, consumer and reader a backend hands out, so that
//! [`PubSubBackend::close`](crate::PubSubBackend::close) closes each one the
//! way its own `close` would (blocked receives end with [`Error::Closed`],
//! acks given so far are written, unacked messages go back to the broker).
//! One implementation for every adapter.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;

use crate::backend::{Consumer, Producer};
use crate::error::{Error, Result};
use crate::message::{Message, MessageId, OutgoingMessage};
use crate::replay::{Position, Reader};
use crate::topic::Topic;

enum Handle {
    Producer(Weak<dyn Producer>),
    Consumer(Weak<dyn Consumer>),
    Reader(Weak<dyn Reader>),
}

impl Handle {
    fn is_alive(&self) -> bool {
        match self {
            Handle::Producer(w) => w.strong_count() > 0,
            Handle::Consumer(w) => w.strong_count() > 0,
            Handle::Reader(w) => w.strong_count() > 0,
        }
    }

    async fn close(self) -> Result<()> {
        match self {
            Handle::Producer(w) => match w.upgrade() {
                Some(p) => p.close().await,
                None => Ok(()),
            },
            Handle::Consumer(w) => match w.upgrade() {
                Some(c) => c.close().await,
                None => Ok(()),
            },
            Handle::Reader(w) => match w.upgrade() {
                Some(r) => r.close().await,
                None => Ok(()),
            },
        }
    }
}

#[derive(Default)]
struct State {
    closed: bool,
    open: Vec<Handle>,
}

/// The producers, consumers and readers a backend made and has not seen
/// dropped. An adapter passes each new handle through [`Handles::producer`],
/// [`Handles::consumer`] or [`Handles::reader`] and calls
/// [`Handles::close_all`] first thing in its backend's `close`.
#[derive(Default)]
pub struct Handles {
    state: Mutex<State>,
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Handles")
            .field("closed", &state.closed)
            .field("open", &state.open.len())
            .finish()
    }
}

impl Handles {
    /// No handles yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether [`close_all`](Handles::close_all) has been called.
    pub fn is_closed(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed
    }

    /// Keeps `handle` unless closed; `false` means the backend closed meanwhile.
    fn keep(&self, handle: Handle) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.closed {
            return false;
        }
        state.open.retain(Handle::is_alive);
        state.open.push(handle);
        true
    }

    /// Registers a new producer. If the backend was closed while it was
    /// being made, closes it and fails with [`Error::Closed`].
    pub async fn producer<P: Producer + 'static>(&self, producer: P) -> Result<Box<dyn Producer>> {
        let p: Arc<dyn Producer> = Arc::new(producer);
        if !self.keep(Handle::Producer(Arc::downgrade(&p))) {
            let _ = p.close().await;
            return Err(Error::Closed("backend"));
        }
        Ok(Box::new(p))
    }

    /// Registers a new consumer; see [`producer`](Handles::producer).
    pub async fn consumer<C: Consumer + 'static>(&self, consumer: C) -> Result<Box<dyn Consumer>> {
        let c: Arc<dyn Consumer> = Arc::new(consumer);
        if !self.keep(Handle::Consumer(Arc::downgrade(&c))) {
            let _ = c.close().await;
            return Err(Error::Closed("backend"));
        }
        Ok(Box::new(c))
    }

    /// Registers a new reader; see [`producer`](Handles::producer).
    pub async fn reader<R: Reader + 'static>(&self, reader: R) -> Result<Box<dyn Reader>> {
        let r: Arc<dyn Reader> = Arc::new(reader);
        if !self.keep(Handle::Reader(Arc::downgrade(&r))) {
            let _ = r.close().await;
            return Err(Error::Closed("backend"));
        }
        Ok(Box::new(r))
    }

    /// Closes every handle still alive, all at once, and refuses new ones.
    /// Returns once each `close` has returned (acks flushed, unacked
    /// messages given back); the first error, if any, after all of them.
    /// A second call does nothing.
    pub async fn close_all(&self) -> Result<()> {
        let open = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.closed = true;
            std::mem::take(&mut state.open)
        };
        let results = futures::future::join_all(open.into_iter().map(Handle::close)).await;
        results.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
    }
}

// A handle shared with `Handles` is an `Arc`: these forward every method,
// defaults included, so an adapter's own overrides stay in use.

#[async_trait]
impl<P: Producer + ?Sized> Producer for Arc<P> {
    fn topic(&self) -> &Topic {
        (**self).topic()
    }
    async fn send(&self, message: OutgoingMessage) -> Result<MessageId> {
        (**self).send(message).await
    }
    async fn send_batch(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<MessageId>> {
        (**self).send_batch(messages).await
    }
    async fn flush(&self) -> Result<()> {
        (**self).flush().await
    }
    async fn close(&self) -> Result<()> {
        (**self).close().await
    }
}

#[async_trait]
impl<C: Consumer + ?Sized> Consumer for Arc<C> {
    fn topic(&self) -> &Topic {
        (**self).topic()
    }
    fn subscription(&self) -> &str {
        (**self).subscription()
    }
    async fn receive(&self) -> Result<Message> {
        (**self).receive().await
    }
    async fn receive_timeout(&self, timeout: Duration) -> Result<Message> {
        (**self).receive_timeout(timeout).await
    }
    async fn receive_batch(&self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        (**self).receive_batch(max, timeout).await
    }
    async fn ack(&self, message: &Message) -> Result<()> {
        (**self).ack(message).await
    }
    async fn ack_all(&self, messages: &[Message]) -> Result<()> {
        (**self).ack_all(messages).await
    }
    async fn nack(&self, message: &Message) -> Result<()> {
        (**self).nack(message).await
    }
    async fn seek(&self, position: Position) -> Result<()> {
        (**self).seek(position).await
    }
    async fn unsubscribe(&self) -> Result<()> {
        (**self).unsubscribe().await
    }
    async fn close(&self) -> Result<()> {
        (**self).close().await
    }
}

#[async_trait]
impl<R: Reader + ?Sized> Reader for Arc<R> {
    fn topic(&self) -> &Topic {
        (**self).topic()
    }
    async fn next(&self) -> Result<Message> {
        (**self).next().await
    }
    async fn next_timeout(&self, timeout: Duration) -> Result<Message> {
        (**self).next_timeout(timeout).await
    }
    async fn has_next(&self) -> Result<bool> {
        (**self).has_next().await
    }
    async fn close(&self) -> Result<()> {
        (**self).close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Debug)]
    struct Counted {
        topic: Topic,
        closed: Arc<AtomicBool>,
    }

    #[async_trait]
    impl Producer for Counted {
        fn topic(&self) -> &Topic {
            &self.topic
        }
        async fn send(&self, _: OutgoingMessage) -> Result<MessageId> {
            crate::ensure_open(self.closed.load(Ordering::Acquire), "producer")?;
            Ok(MessageId::from_seq(0))
        }
        async fn flush(&self) -> Result<()> {
            Ok(())
        }
        async fn close(&self) -> Result<()> {
            self.closed.store(true, Ordering::Release);
            Ok(())
        }
    }

    fn counted() -> (Counted, Arc<AtomicBool>) {
        let closed = Arc::new(AtomicBool::new(false));
        let p = Counted {
            topic: "q1/a/b/c".parse().unwrap(),
            closed: closed.clone(),
        };
        (p, closed)
    }

    #[tokio::test]
    async fn close_all_closes_live_handles_and_refuses_new_ones() {
        let handles = Handles::new();
        let (a, a_closed) = counted();
        let (b, b_closed) = counted();
        let a = handles.producer(a).await.unwrap();
        drop(handles.producer(b).await.unwrap());
        a.send(OutgoingMessage::new("x")).await.unwrap();
        handles.close_all().await.unwrap();
        assert!(a_closed.load(Ordering::Acquire), "a live handle is closed");
        assert!(!b_closed.load(Ordering::Acquire), "a dropped one is not kept alive");
        assert!(matches!(a.send(OutgoingMessage::new("x")).await, Err(Error::Closed(_))));
        let (c, c_closed) = counted();
        assert!(matches!(handles.producer(c).await, Err(Error::Closed(_))));
        assert!(
            c_closed.load(Ordering::Acquire),
            "one made during the close is closed too"
        );
        assert!(handles.is_closed());
    }
}
