//! Key names. All keys of one topic share the Redis Cluster hash tag
//! `{tenant.namespace.queue}`, so the Lua scripts touch one slot.

use pubsub_core::Topic;

/// The keys of one topic (q1 and q2 of the same tenant/namespace/queue share them).
#[derive(Debug, Clone)]
pub(crate) struct TopicKeys {
    /// The stream (q1/q2).
    pub stream: String,
    /// Sorted set of messages waiting for `deliver_after`.
    pub delayed: String,
    /// Prefix of q2 dedup keys.
    pub dedup_prefix: String,
    /// Pub/Sub channel (q0).
    pub channel: String,
}

impl TopicKeys {
    pub(crate) fn new(topic: &Topic) -> Self {
        let tag = format!("{{{}}}", topic.joined("."));
        TopicKeys {
            stream: format!("pubsub:{tag}"),
            delayed: format!("pubsub:{tag}:delayed"),
            dedup_prefix: format!("pubsub:{tag}:dedup:"),
            channel: format!("pubsub:{tag}:q0"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_share_a_hash_tag() {
        let k = super::TopicKeys::new(&"q1/tg/flow/x".parse().unwrap());
        assert_eq!(k.stream, "pubsub:{tg.flow.x}");
        assert!(k.delayed.starts_with("pubsub:{tg.flow.x}:"));
    }
}
