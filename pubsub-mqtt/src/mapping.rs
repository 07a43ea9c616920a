//! Topics, QoS and properties in MQTT terms.
//!
//! Properties become v5 user properties, the key the user property
//! `pubsub.key`, and the `content-type` property the v5 content type field.

use pubsub_core::{OutgoingMessage, Properties, Qos, Topic, CONTENT_TYPE_PROPERTY};
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;

pub(crate) const KEY_PROPERTY: &str = "pubsub.key";

/// The user property a handed-back message carries its redelivery count in.
pub(crate) const REDELIVERY_PROPERTY: &str = "pubsub.redelivery-count";

/// `tenant/namespace/queue`.
pub(crate) fn mqtt_topic(topic: &Topic) -> String {
    topic.joined("/")
}

/// The shared-subscription filter of a subscription: `$share/{sub}/t/ns/q`.
pub(crate) fn share_filter(subscription: &str, topic: &Topic) -> String {
    format!("$share/{subscription}/{}", mqtt_topic(topic))
}

/// Where a closing consumer hands back what it held unacked, for the other
/// consumers of its subscription only: `pubsub-return/{sub}/t/ns/q` (five
/// levels, so no topic of the scheme, which has three, can be it).
pub(crate) fn return_topic(subscription: &str, topic: &Topic) -> String {
    format!("pubsub-return/{subscription}/{}", mqtt_topic(topic))
}

/// The shared filter of [`return_topic`]: `$share/{sub}/pubsub-return/{sub}/t/ns/q`.
pub(crate) fn return_filter(subscription: &str, topic: &Topic) -> String {
    format!("$share/{subscription}/{}", return_topic(subscription, topic))
}

/// The properties of a message handed back with `redeliveries`: what the
/// publisher sent (content type, user properties, response fields), never
/// what the broker added on delivery (subscription ids, topic alias).
pub(crate) fn handed_back(p: Option<&PublishProperties>, redeliveries: u32) -> PublishProperties {
    let mut out = PublishProperties::default();
    if let Some(p) = p {
        out.payload_format_indicator = p.payload_format_indicator;
        out.content_type = p.content_type.clone();
        out.response_topic = p.response_topic.clone();
        out.correlation_data = p.correlation_data.clone();
        out.user_properties = p
            .user_properties
            .iter()
            .filter(|(k, _)| k != REDELIVERY_PROPERTY)
            .cloned()
            .collect();
    }
    out.user_properties
        .push((REDELIVERY_PROPERTY.into(), redeliveries.to_string()));
    out
}

/// The redelivery count a handed-back message carries, if it is one.
pub(crate) fn redelivery_count(p: Option<&PublishProperties>) -> Option<u32> {
    p?.user_properties
        .iter()
        .find(|(k, _)| k == REDELIVERY_PROPERTY)
        .and_then(|(_, v)| v.parse().ok())
}

pub(crate) fn qos(q: Qos) -> QoS {
    match q {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
        Qos::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// MQTT strings must not carry control characters (MQTT 5, 1.5.4; Mosquitto
/// drops the connection on one, "Malformed UTF-8"). The core rules allow a
/// tab in property values; here it is refused before sending.
pub(crate) fn check_mqtt_strings(m: &OutgoingMessage) -> pubsub_core::Result<()> {
    let control = |s: &str| s.chars().find(|c| c.is_control());
    let strings = m.properties.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    for (name, value) in strings.chain(m.key.as_deref().map(|k| ("key", k))) {
        if let Some(c) = control(value) {
            return Err(pubsub_core::Error::InvalidProperty {
                name: name.to_string(),
                reason: format!("MQTT strings cannot carry control characters such as {c:?}"),
            });
        }
    }
    Ok(())
}

pub(crate) fn to_properties(m: &OutgoingMessage) -> PublishProperties {
    let mut p = PublishProperties::default();
    for (k, v) in &m.properties {
        if k == CONTENT_TYPE_PROPERTY {
            p.content_type = Some(v.clone());
        } else {
            p.user_properties.push((k.clone(), v.clone()));
        }
    }
    if let Some(key) = &m.key {
        p.user_properties.push((KEY_PROPERTY.into(), key.clone()));
    }
    p
}

pub(crate) fn from_properties(p: Option<&PublishProperties>) -> (Properties, Option<String>) {
    let mut properties = Properties::new();
    let mut key = None;
    if let Some(p) = p {
        if let Some(ct) = &p.content_type {
            properties.insert(CONTENT_TYPE_PROPERTY.into(), ct.clone());
        }
        for (k, v) in &p.user_properties {
            if k == KEY_PROPERTY {
                key = Some(v.clone());
            } else if k == REDELIVERY_PROPERTY {
                // Read by the consumer as the redelivery count.
            } else {
                properties.insert(k.clone(), v.clone());
            }
        }
    }
    (properties, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_refused_before_sending() {
        let tab = OutgoingMessage::new("x").with_property("a", "x\ty");
        assert!(matches!(
            check_mqtt_strings(&tab),
            Err(pubsub_core::Error::InvalidProperty { name, .. }) if name == "a"
        ));
        check_mqtt_strings(&OutgoingMessage::new("x").with_property("a", "grüße ✓").with_key("ключ")).unwrap();
    }

    #[test]
    fn properties_round_trip_through_v5_fields() {
        let m = OutgoingMessage::new("x")
            .with_property("a", "1")
            .with_property(CONTENT_TYPE_PROPERTY, "application/json")
            .with_key("k");
        let p = to_properties(&m);
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        let (props, key) = from_properties(Some(&p));
        assert_eq!(props, m.properties);
        assert_eq!(key.as_deref(), Some("k"));
        let t: Topic = "q1/tg/flow/x".parse().unwrap();
        assert_eq!(share_filter("workers", &t), "$share/workers/tg/flow/x");
        assert_eq!(
            return_filter("workers", &t),
            "$share/workers/pubsub-return/workers/tg/flow/x"
        );
        let back = handed_back(Some(&p), 2);
        assert_eq!(redelivery_count(Some(&back)), Some(2));
        assert_eq!(from_properties(Some(&back)), (m.properties.clone(), Some("k".into())));
        let again = handed_back(Some(&back), 3);
        assert_eq!(redelivery_count(Some(&again)), Some(3));
        assert_eq!(again.user_properties.len(), back.user_properties.len());
    }
}
