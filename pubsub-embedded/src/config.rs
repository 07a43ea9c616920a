//! Configuration of the embedded backend.

use std::path::PathBuf;

/// When appended records are forced to disk (data-dir mode only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// `send` returns only after the record is fsynced, and consumers see a
    /// record only once it is: a crash (even of the machine) loses no message
    /// whose `send` returned. Concurrent sends share one fsync (group commit).
    #[default]
    Always,
    /// Records are written to the OS before `send` returns but fsynced only
    /// when a segment is sealed and on close: a process crash loses nothing,
    /// a machine crash may lose the last records.
    Never,
}

/// Settings of an [`crate::EmbeddedBackend`].
///
/// ```
/// use pubsub_embedded::{EmbeddedConfig, FsyncPolicy};
///
/// let cfg = EmbeddedConfig::memory().with_retained_messages(10_000);
/// assert!(cfg.data_dir.is_none());
/// let cfg = EmbeddedConfig::data_dir("/var/lib/myservice/pubsub").with_fsync(FsyncPolicy::Always);
/// assert!(cfg.data_dir.is_some());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EmbeddedConfig {
    /// `None`: everything in memory, gone with the process. `Some(dir)`:
    /// q1/q2 topics and subscription positions are kept in `dir` and
    /// recovered on the next open.
    pub data_dir: Option<PathBuf>,
    /// When records reach the disk.
    pub fsync: FsyncPolicy,
    /// A segment file is sealed and a new one started past this size.
    pub segment_bytes: u64,
    /// Largest payload accepted.
    pub max_payload: usize,
    /// Records acknowledged by every subscription are dropped once a topic
    /// holds more than this many; unacknowledged records are never dropped.
    /// A new `Earliest` subscription starts at the oldest retained record.
    pub retained_messages: usize,
    /// How many recent dedup ids a q2 topic remembers.
    pub dedup_window: usize,
    /// How many q0 messages wait for a slow subscription before the oldest
    /// is dropped (q0 is best effort).
    pub q0_buffer: usize,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            data_dir: None,
            fsync: FsyncPolicy::Always,
            segment_bytes: 64 * 1024 * 1024,
            max_payload: 5 * 1024 * 1024,
            retained_messages: 100_000,
            dedup_window: 100_000,
            q0_buffer: 10_000,
        }
    }
}

impl EmbeddedConfig {
    /// In memory only.
    pub fn memory() -> Self {
        Self::default()
    }

    /// Persistent in `dir` (created if missing).
    pub fn data_dir(dir: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            data_dir: Some(dir.into()),
            ..Self::default()
        }
    }

    /// Sets the fsync policy.
    pub fn with_fsync(mut self, fsync: FsyncPolicy) -> Self {
        self.fsync = fsync;
        self
    }

    /// Sets the segment size.
    pub fn with_segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// Sets the payload limit.
    pub fn with_max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Sets how many acknowledged records a topic keeps.
    pub fn with_retained_messages(mut self, n: usize) -> Self {
        self.retained_messages = n;
        self
    }
}
