//! Replay on Redis Streams: entry ids are `{milliseconds}-{sequence}`, so
//! a position (earliest, latest, an id, a time) becomes an exclusive lower
//! bound id; readers `XREAD` from it and a seek is `XGROUP SETID`. Log
//! positions count entries with `XINFO STREAM` (`entries-added`, `length`)
//! and `XINFO GROUPS` (`entries-read`, `pending`), Redis 7.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, UNIX_EPOCH};

use crate::conn::Conn;
use async_trait::async_trait;
use pubsub_core::{ensure_open, Error, Message, MessageId, MessageParts, NoAck, Position, Reader, Result, Topic};
use redis::{Script, Value};

use crate::backend::{map_err, Inner, NAME};
use crate::consumer::connect_blocking;
use crate::fields::{fill_parts, read_reply_entries};
use crate::info::{groups_info, int_field, stream_info, text_field};
use crate::keys::TopicKeys;

/// A stream entry id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct EntryId {
    ms: u64,
    seq: u64,
}

impl EntryId {
    const ZERO: EntryId = EntryId { ms: 0, seq: 0 };

    pub(crate) fn parse(s: &str) -> Option<EntryId> {
        let (ms, seq) = s.split_once('-')?;
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The id just before this one: an exclusive bound that includes it.
    fn before(self) -> EntryId {
        match (self.ms, self.seq) {
            (0, 0) => EntryId::ZERO,
            (ms, 0) => EntryId {
                ms: ms - 1,
                seq: u64::MAX,
            },
            (ms, seq) => EntryId { ms, seq: seq - 1 },
        }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The id of the newest entry ever added (`0-0` for no stream).
async fn last_id(conn: &mut Conn, key: &str) -> Result<EntryId> {
    let info = stream_info(conn, key).await?;
    Ok(text_field(&info, "last-generated-id")
        .and_then(|s| EntryId::parse(&s))
        .unwrap_or(EntryId::ZERO))
}

/// The exclusive lower bound id of a position.
pub(crate) async fn bound_of(conn: &mut Conn, key: &str, position: &Position) -> Result<EntryId> {
    Ok(match position {
        Position::Earliest => EntryId::ZERO,
        Position::Latest => last_id(conn, key).await?,
        Position::Id(id) => EntryId::parse(&id.to_string())
            .ok_or_else(|| Error::InvalidConfiguration(format!("{id} is not a Redis stream entry id")))?
            .before(),
        Position::Timestamp(t) => {
            let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            EntryId { ms, seq: 0 }.before()
        }
        other => return Err(Error::unsupported(NAME, format!("position {other:?}"))),
    })
}

/// `XGROUP SETID` with `ENTRIESREAD` (Redis 7): without it Redis forgets
/// how many entries the group has read, and its position is lost. The count
/// is the entries ever added less those after the bound, taken in one
/// script so that no entry is added in between. Counting walks the entries
/// after the bound (none for Latest; none either when the bound is before
/// the first entry, as for Earliest). On a server without `entries-added`
/// (Redis 6) it is a plain `SETID`.
/// KEYS: stream. ARGV: group, exclusive bound id.
static SET_GROUP_POSITION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local stream, group, bound = KEYS[1], ARGV[1], ARGV[2]
local info = redis.call('XINFO', 'STREAM', stream)
local added, length, first
for i = 1, #info, 2 do
  if info[i] == 'entries-added' then added = info[i + 1]
  elseif info[i] == 'length' then length = info[i + 1]
  elseif info[i] == 'first-entry' and type(info[i + 1]) == 'table' then first = info[i + 1][1]
  end
end
if not added then
  return redis.call('XGROUP', 'SETID', stream, group, bound)
end
local after = 0
if length > 0 then
  local page = redis.call('XRANGE', stream, '-', bound, 'COUNT', 1)
  if #page == 0 then
    after = length
  else
    local start = '(' .. bound
    while true do
      page = redis.call('XRANGE', stream, start, '+', 'COUNT', 1000)
      after = after + #page
      if #page < 1000 then break end
      start = '(' .. page[#page][1]
    end
  end
end
return redis.call('XGROUP', 'SETID', stream, group, bound, 'ENTRIESREAD', string.format('%d', added - after))
"#,
    )
});

/// Moves consumer group `group` to a position (`XGROUP SETID`, keeping
/// the group's read count so its position stays known).
pub(crate) async fn set_group_position(
    inner: &Inner,
    keys: &TopicKeys,
    group: &str,
    position: &Position,
) -> Result<()> {
    let mut conn = inner.conn.clone();
    let bound = bound_of(&mut conn, &keys.stream, position).await?;
    let _: Value = SET_GROUP_POSITION
        .key(&keys.stream)
        .arg(group)
        .arg(bound.to_string())
        .invoke_async(&mut conn)
        .await
        .map_err(|e| map_err(&format!("seek subscription {group}"), e))?;
    Ok(())
}

/// (earliest, latest) as counts of entries ever added.
pub(crate) async fn stream_positions(conn: &mut Conn, key: &str) -> Result<(u64, u64)> {
    let info = stream_info(conn, key).await?;
    if info.is_empty() {
        return Err(Error::NotFound(format!("stream {key}")));
    }
    let added = int_field(&info, "entries-added")
        .ok_or_else(|| Error::broker_msg(NAME, "XINFO STREAM has no entries-added (Redis 7 is needed)"))?;
    let length = int_field(&info, "length").unwrap_or(0);
    Ok((added.saturating_sub(length), added))
}

/// The acked position of a group: entries it has read less those pending.
pub(crate) async fn group_position(conn: &mut Conn, key: &str, group: &str) -> Result<u64> {
    for fields in groups_info(conn, key).await? {
        if text_field(&fields, "name").as_deref() != Some(group) {
            continue;
        }
        let read = int_field(&fields, "entries-read").ok_or_else(|| {
            Error::broker_msg(
                NAME,
                format!("Redis cannot tell how far group {group} has read (after a seek)"),
            )
        })?;
        return Ok(read.saturating_sub(int_field(&fields, "pending").unwrap_or(0)));
    }
    Err(Error::NotFound(format!("subscription {group}")))
}

/// A reader: `XREAD` from an exclusive bound, on a connection of its own
/// (its blocking reads would hold up a shared one).
pub(crate) struct RedisReader {
    inner: Arc<Inner>,
    topic: Topic,
    key: String,
    reads: tokio::sync::Mutex<Reads>,
    closed: AtomicBool,
}

/// What `next` works on.
struct Reads {
    /// `None` after the connection broke, until a read opens another.
    conn: Option<Conn>,
    /// The newest entry read: reading goes on after it.
    after: EntryId,
    buffer: VecDeque<Message>,
    backoff: Duration,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl fmt::Debug for RedisReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisReader").field("topic", &self.topic).finish()
    }
}

