//! The conformance suite every backend runs (feature `testkit`).
//!
//! One function per case in [`cases`]; [`conformance_tests!`] turns them
//! into one `#[tokio::test]` each for a backend factory:
//!
//! ```text
//! // tests/conformance.rs of an adapter crate
//! pubsub_core::conformance_tests!(|| async {
//!     Ok(std::sync::Arc::new(MyBackend::connect("...").await?) as std::sync::Arc<dyn pubsub_core::PubSubBackend>)
//! });
//! ```
//!
//! Cases read [`Capabilities`]: a case a backend cannot support is reported
//! as `UNSUPPORTED <backend> <case>: <why>` on stderr, and wherever an
//! operation exists to refuse (a subscription type, `Earliest`, q2,
//! `deliver_after`) the case first checks that the backend refuses it with
//! [`Error::Unsupported`]: not claiming a feature never means silently
//! misbehaving.
//!
//! A factory that cannot reach its broker makes each case print
//! `SKIPPED <case>: ...` and pass, unless `CI=true` or
//! `PUBSUB_REQUIRE_BROKERS=1`, where it fails.

mod admin_cases;
pub mod cases;
mod flow_cases;
mod processor_cases;
mod replay_cases;
pub mod sockets;

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use crate::{
    Capabilities, Consumer, ConsumerOptions, Error, Message, Producer, ProducerOptions, PubSubBackend, Qos, Topic,
};

/// How long a case waits for a message that must arrive.
pub const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(15);

/// How long one case may take before it fails as a hang, naming itself
/// (the slowest cases take about a minute on a loaded 2-core machine), so
/// a stuck case fails the run at once instead of at CI's time limit.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a case listens to conclude that a message does *not* arrive.
pub const QUIET_PERIOD: Duration = Duration::from_millis(1500);

/// What a case concluded (failures panic, with the reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check held.
    Passed,
    /// The backend does not claim the capability; the reason says which.
    Unsupported(String),
}

/// Whether a missing broker fails the run (`CI=true` or `PUBSUB_REQUIRE_BROKERS=1`).
pub fn brokers_required() -> bool {
    let set = |k: &str, v: &[&str]| {
        std::env::var(k)
            .map(|x| v.contains(&x.to_ascii_lowercase().as_str()))
            .unwrap_or(false)
    };
    set("CI", &["true", "1"]) || set("PUBSUB_REQUIRE_BROKERS", &["1", "true"])
}

/// Writes a line to the real stderr, past libtest's capture, so skipped and
/// unsupported cases show in a plain `cargo test`; and, when
/// `PUBSUB_TEST_REPORT` names a file, appends it there (nextest captures
/// whole processes, so `scripts/test.sh` prints that file after the run).
pub fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
    if let Some(path) = std::env::var_os("PUBSUB_TEST_REPORT") {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            let _ = writeln!(std::io::stderr(), "cannot append to PUBSUB_TEST_REPORT: {e}");
        }
    }
}

/// Handles a broker that is not there: a failure under CI, a printed skip otherwise.
pub fn broker_unavailable(test: &str, why: &dyn std::fmt::Display) {
    if brokers_required() {
        panic!("{test}: broker required (CI=true or PUBSUB_REQUIRE_BROKERS=1) but unavailable: {why}");
    }
    report(&format!("SKIPPED {test}: broker unavailable: {why}"));
}

/// Makes a second backend connected to the same broker, for cases that
/// need another connection (see [`Ctx::second_backend`]).
pub type SecondFactory =
    Box<dyn FnOnce() -> futures::future::BoxFuture<'static, Result<Arc<dyn PubSubBackend>, String>> + Send>;

/// Everything a case needs: the backend and names unique to this run.
pub struct Ctx {
    /// The backend under test.
    pub backend: Arc<dyn PubSubBackend>,
    /// Its capabilities.
    pub caps: Capabilities,
    run: String,
    second: std::sync::Mutex<Option<SecondFactory>>,
}

impl Ctx {
    /// A context for `backend`, with a fresh unique namespace.
    pub fn new(backend: Arc<dyn PubSubBackend>) -> Self {
        let caps = backend.capabilities().clone();
        let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        Ctx {
            backend,
            caps,
            run,
            second: std::sync::Mutex::new(None),
        }
    }

