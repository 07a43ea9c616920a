//! The processor runtime: what a service author builds on so that they
//! write only a handler (the seed design's Consumer/Producer/Publisher/
//! Subscriber layer).
//!
//! - [`Processor`]: receives with bounded concurrency (optionally serialised
//!   per key), acks on success, nacks with exponential backoff on failure,
//!   and after `max_attempts` (or at once for a poison message) publishes
//!   the message with its properties plus error details to a dead-letter
//!   topic and acks the original. Rate limit, per-message timeout,
//!   reconnect with backoff, graceful shutdown (SIGTERM/ctrl-c or a
//!   [`Shutdown`]), metrics and tracing spans.
//! - [`Publisher`]: buffered sending with back-pressure, flushed on close.
//! - [`Subscriber`]: one consumer fanning out to local receivers by
//!   correlation id.
//! - [`Requester`] / [`respond`]: request/response over two topics.
//!
//! Metrics (through the `metrics` facade, labelled `topic` and
//! `subscription`): `pubsub_processor_received_total`,
//! `pubsub_processor_acked_total`, `pubsub_processor_retried_total`,
//! `pubsub_processor_dead_lettered_total`, `pubsub_processor_errors_total`
//! and the histogram `pubsub_processor_handle_seconds`. Each handler runs
//! in a tracing span `pubsub.handle` with `topic`, `subscription`,
//! `message_id` and `attempt`.
//!
//! ```
//! use std::sync::Arc;
//! use pubsub_core::processor::{HandlerError, Processor, ProcessorOptions, Shutdown};
//! use pubsub_core::{Message, PubSubBackend, Topic};
//!
//! # async fn demo(backend: Arc<dyn PubSubBackend>) -> pubsub_core::Result<()> {
//! let topic: Topic = "q1/tg/flow/jobs".parse()?;
//! let processor = Processor::new(backend, topic, "workers", |msg: Message| async move {
//!     let job: serde_json::Value = msg.value()?; // a payload that does not decode is dead-lettered at once
//!     if job["ok"] == false {
//!         return Err(HandlerError::retry("not yet"));
//!     }
//!     Ok(())
//! })
//! .with_options(ProcessorOptions::default().with_concurrency(16).with_max_attempts(3));
//! let report = processor.run(Shutdown::on_signals()).await?;
//! println!("{report:?}");
//! # Ok(()) }
//! ```

mod acker;
mod handler;
mod options;
mod publisher;
mod request;
mod run;
mod shutdown;
mod subscriber;

pub use handler::{Handler, HandlerError};
pub use options::{Backoff, ProcessorOptions};
pub use publisher::Publisher;
pub use request::{respond, Requester, CORRELATION_ID_PROPERTY, REPLY_TO_PROPERTY};
pub use run::{Processor, ProcessorReport, DEAD_LETTER_ATTEMPTS, DEAD_LETTER_ORIGIN, DEAD_LETTER_REASON};
pub use shutdown::Shutdown;
pub use subscriber::Subscriber;
