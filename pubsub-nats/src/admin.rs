//! The admin API on NATS: a q1/q2 topic is its JetStream stream, a
//! subscription is a durable consumer, and its backlog is the consumer's
//! `num_pending` (not yet delivered) plus `num_ack_pending` (delivered, not
//! acked). q0 topics are plain subjects, which are no object on the server:
//! managing them is refused.

use async_trait::async_trait;
use futures::TryStreamExt;
use pubsub_core::{
    check_namespace, parse_joined, topics_in_namespace, Admin, Error, LogPosition, PubSubBackend, Qos, Result,
    SubscriptionInfo, Topic, TopicOptions,
};

use crate::backend::{broker_err, foreign_stream_problem, NatsBackend, NAME};
use crate::naming::durable_name;
use crate::replay;

/// Streams this SDK made start with this.
const STREAM_PREFIX: &str = "PUBSUB_";

impl NatsBackend {
    fn check_admin(&self, topic: Option<&Topic>) -> Result<()> {
        self.inner.ensure_open()?;
        match topic {
            Some(t) => self.inner.caps.admin.check_topic(NAME, t),
            None => Ok(()),
        }
    }

    async fn positioned_stream(&self, topic: &Topic) -> Result<async_nats::jetstream::stream::Stream> {
        self.inner.ensure_open()?;
        self.inner.caps.check_positions()?;
        self.inner.caps.check_replay(topic)?;
        self.stream(topic)
            .await?
            .ok_or_else(|| Error::NotFound(format!("topic {topic}")))
    }

    /// The topic's stream: the SDK's own or an adopted one made elsewhere
    /// (an incompatible one is an error saying why).
    async fn stream(&self, topic: &Topic) -> Result<Option<async_nats::jetstream::stream::Stream>> {
        self.inner.find_stream(topic).await
    }
}

#[async_trait]
impl Admin for NatsBackend {
    async fn create_topic(&self, topic: &Topic, options: TopicOptions) -> Result<bool> {
        self.check_admin(Some(topic))?;
        options.check(&self.capabilities().admin, NAME)?;
        if self.stream(topic).await?.is_some() {
            return Ok(false);
        }
        self.inner.ensure_stream(topic).await?;
        Ok(true)
    }

    async fn delete_topic(&self, topic: &Topic) -> Result<()> {
        self.check_admin(Some(topic))?;
        let Some(stream) = self.stream(topic).await? else {
            return Err(Error::NotFound(format!("topic {topic}")));
        };
        // The SDK's own stream, or the adopted one that holds only this topic.
        let name = stream.cached_info().config.name.clone();
        self.inner
            .js
            .delete_stream(&name)
            .await
            .map_err(|e| broker_err(format!("delete stream {name}"), e))?;
        self.inner.forget_stream(topic).await;
        Ok(())
    }

    async fn list_topics(&self, tenant: &str, namespace: &str) -> Result<Vec<Topic>> {
        check_namespace(tenant, namespace)?;
        self.check_admin(None)?;
        let infos: Vec<_> = self
            .inner
            .js
            .streams()
            .try_collect()
            .await
            .map_err(|e| broker_err("list streams", e))?;
        let subjects = infos
            .into_iter()
            .filter(|i| {
                // The SDK's streams, and those made elsewhere it would adopt.
                i.config.name.starts_with(STREAM_PREFIX)
                    || i.config
                        .subjects
                        .first()
                        .is_some_and(|s| foreign_stream_problem(&i.config, s).is_none())
            })
            .flat_map(|i| i.config.subjects);
        Ok(topics_in_namespace(subjects, tenant, namespace, |s: String| {
            parse_joined(&s, '.', Qos::AtLeastOnce)
        }))
    }

    async fn topic_exists(&self, topic: &Topic) -> Result<bool> {
        self.check_admin(Some(topic))?;
        Ok(self.stream(topic).await?.is_some())
    }

    async fn subscriptions(&self, topic: &Topic) -> Result<Vec<SubscriptionInfo>> {
        self.check_admin(Some(topic))?;
        let stream = self
            .stream(topic)
            .await?
            .ok_or_else(|| Error::NotFound(format!("topic {topic}")))?;
        let consumers: Vec<_> = stream
            .consumers()
            .try_collect()
            .await
            .map_err(|e| broker_err(format!("list consumers of {topic}"), e))?;
        let mut out: Vec<SubscriptionInfo> = consumers
            .into_iter()
            .map(|c| {
                // The durable name is mangled where the subscription has a
                // dot; the consumer's description keeps it as given.
                let name = c.config.description.clone().unwrap_or(c.name);
                SubscriptionInfo::new(name, Some(c.num_pending + c.num_ack_pending as u64))
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn earliest_position(&self, topic: &Topic) -> Result<LogPosition> {
        let mut stream = self.positioned_stream(topic).await?;
        Ok(LogPosition::single(replay::stream_positions(&mut stream).await?.0))
    }

    async fn latest_position(&self, topic: &Topic) -> Result<LogPosition> {
        let mut stream = self.positioned_stream(topic).await?;
        Ok(LogPosition::single(replay::stream_positions(&mut stream).await?.1))
    }

    /// The durable consumer's ack floor (every stream sequence up to it is
    /// acked), or, when further on, the newest sequence less what the
    /// consumer still has to read or ack: a consumer re-created by a seek
    /// reports an ack floor of 0 until its first ack.
    async fn subscription_position(&self, topic: &Topic, subscription: &str) -> Result<LogPosition> {
        let mut stream = self.positioned_stream(topic).await?;
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .get_consumer(&durable_name(subscription))
            .await
            .map_err(|_| Error::NotFound(format!("subscription {subscription} of {topic}")))?;
        let info = consumer
            .info()
            .await
            .map_err(|e| broker_err(format!("consumer info of {subscription}"), e))?;
        let last = replay::stream_positions(&mut stream).await?.1;
        let outstanding = info.num_pending.saturating_add(info.num_ack_pending as u64);
        Ok(LogPosition::single(
            info.ack_floor.stream_sequence.max(last.saturating_sub(outstanding)),
        ))
    }

    async fn health_check(&self) -> Result<()> {
        self.check_admin(None)?;
        // A PING round trip.
        self.inner
            .client
            .flush()
            .await
            .map_err(|e| Error::connection(NAME, format!("ping: {e}"), e))
    }
}
