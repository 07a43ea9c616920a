//! One consumer, many local receivers, routed by correlation id.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::request::CORRELATION_ID_PROPERTY;
use crate::backend::Consumer;
use crate::error::{Error, Result};
use crate::message::Message;

type Routes = Arc<std::sync::Mutex<HashMap<String, mpsc::Sender<Message>>>>;

/// Reads one subscription and hands each message to the local receiver
/// registered for its `correlation-id` (the seed's response dispatch).
/// Messages are acked once handed over; a message nobody waits for is
/// acked and dropped (its requester gave up).
#[derive(Debug)]
pub struct Subscriber {
    routes: Routes,
    consumer: Arc<dyn Consumer>,
    task: JoinHandle<()>,
}

impl Subscriber {
    /// Starts dispatching from `consumer`.
    pub fn start(consumer: Box<dyn Consumer>) -> Self {
        let consumer: Arc<dyn Consumer> = Arc::from(consumer);
        let routes: Routes = Default::default();
        let task = tokio::spawn(dispatch(consumer.clone(), routes.clone()));
        Subscriber { routes, consumer, task }
    }

    /// A receiver for messages with this correlation id.
    pub fn subscribe(&self, correlation_id: &str) -> mpsc::Receiver<Message> {
        let (tx, rx) = mpsc::channel(16);
        self.routes
            .lock()
            .expect("routes lock")
            .insert(correlation_id.to_string(), tx);
        rx
    }

    /// Stops routing a correlation id.
    pub fn unsubscribe(&self, correlation_id: &str) {
        self.routes.lock().expect("routes lock").remove(correlation_id);
    }

    /// Stops dispatching; with `delete`, also deletes the subscription.
    pub async fn close(self, delete: bool) -> Result<()> {
        self.task.abort();
        if delete {
            self.consumer.unsubscribe().await
        } else {
            self.consumer.close().await
        }
    }
}

async fn dispatch(consumer: Arc<dyn Consumer>, routes: Routes) {
    loop {
        let msg = match consumer.receive().await {
            Ok(m) => m,
            Err(Error::Closed(_)) => return,
            Err(e) => {
                tracing::warn!(error = %e, "subscriber: receive failed");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        let route = msg
            .property(CORRELATION_ID_PROPERTY)
            .and_then(|id| routes.lock().expect("routes lock").get(id).cloned());
        match route {
            Some(tx) => {
                let _ = tx.send(msg.clone()).await;
            }
            None => tracing::debug!(id = %msg.id(), "subscriber: nobody waits for this message; dropping it"),
        }
        if let Err(e) = msg.ack().await {
            tracing::warn!(error = %e, "subscriber: ack failed");
        }
    }
}
