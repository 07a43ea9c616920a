//! Results in Redis (feature `redis`), as in the seed design: one key per
//! task with an expiry, a Pub/Sub notice on every write for waiters, and a
//! Lua script for the chord join.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use pubsub_core::{Error, Result};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use super::{ResultStore, DEFAULT_RESULT_TTL};
use crate::state::{now_ms, TaskRecord, WorkerStatus};

const NAME: &str = "redis";

/// A [`ResultStore`] in Redis: `pubsub-tasks:{id}` holds a task's record
/// (JSON, expiring after `ttl`), and each write is announced on the channel
/// of the same name, which [`wait_ready`](ResultStore::wait_ready) listens to.
#[derive(Clone)]
pub struct RedisResultStore {
    client: redis::Client,
    conn: ConnectionManager,
    ttl: Duration,
    prefix: String,
}

impl std::fmt::Debug for RedisResultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisResultStore")
            .field(
                "url",
                &pubsub_core::redact_url(&self.client.get_connection_info().addr().to_string()),
            )
            .field("ttl", &self.ttl)
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn failed(what: &str, e: redis::RedisError) -> Error {
    Error::connection(NAME, format!("result store: {what}"), e)
}

/// Marks chord member ARGV[1] done in KEYS[1] (a set); when the set has
/// ARGV[2] members and the callback is neither sent nor claimed by a live
/// claim, claims it in KEYS[2] until ARGV[4] (ms) and answers 1.
const CHORD_JOIN: &str = r#"
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[2]) then return 0 end
local claim = redis.call('GET', KEYS[2])
if claim == 'sent' then return 0 end
if claim and tonumber(claim) > tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
return 1
"#;

impl RedisResultStore {
    /// Connects to `url` (`redis://...`); records live for a day.
    pub async fn connect(url: &str) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| {
            Error::InvalidConfiguration(format!("result store URL {}: {e}", pubsub_core::redact_url(url)))
        })?;
        let conn = ConnectionManager::new(client.clone())
            .await
            .map_err(|e| failed("connect", e))?;
        Ok(RedisResultStore {
            client,
            conn,
            ttl: DEFAULT_RESULT_TTL,
            prefix: "pubsub-tasks".into(),
        })
    }

    /// Records expire after `ttl`.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Keys start with `prefix` (default `pubsub-tasks`), to keep several
    /// applications apart in one Redis.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    fn key(&self, id: &str) -> String {
        format!("{}:{id}", self.prefix)
    }

    /// The hash of the workers' heartbeats, `{prefix}-workers` (no `:`
    /// after the prefix, so no task id's key is this one).
    fn workers_key(&self) -> String {
        format!("{}-workers", self.prefix)
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis().max(1) as u64
    }

    async fn read(&self, id: &str) -> Result<Option<TaskRecord>> {
        let text: Option<String> = self
            .conn
            .clone()
            .get(self.key(id))
            .await
            .map_err(|e| failed("GET", e))?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| Error::codec("a task record in Redis is not JSON", e)))
            .transpose()
    }
}

#[async_trait]
impl ResultStore for RedisResultStore {
    async fn put(&self, record: &TaskRecord) -> Result<()> {
        let key = self.key(&record.id);
        let text = serde_json::to_string(record).map_err(|e| Error::codec("task record", e))?;
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&key)
            .arg(&text)
            .arg("PX")
            .arg(self.ttl_ms())
            .ignore()
            .cmd("PUBLISH")
            .arg(&key)
            .arg(record.state.is_ready() as u8)
            .ignore()
            .exec_async(&mut self.conn.clone())
            .await
            .map_err(|e| failed("SET", e))
    }

    async fn get(&self, id: &str) -> Result<Option<TaskRecord>> {
        self.read(id).await
    }

    async fn wait_ready(&self, id: &str, timeout: Duration) -> Result<Option<TaskRecord>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pubsub = self
            .client
            .get_async_pubsub()
            .await
            .map_err(|e| failed("SUBSCRIBE", e))?;
        // Subscribed before reading, so a write in between is not missed.
        pubsub
            .subscribe(self.key(id))
            .await
            .map_err(|e| failed("SUBSCRIBE", e))?;
        if let Some(r) = self.read(id).await?.filter(|r| r.state.is_ready()) {
            return Ok(Some(r));
        }
        let mut notices = pubsub.on_message();
        loop {
            match tokio::time::timeout_at(deadline, notices.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => {
                    return Err(Error::Connection {
                        backend: NAME,
                        message: "result store: the Pub/Sub connection closed while waiting".into(),
                        source: None,
                    })
                }
                Ok(Some(_)) => {
                    if let Some(r) = self.read(id).await?.filter(|r| r.state.is_ready()) {
                        return Ok(Some(r));
                    }
                }
            }
        }
    }

    async fn forget(&self, id: &str) -> Result<()> {
        let _: () = self
            .conn
            .clone()
            .del(self.key(id))
            .await
            .map_err(|e| failed("DEL", e))?;
        Ok(())
    }

    async fn revoke(&self, id: &str) -> Result<()> {
        let _: () = self
            .conn
            .clone()
            .pset_ex(format!("{}:revoked", self.key(id)), 1, self.ttl_ms())
            .await
            .map_err(|e| failed("SET", e))?;
        Ok(())
    }

    async fn is_revoked(&self, id: &str) -> Result<bool> {
        self.conn
            .clone()
            .exists(format!("{}:revoked", self.key(id)))
            .await
            .map_err(|e| failed("EXISTS", e))
    }

    async fn chord_join(&self, chord_id: &str, index: usize, size: usize, lease: Duration) -> Result<bool> {
        let now = now_ms();
        let joined: i64 = redis::Script::new(CHORD_JOIN)
            .key(format!("{}:chord:{chord_id}:joined", self.prefix))
            .key(format!("{}:chord:{chord_id}:claim", self.prefix))
            .arg(index)
            .arg(size)
            .arg(now)
            .arg(now + lease.as_millis() as u64)
            .arg(self.ttl_ms())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| failed("chord join", e))?;
        Ok(joined == 1)
    }

    async fn chord_sent(&self, chord_id: &str) -> Result<()> {
        let _: () = self
            .conn
            .clone()
            .pset_ex(format!("{}:chord:{chord_id}:claim", self.prefix), "sent", self.ttl_ms())
            .await
            .map_err(|e| failed("SET", e))?;
        Ok(())
    }

    async fn put_worker(&self, status: &WorkerStatus) -> Result<()> {
        let text = serde_json::to_string(status).map_err(|e| Error::codec("worker heartbeat", e))?;
        let _: () = self
            .conn
            .clone()
            .hset(self.workers_key(), &status.name, text)
            .await
            .map_err(|e| failed("HSET", e))?;
        Ok(())
    }

    async fn remove_worker(&self, name: &str) -> Result<()> {
        let _: () = self
            .conn
            .clone()
            .hdel(self.workers_key(), name)
            .await
            .map_err(|e| failed("HDEL", e))?;
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerStatus>> {
        let all: std::collections::HashMap<String, String> = self
            .conn
            .clone()
            .hgetall(self.workers_key())
            .await
            .map_err(|e| failed("HGETALL", e))?;
        let now = now_ms();
        let mut out = Vec::with_capacity(all.len());
        for (name, text) in all {
            let status: WorkerStatus =
                serde_json::from_str(&text).map_err(|e| Error::codec("a worker heartbeat in Redis is not JSON", e))?;
            if now.saturating_sub(status.at) > 3_600_000 {
                // Silent for an hour: gone (killed without removing itself).
                let _ = self.remove_worker(&name).await;
                continue;
            }
            out.push(status);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
