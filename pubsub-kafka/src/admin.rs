//! The admin API on Kafka: topics through the admin client and cluster
//! metadata; a subscription is the consumer group `{topic}/{subscription}`
//! (see `groups::group_id`) with committed offsets on the topic, and its
//! backlog is, summed over partitions, the high watermark less the
//! committed offset less the acks above it that travel in the commit
//! metadata (see `offsets`). Kafka keeps no QoS in topic
//! names, so listed topics are reported as q1.

use async_trait::async_trait;
use pubsub_core::{
    check_namespace, parse_joined, topics_in_namespace, Admin, Error, LogPosition, PubSubBackend, Qos, Result,
    SubscriptionInfo, Topic, TopicOptions,
};
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::metadata::Metadata;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use crate::backend::{kafka_topic, map_err, Inner, KafkaBackend, NAME};
use crate::groups::{group_id, list_groups, subscription_of};
use crate::offsets::decode_acked;
use crate::replay::{log_position, watermarks, Watermarks};

/// Runs a blocking rdkafka call off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::broker(NAME, "admin task failed", e))?
}

impl Inner {
    /// Creates the Kafka topic; `Ok(false)` if it existed.
    pub(crate) async fn create_kafka_topic(&self, name: &str, partitions: i32) -> Result<bool> {
        let new = NewTopic::new(name, partitions, TopicReplication::Fixed(self.config.replication));
        let opts = AdminOptions::new().operation_timeout(Some(Timeout::After(self.config.timeout)));
        let results = self
            .admin
            .create_topics([&new], &opts)
            .await
            .map_err(|e| map_err(format!("create topic {name}"), e))?;
        let mut created = true;
        for r in results {
            match r {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => created = false,
                Err((t, code)) => return Err(Error::broker_msg(NAME, format!("create topic {t}: {code}"))),
            }
        }
        self.await_listed(name, true).await?;
        Ok(created)
    }