    /// The same context, able to connect a second backend to the same broker.
    pub fn with_second(self, factory: SecondFactory) -> Self {
        *self.second.lock().unwrap_or_else(|e| e.into_inner()) = Some(factory);
        self
    }

    /// Another connection to the broker under test, once per case; `None`
    /// for an in-process backend (nothing else can reach its messages).
    /// Panics if the broker cannot be reached.
    pub async fn second_backend(&self) -> Option<Arc<dyn PubSubBackend>> {
        let factory = self.second.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        Some(
            factory()
                .await
                .unwrap_or_else(|e| panic!("connecting a second backend: {e}")),
        )
    }

    /// A topic no other run uses: `{qos}/conformance/{run}/{queue}`.
    pub fn topic(&self, qos: Qos, queue: &str) -> Topic {
        Topic::new(qos, "conformance", &format!("r{}", self.run), queue).expect("valid test topic")
    }

    /// A subscription name no other run uses.
    pub fn sub(&self, name: &str) -> String {
        format!("{name}-{}", self.run)
    }

    /// A producer, or a panic naming the topic.
    pub async fn producer(&self, topic: &Topic) -> Box<dyn Producer> {
        self.backend
            .create_producer(topic, ProducerOptions::default())
            .await
            .unwrap_or_else(|e| panic!("create_producer({topic}): {e}"))
    }

    /// Makes `sub` exist (at its default initial position) by opening and
    /// closing a consumer, so what is sent next waits for it.
    pub async fn subscribe_ahead(&self, topic: &Topic, sub: &str) {
        self.consumer(topic, sub, ConsumerOptions::default())
            .await
            .close()
            .await
            .unwrap_or_else(|e| panic!("close the first consumer of {topic}, {sub}: {e}"));
    }

    /// A consumer, or a panic naming topic and subscription.
    pub async fn consumer(&self, topic: &Topic, sub: &str, opts: ConsumerOptions) -> Box<dyn Consumer> {
        self.backend
            .create_consumer(topic, sub, opts)
            .await
            .unwrap_or_else(|e| panic!("create_consumer({topic}, {sub}): {e}"))
    }
}

/// Receives exactly `n` messages (each within [`ARRIVAL_TIMEOUT`]), acking
/// each if `ack`; panics naming how many arrived.
pub async fn receive_n(consumer: &dyn Consumer, n: usize, ack: bool) -> Vec<Message> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let batch = consumer
            .receive_batch(n - got.len(), ARRIVAL_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("receive after {} of {n} messages: {e}", got.len()));
        assert!(
            !batch.is_empty(),
            "only {} of {n} messages arrived within {ARRIVAL_TIMEOUT:?}",
            got.len()
        );
        for m in batch {
            if ack {
                m.ack().await.unwrap_or_else(|e| panic!("ack {}: {e}", m.id()));
            }
            got.push(m);
        }
    }
    got
}

/// Checks that nothing arrives within [`QUIET_PERIOD`].
pub async fn expect_quiet(consumer: &dyn Consumer, why: &str) {
    match consumer.receive_timeout(QUIET_PERIOD).await {
        Err(Error::Timeout(_)) => {}
        Ok(m) => panic!("{why}: unexpected message {:?} (payload {:?})", m.id(), m.payload()),
        Err(e) => panic!("{why}: receive failed: {e}"),
    }
}

