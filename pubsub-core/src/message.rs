//! Outgoing and received messages, their ids, properties and ack handles.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::ident::{allowed_list, check_ident, IdentError};
use crate::topic::Topic;

/// String properties (headers) of a message, ordered by name.
pub type Properties = BTreeMap<String, String>;

/// Longest property name accepted.
pub const MAX_PROPERTY_NAME_LEN: usize = 256;

/// Property names starting with this are reserved for the SDK itself
/// (e.g. `pubsub.key` on backends without a native key).
pub const RESERVED_PROPERTY_PREFIX: &str = "pubsub.";

/// The property the codecs write the payload's content type into.
pub const CONTENT_TYPE_PROPERTY: &str = "content-type";

/// Checks a message key against the rules every backend can carry: no
/// control characters, no whitespace at either end.
///
/// ```
/// assert!(pubsub_core::validate_key("order-42").is_ok());
/// assert!(pubsub_core::validate_key(" padded").is_err());
/// ```
pub fn validate_key(key: &str) -> Result<()> {
    if key.chars().any(|c| c.is_control()) {
        return Err(Error::InvalidProperty {
            name: "key".into(),
            reason: "the key contains a control character".into(),
        });
    }
    if let Some(reason) = surrounding_whitespace(key) {
        return Err(Error::InvalidProperty {
            name: "key".into(),
            reason: format!("the key {reason}"),
        });
    }
    Ok(())
}

/// Checks one property: the name is 1 to [`MAX_PROPERTY_NAME_LEN`] bytes of
/// `[A-Za-z0-9_.-]` and does not start with [`RESERVED_PROPERTY_PREFIX`]; the
/// value has no control characters other than tab and does not begin or end
/// with whitespace.
///
/// This is the strictest rule among the backends (NATS and HTTP-style
/// headers cannot carry line breaks, and NATS trims whitespace around a
/// header value, so `" x "` would arrive as `"x"`), applied everywhere so
/// that a message that works on one backend works on all of them.
pub fn validate_property(name: &str, value: &str) -> Result<()> {
    let err = |reason: String| Error::InvalidProperty {
        name: name.to_string(),
        reason,
    };
    const EXTRA: &[char] = &['-', '_', '.'];
    match check_ident(name, MAX_PROPERTY_NAME_LEN, EXTRA) {
        Ok(()) => {}
        Err(IdentError::Empty) => return Err(err("the name is empty".into())),
        Err(IdentError::TooLong) => return Err(err(format!("the name is longer than {MAX_PROPERTY_NAME_LEN} bytes"))),
        Err(IdentError::BadChar(bad)) => {
            return Err(err(format!(
                "the name contains {bad:?}; only {} are allowed",
                allowed_list(EXTRA)
            )))
        }
    }
    if name.starts_with(RESERVED_PROPERTY_PREFIX) {
        return Err(err(format!(
            "names starting with {RESERVED_PROPERTY_PREFIX:?} are reserved"
        )));
    }
    if let Some(bad) = value.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(err(format!("the value contains the control character {bad:?}")));
    }
    if let Some(reason) = surrounding_whitespace(value) {
        return Err(err(format!("the value {reason}")));
    }
    Ok(())
}

/// Why a value with leading or trailing whitespace is refused, if it has
/// any: some brokers (NATS headers) trim it, so it could not arrive unchanged
/// everywhere.
fn surrounding_whitespace(value: &str) -> Option<String> {
    let at = |c: Option<char>| c.filter(|c| c.is_whitespace());
    if let Some(c) = at(value.chars().next()) {
        return Some(format!("begins with the whitespace {c:?}, which some brokers trim"));
    }
    at(value.chars().next_back()).map(|c| format!("ends with the whitespace {c:?}, which some brokers trim"))
}

/// A message to send: payload bytes plus optional properties, key,
/// de-duplication id and delivery delay.
///
/// ```
/// use std::time::Duration;
/// use pubsub_core::OutgoingMessage;
///
/// let msg = OutgoingMessage::new("hello")
///     .with_property("trace-id", "abc")
///     .with_key("user-42")
///     .with_dedup_id("order-1001")
///     .with_deliver_after(Duration::from_secs(5));
/// assert_eq!(msg.payload.as_ref(), b"hello");
/// assert_eq!(msg.properties["trace-id"], "abc");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutgoingMessage {
    /// The payload, opaque bytes (may be empty).
    pub payload: Bytes,
    /// String properties; see [`validate_property`] for the rules.
    pub properties: Properties,
    /// Ordering / routing key: messages with the same key keep their order
    /// and go to the same `KeyShared` consumer.
    pub key: Option<String>,
    /// On `q2` topics, a second send with the same id within the backend's
    /// de-duplication window is dropped (and returns the first send's id).
    pub dedup_id: Option<String>,
    /// Deliver no earlier than this long after sending.
    pub deliver_after: Option<Duration>,
}

