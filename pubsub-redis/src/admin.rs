//! The admin API on Redis: a q1/q2 topic is its stream key, a subscription
//! is a consumer group, and its backlog is the group's `lag` (entries not
//! yet delivered) plus its `pending` (delivered, not acked) from
//! `XINFO GROUPS`. q0 topics are Pub/Sub channels, which are no object
//! on the server: managing them is refused.

use crate::conn::Conn;
use async_trait::async_trait;
use pubsub_core::{
    check_namespace, parse_joined, topics_in_namespace, Admin, Error, LogPosition, PubSubBackend, Qos, Result,
    SubscriptionInfo, Topic, TopicOptions,
};

use crate::backend::{map_err, RedisBackend, NAME};
use crate::info::{groups_info, int_field, text_field};
use crate::keys::TopicKeys;
use crate::replay;

/// A group made and destroyed at once, only to create an empty stream.
const PLACEHOLDER_GROUP: &str = "pubsub-admin-create";

impl RedisBackend {
    fn position_conn(&self, topic: &Topic) -> Result<Conn> {
        self.inner.ensure_open()?;
        self.inner.caps.check_positions()?;
        self.inner.caps.check_replay(topic)?;
        Ok(self.inner.conn.clone())
    }

    fn admin_conn(&self, topic: Option<&Topic>) -> Result<Conn> {
        self.inner.ensure_open()?;
        if let Some(t) = topic {
            self.inner.caps.admin.check_topic(NAME, t)?;
        }
        Ok(self.inner.conn.clone())
    }
}

async fn stream_exists(conn: &mut Conn, key: &str) -> Result<bool> {
    let kind: String = redis::cmd("TYPE")
        .arg(key)
        .query_async(conn)
        .await
        .map_err(|e| map_err("TYPE", e))?;
    match kind.as_str() {
        "stream" => Ok(true),
        "none" => Ok(false),
        other => Err(Error::broker_msg(NAME, format!("key {key} is a {other}, not a stream"))),
    }
}

/// Each consumer group with its backlog: entries not yet delivered (`lag`)
/// plus delivered and not acked (`pending`); unknown where Redis gives no lag.
async fn groups(conn: &mut Conn, key: &str) -> Result<Vec<SubscriptionInfo>> {
    let mut out: Vec<SubscriptionInfo> = groups_info(conn, key)
        .await?
        .into_iter()
        .filter_map(|fields| {
            let name = text_field(&fields, "name").filter(|n| n != PLACEHOLDER_GROUP)?;
            let backlog = int_field(&fields, "pending")
                .zip(int_field(&fields, "lag"))
                .map(|(p, l)| p + l);
            Some(SubscriptionInfo::new(name, backlog))
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[async_trait]
impl Admin for RedisBackend {
    async fn create_topic(&self, topic: &Topic, options: TopicOptions) -> Result<bool> {
        let mut conn = self.admin_conn(Some(topic))?;
        options.check(&self.capabilities().admin, NAME)?;
        let key = TopicKeys::new(topic).stream;
        if stream_exists(&mut conn, &key).await? {
            return Ok(false);
        }
        // Redis has no "create stream": a group with MKSTREAM makes an
        // empty one, which outlives the group.
        let _: () = redis::pipe()
            .atomic()
            .cmd("XGROUP")
            .arg("CREATE")
            .arg(&key)
            .arg(PLACEHOLDER_GROUP)
            .arg("$")
            .arg("MKSTREAM")
            .ignore()
            .cmd("XGROUP")
            .arg("DESTROY")
            .arg(&key)
            .arg(PLACEHOLDER_GROUP)
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(|e| map_err(&format!("create stream {key}"), e))?;
        Ok(true)
    }

    async fn delete_topic(&self, topic: &Topic) -> Result<()> {
        let mut conn = self.admin_conn(Some(topic))?;
        let keys = TopicKeys::new(topic);
        if !stream_exists(&mut conn, &keys.stream).await? {
            return Err(Error::NotFound(format!("topic {topic}")));
        }
        // q2 de-duplication keys expire on their own.
        let _: () = redis::cmd("DEL")
            .arg(&keys.stream)
            .arg(&keys.delayed)
            .query_async(&mut conn)
            .await
            .map_err(|e| map_err("DEL", e))?;
        Ok(())
    }

    async fn list_topics(&self, tenant: &str, namespace: &str) -> Result<Vec<Topic>> {
        check_namespace(tenant, namespace)?;
        let mut conn = self.admin_conn(None)?;
        // Segments hold no glob characters, so the pattern is literal.
        let pattern = format!("pubsub:{{{tenant}.{namespace}.*}}");
        // On a cluster, every master is scanned.
        let names = conn
            .scan_all(&pattern, "stream")
            .await
            .map_err(|e| map_err("SCAN", e))?;
        Ok(topics_in_namespace(names, tenant, namespace, |key: String| {
            let joined = key.strip_prefix("pubsub:{")?.strip_suffix('}')?;
            parse_joined(joined, '.', Qos::AtLeastOnce)
        }))
    }

    async fn topic_exists(&self, topic: &Topic) -> Result<bool> {
        let mut conn = self.admin_conn(Some(topic))?;
        stream_exists(&mut conn, &TopicKeys::new(topic).stream).await
    }

    async fn subscriptions(&self, topic: &Topic) -> Result<Vec<SubscriptionInfo>> {
        let mut conn = self.admin_conn(Some(topic))?;
        let key = TopicKeys::new(topic).stream;
        if !stream_exists(&mut conn, &key).await? {
            return Err(Error::NotFound(format!("topic {topic}")));
        }
        groups(&mut conn, &key).await
    }

    async fn earliest_position(&self, topic: &Topic) -> Result<LogPosition> {
        let mut conn = self.position_conn(topic)?;
        let (earliest, _) = replay::stream_positions(&mut conn, &TopicKeys::new(topic).stream).await?;
        Ok(LogPosition::single(earliest))
    }

    async fn latest_position(&self, topic: &Topic) -> Result<LogPosition> {
        let mut conn = self.position_conn(topic)?;
        let (_, latest) = replay::stream_positions(&mut conn, &TopicKeys::new(topic).stream).await?;
        Ok(LogPosition::single(latest))
    }

    async fn subscription_position(&self, topic: &Topic, subscription: &str) -> Result<LogPosition> {
        let mut conn = self.position_conn(topic)?;
        let at = replay::group_position(&mut conn, &TopicKeys::new(topic).stream, subscription).await?;
        Ok(LogPosition::single(at))
    }

    async fn health_check(&self) -> Result<()> {
        let mut conn = self.admin_conn(None)?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| map_err("PING", e))?;
        if pong != "PONG" {
            return Err(Error::broker_msg(NAME, format!("PING answered {pong:?}")));
        }
        Ok(())
    }
}
