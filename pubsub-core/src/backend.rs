//! The three traits every backend implements.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::admin::Admin;
use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::message::{Message, MessageId, OutgoingMessage};
use crate::options::{ConsumerOptions, ProducerOptions};
use crate::replay::{Position, Reader};
use crate::topic::Topic;

/// A connection to one pub/sub system, from which producers and consumers are made.
///
/// Object safe: services hold an `Arc<dyn PubSubBackend>` chosen at run time
/// (see `pubsub::from_env`).
#[async_trait]
pub trait PubSubBackend: Send + Sync + fmt::Debug {
    /// A short lowercase name: `embedded`, `kafka`, `pulsar`, `mqtt`, `nats`, `redis`.
    fn name(&self) -> &'static str;

    /// What this backend supports.
    fn capabilities(&self) -> &Capabilities;

    /// Topic management, subscription backlog and health checks; what the
    /// broker cannot do is in [`Capabilities::admin`].
    fn admin(&self) -> &dyn Admin;

    /// A producer for `topic`. Creates the topic on the broker if needed.
    async fn create_producer(&self, topic: &Topic, options: ProducerOptions) -> Result<Box<dyn Producer>>;

    /// A consumer of `topic` on the subscription `subscription`; consumers
    /// that share a subscription split its messages per its type. Creates the
    /// subscription (at `options.initial_position`) if it does not exist.
    async fn create_consumer(
        &self,
        topic: &Topic,
        subscription: &str,
        options: ConsumerOptions,
    ) -> Result<Box<dyn Consumer>>;

    /// A [`Reader`] of `topic` from `start`: no subscription, no acks.
    /// Backends without [`Capabilities::replay`] refuse with [`Error::Unsupported`].
    async fn create_reader(&self, topic: &Topic, start: Position) -> Result<Box<dyn Reader>> {
        let _ = (topic, start);
        Err(Error::unsupported(self.name(), "readers (replay)"))
    }

    /// Closes the connection. Handles made from it fail with [`Error::Closed`] afterwards.
    async fn close(&self) -> Result<()>;
}

/// Sends messages to one topic.
#[async_trait]
pub trait Producer: Send + Sync + fmt::Debug {
    /// The topic this producer sends to.
    fn topic(&self) -> &Topic;

    /// Sends one message. Resolves once the broker has it as the topic's QoS
    /// requires: for q1/q2, when a crash of the broker (or process, for a
    /// persistent embedded log) can no longer lose it.
    async fn send(&self, message: OutgoingMessage) -> Result<MessageId>;

