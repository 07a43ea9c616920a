//! Results in Redis (feature `redis`), as in the seed design: one key per
//! task with an expiry, a Pub/Sub notice on every write for waiters, and a
//! Lua script for the chord join.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use pubsub_core::{Error, Result};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use super::notices::{self, Notices};
use super::{chord_members_gone, ResultStore, DEFAULT_RESULT_TTL};
use crate::state::{now_ms, TaskRecord, WorkerStatus};

const NAME: &str = "redis";

/// A [`ResultStore`] in Redis: `pubsub-tasks:{id}` holds a task's record
/// (JSON, expiring after `ttl`), and each write is announced on the channel
/// of the same name, which [`wait_ready`](ResultStore::wait_ready) listens to
/// (every wait of a store and its clones on one shared Pub/Sub connection,
/// subscribed to `{prefix}:*`).
#[derive(Clone)]
pub struct RedisResultStore {
    client: redis::Client,
    conn: ConnectionManager,
    ttl: Duration,
    prefix: String,
    notices: Arc<RedisNotices>,
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

/// Marks chord members ARGV[6..] done in KEYS[1] (a set); when the set has
/// ARGV[1] members and the callback is not sent, and not claimed by a live
/// claim (ARGV[2] is now, in ms) of a member other than those joining
/// (ARGV[5..]), claims it in KEYS[2] for member ARGV[5] until ARGV[3]
/// (`until:member`) and answers the member list in KEYS[3] (-1, claiming
/// nothing, when it is gone); else nil. ARGV[4]: the TTL in ms.
const CHORD_JOIN: &str = r#"
redis.call('SADD', KEYS[1], unpack(ARGV, 6))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[1]) then return nil end
local claim = redis.call('GET', KEYS[2])
if claim == 'sent' then return nil end
if claim then
  local untl, holder = string.match(claim, '^(%d+):(%d+)$')
  local back = false
  for i = 5, #ARGV do
    if ARGV[i] == holder then back = true end
  end
  if not back and tonumber(untl or claim) > tonumber(ARGV[2]) then return nil end
end
local members = redis.call('GET', KEYS[3])
if not members then return -1 end
redis.call('SET', KEYS[2], ARGV[3] .. ':' .. ARGV[5], 'PX', ARGV[4])
return members
"#;

/// The most chord members one `CHORD_JOIN` call adds.
const JOIN_PART: usize = 1000;