impl OutgoingMessage {
    /// A message with this payload and nothing else.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        OutgoingMessage {
            payload: payload.into(),
            ..Default::default()
        }
    }

    /// Adds a property (validated when sent).
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the de-duplication id.
    pub fn with_dedup_id(mut self, id: impl Into<String>) -> Self {
        self.dedup_id = Some(id.into());
        self
    }

    /// Delays delivery.
    pub fn with_deliver_after(mut self, delay: Duration) -> Self {
        self.deliver_after = Some(delay);
        self
    }

    /// Checks properties, key, dedup id and payload size against the rules
    /// and a backend's payload limit. Every adapter calls this before sending.
    pub fn validate(&self, max_payload: Option<usize>) -> Result<()> {
        for (name, value) in &self.properties {
            if name == CONTENT_TYPE_PROPERTY {
                // Written by the codecs; its value is still checked.
                validate_property("content-type-value", value)?;
                continue;
            }
            validate_property(name, value)?;
        }
        if let Some(key) = &self.key {
            validate_key(key)?;
        }
        if let Some(id) = &self.dedup_id {
            if id.is_empty() || id.chars().any(|c| c.is_control()) {
                return Err(Error::InvalidProperty {
                    name: "dedup_id".into(),
                    reason: "the dedup id is empty or contains a control character".into(),
                });
            }
            if let Some(reason) = surrounding_whitespace(id) {
                return Err(Error::InvalidProperty {
                    name: "dedup_id".into(),
                    reason: format!("the dedup id {reason}"),
                });
            }
        }
        if let Some(max) = max_payload {
            if self.payload.len() > max {
                return Err(Error::PayloadTooLarge {
                    size: self.payload.len(),
                    max,
                });
            }
        }
        Ok(())
    }
}

/// An opaque, printable message id, as the backend assigned it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(IdRepr);

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum IdRepr {
    Seq(u64),
    Text(Arc<str>),
}

impl MessageId {
    /// An id that is a sequence number (the embedded log's offset).
    pub fn from_seq(seq: u64) -> Self {
        MessageId(IdRepr::Seq(seq))
    }

    /// An id in the backend's own textual form.
    pub fn from_text(text: impl Into<Arc<str>>) -> Self {
        MessageId(IdRepr::Text(text.into()))
    }

    /// The sequence number, for ids made by [`MessageId::from_seq`].
    pub fn as_seq(&self) -> Option<u64> {
        match &self.0 {
            IdRepr::Seq(n) => Some(*n),
            IdRepr::Text(t) => t.parse().ok(),
        }
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            IdRepr::Seq(n) => write!(f, "{n}"),
            IdRepr::Text(t) => f.write_str(t),
        }
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// What a backend puts behind a received message so it can be acked from
/// anywhere, including another task. Implemented by adapters.
#[async_trait]
pub trait AckTarget: Send + Sync + fmt::Debug + 'static {
    /// Acknowledges the message. Acking twice is harmless.
    async fn ack(&self) -> Result<()>;
    /// Asks for redelivery, after `delay` if given (else the consumer's
    /// `nack_redelivery_delay`).
    async fn nack(&self, delay: Option<Duration>) -> Result<()>;

    /// Tells the broker the message is still being worked on, so its ack
    /// timeout starts again instead of redelivering it (JetStream's
    /// `+WPI`). Wrappers pass it to the target they wrap; an adapter
    /// without such a signal answers [`Error::Unsupported`] (the default).
    async fn in_progress(&self) -> Result<()> {
        match self.wrapped() {
            Some(inner) => inner.in_progress().await,
            None => Err(Error::unsupported(
                "this backend",
                "extending a message's ack timeout (in progress)",
            )),
        }
    }

    /// The target this one wraps, for wrappers (such as the one
    /// [`UnackedLimit`](crate::UnackedLimit) puts around held messages), so
    /// [`ack_all_with`](crate::ack_all_with) can find the adapter's own
    /// target inside. `None` (the default) for an adapter's target.
    fn wrapped(&self) -> Option<&dyn AckTarget> {
        None
    }

    /// This target as [`Any`], for an adapter's
    /// [`Consumer::ack_all`](crate::Consumer::ack_all) to recognise its own
    /// targets. `None` (the default) leaves the message to its own `ack`.
    fn as_any(&self) -> Option<&dyn Any> {
        None
    }

