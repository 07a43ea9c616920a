//! Managing topics and looking at subscriptions: the [`Admin`] interface
//! every backend offers next to [`PubSubBackend`](crate::PubSubBackend).
//!
//! Producers and consumers create what they need on demand, so nothing here
//! has to be called first: it is for operators, tools (the `pubsub` command
//! line) and services that want to see lag or tidy up. What a broker cannot
//! do is stated in [`AdminCapabilities`] and refused with
//! [`Error::Unsupported`](crate::Error::Unsupported).

use std::fmt;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::replay::LogPosition;
use crate::topic::{Qos, Topic};

/// How a topic is created.
///
/// ```
/// let opts = pubsub_core::TopicOptions::default().with_partitions(8);
/// assert_eq!(opts.partitions, Some(8));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicOptions {
    /// Partitions, where the broker partitions topics (Kafka). `None`: the
    /// backend's configured default.
    pub partitions: Option<u32>,
}

impl TopicOptions {
    /// Sets the number of partitions (at least 1).
    pub fn with_partitions(mut self, partitions: u32) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// Refuses what no backend can create: zero partitions, or partitions
    /// where the backend has none.
    pub fn check(&self, caps: &AdminCapabilities, backend: &'static str) -> Result<()> {
        match self.partitions {
            Some(0) => Err(Error::InvalidConfiguration("a topic needs at least 1 partition".into())),
            Some(p) if p > 1 && !caps.partitions => {
                Err(Error::unsupported(backend, format!("topics of {p} partitions")))
            }
            _ => Ok(()),
        }
    }
}

/// One subscription of a topic, as the broker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionInfo {
    /// The subscription name, as given to `create_consumer`.
    pub name: String,
    /// Messages published and not yet acked on this subscription (Kafka:
    /// the lag behind the committed offsets). `None` where the broker
    /// cannot tell.
    pub backlog: Option<u64>,
}

impl SubscriptionInfo {
    /// A subscription with a known (or unknown) backlog.
    pub fn new(name: impl Into<String>, backlog: Option<u64>) -> Self {
        SubscriptionInfo {
            name: name.into(),
            backlog,
        }
    }
}

/// Which [`Admin`] operations a backend supports. Health checks are always supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminCapabilities {
    /// `create_topic`, `delete_topic` and `topic_exists` work on q1/q2 topics.
    pub topics: bool,
    /// The same on q0 topics. Off where a q0 topic is not an object on the
    /// broker (a NATS subject, a Redis Pub/Sub channel, any MQTT topic).
    pub q0_topics: bool,
    /// Topics can be deleted (the data and the subscriptions go with them).
    pub delete_topic: bool,
    /// `list_topics` lists a tenant's namespace.
    pub list_topics: bool,
    /// `create_topic` takes more than one partition.
    pub partitions: bool,
    /// `subscriptions` lists a topic's subscriptions with their backlog.
    pub subscriptions: bool,
}

impl AdminCapabilities {
    /// Nothing but health checks.
    pub const NONE: AdminCapabilities = AdminCapabilities {
        topics: false,
        q0_topics: false,
        delete_topic: false,
        list_topics: false,
        partitions: false,
        subscriptions: false,
    };

    /// Whether topics of this QoS are objects the admin API can create and look up.
    pub fn manages(&self, qos: Qos) -> bool {
        match qos {
            Qos::AtMostOnce => self.q0_topics,
            Qos::AtLeastOnce | Qos::ExactlyOnce => self.topics,
        }
    }

    /// [`Error::Unsupported`] unless topics of `topic`'s QoS are managed.
    pub fn check_topic(&self, backend: &'static str, topic: &Topic) -> Result<()> {
        if self.manages(topic.qos()) {
            Ok(())
        } else {
            Err(Error::unsupported(
                backend,
                format!(
                    "managing {} topics ({topic}): the broker has no object to create or look up",
                    topic.qos().as_str()
                ),
            ))
        }
    }

    /// [`Error::Unsupported`] for `operation` unless `supported`.
    pub fn require(supported: bool, backend: &'static str, operation: &str) -> Result<()> {
        if supported {
            Ok(())
        } else {
            Err(Error::unsupported(backend, operation))
        }
    }
}

