//! SDK topics and message ids as Pulsar names.

use pubsub_core::{Error, MessageId, Qos, Result, Topic};
use pulsar::proto::MessageIdData;

/// `q0/t/ns/q` → `non-persistent://t/ns/q`; q1 and q2 → `persistent://t/ns/q`.
pub(crate) fn pulsar_topic(topic: &Topic) -> String {
    let domain = match topic.qos() {
        Qos::AtMostOnce => "non-persistent",
        Qos::AtLeastOnce | Qos::ExactlyOnce => "persistent",
    };
    format!("{domain}://{}/{}/{}", topic.tenant(), topic.namespace(), topic.queue())
}

/// `ledger:entry:partition[:batch index]`, as Pulsar's tools print ids.
pub(crate) fn message_id(id: &MessageIdData) -> MessageId {
    let partition = id.partition.unwrap_or(-1);
    MessageId::from_text(match id.batch_index {
        Some(b) => format!("{}:{}:{partition}:{b}", id.ledger_id, id.entry_id),
        None => format!("{}:{}:{partition}", id.ledger_id, id.entry_id),
    })
}

/// The Pulsar id of one of ours: the inverse of [`message_id`].
pub(crate) fn parse_message_id(id: &MessageId) -> Result<MessageIdData> {
    let text = id.to_string();
    let fields: Vec<&str> = text.split(':').collect();
    let parsed = match fields.as_slice() {
        [ledger, entry, partition] => Some((ledger, entry, partition, None)),
        [ledger, entry, partition, batch] => Some((ledger, entry, partition, Some(batch))),
        _ => None,
    }
    .and_then(|(ledger, entry, partition, batch)| {
        Some(MessageIdData {
            ledger_id: ledger.parse().ok()?,
            entry_id: entry.parse().ok()?,
            partition: Some(partition.parse().ok()?),
            batch_index: match batch {
                Some(b) => Some(b.parse().ok()?),
                None => None,
            },
            ..Default::default()
        })
    });
    parsed.ok_or_else(|| {
        Error::InvalidConfiguration(format!(
            "{id} is not a Pulsar message id (ledger:entry:partition[:batch index])"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_ids() {
        let t: Topic = "q0/acme/orders/new".parse().unwrap();
        assert_eq!(pulsar_topic(&t), "non-persistent://acme/orders/new");
        assert_eq!(
            pulsar_topic(&t.with_qos(Qos::ExactlyOnce)),
            "persistent://acme/orders/new"
        );
        let id = MessageIdData {
            ledger_id: 3,
            entry_id: 9,
            ..Default::default()
        };
        assert_eq!(message_id(&id).to_string(), "3:9:-1");
        let batched = MessageIdData {
            batch_index: Some(2),
            partition: Some(0),
            ..id.clone()
        };
        assert_eq!(message_id(&batched).to_string(), "3:9:0:2");
        for id in [&id, &batched] {
            let back = parse_message_id(&message_id(id)).unwrap();
            assert_eq!(message_id(&back), message_id(id));
        }
        for bad in ["3:9", "a:9:-1", "3:9:-1:x", "", "1:2:3:4:5"] {
            assert!(matches!(
                parse_message_id(&MessageId::from_text(bad)),
                Err(Error::InvalidConfiguration(_))
            ));
        }
    }
}
