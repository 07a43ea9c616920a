//! The generic topic scheme `{qos}/{tenant}/{namespace}/{queue}`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ident::{allowed_list, check_ident, IdentError};

/// Longest tenant, namespace or queue segment accepted.
///
/// Chosen so that every backend's mapping fits its own limit: Kafka's 249
/// characters for `tenant.namespace.queue` is the tightest.
pub const MAX_SEGMENT_LEN: usize = 80;

/// Quality of service, the first segment of a [`Topic`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Qos {
    /// `q0`: best effort. No acknowledgement, not retained, may drop.
    AtMostOnce,
    /// `q1`: at least once. Redelivered until acknowledged.
    AtLeastOnce,
    /// `q2`: exactly once as far as the backend can honour it: producer
    /// retries are de-duplicated by message id and an acknowledgement that
    /// returned `Ok` is never followed by a redelivery.
    ExactlyOnce,
}

impl Qos {
    /// The segment as written in a topic: `q0`, `q1` or `q2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Qos::AtMostOnce => "q0",
            Qos::AtLeastOnce => "q1",
            Qos::ExactlyOnce => "q2",
        }
    }

    /// Whether messages are acknowledged (q1 and q2).
    pub fn is_acknowledged(self) -> bool {
        self != Qos::AtMostOnce
    }
}

impl fmt::Display for Qos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Qos {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "q0" => Ok(Qos::AtMostOnce),
            "q1" => Ok(Qos::AtLeastOnce),
            "q2" => Ok(Qos::ExactlyOnce),
            other => Err(Error::InvalidTopic {
                topic: other.to_string(),
                reason: format!("qos segment {other:?} must be one of q0, q1, q2"),
            }),
        }
    }
}

/// A validated topic: `{qos}/{tenant}/{namespace}/{queue}`, e.g.
/// `q1/tg/flow/text-completion-requests`.
///
/// Tenant, namespace and queue are non-empty, at most [`MAX_SEGMENT_LEN`]
/// characters of `[A-Za-z0-9_-]`, so that every backend mapping
/// (`tenant.namespace.queue`, `tenant/namespace/queue`, ...) is injective.
/// Cloning is cheap (one reference count).
///
/// ```
/// use pubsub_core::{Qos, Topic};
///
/// let t: Topic = "q1/tg/flow/text-completion-requests".parse()?;
/// assert_eq!(t.qos(), Qos::AtLeastOnce);
/// assert_eq!(t.tenant(), "tg");
/// assert_eq!(t.to_string(), "q1/tg/flow/text-completion-requests");
///
/// // The builder has the seed's defaults: q1, tenant "tg", namespace "flow".
/// assert_eq!(Topic::builder("my-queue").build()?, "q1/tg/flow/my-queue".parse()?);
///
/// let err = "q1/tg/fl ow/x".parse::<Topic>().unwrap_err();
/// assert!(err.to_string().contains("namespace"));
/// # Ok::<(), pubsub_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic {
    raw: Arc<str>,
    qos: Qos,
    // Byte ranges of tenant, namespace and queue inside `raw`.
    tenant_end: u16,
    namespace_end: u16,
}

impl Topic {
    /// A builder with the seed's defaults (`q1`, tenant `tg`, namespace `flow`).
    pub fn builder(queue: impl Into<String>) -> TopicBuilder {
        TopicBuilder {
            qos: Qos::AtLeastOnce,
            tenant: "tg".into(),
            namespace: "flow".into(),
            queue: queue.into(),
        }
    }

    /// Builds a topic from its parts, validating each.
    pub fn new(qos: Qos, tenant: &str, namespace: &str, queue: &str) -> Result<Self> {
        let raw = format!("{qos}/{tenant}/{namespace}/{queue}");
        for (name, value) in [("tenant", tenant), ("namespace", namespace), ("queue", queue)] {
            validate_segment(&raw, name, value)?;
        }
        let tenant_end = (3 + tenant.len()) as u16;
        let namespace_end = tenant_end + 1 + namespace.len() as u16;
        Ok(Topic {
            raw: raw.into(),
            qos,
            tenant_end,
            namespace_end,
        })
    }

    /// The quality of service.
    pub fn qos(&self) -> Qos {
        self.qos
    }

    /// The tenant segment.
    pub fn tenant(&self) -> &str {
        &self.raw[3..self.tenant_end as usize]
    }

    /// The namespace segment.
    pub fn namespace(&self) -> &str {
        &self.raw[self.tenant_end as usize + 1..self.namespace_end as usize]
    }

    /// The queue segment.
    pub fn queue(&self) -> &str {
        &self.raw[self.namespace_end as usize + 1..]
    }

    /// The whole topic string.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// `tenant{sep}namespace{sep}queue`: the shape every backend maps to
    /// (Kafka and NATS use `.`, MQTT and Pulsar `/`). Injective because
    /// segments cannot contain either separator.
    pub fn joined(&self, sep: &str) -> String {
        let mut s = String::with_capacity(self.raw.len());
        s.push_str(self.tenant());
        s.push_str(sep);
        s.push_str(self.namespace());
        s.push_str(sep);
        s.push_str(self.queue());
        s
    }

    /// The same tenant, namespace and queue with another quality of service.
    pub fn with_qos(&self, qos: Qos) -> Topic {
        Topic::new(qos, self.tenant(), self.namespace(), self.queue()).expect("segments of a valid topic stay valid")
    }
}