    /// Waits until the brokers' metadata shows the topic with a leader for
    /// every partition (`listed`), or no longer shows it: CreateTopics and
    /// DeleteTopics return once the controller has the change, a little
    /// before the brokers answer with it, and producers, consumers and
    /// `topic_exists` ask the brokers. (A consumer whose partition had no
    /// leader yet could not read its watermarks, so its start was not fixed
    /// and the first messages were skipped.)
    pub(crate) async fn await_listed(&self, name: &str, listed: bool) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        loop {
            let shown = match self.partition_leaders(name).await? {
                Some(ps) if listed => !ps.is_empty() && ps.iter().all(|&(_, led)| led),
                Some(ps) => !ps.is_empty(),
                None => false,
            };
            if shown == listed {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let change = if listed { "created" } else { "deleted" };
                return Err(Error::broker_msg(
                    NAME,
                    format!(
                        "topic {name} was {change} but the brokers did not show it within {:?}",
                        self.config.timeout
                    ),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    async fn metadata(&self, topic: Option<String>) -> Result<Metadata> {
        let client = self.admin_client();
        let timeout = self.config.timeout;
        blocking(move || {
            client
                .inner()
                .fetch_metadata(topic.as_deref(), Timeout::After(timeout))
                .map_err(|e| map_err("fetch metadata", e))
        })
        .await
    }

    /// The topic's partitions, or `None` if the cluster does not have it.
    async fn partitions(&self, name: &str) -> Result<Option<Vec<i32>>> {
        Ok(self
            .partition_leaders(name)
            .await?
            .map(|ps| ps.into_iter().map(|(p, _)| p).collect()))
    }

    /// The topic's partitions with whether each has a leader, or `None` if
    /// the cluster does not have the topic.
    async fn partition_leaders(&self, name: &str) -> Result<Option<Vec<(i32, bool)>>> {
        let md = self.metadata(Some(name.to_string())).await?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none())
            .map(|t| {
                t.partitions()
                    .iter()
                    .map(|p| (p.id(), p.leader() >= 0 && p.error().is_none()))
                    .collect()
            }))
    }
}

/// A group member that never joins: only reads the group's committed offsets.
fn group_reader(inner: &Inner, group: &str) -> Result<BaseConsumer> {
    inner
        .config
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| Error::InvalidConfiguration(format!("kafka consumer settings: {e}")))
}

/// The committed offsets of `group` on every partition of `marks`
/// (partitions it never committed are left out), with their metadata.
fn committed(inner: &Inner, group: &str, name: &str, marks: &Watermarks) -> Result<TopicPartitionList> {
    let reader = group_reader(inner, group)?;
    let mut tpl = TopicPartitionList::new();
    for &p in marks.keys() {
        tpl.add_partition(name, p);
    }
    let all = reader.committed_offsets(tpl, Timeout::After(inner.config.timeout));
    // Destroying a client takes about 100 ms (librdkafka joins its
    // threads), 50 times the request itself: it happens off the caller's path.
    std::thread::spawn(move || drop(reader));
    let all = all.map_err(|e| map_err(format!("committed offsets of group {group}"), e))?;
    let mut out = TopicPartitionList::new();
    for e in all.elements() {
        if let Offset::Offset(at) = e.offset() {
            out.add_partition_offset(name, e.partition(), Offset::Offset(at))
                .map_err(|err| map_err("offsets", err))?;
            if let Some(mut copied) = out.find_partition(name, e.partition()) {
                copied.set_metadata(e.metadata());
            }
        }
    }
    Ok(out)
}

/// The backlog of `group` on the topic, or `None` if the group has
/// committed nothing there (it does not subscribe to this topic).
fn group_backlog(inner: &Inner, group: &str, name: &str, marks: &Watermarks) -> Result<Option<u64>> {
    let committed = committed(inner, group, name, marks)?;
    if committed.count() == 0 {
        return Ok(None);
    }
    let mut backlog = 0u64;
    for e in committed.elements() {
        let (Offset::Offset(at), Some(&(_, high))) = (e.offset(), marks.get(&e.partition())) else {
            continue;
        };
        let acked_above = decode_acked(e.metadata())
            .into_iter()
            .filter(|&o| o >= at && o < high)
            .count() as i64;
        backlog += (high - at - acked_above).max(0) as u64;
    }
    Ok(Some(backlog))
}

/// How many groups' offsets are read at once: Kafka has no "groups of a
/// topic" request and librdkafka reads one group's offsets per client, so a
/// cluster with many groups is read by several clients side by side.
const GROUP_READERS: usize = 16;

/// [`group_backlog`] of every group, [`GROUP_READERS`] at a time.
fn groups_backlogs(
    inner: &Inner,
    groups: &[String],
    name: &str,
    marks: &Watermarks,
) -> Result<Vec<(String, Option<u64>)>> {
    let per_reader = groups.len().div_ceil(GROUP_READERS).max(1);
    std::thread::scope(|scope| {
        let readers: Vec<_> = groups
            .chunks(per_reader)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|g| Ok((g.clone(), group_backlog(inner, g, name, marks)?)))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(groups.len());
        for reader in readers {
            let part = reader
                .join()
                .map_err(|_| Error::broker_msg(NAME, "a thread reading group offsets panicked"))??;
            out.extend(part);
        }
        Ok(out)
    })
}

impl KafkaBackend {
    async fn watermarks_of(&self, topic: &Topic) -> Result<Watermarks> {
        self.inner.ensure_open()?;
        self.inner.caps.check_positions()?;
        self.inner.caps.check_replay(topic)?;
        let (inner, name) = (self.inner.clone(), kafka_topic(topic));
        blocking(move || watermarks(&inner, &name)).await
    }
}

#[async_trait]
impl Admin for KafkaBackend {
    async fn create_topic(&self, topic: &Topic, options: TopicOptions) -> Result<bool> {
        self.inner.ensure_open()?;
        options.check(&self.capabilities().admin, NAME)?;
        let partitions = options
            .partitions
            .map_or(self.inner.config.partitions, |p| i32::try_from(p).unwrap_or(i32::MAX));
        let name = kafka_topic(topic);
        let created = self.inner.create_kafka_topic(&name, partitions).await?;
        self.inner.remember_created(name).await;
        Ok(created)
    }

