//! The admin API on MQTT: topics are only names in PUBLISH packets and the
//! protocol has no way to list or inspect them or a shared subscription's
//! queue, so everything but the health check is refused with
//! `Unsupported` (as `Capabilities::admin` says).

use async_trait::async_trait;
use pubsub_core::{Admin, AdminCapabilities, Result, SubscriptionInfo, Topic, TopicOptions};

use crate::backend::MqttBackend;
use crate::connection::{connect, Session, NAME};

impl MqttBackend {
    fn refuse(&self, topic: Option<&Topic>, operation: &str) -> pubsub_core::Error {
        if let Err(e) = self.inner.ensure_open() {
            return e;
        }
        let caps = AdminCapabilities::NONE;
        match topic.map(|t| caps.check_topic(NAME, t)) {
            Some(Err(e)) => e,
            _ => pubsub_core::Error::unsupported(NAME, format!("{operation} (MQTT has no such request)")),
        }
    }
}

#[async_trait]
impl Admin for MqttBackend {
    async fn create_topic(&self, topic: &Topic, _options: TopicOptions) -> Result<bool> {
        Err(self.refuse(Some(topic), "create_topic"))
    }

    async fn delete_topic(&self, topic: &Topic) -> Result<()> {
        Err(self.refuse(Some(topic), "delete_topic"))
    }

    async fn list_topics(&self, _tenant: &str, _namespace: &str) -> Result<Vec<Topic>> {
        Err(self.refuse(None, "list_topics"))
    }

    async fn topic_exists(&self, topic: &Topic) -> Result<bool> {
        Err(self.refuse(Some(topic), "topic_exists"))
    }

    async fn subscriptions(&self, topic: &Topic) -> Result<Vec<SubscriptionInfo>> {
        Err(self.refuse(Some(topic), "subscriptions"))
    }

    /// Opens a fresh connection and waits for the broker's CONNACK.
    async fn health_check(&self) -> Result<()> {
        self.inner.ensure_open()?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let session = Session {
            client_id: format!("{}-health-{}", self.inner.config.client_id_prefix, &id[..12]),
            persistent: false,
            manual_acks: false,
            receive_maximum: None,
        };
        let (client, _eventloop, _ack) = connect(&self.inner.config, &session).await?;
        let _ = client.disconnect().await;
        Ok(())
    }
}