fn validate_segment(topic: &str, name: &str, value: &str) -> Result<()> {
    const EXTRA: &[char] = &['-', '_'];
    let reason = match check_ident(value, MAX_SEGMENT_LEN, EXTRA) {
        Ok(()) => return Ok(()),
        Err(IdentError::Empty) => format!("{name} segment is empty"),
        Err(IdentError::TooLong) => format!(
            "{name} segment is {} characters long; at most {MAX_SEGMENT_LEN} are allowed",
            value.chars().count()
        ),
        Err(IdentError::BadChar(bad)) => {
            format!(
                "{name} segment {value:?} contains {bad:?}; only {} are allowed",
                allowed_list(EXTRA)
            )
        }
    };
    Err(Error::InvalidTopic {
        topic: topic.to_string(),
        reason,
    })
}

impl FromStr for Topic {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let err = |reason: String| Error::InvalidTopic {
            topic: s.to_string(),
            reason,
        };
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() != 4 {
            return Err(err(format!(
                "expected 4 segments {{qos}}/{{tenant}}/{{namespace}}/{{queue}}, found {}",
                parts.len()
            )));
        }
        let qos = match parts[0] {
            "q0" => Qos::AtMostOnce,
            "q1" => Qos::AtLeastOnce,
            "q2" => Qos::ExactlyOnce,
            other => return Err(err(format!("qos segment {other:?} must be one of q0, q1, q2"))),
        };
        Topic::new(qos, parts[1], parts[2], parts[3]).map_err(|e| match e {
            Error::InvalidTopic { reason, .. } => err(reason),
            other => other,
        })
    }
}

impl TryFrom<&str> for Topic {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        s.parse()
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({})", self.raw)
    }
}

/// Builds a [`Topic`] from parts; see [`Topic::builder`].
#[derive(Debug, Clone)]
pub struct TopicBuilder {
    qos: Qos,
    tenant: String,
    namespace: String,
    queue: String,
}

impl TopicBuilder {
    /// Sets the quality of service (default `q1`).
    pub fn qos(mut self, qos: Qos) -> Self {
        self.qos = qos;
        self
    }

    /// Sets the tenant (default `tg`).
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = tenant.into();
        self
    }

    /// Sets the namespace (default `flow`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Validates and builds the topic.
    pub fn build(self) -> Result<Topic> {
        Topic::new(self.qos, &self.tenant, &self.namespace, &self.queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_seed_examples() {
        for s in [
            "q1/tg/flow/text-completion-requests",
            "q2/tg/config/config-push",
            "q0/tg/metrics/stats",
        ] {
            let t: Topic = s.parse().unwrap();
            assert_eq!(t.to_string(), s);
        }
        let t: Topic = "q2/tg/config/config-push".parse().unwrap();
        assert_eq!(
            (t.qos(), t.tenant(), t.namespace(), t.queue()),
            (Qos::ExactlyOnce, "tg", "config", "config-push")
        );
        assert_eq!(t.joined("."), "tg.config.config-push");
    }

    #[test]
    fn errors_name_the_segment_and_character() {
        let cases = [
            ("q1/tg/flow", "expected 4 segments"),
            ("q1/tg/flow/a/b", "expected 4 segments"),
            ("q3/tg/flow/x", "qos segment \"q3\""),
            ("q1//flow/x", "tenant segment is empty"),
            ("q1/tg//x", "namespace segment is empty"),
            ("q1/tg/flow/", "queue segment is empty"),
            ("q1/t.g/flow/x", "tenant segment \"t.g\" contains '.'"),
            ("q1/tg/fl ow/x", "namespace segment \"fl ow\" contains ' '"),
            ("q1/tg/flow/é", "queue segment \"é\" contains 'é'"),
        ];
        for (input, expected) in cases {
            let err = input.parse::<Topic>().unwrap_err();
            assert!(matches!(err, Error::InvalidTopic { .. }), "{input}: {err:?}");
            assert!(err.to_string().contains(expected), "{input}: {err} lacks {expected}");
        }
        let long = format!("q1/tg/flow/{}", "a".repeat(MAX_SEGMENT_LEN + 1));
        assert!(long.parse::<Topic>().unwrap_err().to_string().contains("at most 80"));
    }

    #[test]
    fn builder_defaults_follow_the_seed() {
        let t = Topic::builder("config")
            .qos(Qos::ExactlyOnce)
            .namespace("config")
            .build()
            .unwrap();
        assert_eq!(t.as_str(), "q2/tg/config/config");
        assert_eq!(t.with_qos(Qos::AtMostOnce).as_str(), "q0/tg/config/config");
        assert!(Topic::builder("bad/queue").build().is_err());
    }

    fn segment() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-]{1,80}"
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(q in 0u8..3, t in segment(), n in segment(), x in segment()) {
            let qos = [Qos::AtMostOnce, Qos::AtLeastOnce, Qos::ExactlyOnce][q as usize];
            let topic = Topic::new(qos, &t, &n, &x).unwrap();
            let parsed: Topic = topic.to_string().parse().unwrap();
            prop_assert_eq!(&parsed, &topic);
            prop_assert_eq!(parsed.tenant(), t.as_str());
            prop_assert_eq!(parsed.namespace(), n.as_str());
            prop_assert_eq!(parsed.queue(), x.as_str());
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,200}") {
            if let Ok(t) = s.parse::<Topic>() {
                prop_assert_eq!(t.to_string(), s);
            }
        }

        #[test]
        fn mappings_are_injective(a in segment(), b in segment(), c in segment(), d in segment()) {
            let t1 = Topic::new(Qos::AtLeastOnce, &a, &b, "q").unwrap();
            let t2 = Topic::new(Qos::AtLeastOnce, &c, &d, "q").unwrap();
            prop_assert_eq!(t1 == t2, t1.joined(".") == t2.joined("."));
        }
    }
}
