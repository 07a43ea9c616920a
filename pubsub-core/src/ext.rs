//! Typed sending and the `Stream` view of a consumer, for every backend.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde::Serialize;

use crate::backend::{Consumer, Producer};
use crate::codec::{encode_message, to_json_bytes, Codec, JSON_CONTENT_TYPE};
use crate::error::{Error, Result};
use crate::message::{Message, MessageId, OutgoingMessage, CONTENT_TYPE_PROPERTY};

/// Typed sending on any [`Producer`].
///
/// ```
/// # async fn demo(producer: &dyn pubsub_core::Producer) -> pubsub_core::Result<()> {
/// use pubsub_core::ProducerExt;
///
/// #[derive(serde::Serialize)]
/// struct Job { id: u64, note: Option<String> }
///
/// producer.send_value(&Job { id: 1, note: None }).await?; // {"id":1}
/// # Ok(()) }
/// ```
#[async_trait]
pub trait ProducerExt: Producer {
    /// Sends `value` encoded as JSON (see [`crate::codec::Json`]).
    async fn send_value<T: Serialize + Sync>(&self, value: &T) -> Result<MessageId> {
        let payload = to_json_bytes(value)?;
        self.send(OutgoingMessage::new(payload).with_property(CONTENT_TYPE_PROPERTY, JSON_CONTENT_TYPE))
            .await
    }

    /// Sends `value` encoded with `codec`.
    async fn send_encoded<T: Sync, C: Codec<T> + ?Sized>(&self, codec: &C, value: &T) -> Result<MessageId> {
        self.send(encode_message(codec, value)?).await
    }
}

impl<P: Producer + ?Sized> ProducerExt for P {}

/// The [`Stream`] view of a consumer.
pub trait ConsumerExt {
    /// A stream of received messages. It ends after the consumer is closed
    /// ([`Error::Closed`] is not yielded); other errors are yielded and the
    /// stream goes on.
    ///
    /// ```
    /// # async fn demo(consumer: Box<dyn pubsub_core::Consumer>) -> pubsub_core::Result<()> {
    /// use futures::StreamExt;
    /// use pubsub_core::ConsumerExt;
    ///
    /// let mut messages = consumer.into_stream().take(10);
    /// while let Some(msg) = messages.next().await {
    ///     let msg = msg?;
    ///     msg.ack().await?;
    /// }
    /// # Ok(()) }
    /// ```
    fn into_stream(self) -> MessageStream;
}

impl ConsumerExt for Box<dyn Consumer> {
    fn into_stream(self) -> MessageStream {
        MessageStream::new(Arc::from(self))
    }
}

impl ConsumerExt for Arc<dyn Consumer> {
    fn into_stream(self) -> MessageStream {
        MessageStream::new(self)
    }
}

/// A consumer as a [`Stream`] of messages; see [`ConsumerExt::into_stream`].
pub struct MessageStream {
    consumer: Arc<dyn Consumer>,
    inner: BoxStream<'static, Result<Message>>,
}

impl MessageStream {
    fn new(consumer: Arc<dyn Consumer>) -> Self {
        let inner = futures::stream::unfold(consumer.clone(), |c| async move {
            match c.receive().await {
                Err(Error::Closed(_)) => None,
                r => Some((r, c)),
            }
        })
        .boxed();
        MessageStream { consumer, inner }
    }

    /// The consumer behind the stream, e.g. to close it.
    pub fn consumer(&self) -> &Arc<dyn Consumer> {
        &self.consumer
    }
}

impl Stream for MessageStream {
    type Item = Result<Message>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl std::fmt::Debug for MessageStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStream")
            .field("consumer", &self.consumer)
            .finish()
    }
}