    /// Tells a wrapper that the message was acked by a batch ack that went
    /// around [`AckTarget::ack`]; wrappers release what they hold for it.
    /// Does nothing by default.
    fn batch_acked(&self) {}
}

/// An ack target for messages that need none (q0): every call succeeds.
#[derive(Debug, Default)]
pub struct NoAck;

#[async_trait]
impl AckTarget for NoAck {
    async fn ack(&self) -> Result<()> {
        Ok(())
    }
    async fn nack(&self, _delay: Option<Duration>) -> Result<()> {
        Ok(())
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}

/// A received message.
///
/// Cloning is cheap; all clones share one ack handle, so a message can be
/// handed to a worker task and acked there with [`Message::ack`].
#[derive(Clone)]
pub struct Message {
    id: MessageId,
    topic: Topic,
    payload: Bytes,
    properties: Properties,
    key: Option<String>,
    publish_time: SystemTime,
    redelivery_count: u32,
    ack: Arc<dyn AckTarget>,
}

/// The parts of a [`Message`], for adapters building one.
///
/// Build it as `MessageParts { payload, ..MessageParts::new(id, topic) }`.
#[derive(Debug, Clone)]
pub struct MessageParts {
    /// The backend's id.
    pub id: MessageId,
    /// The topic it came from.
    pub topic: Topic,
    /// Payload bytes.
    pub payload: Bytes,
    /// Properties.
    pub properties: Properties,
    /// Key, if any.
    pub key: Option<String>,
    /// When the broker accepted it.
    pub publish_time: SystemTime,
    /// 0 on first delivery, then 1, 2, ...
    pub redelivery_count: u32,
}

impl MessageParts {
    /// Parts with an empty payload, no properties or key, published now.
    pub fn new(id: MessageId, topic: Topic) -> Self {
        MessageParts {
            id,
            topic,
            payload: Bytes::new(),
            properties: Properties::new(),
            key: None,
            publish_time: SystemTime::now(),
            redelivery_count: 0,
        }
    }
}

impl Message {
    /// Builds a message; `ack` is what [`Message::ack`] and [`Message::nack`] call.
    pub fn new(parts: MessageParts, ack: Arc<dyn AckTarget>) -> Self {
        Message {
            id: parts.id,
            topic: parts.topic,
            payload: parts.payload,
            properties: parts.properties,
            key: parts.key,
            publish_time: parts.publish_time,
            redelivery_count: parts.redelivery_count,
            ack,
        }
    }

    /// The same message with its ack target replaced by `wrap(target)`.
    pub(crate) fn map_ack(mut self, wrap: impl FnOnce(Arc<dyn AckTarget>) -> Arc<dyn AckTarget>) -> Self {
        self.ack = wrap(self.ack);
        self
    }

    /// The backend's id for this message.
    pub fn id(&self) -> &MessageId {
        &self.id
    }
    /// The topic it was received from.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }
    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }
    /// The properties.
    pub fn properties(&self) -> &Properties {
        &self.properties
    }
    /// One property.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str)
    }
    /// The key, if one was sent.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
    /// When the broker accepted the message.
    pub fn publish_time(&self) -> SystemTime {
        self.publish_time
    }
    /// How often it was delivered before (0 on first delivery).
    pub fn redelivery_count(&self) -> u32 {
        self.redelivery_count
    }
    /// The payload's content type, as written by the codec that encoded it.
    pub fn content_type(&self) -> Option<&str> {
        self.property(CONTENT_TYPE_PROPERTY)
    }

    /// Acknowledges the message (the seed's `acknowledge`). Acking twice is harmless.
    pub async fn ack(&self) -> Result<()> {
        self.ack.ack().await
    }

    /// The adapter's own ack target of this message if it is a `T`,
    /// looking through wrappers ([`AckTarget::wrapped`]).
    pub(crate) fn ack_target_as<T: 'static>(&self) -> Option<&T> {
        let mut target: &dyn AckTarget = &*self.ack;
        while let Some(inner) = target.wrapped() {
            target = inner;
        }
        target.as_any()?.downcast_ref::<T>()
    }

    /// Tells every wrapper of the ack target that a batch ack acked the message.
    pub(crate) fn mark_batch_acked(&self) {
        let mut target: Option<&dyn AckTarget> = Some(&*self.ack);
        while let Some(t) = target {
            t.batch_acked();
            target = t.wrapped();
        }
    }

    /// Asks for redelivery after the consumer's configured delay (the seed's
    /// `negative_acknowledge`).
    pub async fn nack(&self) -> Result<()> {
        self.ack.nack(None).await
    }

    /// Asks for redelivery after `delay`.
    pub async fn nack_after(&self, delay: Duration) -> Result<()> {
        self.ack.nack(Some(delay)).await
    }

    /// Restarts the message's ack timeout where the backend can (NATS
    /// JetStream), so a handler that holds or works on it for longer than
    /// the timeout is not raced by a redelivery of it; elsewhere
    /// [`Error::Unsupported`]. Call it more often than the ack timeout.
    pub async fn in_progress(&self) -> Result<()> {
        self.ack.in_progress().await
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("topic", &self.topic)
            .field("payload_len", &self.payload.len())
            .field("properties", &self.properties)
            .field("key", &self.key)
            .field("redelivery_count", &self.redelivery_count)
            .finish()
    }
}

