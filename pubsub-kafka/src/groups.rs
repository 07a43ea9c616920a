//! Which consumer group a subscription is ([`group_id`]), and the group
//! names through the `ListConsumerGroups` admin call, which
//! rust-rdkafka does not wrap. Its `Client::fetch_group_list` uses the older
//! ListGroups + DescribeGroups path, which fails against Tansu (and crashed
//! the process in a trial), while `ListConsumerGroups` works there and on
//! Apache Kafka alike.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int};
use std::time::Duration;

use pubsub_core::{Error, Result};
use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};

use crate::backend::NAME;

/// The consumer group behind subscription `subscription` of Kafka topic
/// `topic`: `"{topic}/{subscription}"`.
///
/// A subscription belongs to one topic, as on every other backend. One group
/// for a subscription name on several topics (the group id was the name
/// alone) made every consumer that joined or left on any of them rebalance
/// all of them, redelivering held messages and losing acks that raced the
/// revoke, and `unsubscribe` on one topic deleted the positions of all.
/// Kafka topic names have no `/` and subscription names have none either,
/// so the pair is recovered from the id ([`subscription_of`]). Subscription
/// `billing` of `acme.orders.created` is group `acme.orders.created/billing`.
pub(crate) fn group_id(topic: &str, subscription: &str) -> String {
    format!("{topic}/{subscription}")
}

/// The subscription of Kafka topic `topic` that consumer group `group` is,
/// if it is one ([`group_id`]'s inverse).
pub(crate) fn subscription_of<'a>(group: &'a str, topic: &str) -> Option<&'a str> {
    group.strip_prefix(topic)?.strip_prefix('/').filter(|s| !s.is_empty())
}

/// Frees the native handles however the call ends.
struct Handles {
    queue: *mut rd::rd_kafka_queue_t,
    event: *mut rd::rd_kafka_event_t,
}

impl Drop for Handles {
    fn drop(&mut self) {
        // SAFETY: each pointer is either null or owned by this struct and
        // destroyed exactly once, here.
        unsafe {
            if !self.event.is_null() {
                rd::rd_kafka_event_destroy(self.event);
            }
            if !self.queue.is_null() {
                rd::rd_kafka_queue_destroy(self.queue);
            }
        }
    }
}

/// Copies a C string librdkafka owns; empty for null.
///
/// # Safety
/// `p` is null or a valid NUL-terminated string alive for this call.
unsafe fn owned(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// Every consumer group the cluster knows. Blocking: call it off the runtime.
pub(crate) fn list_groups<C: ClientContext>(client: &Client<C>, timeout: Duration) -> Result<Vec<String>> {
    let ms = c_int::try_from(timeout.as_millis()).unwrap_or(c_int::MAX);
    // SAFETY: the client pointer is valid while `client` lives; the queue,
    // options and event are created, used and destroyed here in the order
    // librdkafka documents, and results are copied out before the event
    // (which owns them) is destroyed.
    unsafe {
        let rk = client.native_ptr();
        let mut handles = Handles {
            queue: rd::rd_kafka_queue_new(rk),
            event: std::ptr::null_mut(),
        };
        let options = rd::rd_kafka_AdminOptions_new(rk, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPS);
        let mut errstr = [0 as c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(options, ms, errstr.as_mut_ptr(), errstr.len());
        rd::rd_kafka_ListConsumerGroups(rk, options, handles.queue);
        rd::rd_kafka_AdminOptions_destroy(options);
        handles.event = rd::rd_kafka_queue_poll(handles.queue, ms.saturating_add(1000));
        if handles.event.is_null() {
            return Err(Error::Timeout(timeout));
        }
        if rd::rd_kafka_event_error(handles.event) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            let why = owned(rd::rd_kafka_event_error_string(handles.event));
            return Err(Error::broker_msg(NAME, format!("list consumer groups: {why}")));
        }
        let result = rd::rd_kafka_event_ListConsumerGroups_result(handles.event);
        if result.is_null() {
            return Err(Error::broker_msg(NAME, "list consumer groups: no result"));
        }
        let mut n = 0usize;
        let listings = rd::rd_kafka_ListConsumerGroups_result_valid(result, &mut n);
        let mut names = Vec::with_capacity(n);
        for i in 0..n {
            let listing = *listings.add(i);
            names.push(owned(rd::rd_kafka_ConsumerGroupListing_group_id(listing)));
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_name_topic_and_subscription() {
        let id = group_id("acme.orders.created", "billing");
        assert_eq!(id, "acme.orders.created/billing");
        assert_eq!(subscription_of(&id, "acme.orders.created"), Some("billing"));
        // Another topic, a topic that is a prefix of this one, a bare name.
        assert_eq!(subscription_of(&id, "acme.orders"), None);
        assert_eq!(subscription_of(&id, "acme.orders.created.eu"), None);
        assert_eq!(subscription_of("billing", "acme.orders.created"), None);
        assert_eq!(subscription_of("acme.orders.created/", "acme.orders.created"), None);
    }
}
