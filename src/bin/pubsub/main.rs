//! `pubsub`: publish, consume and manage topics from a terminal, on any
//! backend, configured like every pubsub service (`PUBSUB_BACKEND` and the
//! backend's variables, or the same flags).
//!
//! ```text
//! pubsub topics create q1/demo/shop/orders
//! echo '{"id":1}' | pubsub publish q1/demo/shop/orders - -p source=cli
//! pubsub consume q1/demo/shop/orders --subscription audit --earliest --count 1 --json
//! pubsub health
//! ```
//!
//! Exit codes: 0 success, 1 a broker or runtime error, 2 bad input (usage,
//! a malformed topic or property, an oversized payload), 3 the broker is
//! unreachable or timed out.

mod commands;
mod output;
mod tasks;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use pubsub::PubSubArgs;

#[derive(Parser)]
#[command(
    name = "pubsub",
    version,
    about = "Publish, consume and manage topics on any pubsub backend"
)]
struct Cli {
    #[command(flatten)]
    pubsub: PubSubArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish a message, the same message N times, or one message per line of stdin.
    Publish(PublishArgs),
    /// Receive, print and ack messages of a subscription.
    Consume(ConsumeArgs),
    /// Create, delete, list and inspect topics.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Check that the broker answers.
    Health,
    /// Look into the task layer (`pubsub::tasks`): pending and running
    /// tasks, and a task's result.
    #[command(subcommand)]
    Tasks(TasksCommand),
}

