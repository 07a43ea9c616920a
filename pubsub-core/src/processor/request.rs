//! Request/response over two topics, with correlation ids.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::handler::HandlerError;
use super::options::ProcessorOptions;
use super::run::{Processor, ProcessorReport};
use super::shutdown::Shutdown;
use super::subscriber::Subscriber;
use crate::backend::{Producer, PubSubBackend};
use crate::error::{Error, Result};
use crate::message::{Message, OutgoingMessage};
use crate::options::{ConsumerOptions, InitialPosition};
use crate::topic::Topic;

/// Property carrying the id that ties a response to its request.
pub const CORRELATION_ID_PROPERTY: &str = "correlation-id";
/// Property naming the topic the response goes to.
pub const REPLY_TO_PROPERTY: &str = "reply-to";

/// The client side: sends requests and waits for their responses.
///
/// Every `Requester` has its own subscription to the response topic (so
/// each instance sees every response: a broadcast) and picks out its own
/// by correlation id; workers share one subscription to the request topic
/// (competing consumers), see [`respond`].
pub struct Requester {
    producer: Box<dyn Producer>,
    subscriber: Subscriber,
    reply_to: Topic,
}

impl std::fmt::Debug for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requester").field("reply_to", &self.reply_to).finish()
    }
}

impl Requester {
    /// A requester sending to `requests`, listening on `responses`.
    pub async fn new(backend: &dyn PubSubBackend, requests: &Topic, responses: &Topic) -> Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let opts = ConsumerOptions::default().with_initial_position(InitialPosition::Latest);
        let consumer = backend
            .create_consumer(responses, &format!("responses-{}", &id[..16]), opts)
            .await?;
        let producer = backend.create_producer(requests, Default::default()).await?;
        Ok(Requester {
            producer,
            subscriber: Subscriber::start(consumer),
            reply_to: responses.clone(),
        })
    }

    /// Sends `request` and waits up to `timeout` for its response.
    pub async fn request(&self, request: OutgoingMessage, timeout: Duration) -> Result<Message> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut rx = self.subscriber.subscribe(&id);
        let request = request
            .with_property(CORRELATION_ID_PROPERTY, id.clone())
            .with_property(REPLY_TO_PROPERTY, self.reply_to.to_string());
        let result = async {
            self.producer.send(request).await?;
            match tokio::time::timeout(timeout, rx.recv()).await {
                Ok(Some(m)) => Ok(m),
                Ok(None) => Err(Error::Closed("requester")),
                Err(_) => Err(Error::Timeout(timeout)),
            }
        }
        .await;
        self.subscriber.unsubscribe(&id);
        result
    }

    /// Closes, deleting this instance's response subscription.
    pub async fn close(self) -> Result<()> {
        let a = self.subscriber.close(true).await;
        let b = self.producer.close().await;
        a.and(b)
    }
}

/// The worker side: a [`Processor`] on `requests` whose handler returns the
/// response, published to the request's `reply-to` topic with its
/// correlation id. A request without them is dead-lettered.
pub async fn respond<F, Fut>(
    backend: Arc<dyn PubSubBackend>,
    requests: Topic,
    subscription: &str,
    options: ProcessorOptions,
    shutdown: Shutdown,
    handler: F,
) -> Result<ProcessorReport>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<OutgoingMessage, HandlerError>> + Send + 'static,
{
    let producers: Arc<tokio::sync::Mutex<HashMap<Topic, Box<dyn Producer>>>> = Default::default();
    let handler = Arc::new(handler);
    let replies = producers.clone();
    let reply_backend = backend.clone();
    let processor = Processor::new(backend, requests, subscription, move |msg: Message| {
        let (handler, replies, backend) = (handler.clone(), replies.clone(), reply_backend.clone());
        async move {
            let id = msg.property(CORRELATION_ID_PROPERTY).map(str::to_string);
            let reply_to = msg.property(REPLY_TO_PROPERTY).map(str::parse::<Topic>);
            let (Some(id), Some(Ok(reply_to))) = (id, reply_to) else {
                return Err(HandlerError::fatal(
                    "a request without correlation-id or a valid reply-to",
                ));
            };
            let response = handler(msg).await?.with_property(CORRELATION_ID_PROPERTY, id);
            let mut producers = replies.lock().await;
            if !producers.contains_key(&reply_to) {
                let p = backend.create_producer(&reply_to, Default::default()).await?;
                producers.insert(reply_to.clone(), p);
            }
            producers[&reply_to].send(response).await?;
            Ok(())
        }
    })
    .with_options(options);
    let report = processor.run(shutdown).await;
    for (_, p) in producers.lock().await.drain() {
        let _ = p.close().await;
    }
    report
}
