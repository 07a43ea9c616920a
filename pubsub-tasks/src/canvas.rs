//! Signatures and the workflows built from them: chain, group, chord.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A task call that can be sent later or inside a workflow: name,
/// arguments, and where and when to run it. Its id is chosen when it is
/// made, so a workflow's results can be waited for before it runs.
///
/// ```
/// use pubsub_tasks::Signature;
/// let step = Signature::new("add", (1, 2)).unwrap();
/// assert_eq!(step.args, serde_json::json!([1, 2]));
/// let next = Signature::partial("add", (10,)).unwrap(); // gets step's result first
/// assert!(!next.immutable);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    /// The task id it will run under.
    pub id: String,
    /// The registered task name.
    pub name: String,
    /// Its arguments (a JSON array for positional arguments).
    pub args: Value,
    /// The queue topic (`None`: the sender's default queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Delay before it may run, in milliseconds, from when it is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub countdown_ms: Option<u64>,
    /// In a chain: ignore the previous step's result (Celery's `si`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub immutable: bool,
}

impl Signature {
    /// A call of `name` with `args` (a tuple serializes as a JSON array).
    pub fn new(name: impl Into<String>, args: impl Serialize) -> crate::Result<Self> {
        let args = serde_json::to_value(args).map_err(|e| crate::Error::Invalid(format!("arguments: {e}")))?;
        Ok(Signature {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.into(),
            args,
            queue: None,
            countdown_ms: None,
            immutable: false,
        })
    }

    /// A chain step whose first argument will be the previous step's
    /// result, followed by `args` (`()` for none).
    pub fn partial(name: impl Into<String>, args: impl Serialize) -> crate::Result<Self> {
        Self::new(name, args)
    }

    /// Ignores the previous step's result in a chain.
    pub fn immutable(mut self) -> Self {
        self.immutable = true;
        self
    }

    /// Runs on this queue topic instead of the sender's default.
    pub fn on_queue(mut self, topic: &pubsub_core::Topic) -> Self {
        self.queue = Some(topic.to_string());
        self
    }

    /// Waits `delay` after being sent before it may run.
    pub fn with_countdown(mut self, delay: Duration) -> Self {
        self.countdown_ms = Some(delay.as_millis() as u64);
        self
    }

    /// Runs under this id instead of a fresh one.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Its arguments with `first` put in front: a JSON array gets it as
    /// element 0; `null` (no arguments) becomes `[first]`; any other value
    /// `[first, value]`. Immutable signatures keep their arguments.
    pub(crate) fn args_after(&self, first: Value) -> Value {
        if self.immutable {
            return self.args.clone();
        }
        match &self.args {
            Value::Array(rest) => {
                let mut all = Vec::with_capacity(rest.len() + 1);
                all.push(first);
                all.extend(rest.iter().cloned());
                Value::Array(all)
            }
            Value::Null => Value::Array(vec![first]),
            other => Value::Array(vec![first, other.clone()]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_parent_result_comes_first() {
        let s = Signature::partial("add", (10,)).unwrap();
        assert_eq!(s.args_after(json!(3)), json!([3, 10]));
        assert_eq!(Signature::partial("f", ()).unwrap().args_after(json!(3)), json!([3]));
        let fixed = Signature::new("add", (1, 2)).unwrap().immutable();
        assert_eq!(fixed.args_after(json!(3)), json!([1, 2]));
    }
}
