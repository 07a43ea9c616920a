//! [`ConsumerOptions::max_unacked`](crate::ConsumerOptions::max_unacked):
//! the bound on messages a consumer holds received and not yet acked, one
//! implementation for every adapter.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::backend::Consumer;
use crate::error::{Error, Result};
use crate::message::{AckTarget, Message};
use crate::replay::Position;
use crate::topic::{Qos, Topic};

/// A consumer that holds at most `max_unacked` messages received and neither
/// acked nor nacked: `receive` and `receive_batch` wait for an ack, a nack or
/// the drop of every clone of a held message once the bound is reached.
/// Adapters wrap their q1/q2 consumers in it (after mapping the bound to the
/// broker's own flow control, which must not stop earlier); q0 consumers,
/// which have nothing to ack, pass through unbounded.
///
/// Its `close` and `unsubscribe` end a `receive` waiting for a place with
/// [`Error::Closed`] before closing the consumer inside.
#[derive(Debug)]
pub struct UnackedLimit<C> {
    inner: C,
    places: Option<Arc<Semaphore>>,
}

impl<C: Consumer> UnackedLimit<C> {
    /// Bounds `inner` to `max_unacked` held messages (at least 1) if its
    /// topic is q1 or q2.
    pub fn new(inner: C, max_unacked: usize) -> Self {
        let places = (inner.topic().qos() != Qos::AtMostOnce)
            .then(|| Arc::new(Semaphore::new(max_unacked.clamp(1, Semaphore::MAX_PERMITS))));
        UnackedLimit { inner, places }
    }

    /// The consumer inside.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    async fn place(places: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit> {
        places
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Closed("consumer"))
    }

    async fn place_within(places: &Arc<Semaphore>, timeout: Duration) -> Result<OwnedSemaphorePermit> {
        // `timeout` polls the acquire once before looking at the clock, so a
        // zero timeout still takes a free place.
        match tokio::time::timeout(timeout, Self::place(places)).await {
            Ok(p) => p,
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }
}

fn hold(message: Message, place: OwnedSemaphorePermit) -> Message {
    message.map_ack(|inner| {
        Arc::new(Held {
            inner,
            place: Mutex::new(Some(place)),
        })
    })
}

