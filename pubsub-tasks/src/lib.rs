//! Celery-class tasks on any `pubsub` backend: define a task, send it with
//! `delay` or `apply_async` (countdown, eta, expiry, a chosen id), wait for
//! its result, compose chains, groups and chords, and run them on workers
//! built on the processor runtime.
//!
//! - [`Task`]: a typed task (`NAME`, `Args`, `Output`, async `run`), or
//!   [`Worker::register_fn`] for a plain async function on JSON.
//! - [`Tasks`]: sends tasks and workflows, hands out [`AsyncResult`]s.
//! - [`Worker`]: runs registered tasks from queue topics, with retries and
//!   backoff, time limits, dead letters, revocation and graceful drain.
//! - [`ResultStore`]: where results live ([`MemoryResultStore`],
//!   [`DirResultStore`]; Redis with feature `redis`, NATS key-value with
//!   feature `nats`; [`open_result_store`] from a URL such as
//!   `PUBSUB_RESULTS`), with expiry and waiting that does not poll, and
//!   the workers' heartbeats ([`WorkerStatus`]) that `pubsub tasks
//!   inspect` reads.
//! - [`TaskMessage`]: the versioned JSON wire format.
#![warn(missing_docs)]

mod canvas;
mod client;
mod envelope;
mod error;
mod join;
mod result;
mod sender;
mod state;
mod store;
mod task;
mod worker;

pub use async_trait::async_trait;
pub use canvas::Signature;
pub use client::{SendOptions, Tasks};
pub use envelope::{ChordInfo, TaskMessage, CONTENT_TYPE, WIRE_VERSION};
pub use error::{Error, Result, TaskError};
pub use result::{AsyncResult, GroupResult};
pub use state::{RunningRecord, TaskRecord, TaskState, WorkerStatus};
#[cfg(feature = "nats")]
pub use store::NatsResultStore;
#[cfg(feature = "redis")]
pub use store::RedisResultStore;
pub use store::{
    open_result_store, result_store_from_env, DirResultStore, MemoryResultStore, ResultStore, DEFAULT_RESULT_TTL,
    RESULTS_ENV,
};
pub use task::{Task, TaskContext, TaskOptions};
pub use worker::{Inspector, RunningTask, Worker, DEFAULT_HEARTBEAT, WORKER_SUBSCRIPTION};
