//! The task layer (`pubsub::tasks`) against Python Celery 5, side by side in
//! one run on the same Redis (issue #24): `add(x, y)` sent with `delay` then
//! waited for with `get`, a group, a chord, and the latency from `delay` to
//! the result.
//!
//! ```sh
//! cargo run --release -p pubsub-bench --bin tasks            # 10,000 tasks, groups of 1,000
//! cargo run --release -p pubsub-bench --bin tasks -- --tasks 1000   # a quick check
//! ```
//!
//! - **Celery**: the venv `target/celery-venv` (made by
//!   `pubsub-bench/scripts/celery_setup.sh` when it is missing: Celery 5 with
//!   its Redis extras from PyPI), Redis as broker and result backend, its
//!   defaults plus `task_acks_late=True`; a worker `celery worker --pool
//!   prefork --concurrency 2` (Celery's default pool, one process per core
//!   of this 2-core machine) started and stopped here; the workloads are
//!   run by `pubsub-bench/scripts/celery_bench.py`, a synchronous client
//!   (one `delay` after another, then one `get` after another).
//! - **SDK**: a `Worker` in this process (tokio, 2 threads: the machine's
//!   cores) with `--concurrency` tasks at once, and a `Tasks` client; on
//!   Redis (Redis Streams, `RedisResultStore`) and on NATS (JetStream,
//!   `NatsResultStore`). The delay/get workload runs twice: one call at a
//!   time as the Celery driver does, and with `--in-flight` calls at once.
//! - **Floor**: redis-rs alone on the same Redis, one `XADD` then (after
//!   all of them) one `GET` per task, one call at a time, no worker: what
//!   any client that confirms each send and reads each result pays in
//!   round trips one call at a time.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use pubsub::processor::Shutdown;
use pubsub::tasks::{
    async_trait, NatsResultStore, RedisResultStore, ResultStore, Signature, Task, TaskContext, TaskError, Tasks, Worker,
};
use pubsub::{PubSubBackend, Topic};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser, Debug)]
struct Args {
    /// Tasks of the delay-then-get workload.
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// Members of the group and of the chord (default: tasks / 10).
    #[arg(long)]
    group: Option<usize>,
    /// Tasks sent one at a time, each awaited, for the latency percentiles
    /// (default: tasks / 20).
    #[arg(long)]
    latency: Option<usize>,
    /// Tasks each SDK worker runs at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// `delay`s (then `get`s) the SDK client has in flight at once in the
    /// second delay-then-get run.
    #[arg(long, default_value_t = 100)]
    in_flight: usize,
    /// What to run: celery, redis, nats, and floor (redis-rs alone: one
    /// `XADD` and one `GET` per task, one at a time, no worker).
    #[arg(long, value_delimiter = ',', default_value = "celery,redis,nats,floor")]
    systems: Vec<String>,
}

struct Add;

#[async_trait]
impl Task for Add {
    const NAME: &'static str = "add";
    type Args = (i64, i64);
    type Output = i64;
    async fn run(&self, (x, y): (i64, i64), _ctx: TaskContext) -> Result<i64, TaskError> {
        Ok(x + y)
    }
}

/// The chord's callback: the sum of its members' results.
struct Tsum;

#[async_trait]
impl Task for Tsum {
    const NAME: &'static str = "tsum";
    type Args = (Vec<i64>,);
    type Output = i64;
    async fn run(&self, (values,): (Vec<i64>,), _ctx: TaskContext) -> Result<i64, TaskError> {
        Ok(values.iter().sum())
    }
}

/// One system's figures (times in seconds).
#[derive(Debug, Default, Clone)]
struct Figures {
    /// The version or backend, for the header.
    label: String,
    /// delay then get, one call at a time: (enqueue, total).
    serial: Option<(f64, f64)>,
    /// delay then get, `in_flight` calls at once: (enqueue, total).
    concurrent: Option<(f64, f64)>,
    group: Option<f64>,
    chord: Option<f64>,
    /// delay → result, sorted.
    latency: Vec<f64>,
}

fn stamp() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

// ---------------------------------------------------------------- Celery

/// Makes the Celery venv if it is missing; its directory.
fn celery_venv() -> Result<PathBuf, BoxError> {
    let venv = std::env::var("CELERY_VENV").map_or_else(|_| root().join("target/celery-venv"), PathBuf::from);
    if !venv.join("bin/celery").exists() {
        eprintln!("celery: making the venv {} (PyPI)", venv.display());
        let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/celery_setup.sh");
        let status = Command::new("bash").arg(setup).arg(&venv).status()?;
        if !status.success() {
            return Err(format!("scripts/celery_setup.sh: {status}").into());
        }
    }
    Ok(venv)
}

