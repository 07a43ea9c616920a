//! The admin API. With [`PulsarConfig::admin_url`](crate::PulsarConfig::admin_url)
//! set (Apache Pulsar), all of it goes through Pulsar's HTTP admin API:
//! topics of both domains are created, listed, looked up and deleted, and
//! subscriptions are read with their backlog from the topic's stats.
//!
//! Without it, only Pulsar's binary protocol is there, the one the
//! `pulsar` crate speaks: q1 topics are listed with `GetTopicsOfNamespace`
//! and created the way Pulsar creates them, by a producer attaching.
//! `GetTopicsOfNamespace` does not list non-persistent topics, so q0
//! topics cannot be looked up, and deleting topics and reading backlogs
//! have no binary command: all three are `Unsupported`, as
//! `Capabilities::admin` says. pulsar-lite does not answer
//! `GetTopicsOfNamespace` at all, so against it only the health check works.

use async_trait::async_trait;
use pubsub_core::{
    check_namespace, topics_in_namespace, Admin, AdminCapabilities, Error, PubSubBackend, Qos, Result,
    SubscriptionInfo, Topic, TopicOptions,
};
use pulsar::proto::command_get_topics_of_namespace::Mode;

use crate::backend::PulsarBackend;
use crate::errors::{convert, is_namespace_not_found, NAME};
use crate::naming::pulsar_topic;

/// `persistent://t/ns/q` (q1) or `non-persistent://t/ns/q` (q0) back to a topic.
fn parse_pulsar_topic(name: &str) -> Option<Topic> {
    let (domain, rest) = name.split_once("://")?;
    let qos = match domain {
        "persistent" => Qos::AtLeastOnce,
        "non-persistent" => Qos::AtMostOnce,
        _ => return None,
    };
    pubsub_core::parse_joined(rest, '/', qos)
}

impl PulsarBackend {
    async fn namespace_topics(&self, tenant: &str, namespace: &str) -> Result<Vec<Topic>> {
        self.inner.ensure_open()?;
        AdminCapabilities::require(
            self.inner.caps.admin.list_topics,
            NAME,
            "listing topics (pulsar-lite does not answer GetTopicsOfNamespace)",
        )?;
        if let Some(http) = &self.inner.http_admin {
            let names = http.list_topics(tenant, namespace).await?;
            return Ok(topics_in_namespace(names, tenant, namespace, |n: String| {
                parse_pulsar_topic(&n)
            }));
        }
        let names = match self
            .inner
            .client
            .get_topics_of_namespace(format!("{tenant}/{namespace}"), Mode::All)
            .await
        {
            Ok(names) => names,
            // A namespace nobody made has no topics (Apache Pulsar refuses the listing).
            Err(e) if is_namespace_not_found(&e) => Vec::new(),
            Err(e) => return Err(convert(format!("list topics of {tenant}/{namespace}"), e)),
        };
        Ok(topics_in_namespace(names, tenant, namespace, |n: String| {
            parse_pulsar_topic(&n)
        }))
    }
}

#[async_trait]
impl Admin for PulsarBackend {
    async fn create_topic(&self, topic: &Topic, options: TopicOptions) -> Result<bool> {
        self.inner.ensure_open()?;
        self.inner.caps.admin.check_topic(NAME, topic)?;
        options.check(&self.capabilities().admin, NAME)?;
        self.inner.ensure_namespace(topic).await?;
        if let Some(http) = &self.inner.http_admin {
            return http.create_topic(topic).await;
        }
        if self.topic_exists(topic).await? {
            return Ok(false);
        }
        // Pulsar creates a topic when the first producer attaches to it.
        let name = pulsar_topic(topic);
        let mut producer = self
            .inner
            .client
            .producer()
            .with_topic(&name)
            .build()
            .await
            .map_err(|e| convert(format!("create topic {name}"), e))?;
        let _ = producer.close().await;
        Ok(true)
    }

    async fn delete_topic(&self, topic: &Topic) -> Result<()> {
        self.inner.ensure_open()?;
        match &self.inner.http_admin {
            Some(http) => {
                self.inner.caps.admin.check_topic(NAME, topic)?;
                http.delete_topic(topic).await
            }
            None => Err(Error::unsupported(
                NAME,
                "delete_topic (needs Pulsar's HTTP admin API: set PulsarConfig::admin_url)",
            )),
        }
    }

    async fn list_topics(&self, tenant: &str, namespace: &str) -> Result<Vec<Topic>> {
        check_namespace(tenant, namespace)?;
        self.namespace_topics(tenant, namespace).await
    }

    async fn topic_exists(&self, topic: &Topic) -> Result<bool> {
        self.inner.ensure_open()?;
        self.inner.caps.admin.check_topic(NAME, topic)?;
        if let Some(http) = &self.inner.http_admin {
            return http.topic_exists(topic).await;
        }
        let name = pulsar_topic(topic);
        let all = self.namespace_topics(topic.tenant(), topic.namespace()).await?;
        Ok(all.iter().any(|t| pulsar_topic(t) == name))
    }

    async fn subscriptions(&self, topic: &Topic) -> Result<Vec<SubscriptionInfo>> {
        self.inner.ensure_open()?;
        match &self.inner.http_admin {
            Some(http) => {
                self.inner.caps.admin.check_topic(NAME, topic)?;
                http.subscriptions(topic).await
            }
            None => Err(Error::unsupported(
                NAME,
                "subscriptions and backlog (need Pulsar's HTTP admin API: set PulsarConfig::admin_url)",
            )),
        }
    }

    /// A topic lookup: a round trip the broker answers without creating anything.
    async fn health_check(&self) -> Result<()> {
        self.inner.ensure_open()?;
        self.inner
            .client
            .lookup_topic("persistent://public/default/pubsub-health-check")
            .await
            .map(|_| ())
            .map_err(|e| convert("health check (topic lookup)", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulsar_names_parse_back_with_their_qos() {
        for t in ["q0/tg/flow/a", "q1/tg/flow/b"] {
            let topic: Topic = t.parse().unwrap();
            assert_eq!(parse_pulsar_topic(&pulsar_topic(&topic)), Some(topic));
        }
        assert_eq!(parse_pulsar_topic("persistent://tg/flow"), None);
        assert_eq!(parse_pulsar_topic("other://tg/flow/x"), None);
    }
}