/// Unwraps the result of an operation that must report [`Error::Closed`] for
/// a closed handle; a helper for adapters.
pub fn ensure_open(closed: bool, what: &'static str) -> Result<()> {
    if closed {
        Err(Error::Closed(what))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target that counts `in_progress` calls, and one wrapping it.
    #[derive(Debug, Default)]
    struct Extends(std::sync::atomic::AtomicUsize);

    #[async_trait]
    impl AckTarget for Extends {
        async fn ack(&self) -> Result<()> {
            Ok(())
        }
        async fn nack(&self, _delay: Option<Duration>) -> Result<()> {
            Ok(())
        }
        async fn in_progress(&self) -> Result<()> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    #[derive(Debug)]
    struct Wrapper(Arc<Extends>);

    #[async_trait]
    impl AckTarget for Wrapper {
        async fn ack(&self) -> Result<()> {
            self.0.ack().await
        }
        async fn nack(&self, delay: Option<Duration>) -> Result<()> {
            self.0.nack(delay).await
        }
        fn wrapped(&self) -> Option<&dyn AckTarget> {
            Some(&*self.0)
        }
    }

    #[test]
    fn in_progress_reaches_the_adapter_through_wrappers_or_is_unsupported() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let topic: Topic = "q1/t/n/x".parse().unwrap();
        let parts = || MessageParts::new(MessageId::from_seq(1), topic.clone());
        let plain = Message::new(parts(), Arc::new(NoAck));
        assert!(matches!(
            rt.block_on(plain.in_progress()),
            Err(Error::Unsupported { .. })
        ));
        let inner = Arc::new(Extends::default());
        let wrapped = Message::new(parts(), Arc::new(Wrapper(inner.clone())));
        rt.block_on(wrapped.in_progress()).unwrap();
        assert_eq!(inner.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn property_rules() {
        validate_property("trace-id", "a\tb").unwrap();
        validate_property("x.y_z-1", "").unwrap();
        let bad = [
            ("", "v"),
            ("a b", "v"),
            ("a:b", "v"),
            ("pubsub.key", "v"),
            ("ok", "line\nbreak"),
            ("ok", "nul\0"),
            ("ok", " x"),
            ("ok", "x "),
            ("ok", "\tx"),
            ("ok", " "),
            ("ok", "x\u{a0}"),
        ];
        for (n, v) in bad {
            assert!(
                matches!(validate_property(n, v), Err(Error::InvalidProperty { .. })),
                "{n:?}={v:?}"
            );
        }
    }

    #[test]
    fn outgoing_validation() {
        let m = OutgoingMessage::new(vec![0u8; 10]).with_property("a", "b");
        m.validate(Some(10)).unwrap();
        assert!(matches!(
            m.validate(Some(9)),
            Err(Error::PayloadTooLarge { size: 10, max: 9 })
        ));
        assert!(OutgoingMessage::new("x").with_key("a\nb").validate(None).is_err());
        assert!(OutgoingMessage::new("x").with_dedup_id("").validate(None).is_err());
        assert!(OutgoingMessage::new("x").with_key(" k").validate(None).is_err());
        assert!(OutgoingMessage::new("x").with_dedup_id("d ").validate(None).is_err());
        OutgoingMessage::new("x")
            .with_key("a b")
            .with_property("v", "a \t b")
            .validate(None)
            .unwrap();
        OutgoingMessage::new("x")
            .with_property(CONTENT_TYPE_PROPERTY, "application/json")
            .validate(None)
            .unwrap();
    }

    #[test]
    fn ids_print_and_parse() {
        assert_eq!(MessageId::from_seq(42).to_string(), "42");
        assert_eq!(MessageId::from_seq(42).as_seq(), Some(42));
        assert_eq!(MessageId::from_text("1-0").to_string(), "1-0");
        assert_eq!(MessageId::from_text("x").as_seq(), None);
    }
}
