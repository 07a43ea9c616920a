//! The handler loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use super::acker::Acker;
use super::handler::{Handler, HandlerError};
use super::options::{default_dead_letter_topic, ProcessorOptions};
use super::shutdown::Shutdown;
use crate::backend::{Consumer, Producer, PubSubBackend};
use crate::error::{Error, Result};
use crate::message::{validate_key, validate_property, Message, OutgoingMessage, CONTENT_TYPE_PROPERTY};
use crate::topic::Topic;

/// Property of a dead letter: why it failed (control characters replaced).
pub const DEAD_LETTER_REASON: &str = "dead-letter-reason";
/// Property of a dead letter: how many attempts were made.
pub const DEAD_LETTER_ATTEMPTS: &str = "dead-letter-attempts";
/// Property of a dead letter: the topic it came from.
pub const DEAD_LETTER_ORIGIN: &str = "dead-letter-origin";

/// What a processor did, returned when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessorReport {
    /// Messages received.
    pub received: u64,
    /// Messages handled and acked.
    pub acked: u64,
    /// Failed attempts given back for a retry.
    pub retried: u64,
    /// Messages moved to the dead-letter topic.
    pub dead_lettered: u64,
    /// Receive, ack or publish errors (each retried or left for redelivery).
    pub errors: u64,
    /// Handlers still running at the end of the grace period (their
    /// messages are redelivered).
    pub abandoned: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    acked: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    errors: AtomicU64,
}

/// Runs a [`Handler`] over a subscription until shut down; see the module docs.
pub struct Processor {
    backend: Arc<dyn PubSubBackend>,
    topic: Topic,
    subscription: String,
    options: ProcessorOptions,
    handler: Arc<dyn Handler>,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("backend", &self.backend.name())
            .field("topic", &self.topic)
            .field("subscription", &self.subscription)
            .field("options", &self.options)
            .finish()
    }
}

/// Everything a handler task needs, shared.
struct Context {
    topic: Topic,
    subscription: String,
    options: ProcessorOptions,
    handler: Arc<dyn Handler>,
    dead_letters: Box<dyn Producer>,
    counters: Counters,
}

impl Processor {
    /// A processor of `topic` on `subscription` with default options.
    pub fn new(
        backend: Arc<dyn PubSubBackend>,
        topic: Topic,
        subscription: impl Into<String>,
        handler: impl Handler,
    ) -> Self {
        Processor {
            backend,
            topic,
            subscription: subscription.into(),
            options: ProcessorOptions::default(),
            handler: Arc::new(handler),
        }
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: ProcessorOptions) -> Self {
        self.options = options;
        self
    }

