//! Tasks on any backend: a worker and a client in one process, showing
//! delay, countdown, chain, group and chord. The backend comes from
//! `PUBSUB_BACKEND` and its variables, the result store from
//! `PUBSUB_RESULTS` (`dir:/path`, `redis://…`, `nats://…`; this process's
//! memory when unset), the queue topic from `TASKS_QUEUE`.
//!
//! ```sh
//! cargo run --features tasks --example tasks                                   # embedded, memory results
//! PUBSUB_BACKEND=nats PUBSUB_RESULTS=redis://127.0.0.1:6379 \
//!     cargo run --features tasks,nats,redis --example tasks                    # NATS + Redis results
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use pubsub::processor::Shutdown;
use pubsub::tasks::{
    async_trait, result_store_from_env, MemoryResultStore, ResultStore, SendOptions, Signature, Task, TaskContext,
    TaskError, TaskOptions, Tasks, Worker,
};
use pubsub::Topic;
use serde_json::json;

struct Add;

#[async_trait]
impl Task for Add {
    const NAME: &'static str = "add";
    type Args = (i64, i64);
    type Output = i64;
    async fn run(&self, (a, b): (i64, i64), _ctx: TaskContext) -> Result<i64, TaskError> {
        Ok(a + b)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let backend = pubsub::from_env().await?;
    let store: Arc<dyn ResultStore> = match result_store_from_env().await? {
        Some(store) => store,
        None => Arc::new(MemoryResultStore::new()),
    };
    let queue: Topic = std::env::var("TASKS_QUEUE")
        .unwrap_or_else(|_| "q1/example/tasks/default".into())
        .parse()?;
    println!("backend: {}, queue: {queue}", backend.name());

    let shutdown = Shutdown::new();
    let worker = Worker::new(backend.clone(), store.clone(), queue.clone())
        .register(Add)
        .register_fn("sum", TaskOptions::default(), |args, _ctx| async move {
            let (parts,): (Vec<i64>,) = serde_json::from_value(args).map_err(TaskError::fatal)?;
            Ok(json!(parts.iter().sum::<i64>()))
        })
        .with_concurrency(8);
    let running = tokio::spawn(worker.run(shutdown.clone()));
    if !backend.capabilities().earliest {
        // MQTT: tasks sent before the worker subscribed would not reach it.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let tasks = Tasks::new(backend.clone(), store, queue);
    let wait = Duration::from_secs(30);
    let sum = tasks.delay::<Add>((1, 2)).await?;
    println!("delay: add(1, 2) = {}", sum.get(wait).await?);

    let sent = Instant::now();
    let later = tasks
        .apply_async::<Add>((2, 3), SendOptions::default().with_countdown(Duration::from_secs(1)))
        .await?;
    let five = later.get(wait).await?;
    println!(
        "countdown 1 s: add(2, 3) = {five} after {:.1} s",
        sent.elapsed().as_secs_f64()
    );

    let chain = tasks
        .chain(vec![Add::s((1, 2))?, Signature::partial("add", (10,))?])
        .await?;
    println!("chain: add(1, 2) | add(10) = {}", chain.get(wait).await?);

    let group = tasks
        .group((0..10).map(|i| Add::s((i, i))).collect::<Result<_, _>>()?)
        .await?;
    println!("group: {}", json!(group.get(wait).await?));

    let chord = tasks
        .chord(
            (0..10).map(|i| Add::s((i, i))).collect::<Result<_, _>>()?,
            Signature::partial("sum", ())?,
        )
        .await?;
    println!("chord: sum of the group = {}", chord.get(wait).await?);

    shutdown.trigger();
    running.await??;
    tasks.close().await?;
    backend.close().await?;
    println!("done");
    Ok(())
}
