//! SDK topics and message ids as Pulsar names.

use pubsub_core::{MessageId, Qos, Topic};
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
            ..id
        };
        assert_eq!(message_id(&batched).to_string(), "3:9:0:2");
    }
}
