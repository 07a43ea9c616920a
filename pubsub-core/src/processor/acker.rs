//! Batched acks for the handler loop: every ack asked for while one
//! [`Consumer::ack_all`] is under way goes out together in the next one,
//! so a busy processor pays one broker request (Redis `XACK`, one embedded
//! lock) per batch instead of per message, and an idle one still acks at
//! once.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::backend::Consumer;
use crate::error::Error;
use crate::message::Message;

/// Most messages in one `ack_all`.
const MAX_BATCH: usize = 256;

/// One ack waiting for its batch, and where its outcome goes.
struct Pending {
    message: Message,
    done: oneshot::Sender<Result<(), Arc<Error>>>,
}

/// Hands messages to the batching task of one consumer.
#[derive(Clone)]
pub(super) struct Acker {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Acker {
    /// Starts the batching task of `consumer`; it ends once every `Acker`
    /// clone is dropped and what they sent is acked.
    pub(super) fn start(consumer: Arc<dyn Consumer>) -> (Acker, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Acker { tx }, tokio::spawn(run(consumer, rx)))
    }

    /// Acks `message` in the next batch; returns once that batch is acked.
    pub(super) async fn ack(&self, message: Message) -> Result<(), Arc<Error>> {
        let (done, outcome) = oneshot::channel();
        self.tx
            .send(Pending { message, done })
            .map_err(|_| Arc::new(Error::Closed("processor acker")))?;
        outcome
            .await
            .unwrap_or_else(|_| Err(Arc::new(Error::Closed("processor acker"))))
    }
}

async fn run(consumer: Arc<dyn Consumer>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (messages, waiting): (Vec<Message>, Vec<_>) = batch.drain(..).map(|p| (p.message, p.done)).unzip();
        let outcome = consumer.ack_all(&messages).await.map_err(Arc::new);
        for (message, done) in messages.iter().zip(waiting) {
            // Where the backend names the failed ones, the rest were acked.
            let own = match &outcome {
                Err(e) if matches!(&**e, Error::AcksFailed { failed, .. } if !failed.contains(message.id())) => Ok(()),
                other => other.clone(),
            };
            let _ = done.send(own);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MessageId, MessageParts, NoAck, Result, Topic};
    use async_trait::async_trait;
    use std::sync::Mutex;

    /// Records the size of each `ack_all`; the first one waits for `open`.
    #[derive(Debug)]
    struct Counting {
        topic: Topic,
        batches: Mutex<Vec<usize>>,
        open: tokio::sync::Semaphore,
    }

    #[async_trait]
    impl Consumer for Counting {
        fn topic(&self) -> &Topic {
            &self.topic
        }
        fn subscription(&self) -> &str {
            "s"
        }
        async fn receive(&self) -> Result<Message> {
            Err(Error::Closed("consumer"))
        }
        async fn ack_all(&self, messages: &[Message]) -> Result<()> {
            let _wait = self.open.acquire().await.expect("never closed");
            self.batches.lock().unwrap().push(messages.len());
            Ok(())
        }
        async fn unsubscribe(&self) -> Result<()> {
            Ok(())
        }
        async fn close(&self) -> Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn acks_asked_for_during_a_batch_go_out_together() {
        let topic: Topic = "q1/a/b/c".parse().unwrap();
        let consumer = Arc::new(Counting {
            topic: topic.clone(),
            batches: Mutex::new(Vec::new()),
            open: tokio::sync::Semaphore::new(0),
        });
        let (acker, task) = Acker::start(consumer.clone());
        let message = |i| {
            Message::new(
                MessageParts::new(MessageId::from_seq(i), topic.clone()),
                Arc::new(NoAck),
            )
        };
        let first = tokio::spawn({
            let acker = acker.clone();
            let m = message(0);
            async move { acker.ack(m).await }
        });
        // The first batch (of one) is now inside `ack_all`, waiting.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let rest: Vec<_> = (1..=100)
            .map(|i| {
                let acker = acker.clone();
                let m = message(i);
                tokio::spawn(async move { acker.ack(m).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        consumer.open.add_permits(1000);
        first.await.unwrap().unwrap();
        for r in rest {
            r.await.unwrap().unwrap();
        }
        drop(acker);
        task.await.unwrap();
        let batches = consumer.batches.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 101, "{batches:?}");
        assert_eq!(
            batches,
            vec![1, 100],
            "the 100 asked for during the first batch went out as one"
        );
    }
}
