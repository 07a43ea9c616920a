//! Subjects, stream names and durable consumer names.
//!
//! - subject: `tenant.namespace.queue` (segments hold no `.`, so this is
//!   injective and has exactly three tokens);
//! - stream: `PUBSUB_{tenant}_{namespace}_{queue}_{hash}`: readable, and the
//!   64-bit hash of the subject keeps it injective although `_` may occur in
//!   segments (long names are shortened before the hash, to stay a valid
//!   directory name in the server's file store);
//! - durable consumer: the subscription name, with `.` (not allowed there)
//!   turned into `_` plus a hash when present.

use pubsub_core::Topic;

pub(crate) fn subject(topic: &Topic) -> String {
    topic.joined(".")
}

fn fnv64(s: &str) -> u64 {
    pubsub_core::stable_hash(s.as_bytes())
}

pub(crate) fn stream_name(topic: &Topic) -> String {
    let readable: String = topic.joined("_").chars().take(120).collect();
    format!("PUBSUB_{readable}_{:016x}", fnv64(&subject(topic)))
}

pub(crate) fn durable_name(subscription: &str) -> String {
    if subscription.contains('.') {
        format!("{}_{:08x}", subscription.replace('.', "_"), fnv64(subscription) as u32)
    } else {
        subscription.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_distinct() {
        let a: Topic = "q1/a_b/c/d".parse().unwrap();
        let b: Topic = "q1/a/b_c/d".parse().unwrap();
        assert_eq!(subject(&a), "a_b.c.d");
        assert_ne!(stream_name(&a), stream_name(&b));
        assert!(!stream_name(&a).contains('.'));
        assert_eq!(durable_name("workers"), "workers");
        assert_ne!(durable_name("a.b"), durable_name("a_b"));
        assert!(!durable_name("a.b").contains('.'));
        let long: Topic = format!("q1/{0}/{0}/{0}", "x".repeat(80)).parse().unwrap();
        assert!(stream_name(&long).len() < 160);
    }
}