    async fn delete_topic(&self, topic: &Topic) -> Result<()> {
        self.inner.ensure_open()?;
        pubsub_core::AdminCapabilities::require(
            self.capabilities().admin.delete_topic,
            NAME,
            "delete_topic on Tansu (it crashes the cluster's running librdkafka consumers)",
        )?;
        let name = kafka_topic(topic);
        let opts = AdminOptions::new().operation_timeout(Some(Timeout::After(self.inner.config.timeout)));
        let results = self
            .inner
            .admin
            .delete_topics(&[&name], &opts)
            .await
            .map_err(|e| map_err(format!("delete topic {name}"), e))?;
        self.inner.forget_created(&name).await;
        for r in results {
            match r {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                    return Err(Error::NotFound(format!("topic {topic}")))
                }
                Err((t, code)) => return Err(Error::broker_msg(NAME, format!("delete topic {t}: {code}"))),
            }
        }
        self.inner.await_listed(&name, false).await
    }

    async fn list_topics(&self, tenant: &str, namespace: &str) -> Result<Vec<Topic>> {
        check_namespace(tenant, namespace)?;
        self.inner.ensure_open()?;
        let md = self.inner.metadata(None).await?;
        let names: Vec<String> = md.topics().iter().map(|t| t.name().to_string()).collect();
        Ok(topics_in_namespace(names, tenant, namespace, |n: String| {
            parse_joined(&n, '.', Qos::AtLeastOnce)
        }))
    }

    async fn topic_exists(&self, topic: &Topic) -> Result<bool> {
        self.inner.ensure_open()?;
        Ok(self.inner.partitions(&kafka_topic(topic)).await?.is_some())
    }

    async fn subscriptions(&self, topic: &Topic) -> Result<Vec<SubscriptionInfo>> {
        self.inner.ensure_open()?;
        let (inner, name) = (self.inner.clone(), kafka_topic(topic));
        blocking(move || {
            let marks = watermarks(&inner, &name)?;
            let groups: Vec<String> = list_groups(inner.admin_client().inner(), inner.config.timeout)?
                .into_iter()
                .filter(|g| subscription_of(g, &name).is_some())
                .collect();
            let mut out = Vec::new();
            for (g, backlog) in groups_backlogs(&inner, &groups, &name, &marks)? {
                // A group that has committed nothing yet (its first consumer
                // is still joining) has no position to count a backlog from.
                if let (Some(subscription), Some(backlog)) = (subscription_of(&g, &name), backlog) {
                    out.push(SubscriptionInfo::new(subscription, Some(backlog)));
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    async fn earliest_position(&self, topic: &Topic) -> Result<LogPosition> {
        let marks = self.watermarks_of(topic).await?;
        Ok(log_position(marks.into_iter().map(|(p, (low, _))| (p, low))))
    }

    async fn latest_position(&self, topic: &Topic) -> Result<LogPosition> {
        let marks = self.watermarks_of(topic).await?;
        Ok(log_position(marks.into_iter().map(|(p, (_, high))| (p, high))))
    }

    /// The group's committed offsets: everything before them is acked
    /// (acks above them, kept in the commit metadata, are not counted).
    async fn subscription_position(&self, topic: &Topic, subscription: &str) -> Result<LogPosition> {
        let marks = self.watermarks_of(topic).await?;
        let (inner, name, subscription) = (self.inner.clone(), kafka_topic(topic), subscription.to_string());
        blocking(move || {
            let committed = committed(&inner, &group_id(&name, &subscription), &name, &marks)?;
            if committed.count() == 0 {
                return Err(Error::NotFound(format!("subscription {subscription} of {name}")));
            }
            Ok(log_position(committed.elements().iter().filter_map(
                |e| match e.offset() {
                    Offset::Offset(o) => Some((e.partition(), o)),
                    _ => None,
                },
            )))
        })
        .await
    }

    async fn health_check(&self) -> Result<()> {
        self.inner.ensure_open()?;
        self.inner.metadata(None).await.map(|_| ())
    }
}