#[derive(Subcommand)]
enum TasksCommand {
    /// Pending tasks per queue (the backlog of the workers' subscription
    /// `pubsub-tasks`) and the tasks running on every worker (from the
    /// heartbeats workers write to the result store every 2 s).
    Inspect {
        /// A queue topic, `{qos}/{tenant}/{namespace}/{queue}` (repeatable).
        #[arg(short, long = "queue")]
        queues: Vec<String>,
        #[command(flatten)]
        results: ResultsArg,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a task's result record: state, result or error, attempts,
    /// times and worker.
    Result {
        /// The task id.
        id: String,
        #[command(flatten)]
        results: ResultsArg,
        /// The record as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ResultsArg {
    /// The result store: `dir:/path`, `redis://…` or `nats://…` (as the
    /// workers use it).
    #[arg(long = "results", env = "PUBSUB_RESULTS", value_name = "URL")]
    url: Option<String>,
}

#[derive(Args)]
struct PublishArgs {
    /// Topic, `{qos}/{tenant}/{namespace}/{queue}`.
    topic: String,
    /// The payload; `-` or nothing reads stdin, one message per line.
    message: Option<String>,
    /// A property `name=value` (repeatable).
    #[arg(short = 'p', long = "property", value_parser = parse_property)]
    properties: Vec<(String, String)>,
    /// Message key.
    #[arg(short, long)]
    key: Option<String>,
    /// Send the message this many times.
    #[arg(short = 'n', long, default_value_t = 1)]
    count: u64,
    /// On a q2 topic of a backend without exactly-once: send with q1's
    /// guarantee (at least once) instead of refusing.
    #[arg(long)]
    allow_degraded_qos: bool,
}

#[derive(Args)]
struct ConsumeArgs {
    /// Topic, `{qos}/{tenant}/{namespace}/{queue}`.
    topic: String,
    /// Subscription name; created if new. Without it, `--from` reads the
    /// topic with no subscription and no acks.
    #[arg(short, long, required_unless_present = "from")]
    subscription: Option<String>,
    /// A new subscription starts at the oldest retained message (default: new messages only).
    #[arg(long, conflicts_with = "from")]
    earliest: bool,
    /// Replay from a position: `earliest`, `latest`, `id:<message id>`,
    /// `ms:<unix milliseconds>` or `ago:<N>s|m|h|d`. With `--subscription`
    /// the subscription is moved there first (seek).
    #[arg(long, value_parser = parse_position)]
    from: Option<pubsub::Position>,
    /// Stop after this many messages.
    #[arg(short = 'n', long)]
    count: Option<u64>,
    /// Stop when nothing arrives for this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// One JSON object per message (id, key, properties, payload, publish time).
    #[arg(long)]
    json: bool,
    /// On a q2 topic of a backend without exactly-once: consume with q1's
    /// guarantee (at least once) instead of refusing.
    #[arg(long)]
    allow_degraded_qos: bool,
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create a topic (no error if it exists).
    Create {
        /// Topic, `{qos}/{tenant}/{namespace}/{queue}`.
        topic: String,
        /// Partitions, where the backend partitions topics.
        #[arg(long)]
        partitions: Option<u32>,
    },
    /// Delete a topic with its messages and subscriptions.
    Delete {
        /// Topic, `{qos}/{tenant}/{namespace}/{queue}`.
        topic: String,
    },
    /// List the topics of a namespace.
    List {
        /// `tenant/namespace`, e.g. `demo/cli`.
        #[arg(value_parser = parse_namespace)]
        namespace: (String, String),
    },
    /// Show whether a topic exists and its subscriptions with their backlog.
    Info {
        /// Topic, `{qos}/{tenant}/{namespace}/{queue}`.
        topic: String,
    },
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    let (name, value) = s.split_once('=').ok_or_else(|| format!("{s:?} is not name=value"))?;
    pubsub::validate_property(name, value).map_err(|e| e.to_string())?;
    Ok((name.to_string(), value.to_string()))
}

/// `tenant/namespace`: two segments of `[A-Za-z0-9_-]`, as in a topic.
fn parse_namespace(s: &str) -> Result<(String, String), String> {
    let bad = |why: &str| format!("{s:?} is not tenant/namespace (e.g. demo/cli): {why}");
    let (tenant, namespace) = s.split_once('/').ok_or_else(|| bad("no '/'"))?;
    let segments = s.split('/').count();
    if segments != 2 {
        return Err(bad(&format!("expected 2 segments, found {segments}")));
    }
    // A topic in the namespace checks both segments exactly as topics do.
    let probe = format!("q1/{tenant}/{namespace}/x");
    match probe.parse::<pubsub::Topic>() {
        Ok(_) => Ok((tenant.to_string(), namespace.to_string())),
        Err(pubsub::Error::InvalidTopic { reason, .. }) => Err(bad(&reason)),
        Err(e) => Err(bad(&e.to_string())),
    }
}

fn parse_position(s: &str) -> Result<pubsub::Position, String> {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let bad = || format!("{s:?} is not earliest, latest, id:<id>, ms:<unix ms> or ago:<N>s|m|h|d");
    Ok(match s.split_once(':') {
        None if s == "earliest" => pubsub::Position::Earliest,
        None if s == "latest" => pubsub::Position::Latest,
        Some(("id", id)) if !id.is_empty() => pubsub::Position::Id(pubsub::MessageId::from_text(id)),
        Some(("ms", ms)) => {
            let ms: u64 = ms.parse().map_err(|_| bad())?;
            pubsub::Position::Timestamp(UNIX_EPOCH + Duration::from_millis(ms))
        }
        Some(("ago", ago)) => {
            let split = ago.len().saturating_sub(1);
            let (n, unit) = ago.split_at(split);
            let n: u64 = n.parse().map_err(|_| bad())?;
            let secs = match unit {
                "s" => n,
                "m" => n * 60,
                "h" => n * 3600,
                "d" => n * 86_400,
                _ => return Err(bad()),
            };
            pubsub::Position::Timestamp(SystemTime::now() - Duration::from_secs(secs))
        }
        _ => return Err(bad()),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Tasks(TasksCommand::Result { id, results, json }) = &cli.command {
        // A result needs the result store only, not the broker.
        return match commands::task_result(id, results.url.as_deref(), *json).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => output::fail(&e),
        };
    }
    let backend = match cli.pubsub.connect().await {
        Ok(b) => b,
        Err(e) => return output::fail(&e),
    };
    let result = commands::run(backend.as_ref(), cli.command).await;
    let closed = backend.close().await;
    match result.and(closed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => output::fail(&e),
    }
}
