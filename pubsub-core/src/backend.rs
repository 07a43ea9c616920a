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