    /// Runs until `shutdown` triggers: stops receiving, lets in-flight
    /// handlers finish (up to `shutdown_grace`), closes everything, and
    /// reports. Fails only if it cannot start (the dead-letter producer or
    /// the first consumer cannot be created and shutdown came first).
    pub async fn run(self, shutdown: Shutdown) -> Result<ProcessorReport> {
        let dlq_topic = self
            .options
            .dead_letter_topic
            .clone()
            .unwrap_or_else(|| default_dead_letter_topic(&self.topic));
        let dead_letters = self.backend.create_producer(&dlq_topic, Default::default()).await?;
        let ctx = Arc::new(Context {
            topic: self.topic.clone(),
            subscription: self.subscription.clone(),
            options: self.options.clone(),
            handler: self.handler.clone(),
            dead_letters,
            counters: Counters::default(),
        });
        let labels = [
            ("topic", self.topic.to_string()),
            ("subscription", self.subscription.clone()),
        ];
        let concurrency = self.options.concurrency.max(1);
        // Messages received and not yet settled: the running handlers, and
        // with `ordered_by_key` those waiting for an earlier one of their key.
        let in_flight = if self.options.ordered_by_key {
            concurrency.saturating_mul(KEY_QUEUE_FACTOR)
        } else {
            concurrency
        };
        let permits = Arc::new(Semaphore::new(in_flight));
        let running = Arc::new(Semaphore::new(concurrency));
        let key_chains = Arc::new(KeyChains::default());
        let mut tasks = JoinSet::new();
        let mut next_start = Instant::now();
        let mut consumer = match self.connect(&ctx, &shutdown).await {
            Some(c) => c,
            None => return Ok(self.finish(ctx, tasks, None).await),
        };
        // Handlers' acks go out in batches through this consumer's `ack_all`.
        let (mut acker, mut acking) = Acker::start(consumer.clone());
        // Every wait below checks shutdown first (`biased`): once it is
        // signalled nothing more is received and no handler starts.
        loop {
            while tasks.try_join_next().is_some() {}
            if shutdown.is_triggered() {
                break;
            }
            let permit = tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
            };
            if let Some(rate) = self.options.rate_limit.filter(|r| *r > 0.0) {
                let now = Instant::now();
                next_start = next_start.max(now) + Duration::from_secs_f64(1.0 / rate);
                let start_at = next_start - Duration::from_secs_f64(1.0 / rate);
                tokio::select! {
                    biased;
                    _ = shutdown.wait() => break,
                    _ = tokio::time::sleep_until(start_at) => {}
                }
            }
            let received = tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                r = consumer.receive() => r,
            };
            let msg = match received {
                Ok(m) => m,
                Err(Error::Closed(_)) if shutdown.is_triggered() => break,
                Err(e) => {
                    ctx.counters.errors.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("pubsub_processor_errors_total", &labels).increment(1);
                    tracing::warn!(topic = %self.topic, error = %e, "receive failed; reconnecting");
                    let _ = consumer.close().await;
                    match self.connect(&ctx, &shutdown).await {
                        Some(c) => {
                            // The old acker finishes what it was given (on the
                            // closed consumer those acks fail: redelivered).
                            consumer = c;
                            (acker, acking) = Acker::start(consumer.clone());
                            continue;
                        }
                        None => {
                            drop(acker);
                            return Ok(self.finish(ctx, tasks, None).await);
                        }
                    }
                }
            };
            if shutdown.is_triggered() {
                // It arrived with the signal: not started, left unacked, so
                // it is redelivered once the consumer closes.
                break;
            }
            ctx.counters.received.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("pubsub_processor_received_total", &labels).increment(1);
            // Joining the key's chain here, in arrival order, keeps per-key
            // order without holding up this loop or any other key.
            let turn = match (self.options.ordered_by_key, msg.key()) {
                (true, Some(key)) => Some(key_chains.join(key)),
                _ => None,
            };
            let (ctx, running, stop, acker) = (ctx.clone(), running.clone(), shutdown.clone(), acker.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let mut turn = turn;
                if let Some(turn) = turn.as_mut() {
                    tokio::select! {
                        biased;
                        _ = stop.wait() => return,
                        _ = turn.wait() => {}
                    }
                }
                let _running = tokio::select! {
                    biased;
                    _ = stop.wait() => return,
                    r = running.acquire_owned() => r.expect("semaphore is never closed"),
                };
                if stop.is_triggered() {
                    return;
                }
                handle_one(&ctx, &acker, msg).await;
                drop(turn);
            });
        }
        drop(acker);
        let report = self.finish(ctx, tasks, Some((consumer, acking))).await;
        Ok(report)
    }

    /// Creates the consumer, retrying with backoff; `None` if shut down first.
    async fn connect(&self, ctx: &Context, shutdown: &Shutdown) -> Option<Arc<dyn Consumer>> {
        let mut delay = Duration::from_millis(100);
        loop {
            let attempt = self
                .backend
                .create_consumer(&self.topic, &self.subscription, self.options.consumer.clone());
            let result = tokio::select! {
                _ = shutdown.wait() => return None,
                r = attempt => r,
            };
            match result {
                Ok(c) => return Some(Arc::from(c)),
                Err(e) if !e.is_retriable() => {
                    tracing::error!(topic = %self.topic, error = %e, "cannot create the consumer; not retrying");
                    shutdown.trigger();
                    return None;
                }
                Err(e) => {
                    ctx.counters.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(topic = %self.topic, error = %e, retry_in = ?delay, "cannot create the consumer; retrying");
                    tokio::select! {
                        _ = shutdown.wait() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(self.options.max_reconnect_delay);
                }
            }
        }
    }

    /// Lets in-flight handlers finish (bounded), closes, and reports.
    async fn finish(
        &self,
        ctx: Arc<Context>,
        mut tasks: JoinSet<()>,
        consumer: Option<(Arc<dyn Consumer>, JoinHandle<()>)>,
    ) -> ProcessorReport {
        let drained = tokio::time::timeout(self.options.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        let abandoned = tasks.len() as u64;
        if drained.is_err() {
            tracing::warn!(topic = %self.topic, abandoned, "handlers still running after the grace period; their messages will be redelivered");
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        if let Some((c, acking)) = consumer {
            // Every handler is done, so the acker has only its last batch
            // left (or, after an abort, acks nobody waits for).
            if tokio::time::timeout(self.options.shutdown_grace, acking).await.is_err() {
                tracing::warn!(topic = %self.topic, "acks still pending after the grace period; those messages will be redelivered");
            }
            if let Err(e) = c.close().await {
                tracing::warn!(topic = %self.topic, error = %e, "closing the consumer");
            }
        }
        if let Err(e) = ctx.dead_letters.close().await {
            tracing::warn!(topic = %self.topic, error = %e, "closing the dead-letter producer");
        }
        let c = &ctx.counters;
        ProcessorReport {
            received: c.received.load(Ordering::Relaxed),
            acked: c.acked.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            abandoned,
        }
    }
}

async fn handle_one(ctx: &Context, acker: &Acker, msg: Message) {
    let attempt = msg.redelivery_count().saturating_add(1);
    let labels = [
        ("topic", ctx.topic.to_string()),
        ("subscription", ctx.subscription.clone()),
    ];
    let span = tracing::info_span!(
        "pubsub.handle",
        topic = %ctx.topic,
        subscription = %ctx.subscription,
        message_id = %msg.id(),
        attempt
    );
    async {
        let started = Instant::now();
        let outcome = match ctx.options.handler_timeout {
            Some(t) => tokio::time::timeout(t, ctx.handler.handle(msg.clone()))
                .await
                .unwrap_or_else(|_| Err(HandlerError::retry(format!("handler timed out after {t:?}")))),
            None => ctx.handler.handle(msg.clone()).await,
        };
        metrics::histogram!("pubsub_processor_handle_seconds", &labels).record(started.elapsed().as_secs_f64());
        let settled = match &outcome {
            Ok(()) => acker.ack(msg.clone()).await.map(|_| "acked"),
            Err(e @ HandlerError::Fatal(_)) => dead_letter(ctx, &msg, e, attempt).await.map_err(Arc::new),
            Err(e) if attempt >= ctx.options.max_attempts => dead_letter(ctx, &msg, e, attempt).await.map_err(Arc::new),
            Err(e) => {
                tracing::debug!(error = %e, "handler failed; retrying later");
                msg.nack_after(ctx.options.backoff.delay(attempt))
                    .await
                    .map(|_| "retried")
                    .map_err(Arc::new)
            }
        };
        match settled {
            Ok(what) => {
                let counter = match what {
                    "acked" => &ctx.counters.acked,
                    "retried" => &ctx.counters.retried,
                    _ => &ctx.counters.dead_lettered,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let name = match what {
                    "acked" => "pubsub_processor_acked_total",
                    "retried" => "pubsub_processor_retried_total",
                    _ => "pubsub_processor_dead_lettered_total",
                };
                metrics::counter!(name, &labels).increment(1);
            }
            Err(e) => {
                ctx.counters.errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("pubsub_processor_errors_total", &labels).increment(1);
                tracing::warn!(error = %e, "settling a message failed; it will be redelivered");
            }
        }
    }
    .instrument(span)
    .await
}

/// Publishes the message with the error to the dead-letter topic, then acks
/// it; if publishing fails the message is nacked (and comes back).
async fn dead_letter(ctx: &Context, msg: &Message, error: &HandlerError, attempt: u32) -> Result<&'static str> {
    let mut letter = OutgoingMessage::new(msg.payload().clone());
    // What another client sent may break our property rules (a padded
    // value, say): such a property or key does not travel, or the dead
    // letter would be refused and the message retried forever.
    letter.properties = msg
        .properties()
        .iter()
        .filter(|(name, value)| name.as_str() == CONTENT_TYPE_PROPERTY || validate_property(name, value).is_ok())
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    letter.key = msg.key().filter(|k| validate_key(k).is_ok()).map(str::to_string);
    let reason: String = error
        .reason()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1000)
        .collect();
    letter
        .properties
        .insert(DEAD_LETTER_REASON.into(), reason.trim().to_string());
    letter
        .properties
        .insert(DEAD_LETTER_ATTEMPTS.into(), attempt.to_string());
    letter
        .properties
        .insert(DEAD_LETTER_ORIGIN.into(), ctx.topic.to_string());
    match ctx.dead_letters.send(letter).await {
        Ok(_) => {
            tracing::warn!(error = %error, attempt, "message dead-lettered");
            msg.ack().await.map(|_| "dead-lettered")
        }
        Err(e) => {
            let _ = msg.nack_after(ctx.options.backoff.delay(attempt)).await;
            Err(e)
        }
    }
}

/// With `ordered_by_key`, how many messages per unit of concurrency may be
/// received and waiting for an earlier message of their key. A slow key
/// holds up other keys only once this many of its messages are waiting.
const KEY_QUEUE_FACTOR: usize = 4;

/// Per-key chains for `ordered_by_key`: each message of a key waits for
/// the one received before it, and for nothing else.
#[derive(Default)]
struct KeyChains {
    /// The newest message of each key with one in flight: its number, and
    /// what resolves when it is done (its sender dropped).
    tails: std::sync::Mutex<HashMap<String, (u64, oneshot::Receiver<()>)>>,
    next: AtomicU64,
}

/// One message's place in its key's chain.
struct KeyTurn {
    chains: Arc<KeyChains>,
    key: String,
    seq: u64,
    /// Resolves when the previous message of the key is done.
    before: Option<oneshot::Receiver<()>>,
    /// Dropped when this message is done, which lets the next one go.
    _done: oneshot::Sender<()>,
}

impl KeyChains {
    /// Appends a message of `key` to its chain.
    fn join(self: &Arc<Self>, key: &str) -> KeyTurn {
        let (done, rx) = oneshot::channel();
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let before = self
            .tails
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), (seq, rx))
            .map(|(_, rx)| rx);
        KeyTurn {
            chains: self.clone(),
            key: key.to_string(),
            seq,
            before,
            _done: done,
        }
    }
}

impl KeyTurn {
    /// Waits until the previous message of the key is done.
    async fn wait(&mut self) {
        if let Some(before) = self.before.take() {
            let _ = before.await;
        }
    }
}

impl Drop for KeyTurn {
    fn drop(&mut self) {
        // The last of its key: forget the key, so the map holds only keys in flight.
        let mut tails = self.chains.tails.lock().unwrap_or_else(|e| e.into_inner());
        if tails.get(&self.key).is_some_and(|(seq, _)| *seq == self.seq) {
            tails.remove(&self.key);
        }
    }
}