/// Runs one case against a fresh backend from `factory` and reports it.
pub async fn run_case<F, Fut, E>(case: &str, factory: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Arc<dyn PubSubBackend>, E>>,
    E: std::fmt::Display,
{
    run_case_with(
        case,
        factory,
        None::<fn() -> std::future::Ready<Result<Arc<dyn PubSubBackend>, String>>>,
    )
    .await
}

/// Like [`run_case`], with `second` making another connection to the same
/// broker for [`Ctx::second_backend`].
pub async fn run_case_with<F, Fut, E, G, GFut, GE>(case: &str, factory: F, second: Option<G>)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Arc<dyn PubSubBackend>, E>>,
    E: std::fmt::Display,
    G: FnOnce() -> GFut + Send + 'static,
    GFut: Future<Output = Result<Arc<dyn PubSubBackend>, GE>> + Send + 'static,
    GE: std::fmt::Display,
{
    let backend = match factory().await {
        Ok(b) => b,
        Err(e) => return broker_unavailable(case, &e),
    };
    let name = backend.name();
    let mut ctx = Ctx::new(backend.clone());
    if let Some(g) = second {
        use futures::FutureExt;
        ctx = ctx.with_second(Box::new(move || g().map(|r| r.map_err(|e| e.to_string())).boxed()));
    }
    let outcome = tokio::time::timeout(CASE_TIMEOUT, cases::run(case, &ctx))
        .await
        .unwrap_or_else(|_| panic!("{name} {case}: no outcome within {CASE_TIMEOUT:?}: the case hangs"));
    match outcome {
        Outcome::Passed => {}
        Outcome::Unsupported(why) => report(&format!("UNSUPPORTED {name} {case}: {why}")),
    }
    backend
        .close()
        .await
        .unwrap_or_else(|e| panic!("closing {name} after {case}: {e}"));
}

/// One `#[tokio::test]` per conformance case, for a backend factory: an
/// expression of a type `FnOnce() -> impl Future<Output = Result<Arc<dyn
/// PubSubBackend>, impl Display>>` (evaluated once per case). The calling
/// crate needs `tokio` (with `macros` and `rt-multi-thread`) as a dev-dependency.
#[macro_export]
macro_rules! conformance_tests {
    (in_process $factory:expr) => {
        $crate::__with_conformance_cases!(__conformance_tests_in_process($factory));
    };
    ($factory:expr) => {
        $crate::__with_conformance_cases!(__conformance_tests($factory));
    };
}

/// The factory is evaluated twice per case: once for the backend under
/// test, once for [`Ctx::second_backend`] (another connection to the same
/// broker). `conformance_tests!(in_process factory)` is for a backend no
/// second connection can reach (embedded).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    (($factory:expr); $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::testkit::run_case_with(stringify!($case), $factory, Some($factory)).await;
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests_in_process {
    (($factory:expr); $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::testkit::run_case(stringify!($case), $factory).await;
            }
        )*
    };
}

/// The single list of case names; both the test generator and the
/// dispatcher in [`cases::run`] are built from it.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_conformance_cases {
    ($callback:ident $args:tt) => {
        $crate::$callback! {
            $args;
            publish_subscribe_1000,
            binary_and_empty_payloads,
            order_is_preserved,
            ack_prevents_redelivery,
            nack_redelivers_with_higher_count,
            nack_with_delay,
            nack_many_concurrently_all_come_back,
            unacked_redelivered_after_close,
            close_mid_fetch_strands_nothing,
            ack_timeout_redelivers,
            in_progress_extends_ack_timeout,
            redelivery_count_survives_restart,
            unclaimed_consumer_options_are_refused,
            acks_from_other_tasks_out_of_order,
            shared_spreads_work,
            exclusive_refuses_second_consumer,
            failover_takes_over,
            key_shared_routes_by_key,
            earliest_and_latest,
            existing_subscription_resumes,
            two_subscriptions_each_get_all,
            receive_timeout_gives_timeout,
            receive_batch_returns_what_is_ready,
            concurrent_producers_and_consumers,
            bursts_wait_instead_of_failing,
            closed_handles_give_closed,
            backend_close_ends_blocked_receive,
            backend_close_closes_producers_readers_and_acks,
            close_writes_acks_first,
            double_ack_is_harmless,
            ack_all_acks_every_message,
            invalid_input_gives_typed_errors,
            bad_input_table,
            payload_at_the_limit,
            hold_many_unacked,
            shared_scale_down,
            shared_scale_up_keeps_held,
            subscription_name_on_other_topics_is_independent,
            q0_does_not_retain,
            q0_delivers_what_is_sent_after_subscribing,
            q2_drops_duplicate_sends,
            delayed_delivery,
            unsubscribe_deletes_position,
            typed_values_and_codec_mismatch,
            stream_yields_messages,
            processor_retries_then_dead_letters,
            processor_shutdown_loses_nothing,
            processor_starts_nothing_after_shutdown,
            processor_orders_only_within_a_key,
            request_response_routes_every_reply,
            admin_topic_lifecycle,
            admin_subscription_backlog,
            replay_readers,
            replay_seek_subscription,
            replay_positions,
        }
    };
}
