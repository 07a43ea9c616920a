//! The subcommands, each on an open backend.

use std::time::Duration;

use pubsub::{
    Bytes, Consumer, ConsumerOptions, Error, InitialPosition, Message, OutgoingMessage, ProducerOptions, PubSubBackend,
    Reader, Result, Topic, TopicOptions,
};
use tokio::io::AsyncBufReadExt;

use crate::output::{json_line, text_line, Progress};
use crate::{Command, ConsumeArgs, PublishArgs, TasksCommand, TopicsCommand};

/// Messages per `send_batch` when one message is sent many times.
const BATCH: u64 = 100;

pub async fn run(backend: &dyn PubSubBackend, command: Command) -> Result<()> {
    match command {
        Command::Publish(args) => publish(backend, args).await,
        Command::Consume(args) => consume(backend, args).await,
        Command::Topics(cmd) => topics(backend, cmd).await,
        Command::Health => {
            backend.admin().health_check().await?;
            println!("{}: ok", backend.name());
            Ok(())
        }
        Command::Tasks(TasksCommand::Inspect { queues, results, json }) => {
            crate::tasks::inspect(backend, &queues, results.url.as_deref(), json).await
        }
        Command::Tasks(TasksCommand::Result { id, results, json }) => {
            task_result(&id, results.url.as_deref(), json).await
        }
    }
}

pub use crate::tasks::task_result;

async fn publish(backend: &dyn PubSubBackend, args: PublishArgs) -> Result<()> {
    let topic: Topic = args.topic.parse()?;
    let make = |payload: Bytes| {
        let mut m = OutgoingMessage::new(payload);
        for (k, v) in &args.properties {
            m = m.with_property(k.clone(), v.clone());
        }
        if let Some(k) = &args.key {
            m = m.with_key(k.clone());
        }
        m
    };
    let mut options = ProducerOptions::default();
    if args.allow_degraded_qos {
        options = options.allow_degraded_qos();
    }
    let producer = backend.create_producer(&topic, options).await?;
    let mut progress = Progress::new("published");
    let mut sent = 0u64;
    match args.message.as_deref() {
        Some(text) if text != "-" => {
            let payload = Bytes::from(text.to_string());
            while sent < args.count {
                let k = (args.count - sent).min(BATCH);
                let batch = (0..k).map(|_| make(payload.clone())).collect();
                producer.send_batch(batch).await?;
                sent += k;
                progress.tick(sent);
            }
        }
        _ => {
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Some(line) = lines
                .next_line()
                .await
                .map_err(|e| Error::InvalidConfiguration(format!("reading stdin: {e}")))?
            {
                producer.send(make(Bytes::from(line))).await?;
                sent += 1;
                progress.tick(sent);
            }
        }
    }
    producer.close().await?;
    eprintln!("published {sent} message(s) to {topic}");
    Ok(())
}

async fn consume(backend: &dyn PubSubBackend, args: ConsumeArgs) -> Result<()> {
    let topic: Topic = args.topic.parse()?;
    let idle = match args.timeout {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => return Err(Error::InvalidConfiguration(format!("--timeout {s}: must be positive"))),
        None => None,
    };
    if let Some(sub) = &args.subscription {
        pubsub::validate_subscription_name(sub)?;
    }
    // A missing topic is an error (exit 1), not something to create by
    // reading it; where the backend cannot tell, the consumer goes on.
    match backend.admin().topic_exists(&topic).await {
        Ok(true) | Err(Error::Unsupported { .. }) => {}
        Ok(false) => {
            return Err(Error::NotFound(format!(
                "topic {topic} (create it with `pubsub topics create {topic}` or publish to it first)"
            )))
        }
        Err(e) => return Err(e),
    }
    let source = match (&args.subscription, args.from.clone()) {
        (Some(sub), from) => {
            let mut options = ConsumerOptions::default();
            if args.allow_degraded_qos {
                options = options.allow_degraded_qos();
            }
            if args.earliest {
                options = options.with_initial_position(InitialPosition::Earliest);
            }
            let consumer = backend.create_consumer(&topic, sub, options).await?;
            if let Some(position) = from {
                if let Err(e) = consumer.seek(position).await {
                    let _ = consumer.close().await;
                    return Err(e);
                }
            }
            Source::Consumer(consumer)
        }
        (None, Some(position)) => Source::Reader(backend.create_reader(&topic, position).await?),
        (None, None) => return Err(Error::InvalidConfiguration("--subscription or --from is needed".into())),
    };
    let mut got = 0u64;
    let result = loop {
        if args.count.is_some_and(|n| got >= n) {
            break Ok(());
        }
        let m = tokio::select! {
            m = source.next(idle) => m,
            _ = tokio::signal::ctrl_c() => break Ok(()),
        };
        match m {
            Ok(m) => {
                println!("{}", if args.json { json_line(&m) } else { text_line(&m) });
                // Printed first, then acked: a crash in between redelivers, never loses.
                if let Err(e) = m.ack().await {
                    break Err(e);
                }
                got += 1;
            }
            Err(Error::Timeout(_)) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    source.close().await?;
    eprintln!("consumed {got} message(s) from {topic}");
    result
}

/// Where `consume` takes messages from: a subscription, or (with `--from`
/// and no subscription) a reader.
enum Source {
    Consumer(Box<dyn Consumer>),
    Reader(Box<dyn Reader>),
}

impl Source {
    async fn next(&self, idle: Option<Duration>) -> Result<Message> {
        match (self, idle) {
            (Source::Consumer(c), Some(t)) => c.receive_timeout(t).await,
            (Source::Consumer(c), None) => c.receive().await,
            (Source::Reader(r), Some(t)) => r.next_timeout(t).await,
            (Source::Reader(r), None) => r.next().await,
        }
    }

    async fn close(&self) -> Result<()> {
        match self {
            Source::Consumer(c) => c.close().await,
            Source::Reader(r) => r.close().await,
        }
    }
}

async fn topics(backend: &dyn PubSubBackend, cmd: TopicsCommand) -> Result<()> {
    let admin = backend.admin();
    match cmd {
        TopicsCommand::Create { topic, partitions } => {
            let topic: Topic = topic.parse()?;
            let mut options = TopicOptions::default();
            if let Some(p) = partitions {
                options = options.with_partitions(p);
            }
            let created = admin.create_topic(&topic, options).await?;
            println!("{topic}: {}", if created { "created" } else { "exists already" });
        }
        TopicsCommand::Delete { topic } => {
            let topic: Topic = topic.parse()?;
            admin.delete_topic(&topic).await?;
            println!("{topic}: deleted");
        }
        TopicsCommand::List {
            namespace: (tenant, ns),
        } => {
            for t in admin.list_topics(&tenant, &ns).await? {
                println!("{t}");
            }
        }
        TopicsCommand::Info { topic } => {
            let topic: Topic = topic.parse()?;
            if !admin.topic_exists(&topic).await? {
                return Err(Error::NotFound(format!("topic {topic}")));
            }
            println!("{topic}: exists");
            match admin.subscriptions(&topic).await {
                Ok(subs) => {
                    for s in subs {
                        let backlog = s.backlog.map_or("unknown".to_string(), |b| b.to_string());
                        println!("  subscription {}: backlog {backlog}", s.name);
                    }
                }
                Err(Error::Unsupported { .. }) => {
                    println!("  subscriptions: not available on {}", backend.name());
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
