//! How a processor behaves.

use std::time::Duration;

use crate::options::ConsumerOptions;
use crate::topic::Topic;

/// Exponential backoff between attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Growth per attempt.
    pub factor: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
            factor: 2.0,
        }
    }
}

impl Backoff {
    /// The delay after failed attempt number `attempt` (1-based).
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = pubsub_core::processor::Backoff::default();
    /// assert_eq!(b.delay(1), Duration::from_millis(200));
    /// assert_eq!(b.delay(3), Duration::from_millis(800));
    /// assert_eq!(b.delay(100), Duration::from_secs(30));
    /// ```
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.factor.powi(attempt.saturating_sub(1).min(60) as i32);
        let secs = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        Duration::from_secs_f64(secs)
    }
}

/// Options of a [`super::Processor`]; the defaults suit most services.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProcessorOptions {
    /// Handlers running at once (default 8).
    pub concurrency: usize,
    /// Handlers for messages with the same key never run at the same time,
    /// and start in arrival order (default off). Keys order only
    /// themselves: messages without a key run concurrently, and a message
    /// waiting for its key's turn holds up no other key (up to
    /// 4 × `concurrency` messages may wait so; past that, receiving waits).
    pub ordered_by_key: bool,
    /// Attempts before a message goes to the dead-letter topic (default 5).
    pub max_attempts: u32,
    /// Delay before a failed message is retried.
    pub backoff: Backoff,
    /// Where failed messages go; default: the topic's queue + `-dlq`.
    pub dead_letter_topic: Option<Topic>,
    /// At most this many messages per second start handling (default: no limit).
    pub rate_limit: Option<f64>,
    /// A handler running longer fails with a retriable error (default: none).
    pub handler_timeout: Option<Duration>,
    /// On shutdown, how long in-flight handlers may still run (default 30 s).
    pub shutdown_grace: Duration,
    /// Longest wait between attempts to reconnect (default 30 s).
    pub max_reconnect_delay: Duration,
    /// How the consumer is created.
    pub consumer: ConsumerOptions,
}

impl Default for ProcessorOptions {
    fn default() -> Self {
        ProcessorOptions {
            concurrency: 8,
            ordered_by_key: false,
            max_attempts: 5,
            backoff: Backoff::default(),
            dead_letter_topic: None,
            rate_limit: None,
            handler_timeout: None,
            shutdown_grace: Duration::from_secs(30),
            max_reconnect_delay: Duration::from_secs(30),
            consumer: ConsumerOptions::default(),
        }
    }
}

impl ProcessorOptions {
    /// Sets the concurrency.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }
    /// Serialises handlers per key.
    pub fn ordered_by_key(mut self) -> Self {
        self.ordered_by_key = true;
        self
    }
    /// Sets the attempts before dead-lettering.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }
    /// Sets the backoff.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
    /// Sets the dead-letter topic.
    pub fn with_dead_letter_topic(mut self, topic: Topic) -> Self {
        self.dead_letter_topic = Some(topic);
        self
    }
    /// Limits messages per second.
    pub fn with_rate_limit(mut self, per_second: f64) -> Self {
        self.rate_limit = Some(per_second);
        self
    }
    /// Bounds each handler's run.
    pub fn with_handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = Some(timeout);
        self
    }
    /// Sets the shutdown grace period.
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }
    /// Sets the consumer options.
    pub fn with_consumer(mut self, consumer: ConsumerOptions) -> Self {
        self.consumer = consumer;
        self
    }
}

/// `{qos}/{tenant}/{namespace}/{queue}-dlq` (the queue cut to fit).
pub(crate) fn default_dead_letter_topic(topic: &Topic) -> Topic {
    let queue: String = topic.queue().chars().take(crate::MAX_SEGMENT_LEN - 4).collect();
    Topic::new(
        crate::Qos::AtLeastOnce,
        topic.tenant(),
        topic.namespace(),
        &format!("{queue}-dlq"),
    )
    .expect("segments of a valid topic stay valid")
}
