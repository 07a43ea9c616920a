//! The admin API of the embedded backend: topics are the backend's own
//! table (and, with a data directory, its topic directories), so every
//! operation is exact.

use std::sync::Arc;

use async_trait::async_trait;
use pubsub_core::{
    check_namespace, Admin, Error, LogPosition, PubSubBackend, Result, SubscriptionInfo, Topic, TopicOptions,
};

use crate::backend::EmbeddedBackend;
use crate::topic::TopicHandle;

impl EmbeddedBackend {
    /// The topic's handle, or `NotFound`.
    fn existing(&self, topic: &Topic) -> Result<Arc<TopicHandle>> {
        self.broker.ensure_open()?;
        self.broker
            .topics
            .lock()
            .get(topic)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("topic {topic}")))
    }
}

#[async_trait]
impl Admin for EmbeddedBackend {
    async fn create_topic(&self, topic: &Topic, options: TopicOptions) -> Result<bool> {
        options.check(&self.capabilities().admin, self.name())?;
        self.broker.open_topic(topic).map(|(_, created)| created)
    }

    async fn delete_topic(&self, topic: &Topic) -> Result<()> {
        self.broker.ensure_open()?;
        let mut topics = self.broker.topics.lock();
        let handle = topics
            .get(topic)
            .ok_or_else(|| Error::NotFound(format!("topic {topic}")))?;
        handle.mark_deleted()?;
        topics.remove(topic);
        if let Some(dir) = self.broker.topic_dir(topic) {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::broker(
                        "embedded",
                        format!("cannot remove {}: {e}", dir.display()),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }

    async fn list_topics(&self, tenant: &str, namespace: &str) -> Result<Vec<Topic>> {
        check_namespace(tenant, namespace)?;
        self.broker.ensure_open()?;
        let topics = self.broker.topics.lock();
        Ok(pubsub_core::topics_in_namespace(
            topics.keys(),
            tenant,
            namespace,
            |t| Some(t.clone()),
        ))
    }

    async fn topic_exists(&self, topic: &Topic) -> Result<bool> {
        self.broker.ensure_open()?;
        Ok(self.broker.topics.lock().contains_key(topic))
    }

    async fn subscriptions(&self, topic: &Topic) -> Result<Vec<SubscriptionInfo>> {
        Ok(self.existing(topic)?.subscriptions())
    }

    async fn health_check(&self) -> Result<()> {
        self.broker.ensure_open()
    }

    async fn earliest_position(&self, topic: &Topic) -> Result<LogPosition> {
        Ok(LogPosition::single(self.existing(topic)?.bounds().0))
    }

    async fn latest_position(&self, topic: &Topic) -> Result<LogPosition> {
        Ok(LogPosition::single(self.existing(topic)?.bounds().1))
    }

    async fn subscription_position(&self, topic: &Topic, subscription: &str) -> Result<LogPosition> {
        self.existing(topic)?
            .subscription_floor(subscription)
            .map(LogPosition::single)
            .ok_or_else(|| Error::NotFound(format!("subscription {subscription} of {topic}")))
    }
}