/// How long one blocking read waits before checking for close.
const BLOCK: Duration = Duration::from_millis(500);

impl RedisReader {
    pub(crate) async fn open(inner: Arc<Inner>, topic: &Topic, start: &Position) -> Result<Self> {
        let key = TopicKeys::new(topic).stream;
        let mut conn = inner.conn.clone();
        let after = bound_of(&mut conn, &key, start).await?;
        let reads = Reads {
            conn: Some(connect_blocking(&inner).await?),
            after,
            buffer: VecDeque::new(),
            backoff: FIRST_BACKOFF,
        };
        Ok(RedisReader {
            inner,
            topic: topic.clone(),
            key,
            reads: tokio::sync::Mutex::new(reads),
            closed: AtomicBool::new(false),
        })
    }

    fn ensure_open(&self) -> Result<()> {
        ensure_open(self.closed.load(Ordering::Acquire), "reader")?;
        self.inner.ensure_open()
    }

    /// One blocking `XREAD` of what follows `reads.after`.
    async fn read_after(&self, reads: &mut Reads) -> Result<Value> {
        let conn = match reads.conn.as_mut() {
            Some(c) => c,
            None => reads.conn.insert(connect_blocking(&self.inner).await?),
        };
        redis::cmd("XREAD")
            .arg("COUNT")
            .arg(100)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(reads.after.to_string())
            .query_async(conn)
            .await
            .map_err(|e| map_err("XREAD", e))
    }

    fn message(&self, id: &str, fields: &Value) -> Message {
        let mut parts = MessageParts::new(MessageId::from_text(id), self.topic.clone());
        fill_parts(&mut parts, id, fields);
        Message::new(parts, Arc::new(NoAck))
    }
}

#[async_trait]
impl Reader for RedisReader {
    fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Reads on after a lost connection (a server restart) from the newest
    /// entry read, with backoff; other errors end the call.
    async fn next(&self) -> Result<Message> {
        let mut reads = self.reads.lock().await;
        loop {
            self.ensure_open()?;
            if let Some(m) = reads.buffer.pop_front() {
                return Ok(m);
            }
            match self.read_after(&mut reads).await {
                Ok(reply) => {
                    reads.backoff = FIRST_BACKOFF;
                    for (id, fields) in read_reply_entries(&reply) {
                        if let Some(parsed) = EntryId::parse(&id) {
                            reads.after = parsed;
                        }
                        let m = self.message(&id, fields);
                        reads.buffer.push_back(m);
                    }
                }
                Err(e) if e.is_retriable() => {
                    tracing::warn!(topic = %self.topic, error = %e, retry_in = ?reads.backoff, "redis reader: read failed");
                    reads.conn = None;
                    tokio::time::sleep(reads.backoff).await;
                    reads.backoff = (reads.backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn has_next(&self) -> Result<bool> {
        self.ensure_open()?;
        let reads = self.reads.lock().await;
        if !reads.buffer.is_empty() {
            return Ok(true);
        }
        let mut conn = self.inner.conn.clone();
        Ok(last_id(&mut conn, &self.key).await? > reads.after)
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::EntryId;

    #[test]
    fn ids_order_and_step_back() {
        let a = EntryId::parse("5-0").unwrap();
        assert_eq!(a.before().to_string(), format!("4-{}", u64::MAX));
        assert_eq!(EntryId::parse("5-3").unwrap().before().to_string(), "5-2");
        assert!(EntryId::parse("5-3").unwrap() > EntryId::parse("4-9").unwrap());
        assert_eq!(EntryId::parse("0-0").unwrap().before().to_string(), "0-0");
        assert!(EntryId::parse("x-1").is_none() && EntryId::parse("12").is_none());
    }
}
