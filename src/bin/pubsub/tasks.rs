//! `pubsub tasks`: what the task layer's queues, workers and result store say.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use pubsub::tasks::{open_result_store, ResultStore, TaskRecord, WorkerStatus, WORKER_SUBSCRIPTION};
use pubsub::{Error, PubSubBackend, Result, Topic};
use serde_json::{json, Value};

/// A heartbeat older than this many of its intervals is shown as stale
/// (the worker stopped without removing it, e.g. it was killed).
const LIVE_INTERVALS: u64 = 3;

async fn store(url: Option<&str>) -> Result<Arc<dyn ResultStore>> {
    let url = url.ok_or_else(|| {
        Error::InvalidConfiguration(
            "no result store: set PUBSUB_RESULTS or --results (dir:/path, redis://…, nats://…)".into(),
        )
    })?;
    open_result_store(url).await
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `12.3 s ago` for a Unix-ms time.
fn ago(ms: u64, now: u64) -> String {
    format!("{:.1} s ago", now.saturating_sub(ms) as f64 / 1000.0)
}

/// `pubsub tasks result ID`: the record, as text or JSON; a missing one is
/// `Error::NotFound` (exit 1).
pub async fn task_result(id: &str, url: Option<&str>, json: bool) -> Result<()> {
    let store = store(url).await?;
    let record = store.get(id).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "task {id:?}: no result (an unknown id, or expired or forgotten)"
        ))
    })?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&record).map_err(|e| Error::codec("task record", e))?
        );
    } else {
        print!("{}", record_text(&record, now_ms()));
    }
    Ok(())
}

fn record_text(r: &TaskRecord, now: u64) -> String {
    let state = serde_json::to_value(r.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut out = format!("id: {}\nname: {}\nstate: {state}\n", r.id, r.name);
    if let Some(v) = &r.result {
        out.push_str(&format!("result: {v}\n"));
    }
    if let Some(e) = &r.error {
        out.push_str(&format!("error: {e}\n"));
    }
    out.push_str(&format!("attempts: {}\n", r.attempts));
    if let Some(w) = &r.worker {
        out.push_str(&format!("worker: {w}\n"));
    }
    for (label, at) in [
        ("sent", r.sent_at),
        ("started", r.started_at),
        ("finished", r.finished_at),
    ] {
        if let Some(at) = at {
            out.push_str(&format!("{label}: {at} ({})\n", ago(at, now)));
        }
    }
    out
}

/// `pubsub tasks inspect`: pending per queue, running per worker.
pub async fn inspect(backend: &dyn PubSubBackend, queues: &[String], url: Option<&str>, json: bool) -> Result<()> {
    if queues.is_empty() && url.is_none() {
        return Err(Error::InvalidConfiguration(
            "nothing to inspect: give --queue TOPIC and/or a result store (--results or PUBSUB_RESULTS)".into(),
        ));
    }
    let mut pending = Vec::new();
    for q in queues {
        let topic: Topic = q.parse()?;
        let found = match backend.admin().subscriptions(&topic).await {
            Ok(subs) => match subs.into_iter().find(|s| s.name == WORKER_SUBSCRIPTION) {
                Some(s) => Ok(s.backlog),
                None => Err("no worker has subscribed yet".to_string()),
            },
            Err(Error::Unsupported { .. }) => Err(format!("not available on {}", backend.name())),
            Err(Error::NotFound(_)) => Err("no such queue topic".to_string()),
            Err(e) => return Err(e),
        };
        pending.push((topic, found));
    }
    let workers = match url {
        Some(_) => Some(store(url).await?.workers().await?),
        None => None,
    };
    let now = now_ms();
    if json {
        let queues: Vec<Value> = pending
            .iter()
            .map(|(t, p)| match p {
                Ok(n) => json!({"queue": t.as_str(), "pending": n}),
                Err(why) => json!({"queue": t.as_str(), "pending": null, "why": why}),
            })
            .collect();
        let workers: Option<Vec<Value>> = workers.as_ref().map(|ws| {
            ws.iter()
                .map(|w| {
                    let mut v = serde_json::to_value(w).unwrap_or(Value::Null);
                    v["live"] = w.is_live(now, LIVE_INTERVALS).into();
                    v
                })
                .collect()
        });
        println!("{}", json!({"queues": queues, "workers": workers}));
        return Ok(());
    }
    for (topic, p) in &pending {
        match p {
            Ok(Some(n)) => println!("queue {topic}: {n} pending (queued, held for an eta or running: not yet acked)"),
            Ok(None) => println!("queue {topic}: pending unknown (the broker does not tell)"),
            Err(why) => println!("queue {topic}: pending unknown ({why})"),
        }
    }
    match &workers {
        None => println!("workers: no result store given (--results or PUBSUB_RESULTS)"),
        Some(ws) if ws.is_empty() => println!("workers: none"),
        Some(ws) => {
            for w in ws {
                print!("{}", worker_text(w, now));
            }
        }
    }
    Ok(())
}

fn worker_text(w: &WorkerStatus, now: u64) -> String {
    let host = w.host.as_deref().unwrap_or("?");
    let seen = if w.is_live(now, LIVE_INTERVALS) {
        format!("seen {}", ago(w.at, now))
    } else {
        format!("STALE: last seen {}, stopped without saying so", ago(w.at, now))
    };
    let mut out = format!(
        "worker {} (pid {} on {host}, {seen}): {} running, queues {}\n",
        w.name,
        w.pid,
        w.running.len(),
        w.queues.join(", ")
    );
    for t in &w.running {
        out.push_str(&format!("  {} {} started {}\n", t.id, t.name, ago(t.started_at, now)));
    }
    out
}