impl RedisResultStore {
    /// Connects to `url` (`redis://...`); records live for a day.
    pub async fn connect(url: &str) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| {
            Error::InvalidConfiguration(format!("result store URL {}: {e}", pubsub_core::redact_url(url)))
        })?;
        let conn = ConnectionManager::new(client.clone())
            .await
            .map_err(|e| failed("connect", e))?;
        let prefix = "pubsub-tasks".to_string();
        Ok(RedisResultStore {
            notices: notices(&client, &prefix),
            client,
            conn,
            ttl: DEFAULT_RESULT_TTL,
            prefix,
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
        self.notices = notices(&self.client, &self.prefix);
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

    /// A key of chord `chord_id`'s join: `joined` (a set of member
    /// indices), `claim` (who sends the callback) or `members` (the ids).
    fn chord_key(&self, chord_id: &str, part: &str) -> String {
        format!("{}:chord:{chord_id}:{part}", self.prefix)
    }

    /// One [`CHORD_JOIN`] call for `indices`, a claim being `claimant`'s.
    async fn chord_join_part(
        &self,
        chord_id: &str,
        claimant: usize,
        indices: &[usize],
        size: usize,
        lease: Duration,
    ) -> Result<Option<Vec<String>>> {
        let now = now_ms();
        let script = redis::Script::new(CHORD_JOIN);
        let mut call = script.prepare_invoke();
        call.key(self.chord_key(chord_id, "joined"))
            .key(self.chord_key(chord_id, "claim"))
            .key(self.chord_key(chord_id, "members"))
            .arg(size)
            .arg(now)
            .arg(now + lease.as_millis() as u64)
            .arg(self.ttl_ms())
            .arg(claimant);
        for index in indices {
            call.arg(index);
        }
        let reply: redis::Value = call
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| failed("chord join", e))?;
        match reply {
            redis::Value::Nil => Ok(None),
            redis::Value::BulkString(list) => serde_json::from_slice(&list)
                .map(Some)
                .map_err(|e| Error::codec("chord members", e)),
            _ => Err(chord_members_gone(NAME, chord_id)),
        }
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

fn notices(client: &redis::Client, prefix: &str) -> Arc<RedisNotices> {
    Notices::new(Source {
        client: client.clone(),
        pattern: format!("{}:*", glob_escape(prefix)),
    })
}

/// Escapes Redis glob characters, so `prefix` matches only itself.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 2);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What the listener of a Redis store's waits subscribes with.
#[derive(Clone)]
struct Source {
    client: redis::Client,
    /// `{prefix}:*`, its glob characters escaped.
    pattern: String,
}

type RedisNotices = Notices<Source>;

/// Listens to the store's notices (`PSUBSCRIBE {prefix}:*`), subscribing
/// again after a dropped connection, until the store is gone.
async fn listen(notices: Weak<RedisNotices>) {
    let subscribe = |source: Source| async move {
        let mut pubsub = source.client.get_async_pubsub().await?;
        pubsub.psubscribe(&source.pattern).await?;
        Ok::<_, redis::RedisError>(pubsub.into_on_message())
    };
    notices::listen(notices, subscribe, |n, msg: redis::Msg| {
        // Only final records are announced ("1").
        if msg.get_payload_bytes() == b"1" {
            n.notify(msg.get_channel_name(), None);
        }
    })
    .await
}

#[async_trait]
impl ResultStore for RedisResultStore {
    async fn put(&self, record: &TaskRecord) -> Result<()> {
        let key = self.key(&record.id);
        let text = serde_json::to_string(record).map_err(|e| Error::codec("task record", e))?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&key)
            .arg(&text)
            .arg("PX")
            .arg(self.ttl_ms())
            .ignore();
        if record.state.is_ready() {
            // Waiters wait for a final record only: no notice of the others.
            pipe.cmd("PUBLISH").arg(&key).arg(1u8).ignore();
        }
        pipe.exec_async(&mut self.conn.clone())
            .await
            .map_err(|e| failed("SET", e))
    }

    async fn get(&self, id: &str) -> Result<Option<TaskRecord>> {
        self.read(id).await
    }

    async fn put_if_absent(&self, record: &TaskRecord) -> Result<bool> {
        let key = self.key(&record.id);
        let text = serde_json::to_string(record).map_err(|e| Error::codec("task record", e))?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&key)
            .arg(&text)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl_ms());
        if record.state.is_ready() {
            pipe.cmd("PUBLISH").arg(&key).arg(1u8).ignore();
        }
        let (set,): (Option<String>,) = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| failed("SET NX", e))?;
        Ok(set.is_some())
    }

    async fn get_with_revoked(&self, id: &str) -> Result<(Option<TaskRecord>, bool)> {
        let key = self.key(id);
        let (text, revoked): (Option<String>, Option<String>) = redis::cmd("MGET")
            .arg(&key)
            .arg(format!("{key}:revoked"))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| failed("MGET", e))?;
        let record = text
            .map(|t| serde_json::from_str(&t).map_err(|e| Error::codec("a task record in Redis is not JSON", e)))
            .transpose()?;
        Ok((record, revoked.is_some()))
    }

    async fn wait_ready(&self, id: &str, timeout: Duration) -> Result<Option<TaskRecord>> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.notices.start(listen);
        self.notices.wait(NAME, self.key(id), deadline, || self.read(id)).await
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

    async fn chord_start(&self, chord_id: &str, members: &[String]) -> Result<()> {
        let list = serde_json::to_string(members).map_err(|e| Error::codec("chord members", e))?;
        let _: () = self
            .conn
            .clone()
            .pset_ex(self.chord_key(chord_id, "members"), list, self.ttl_ms())
            .await
            .map_err(|e| failed("SET", e))?;
        Ok(())
    }

    async fn chord_join(
        &self,
        chord_id: &str,
        indices: &[usize],
        size: usize,
        lease: Duration,
    ) -> Result<Option<Vec<String>>> {
        // The indices go as script arguments, which Lua unpacks fewer than
        // 8,000 of: a larger batch is joined a part at a time.
        let mut told = None;
        let Some(&claimant) = indices.first() else {
            return Ok(None);
        };
        for part in indices.chunks(JOIN_PART) {
            let members = self.chord_join_part(chord_id, claimant, part, size, lease).await?;
            told = told.or(members);
        }
        Ok(told)
    }

    async fn chord_sent(&self, chord_id: &str) -> Result<()> {
        let _: () = self
            .conn
            .clone()
            .pset_ex(self.chord_key(chord_id, "claim"), "sent", self.ttl_ms())
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
