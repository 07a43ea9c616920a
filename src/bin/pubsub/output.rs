//! How the CLI prints messages, progress and errors.

use std::process::ExitCode;
use std::time::{Duration, Instant, UNIX_EPOCH};

use pubsub::{Error, Message};

/// Prints the error and gives the exit code for its kind.
pub fn fail(e: &Error) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(exit_code(e))
}

/// 2 for bad input, 3 for an unreachable or slow broker, 1 otherwise.
pub fn exit_code(e: &Error) -> u8 {
    match e {
        Error::InvalidTopic { .. }
        | Error::InvalidSubscription { .. }
        | Error::InvalidProperty { .. }
        | Error::InvalidConfiguration(_)
        | Error::PayloadTooLarge { .. }
        | Error::Codec { .. } => 2,
        Error::Connection { .. } | Error::Timeout(_) => 3,
        _ => 1,
    }
}

/// One message as a line: the payload (invalid UTF-8 replaced), then, after
/// a tab, the key and properties as `name=value` if there are any.
pub fn text_line(m: &Message) -> String {
    let mut line = String::from_utf8_lossy(m.payload()).into_owned();
    let mut extra: Vec<String> = m.key().map(|k| format!("key={k}")).into_iter().collect();
    extra.extend(m.properties().iter().map(|(k, v)| format!("{k}={v}")));
    if !extra.is_empty() {
        line.push('\t');
        line.push_str(&extra.join(" "));
    }
    line
}

/// One message as a JSON object. A payload that is not UTF-8 is given as
/// `payload_hex` instead of `payload`.
pub fn json_line(m: &Message) -> String {
    let mut o = serde_json::Map::new();
    o.insert("id".into(), m.id().to_string().into());
    o.insert("topic".into(), m.topic().as_str().into());
    if let Some(k) = m.key() {
        o.insert("key".into(), k.into());
    }
    let props: serde_json::Map<String, serde_json::Value> = m
        .properties()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    o.insert("properties".into(), props.into());
    match std::str::from_utf8(m.payload()) {
        Ok(s) => o.insert("payload".into(), s.into()),
        Err(_) => o.insert(
            "payload_hex".into(),
            m.payload()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into(),
        ),
    };
    let ms = m
        .publish_time()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    o.insert("publish_time_ms".into(), ms.into());
    o.insert("redelivery_count".into(), m.redelivery_count().into());
    serde_json::Value::Object(o).to_string()
}

/// Prints `"{verb} N"` on stderr at most once a second while a long
/// operation runs.
pub struct Progress {
    verb: &'static str,
    last: Instant,
}

impl Progress {
    pub fn new(verb: &'static str) -> Self {
        Progress {
            verb,
            last: Instant::now(),
        }
    }

    pub fn tick(&mut self, done: u64) {
        if self.last.elapsed() >= Duration::from_secs(1) {
            eprintln!("{} {done} ...", self.verb);
            self.last = Instant::now();
        }
    }
}