/// The Celery worker, stopped (warm shutdown, then killed) when dropped.
struct CeleryWorker(Child);

impl Drop for CeleryWorker {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_celery(redis_url: &str, n: usize, group: usize, latency: usize) -> Result<Figures, BoxError> {
    let venv = celery_venv()?;
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let queue = format!("celery-bench-{}", stamp());
    let log_path = root().join("target/tmp/celery-bench-worker.log");
    std::fs::create_dir_all(root().join("target/tmp"))?;
    let log = std::fs::File::create(&log_path)?;
    let worker = CeleryWorker(
        Command::new(venv.join("bin/celery"))
            .current_dir(&scripts)
            .env("CELERY_BENCH_REDIS", redis_url)
            .env("CELERY_BENCH_QUEUE", &queue)
            .args(["-A", "celery_bench", "worker", "-Q", &queue])
            .args(["--pool", "prefork", "--concurrency", "2", "--loglevel", "WARNING"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    let output = Command::new(venv.join("bin/python"))
        .current_dir(&scripts)
        .env("CELERY_BENCH_REDIS", redis_url)
        .env("CELERY_BENCH_QUEUE", &queue)
        .arg("celery_bench.py")
        .arg("drive")
        .arg(redis_url)
        .arg(&queue)
        .arg(n.to_string())
        .arg(group.to_string())
        .arg(latency.to_string())
        .stdin(Stdio::null())
        .output()?;
    drop(worker);
    if !output.status.success() {
        return Err(format!(
            "celery_bench.py: {}: {} (worker log: {})",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            log_path.display()
        )
        .into());
    }
    let v: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let f = |path: [&str; 2]| v[path[0]][path[1]].as_f64();
    let mut latency: Vec<f64> = v["latency_s"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    latency.sort_by(f64::total_cmp);
    Ok(Figures {
        label: format!("Celery {}", v["celery"].as_str().unwrap_or("?")),
        serial: f(["delay_get", "enqueue_s"]).zip(f(["delay_get", "total_s"])),
        // Celery's client is synchronous: its one-at-a-time figures stand
        // in the in-flight rows too.
        concurrent: f(["delay_get", "enqueue_s"]).zip(f(["delay_get", "total_s"])),
        group: f(["group", "total_s"]),
        chord: f(["chord", "total_s"]),
        latency,
    })
}

// ------------------------------------------------------------------- SDK

const WAIT: Duration = Duration::from_secs(600);

/// `n` delays then `n` gets, `window` calls at once: (enqueue, total) in s.
async fn delay_then_get(tasks: &Tasks, n: usize, window: usize) -> Result<(f64, f64), BoxError> {
    let started = Instant::now();
    let handles: Vec<_> = futures::stream::iter(0..n as i64)
        .map(|i| tasks.delay::<Add>((i, i)))
        .buffered(window)
        .try_collect()
        .await?;
    let enqueued = started.elapsed();
    let results: Vec<i64> = futures::stream::iter(handles)
        .map(|h| async move { h.get(WAIT).await })
        .buffered(window)
        .try_collect()
        .await?;
    let total = started.elapsed();
    if results.iter().enumerate().any(|(i, r)| *r != 2 * i as i64) {
        return Err("delay then get: a wrong result".into());
    }
    Ok((enqueued.as_secs_f64(), total.as_secs_f64()))
}

async fn run_sdk(
    backend: Arc<dyn PubSubBackend>,
    store: Arc<dyn ResultStore>,
    args: &Args,
    group: usize,
    latency: usize,
) -> Result<Figures, BoxError> {
    let queue: Topic = format!("q1/bench/tasks/r{}", stamp()).parse()?;
    let shutdown = Shutdown::new();
    let worker = Worker::new(backend.clone(), store.clone(), queue.clone())
        .register(Add)
        .register(Tsum)
        .with_concurrency(args.concurrency);
    let worker = tokio::spawn(worker.run(shutdown.clone()));
    let tasks = Tasks::new(backend.clone(), store, queue);
    let mut fig = Figures {
        label: backend.name().to_string(),
        ..Default::default()
    };
    let outcome: Result<(), BoxError> = async {
        // The worker subscribes and the producer is made before timing.
        tasks.delay::<Add>((0, 0)).await?.get(Duration::from_secs(120)).await?;

        fig.serial = Some(delay_then_get(&tasks, args.tasks, 1).await?);
        fig.concurrent = Some(delay_then_get(&tasks, args.tasks, args.in_flight).await?);

        let started = Instant::now();
        let members = (0..group as i64)
            .map(|i| Add::s((i, i)))
            .collect::<Result<Vec<_>, _>>()?;
        let got: Vec<i64> =
            serde_json::from_value(serde_json::Value::Array(tasks.group(members).await?.get(WAIT).await?))?;
        fig.group = Some(started.elapsed().as_secs_f64());
        if got != (0..group as i64).map(|i| 2 * i).collect::<Vec<_>>() {
            return Err("group: wrong results".into());
        }

        let started = Instant::now();
        let members = (0..group as i64)
            .map(|i| Add::s((i, i)))
            .collect::<Result<Vec<_>, _>>()?;
        let sum = tasks
            .chord(members, Signature::partial(Tsum::NAME, ())?)
            .await?
            .get(WAIT)
            .await?;
        fig.chord = Some(started.elapsed().as_secs_f64());
        if sum != serde_json::json!((0..group as i64).map(|i| 2 * i).sum::<i64>()) {
            return Err(format!("chord: wrong sum {sum}").into());
        }

        for i in 0..latency as i64 {
            let started = Instant::now();
            let r = tasks.delay::<Add>((i, i)).await?.get(WAIT).await?;
            fig.latency.push(started.elapsed().as_secs_f64());
            if r != 2 * i {
                return Err("latency: a wrong result".into());
            }
        }
        fig.latency.sort_by(f64::total_cmp);
        Ok(())
    }
    .await;
    shutdown.trigger();
    let _ = worker.await;
    let _ = tasks.close().await;
    let _ = backend.close().await;
    outcome.map(|()| fig)
}

// ----------------------------------------------------------------- floor

/// What any client that confirms each send and reads each result pays one
/// call at a time, with no task layer and no worker: `n` `XADD`s one after
/// another, then `n` `GET`s, on one redis-rs connection to the same Redis.
async fn run_floor(redis_url: &str, n: usize) -> Result<Figures, BoxError> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let stream = format!("bench-floor-{}", stamp());
    let started = Instant::now();
    for i in 0..n {
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("i")
            .arg(i)
            .query_async(&mut conn)
            .await?;
    }
    let enqueued = started.elapsed();
    for i in 0..n {
        let _: Option<String> = redis::cmd("GET")
            .arg(format!("{stream}:{i}"))
            .query_async(&mut conn)
            .await?;
    }
    let total = started.elapsed();
    let _: () = redis::cmd("DEL").arg(&stream).query_async(&mut conn).await?;
    Ok(Figures {
        label: "redis-rs alone".into(),
        serial: Some((enqueued.as_secs_f64(), total.as_secs_f64())),
        ..Figures::default()
    })
}

// ----------------------------------------------------------------- table

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[i.clamp(1, sorted.len()) - 1])
}

fn cell(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
        None => "–".into(),
    }
}

fn ratio(sdk: Option<f64>, celery: Option<f64>) -> String {
    match (sdk, celery) {
        (Some(s), Some(c)) if c > 0.0 => format!("{:.1}", s / c),
        _ => "–".into(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let group = args.group.unwrap_or((args.tasks / 10).max(1));
    let latency = args.latency.unwrap_or((args.tasks / 20).max(1));
    let redis_url = common::url_of("redis");
    let nats_url = common::url_of("nats");
    let mut systems: Vec<(String, Figures)> = Vec::new();
    for system in &args.systems {
        eprintln!("{system}: running");
        let started = Instant::now();
        let figures = match system.as_str() {
            "celery" => {
                let (url, n) = (redis_url.clone(), args.tasks);
                tokio::task::spawn_blocking(move || run_celery(&url, n, group, latency))
                    .await
                    .map_err(BoxError::from)
                    .and_then(|r| r)
            }
            "redis" | "nats" => {
                let store: Result<Arc<dyn ResultStore>, BoxError> = if system == "redis" {
                    RedisResultStore::connect(&redis_url)
                        .await
                        .map(|s| Arc::new(s) as Arc<dyn ResultStore>)
                        .map_err(Into::into)
                } else {
                    NatsResultStore::connect(&nats_url)
                        .await
                        .map(|s| Arc::new(s) as Arc<dyn ResultStore>)
                        .map_err(Into::into)
                };
                match (pubsub::connect(&common::url_of(system)).await, store) {
                    (Ok(backend), Ok(store)) => run_sdk(backend, store, &args, group, latency).await,
                    (Err(e), _) => Err(e.into()),
                    (_, Err(e)) => Err(e),
                }
            }
            "floor" => run_floor(&redis_url, args.tasks).await,
            other => Err(format!("unknown system {other:?} (celery, redis, nats, floor)").into()),
        };
        match figures {
            Ok(f) => {
                eprintln!("{system}: done in {:.1} s", started.elapsed().as_secs_f64());
                systems.push((system.clone(), f));
            }
            Err(e) => eprintln!("{system}: failed, left out: {e}"),
        }
    }
    print_table(&args, group, latency, &systems);
}

fn print_table(args: &Args, group: usize, latency: usize, systems: &[(String, Figures)]) {
    let celery = systems.iter().find(|(s, _)| s == "celery").map(|(_, f)| f.clone());
    let sdks: Vec<&(String, Figures)> = systems.iter().filter(|(s, _)| s != "celery").collect();
    let rate = |n: usize, secs: Option<f64>| secs.map(|s| n as f64 / s);
    type Row = (String, &'static str, Box<dyn Fn(&Figures) -> Option<f64>>, bool);
    let (n, w) = (args.tasks, args.in_flight);
    let rows: Vec<Row> = vec![
        (
            format!("{n} × `delay` then `get`, one call at a time: end to end"),
            "tasks/s",
            Box::new(move |f: &Figures| rate(n, f.serial.map(|s| s.1))),
            false,
        ),
        (
            format!("… of which the {n} `delay` calls (enqueue)"),
            "tasks/s",
            Box::new(move |f: &Figures| rate(n, f.serial.map(|s| s.0))),
            false,
        ),
        (
            format!("{n} × `delay` then `get`, {w} calls in flight (SDK) vs one at a time (Celery): end to end"),
            "tasks/s",
            Box::new(move |f: &Figures| rate(n, f.concurrent.map(|s| s.1))),
            false,
        ),
        (
            format!("… of which the {n} `delay` calls (enqueue)"),
            "tasks/s",
            Box::new(move |f: &Figures| rate(n, f.concurrent.map(|s| s.0))),
            false,
        ),
        (
            format!("group of {group}: sent, all results got"),
            "tasks/s",
            Box::new(move |f: &Figures| rate(group, f.group)),
            false,
        ),
        (
            format!("chord of {group}: sent, callback's result got"),
            "tasks/s",
            Box::new(move |f: &Figures| rate(group, f.chord)),
            false,
        ),
        (
            format!("latency `delay` → result, p50 of {latency} one at a time"),
            "ms",
            Box::new(|f: &Figures| percentile(&f.latency, 50.0).map(|s| s * 1e3)),
            true,
        ),
        (
            format!("latency `delay` → result, p99 of {latency} one at a time"),
            "ms",
            Box::new(|f: &Figures| percentile(&f.latency, 99.0).map(|s| s * 1e3)),
            true,
        ),
    ];
    let mut header = String::from("| workload |");
    let mut rule = String::from("|---|");
    if let Some(c) = &celery {
        header += &format!(" {} (Redis) |", c.label);
        rule += "---|";
    }
    for (s, _) in &sdks {
        header += &match s.as_str() {
            "floor" => " redis-rs alone: 1 `XADD` + 1 `GET` per task, no worker |".to_string(),
            _ => format!(" SDK on {s} |"),
        };
        rule += "---|";
    }
    if celery.is_some() {
        for (s, _) in &sdks {
            header += &format!(" {s} / Celery |");
            rule += "---|";
        }
    }
    header += " unit |";
    rule += "---|";
    println!("{header}\n{rule}");
    for (name, unit, value, lower_is_better) in &rows {
        let mut line = format!("| {name} |");
        let c = celery.as_ref().and_then(value);
        if celery.is_some() {
            line += &format!(" {} |", cell(c));
        }
        for (_, f) in &sdks {
            line += &format!(" {} |", cell(value(f)));
        }
        if celery.is_some() {
            for (_, f) in &sdks {
                line += &format!(" {} |", ratio(value(f), c));
            }
        }
        line += &format!(" {unit}{} |", if *lower_is_better { " (lower is better)" } else { "" });
        println!("{line}");
    }
}