/// Topic management and subscription lag, reached through
/// [`PubSubBackend::admin`](crate::PubSubBackend::admin).
///
/// ```
/// # async fn run(backend: &dyn pubsub_core::PubSubBackend) -> pubsub_core::Result<()> {
/// use pubsub_core::{Topic, TopicOptions};
///
/// let admin = backend.admin();
/// let topic: Topic = "q1/tg/flow/orders".parse()?;
/// admin.create_topic(&topic, TopicOptions::default()).await?;
/// assert!(admin.topic_exists(&topic).await?);
/// for sub in admin.subscriptions(&topic).await? {
///     println!("{}: {:?} behind", sub.name, sub.backlog);
/// }
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Admin: Send + Sync + fmt::Debug {
    /// Creates the topic. `Ok(false)` if it already existed (creating is
    /// idempotent, as producers and consumers create topics on demand).
    async fn create_topic(&self, topic: &Topic, options: TopicOptions) -> Result<bool>;

    /// Deletes the topic with its messages and subscriptions.
    /// [`Error::NotFound`] if there is no such topic.
    async fn delete_topic(&self, topic: &Topic) -> Result<()>;

    /// The topics of `tenant`/`namespace`, sorted. A broker that does not
    /// keep the QoS in its names (Kafka, NATS streams, Redis streams)
    /// reports its topics as q1.
    async fn list_topics(&self, tenant: &str, namespace: &str) -> Result<Vec<Topic>>;

    /// Whether the topic exists on the broker.
    async fn topic_exists(&self, topic: &Topic) -> Result<bool>;

    /// The topic's subscriptions with their backlog, sorted by name.
    /// [`Error::NotFound`] if there is no such topic.
    async fn subscriptions(&self, topic: &Topic) -> Result<Vec<SubscriptionInfo>>;

    /// Checks that the broker answers; the error says why not.
    async fn health_check(&self) -> Result<()>;

    /// The position of the oldest retained message of `topic`.
    /// Backends without [`Capabilities::positions`](crate::Capabilities::positions) refuse
    /// with [`Error::Unsupported`].
    async fn earliest_position(&self, topic: &Topic) -> Result<LogPosition> {
        let _ = topic;
        Err(positions_unsupported())
    }

    /// The position after the newest message of `topic`:
    /// `earliest.messages_until(&latest)` is how many messages it retains.
    async fn latest_position(&self, topic: &Topic) -> Result<LogPosition> {
        let _ = topic;
        Err(positions_unsupported())
    }

    /// The position of `subscription` on `topic`: everything before it is
    /// acked, so `position.messages_until(&latest)` is its lag.
    /// [`Error::NotFound`] if there is no such subscription.
    async fn subscription_position(&self, topic: &Topic, subscription: &str) -> Result<LogPosition> {
        let _ = (topic, subscription);
        Err(positions_unsupported())
    }
}

fn positions_unsupported() -> Error {
    Error::Unsupported {
        backend: "this backend",
        feature: "log positions".into(),
    }
}

/// Checks a tenant and namespace given to `list_topics` with the topic rules.
pub fn check_namespace(tenant: &str, namespace: &str) -> Result<()> {
    Topic::new(Qos::AtLeastOnce, tenant, namespace, "x").map(|_| ())
}

/// The topics of `tenant`/`namespace` among `names`, each turned back into
/// a [`Topic`] by `parse` (which gives `None` for names of other
/// namespaces or not made by this SDK), sorted and without duplicates.
pub fn topics_in_namespace<I, F>(names: I, tenant: &str, namespace: &str, parse: F) -> Vec<Topic>
where
    I: IntoIterator,
    F: Fn(I::Item) -> Option<Topic>,
{
    let mut out: Vec<Topic> = names
        .into_iter()
        .filter_map(parse)
        .filter(|t| t.tenant() == tenant && t.namespace() == namespace)
        .collect();
    out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    out.dedup();
    out
}

/// Parses `tenant{sep}namespace{sep}queue` (the shape of [`Topic::joined`])
/// back into a topic of `qos`; `None` if it is not one.
pub fn parse_joined(name: &str, sep: char, qos: Qos) -> Option<Topic> {
    let mut parts = name.split(sep);
    let (t, ns, q) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Topic::new(qos, t, ns, q).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_names_parse_back() {
        let t: Topic = "q1/tg/flow/orders".parse().unwrap();
        assert_eq!(parse_joined(&t.joined("."), '.', Qos::AtLeastOnce), Some(t));
        assert_eq!(parse_joined("a.b", '.', Qos::AtLeastOnce), None);
        assert_eq!(parse_joined("a.b.c.d", '.', Qos::AtLeastOnce), None);
        assert_eq!(parse_joined("a..c", '.', Qos::AtLeastOnce), None);
    }

    #[test]
    fn namespace_filter_sorts_and_dedups() {
        let names = ["tg.flow.b", "tg.flow.a", "tg.other.c", "junk", "tg.flow.a"];
        let got = topics_in_namespace(names, "tg", "flow", |n| parse_joined(n, '.', Qos::AtLeastOnce));
        let got: Vec<_> = got.iter().map(|t| t.as_str().to_string()).collect();
        assert_eq!(got, ["q1/tg/flow/a", "q1/tg/flow/b"]);
    }

    #[test]
    fn options_are_checked_against_the_claims() {
        let caps = AdminCapabilities {
            topics: true,
            ..AdminCapabilities::NONE
        };
        TopicOptions::default().check(&caps, "x").unwrap();
        TopicOptions::default().with_partitions(1).check(&caps, "x").unwrap();
        assert!(matches!(
            TopicOptions::default().with_partitions(0).check(&caps, "x"),
            Err(Error::InvalidConfiguration(_))
        ));
        assert!(matches!(
            TopicOptions::default().with_partitions(3).check(&caps, "x"),
            Err(Error::Unsupported { .. })
        ));
        let q0: Topic = "q0/a/b/c".parse().unwrap();
        assert!(matches!(caps.check_topic("x", &q0), Err(Error::Unsupported { .. })));
        caps.check_topic("x", &q0.with_qos(Qos::AtLeastOnce)).unwrap();
        assert!(check_namespace("tg", "bad/ns").is_err());
    }
}
