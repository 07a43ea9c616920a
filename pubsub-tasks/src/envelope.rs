//! The wire format of a task message: versioned JSON, so a service in
//! another language can enqueue a task (see the README's "Tasks" section).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canvas::Signature;

/// The envelope version this crate writes; it reads only this one.
pub const WIRE_VERSION: u32 = 1;

/// Content type of a task message.
pub const CONTENT_TYPE: &str = "application/vnd.pubsub.task.v1+json";

/// One task to run, as it travels on a queue topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskMessage {
    /// [`WIRE_VERSION`].
    pub v: u32,
    /// The task id: the key of its result.
    pub id: String,
    /// The registered task name.
    pub name: String,
    /// Positional arguments: a JSON array (a Rust tuple or `Vec`), or any
    /// JSON value for a task whose `Args` is not a sequence.
    pub args: Value,
    /// Keyword arguments, for tasks written in other languages; Rust tasks
    /// receive them only through [`TaskContext::kwargs`](crate::TaskContext::kwargs).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub kwargs: serde_json::Map<String, Value>,
    /// Attempts made before this one.
    #[serde(default)]
    pub retries: u32,
    /// Not before this time (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<u64>,
    /// Not after this time (Unix milliseconds): a task still queued then is
    /// revoked instead of run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// The task whose result started this one (a chain's previous step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// The first task of the workflow this one belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_id: Option<String>,
    /// What runs after this task succeeds, in order: the next chain step
    /// gets this task's result as its first argument and the rest as its
    /// own callbacks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callbacks: Vec<Signature>,
    /// Set on the members of a chord.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chord: Option<ChordInfo>,
}

/// A chord member's link to the chord: when every member has succeeded,
/// `callback` runs with their results in member order. The members' ids
/// are in the result store under the chord's id, not in each message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChordInfo {
    /// The chord's id (the key of its join state and member list).
    pub id: String,
    /// This member's place in the chord, from 0.
    pub index: usize,
    /// How many members the chord has.
    pub size: usize,
    /// The callback, whose id is the chord's result id.
    pub callback: Signature,
}

impl TaskMessage {
    /// A first attempt of `name` with `args`, under `id`, nothing else set.
    pub fn new(id: impl Into<String>, name: impl Into<String>, args: Value) -> Self {
        TaskMessage {
            v: WIRE_VERSION,
            id: id.into(),
            name: name.into(),
            args,
            kwargs: Default::default(),
            retries: 0,
            eta: None,
            expires: None,
            parent_id: None,
            root_id: None,
            callbacks: Vec::new(),
            chord: None,
        }
    }

    /// The JSON bytes of this message.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a task message is plain JSON")
    }

    /// Parses a task message; another version or malformed JSON is a
    /// [`pubsub_core::Error::Codec`].
    pub fn from_bytes(bytes: &[u8]) -> pubsub_core::Result<Self> {
        let msg: TaskMessage = serde_json::from_slice(bytes)
            .map_err(|e| pubsub_core::Error::codec("a task message is not task JSON", e))?;
        if msg.v != WIRE_VERSION {
            return Err(pubsub_core::Error::Codec {
                message: format!("task message version {} (this worker reads {WIRE_VERSION})", msg.v),
                source: None,
            });
        }
        if let Some(chord) = msg.chord.as_ref().filter(|c| c.index >= c.size) {
            return Err(pubsub_core::Error::Codec {
                message: format!(
                    "task {}: chord member index {} is not below the chord's size {}",
                    msg.id, chord.index, chord.size
                ),
                source: None,
            });
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_fields_are_omitted_and_read_back() {
        let msg = TaskMessage::new("t1", "add", serde_json::json!([1, 2]));
        let text = String::from_utf8(msg.to_bytes()).unwrap();
        assert_eq!(text, r#"{"v":1,"id":"t1","name":"add","args":[1,2],"retries":0}"#);
        assert_eq!(TaskMessage::from_bytes(text.as_bytes()).unwrap(), msg);
        let callback = r#"{"id":"c","name":"sum","args":[]}"#;
        for (index, size, ok) in [(0, 1, true), (1, 2, true), (2, 2, false), (0, 0, false)] {
            let member = text.replace(
                r#""retries":0}"#,
                &format!(r#""retries":0,"chord":{{"id":"k","index":{index},"size":{size},"callback":{callback}}}}}"#),
            );
            assert_eq!(TaskMessage::from_bytes(member.as_bytes()).is_ok(), ok, "{member}");
        }
        let other = text.replace(r#""v":1"#, r#""v":2"#);
        assert!(matches!(
            TaskMessage::from_bytes(other.as_bytes()),
            Err(pubsub_core::Error::Codec { .. })
        ));
    }
}
