//! The redis adapter for the `pubsub` SDK, on the `redis` client library.
//!
//! **Not implemented yet**: issue #4 brings it. This crate reserves its place
//! in the workspace and exports only [`PLANNED_ISSUE`], so that the facade can
//! say which issue delivers the backend instead of pretending to support it.

/// The issue that delivers this adapter.
pub const PLANNED_ISSUE: u32 = 4;