    /// Sends several messages; faster than one `send` each where the backend
    /// batches. Every message is validated first: a batch holding an invalid
    /// message (bad property, payload over the limit) is refused whole and
    /// nothing of it is sent. After that, either every id is returned or an
    /// error, in which case a prefix of the batch may have been sent.
    ///
    /// The default checks the property rules, then sends one by one; an
    /// adapter with a payload limit overrides it to check that too.
    async fn send_batch(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<MessageId>> {
        for m in &messages {
            m.validate(None)?;
        }
        let mut ids = Vec::with_capacity(messages.len());
        for m in messages {
            ids.push(self.send(m).await?);
        }
        Ok(ids)
    }

    /// Waits until everything sent so far is with the broker.
    async fn flush(&self) -> Result<()>;

    /// Flushes and closes. Later calls fail with [`Error::Closed`].
    async fn close(&self) -> Result<()>;
}

/// The first message `consumer` gets within `timeout`, or `None` if none
/// came: how every `receive_batch` starts before it takes what else is ready.
///
/// ```
/// # async fn demo(consumer: &dyn pubsub_core::Consumer) -> pubsub_core::Result<()> {
/// use std::time::Duration;
///
/// match pubsub_core::receive_within(consumer, Duration::from_millis(100)).await? {
///     Some(msg) => msg.ack().await?,
///     None => println!("nothing within 100 ms"),
/// }
/// # Ok(()) }
/// ```
pub async fn receive_within<C: Consumer + ?Sized>(consumer: &C, timeout: Duration) -> Result<Option<Message>> {
    match consumer.receive_timeout(timeout).await {
        Ok(m) => Ok(Some(m)),
        Err(Error::Timeout(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The outcome of acking `messages` one by one (`results` in the same
/// order), as [`Consumer::ack_all`] reports it.
fn ack_results(messages: &[Message], results: Vec<Result<()>>) -> Result<()> {
    let total = messages.len();
    let mut failed = Vec::new();
    let mut first = None;
    let mut all_closed = true;
    for (m, r) in messages.iter().zip(results) {
        if let Err(e) = r {
            all_closed &= matches!(e, Error::Closed(_));
            failed.push(m.id().clone());
            first.get_or_insert(e);
        }
    }
    match first {
        None => Ok(()),
        Some(e @ Error::Closed(_)) if all_closed && failed.len() == total => Err(e),
        Some(e) => Err(Error::AcksFailed {
            failed,
            total,
            source: Box::new(e),
        }),
    }
}

/// For adapters overriding [`Consumer::ack_all`] with one broker request:
/// finds each message's own ack target of type `T` (looking through the
/// wrappers core puts around it), checks with `is_own` that this consumer
/// received it, then calls `ack` once with them all and, if it succeeded,
/// tells the wrappers (so, for example, [`crate::UnackedLimit`] gives the
/// places back).
///
/// Messages without anything to ack (q0, [`crate::NoAck`]) are left out. A
/// message whose target is not a `T` or not `is_own` fails the whole call
/// with [`Error::ForeignMessage`] before anything is acked. If `ack` fails,
/// every message is reported failed: [`Error::Closed`] as it is, anything
/// else as [`Error::AcksFailed`].
pub async fn ack_all_with<'a, T, F, Fut>(messages: &'a [Message], is_own: impl Fn(&T) -> bool, ack: F) -> Result<()>
where
    T: crate::AckTarget,
    F: FnOnce(Vec<&'a T>) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut own = Vec::with_capacity(messages.len());
    for m in messages {
        if m.ack_target_as::<crate::NoAck>().is_some() {
            continue;
        }
        match m.ack_target_as::<T>() {
            Some(t) if is_own(t) => own.push(t),
            _ => return Err(Error::ForeignMessage { id: m.id().clone() }),
        }
    }
    if !own.is_empty() {
        match ack(own).await {
            Ok(()) => {}
            Err(e @ Error::Closed(_)) => return Err(e),
            Err(e) => {
                return Err(Error::AcksFailed {
                    failed: messages.iter().map(|m| m.id().clone()).collect(),
                    total: messages.len(),
                    source: Box::new(e),
                })
            }
        }
    }
    for m in messages {
        m.mark_batch_acked();
    }
    Ok(())
}

/// Receives messages from one subscription.
///
/// The seed API's names map as: `receive(timeout_millis)` →
/// [`receive_timeout`](Consumer::receive_timeout), `acknowledge` →
/// [`ack`](Consumer::ack), `negative_acknowledge` → [`nack`](Consumer::nack).
/// Messages can also be acked from another task through [`Message::ack`].
/// For a [`futures::Stream`] of messages use [`crate::ConsumerExt::into_stream`].
#[async_trait]
pub trait Consumer: Send + Sync + fmt::Debug {
    /// The topic consumed.
    fn topic(&self) -> &Topic;

    /// The subscription name.
    fn subscription(&self) -> &str;

    /// Waits for the next message. Cancel safe: dropping the future loses nothing.
    async fn receive(&self) -> Result<Message>;

    /// Like [`receive`](Consumer::receive) but gives [`Error::Timeout`] after `timeout`.
    async fn receive_timeout(&self, timeout: Duration) -> Result<Message> {
        match tokio::time::timeout(timeout, self.receive()).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    /// Waits up to `timeout` for a first message, then returns it with
    /// whatever else is ready, at most `max` in all. An empty `Vec` means
    /// nothing arrived in time.
    async fn receive_batch(&self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        let Some(first) = receive_within(self, timeout).await? else {
            return Ok(Vec::new());
        };
        let mut out = vec![first];
        while out.len() < max {
            match self.receive_timeout(Duration::ZERO).await {
                Ok(m) => out.push(m),
                Err(Error::Timeout(_)) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Acknowledges a message received from this consumer. Acking twice is harmless.
    async fn ack(&self, message: &Message) -> Result<()> {
        message.ack().await
    }

    /// Acknowledges every message of `messages`, received from this
    /// consumer, in as few broker requests as the backend allows: one
    /// `XACK` with every id on Redis, one offset commit on Kafka, every ack
    /// published and then one flush on NATS JetStream, one lock on the
    /// embedded log. Other backends (and this default) ack each message
    /// through [`Message::ack`], all at once.
    ///
    /// Resolves when every ack is done, as [`Message::ack`] would.
    ///
    /// - An empty slice is `Ok` and does nothing.
    /// - Acking a message twice (in one call or across calls) is harmless.
    /// - If some acks fail, the error is [`Error::AcksFailed`], naming the
    ///   messages whose ack failed and how many were given, with the first
    ///   failure as its source; the acks that succeeded stay acked (where the
    ///   backend sends one request, it fails or succeeds for all of them).
    /// - After [`close`](Consumer::close) every ack fails, and the error is
    ///   [`Error::Closed`].
    /// - A backend with its own multi-ack refuses a message received by
    ///   another consumer with [`Error::ForeignMessage`] before acking
    ///   anything; this default acks such a message through its own
    ///   consumer, so nothing is ever acked on the wrong one.
    ///
    /// A runnable example on the embedded backend is in the `pubsub_embedded`
    /// crate's documentation; in short:
    ///
    /// ```
    /// # async fn demo(consumer: &dyn pubsub_core::Consumer) -> pubsub_core::Result<()> {
    /// use std::time::Duration;
    ///
    /// let batch = consumer.receive_batch(100, Duration::from_secs(1)).await?;
    /// // ... handle them ...
    /// consumer.ack_all(&batch).await?;
    /// # Ok(()) }
    /// ```
    async fn ack_all(&self, messages: &[Message]) -> Result<()> {
        let results = futures::future::join_all(messages.iter().map(Message::ack)).await;
        ack_results(messages, results)
    }

    /// Asks for the message to be redelivered (after the configured delay).
    async fn nack(&self, message: &Message) -> Result<()> {
        message.nack().await
    }

    /// Moves the whole subscription to `position`: every consumer of it
    /// goes on from there, and messages after it are delivered again even
    /// if they were acked. Acks of messages received before the seek still
    /// count. Backends without [`Capabilities::replay`] refuse with
    /// [`Error::Unsupported`].
    async fn seek(&self, position: Position) -> Result<()> {
        let _ = position;
        Err(Error::Unsupported {
            backend: "this backend",
            feature: "seek (replay)".into(),
        })
    }

    /// Deletes the subscription (its position and backlog) and closes this consumer.
    async fn unsubscribe(&self) -> Result<()>;

    /// Closes the consumer. Unacked messages it holds are redelivered to others.
    async fn close(&self) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MessageParts, NoAck};
    use std::sync::Arc;

    fn message(n: u64) -> Message {
        let topic: Topic = "q1/t/n/q".parse().expect("topic");
        Message::new(MessageParts::new(MessageId::from_seq(n), topic), Arc::new(NoAck))
    }

    #[test]
    fn ack_all_reports_which_acks_failed() {
        let msgs: Vec<Message> = (0..4).map(message).collect();
        assert!(ack_results(&msgs, (0..4).map(|_| Ok(())).collect()).is_ok());
        assert!(ack_results(&[], Vec::new()).is_ok());
        let some = vec![
            Ok(()),
            Err(Error::broker_msg("x", "boom")),
            Ok(()),
            Err(Error::Closed("consumer")),
        ];
        match ack_results(&msgs, some) {
            Err(Error::AcksFailed { failed, total, source }) => {
                assert_eq!(failed, vec![MessageId::from_seq(1), MessageId::from_seq(3)]);
                assert_eq!(total, 4);
                assert!(matches!(*source, Error::Broker { .. }));
            }
            other => panic!("expected AcksFailed, got {other:?}"),
        }
        let closed = (0..4).map(|_| Err(Error::Closed("consumer"))).collect();
        assert!(matches!(ack_results(&msgs, closed), Err(Error::Closed(_))));
    }
}