/// The ack target of a held message: gives its place back once an ack or a
/// nack succeeded (or when the last clone of the message is dropped).
#[derive(Debug)]
struct Held {
    inner: Arc<dyn AckTarget>,
    place: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Held {
    fn release(&self, result: &Result<()>) {
        if result.is_ok() {
            self.place.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }
}

#[async_trait]
impl AckTarget for Held {
    async fn ack(&self) -> Result<()> {
        let r = self.inner.ack().await;
        self.release(&r);
        r
    }

    async fn nack(&self, delay: Option<Duration>) -> Result<()> {
        let r = self.inner.nack(delay).await;
        self.release(&r);
        r
    }

    fn wrapped(&self) -> Option<&dyn AckTarget> {
        Some(&*self.inner)
    }

    fn batch_acked(&self) {
        self.release(&Ok(()));
    }
}

#[async_trait]
impl<C: Consumer> Consumer for UnackedLimit<C> {
    fn topic(&self) -> &Topic {
        self.inner.topic()
    }

    fn subscription(&self) -> &str {
        self.inner.subscription()
    }

    async fn receive(&self) -> Result<Message> {
        let Some(places) = &self.places else {
            return self.inner.receive().await;
        };
        let place = Self::place(places).await?;
        Ok(hold(self.inner.receive().await?, place))
    }

    async fn receive_timeout(&self, timeout: Duration) -> Result<Message> {
        let Some(places) = &self.places else {
            return self.inner.receive_timeout(timeout).await;
        };
        let deadline = Instant::now() + timeout;
        let place = Self::place_within(places, timeout).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        match self.inner.receive_timeout(left).await {
            Ok(m) => Ok(hold(m, place)),
            // The caller asked for `timeout`, not what was left of it.
            Err(Error::Timeout(_)) => Err(Error::Timeout(timeout)),
            Err(e) => Err(e),
        }
    }

    async fn receive_batch(&self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        let Some(places) = &self.places else {
            return self.inner.receive_batch(max, timeout).await;
        };
        if max == 0 {
            return self.inner.receive_batch(max, timeout).await;
        }
        let deadline = Instant::now() + timeout;
        let first = match Self::place_within(places, timeout).await {
            Ok(p) => p,
            Err(Error::Timeout(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut taken = vec![first];
        while taken.len() < max {
            match places.clone().try_acquire_owned() {
                Ok(p) => taken.push(p),
                Err(_) => break,
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = self.inner.receive_batch(taken.len(), left).await?;
        // Places not filled go back as `taken` drops.
        Ok(batch
            .into_iter()
            .zip(taken.drain(..))
            .map(|(m, p)| hold(m, p))
            .collect())
    }

    async fn ack(&self, message: &Message) -> Result<()> {
        self.inner.ack(message).await
    }

    async fn ack_all(&self, messages: &[Message]) -> Result<()> {
        self.inner.ack_all(messages).await
    }

    async fn nack(&self, message: &Message) -> Result<()> {
        self.inner.nack(message).await
    }

    async fn seek(&self, position: Position) -> Result<()> {
        self.inner.seek(position).await
    }

    async fn unsubscribe(&self) -> Result<()> {
        if let Some(places) = &self.places {
            places.close();
        }
        self.inner.unsubscribe().await
    }

    async fn close(&self) -> Result<()> {
        if let Some(places) = &self.places {
            places.close();
        }
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MessageId, MessageParts, NoAck};
    use tokio::sync::mpsc;

    /// A consumer over a channel, as an adapter's inbox would be.
    #[derive(Debug)]
    struct Channel {
        topic: Topic,
        rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Message>>,
    }

    #[async_trait]
    impl Consumer for Channel {
        fn topic(&self) -> &Topic {
            &self.topic
        }
        fn subscription(&self) -> &str {
            "s"
        }
        async fn receive(&self) -> Result<Message> {
            self.rx.lock().await.recv().await.ok_or(Error::Closed("consumer"))
        }
        async fn unsubscribe(&self) -> Result<()> {
            Ok(())
        }
        async fn close(&self) -> Result<()> {
            Ok(())
        }
    }

    fn bounded(qos: &str, max: usize, n: u64) -> (UnackedLimit<Channel>, mpsc::UnboundedSender<Message>) {
        let topic: Topic = format!("{qos}/a/b/c").parse().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        for i in 0..n {
            let m = Message::new(
                MessageParts::new(MessageId::from_seq(i), topic.clone()),
                Arc::new(NoAck),
            );
            tx.send(m).unwrap();
        }
        let c = Channel {
            topic,
            rx: tokio::sync::Mutex::new(rx),
        };
        (UnackedLimit::new(c, max), tx)
    }

    const SHORT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn stops_at_the_bound_and_resumes_after_acks() {
        let (c, _tx) = bounded("q1", 3, 10);
        let held = c.receive_batch(10, SHORT).await.unwrap();
        assert_eq!(held.len(), 3);
        assert!(matches!(c.receive_timeout(SHORT).await, Err(Error::Timeout(_))));
        assert!(c.receive_batch(10, SHORT).await.unwrap().is_empty());
        held[0].ack().await.unwrap();
        held[0].ack().await.unwrap();
        c.nack(&held[1]).await.unwrap();
        let next = c.receive_batch(10, SHORT).await.unwrap();
        assert_eq!(next.len(), 2, "an ack and a nack free two places");
        drop(next);
        let third = c.receive_timeout(SHORT).await.unwrap();
        assert_eq!(
            third.id(),
            &MessageId::from_seq(5),
            "dropped messages free their places"
        );
    }

    #[tokio::test]
    async fn q0_is_not_bounded_and_close_ends_a_waiting_receive() {
        let (c, _tx) = bounded("q0", 1, 3);
        assert_eq!(c.receive_batch(10, SHORT).await.unwrap().len(), 3);
        let (c, _tx) = bounded("q1", 1, 3);
        let _held = c.receive().await.unwrap();
        let c = Arc::new(c);
        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.receive().await }
        });
        tokio::time::sleep(SHORT).await;
        c.close().await.unwrap();
        assert!(matches!(waiting.await.unwrap(), Err(Error::Closed(_))));
    }
}
