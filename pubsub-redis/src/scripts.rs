//! The Lua scripts that make multi-step operations atomic on the server.

use std::sync::LazyLock;

use redis::Script;

/// Publish with optional q2 dedup and optional delay.
/// KEYS: stream, dedup key, delayed zset (all with the topic's hash tag).
/// ARGV: maxlen (0 = none), due unix ms (0 = now), dedup window ms,
/// dedup (1 = use the dedup key, 0 = none), fields...
/// Returns the stream id (or the delayed entry id), or the first send's id for a duplicate.
pub(crate) static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local stream, dkey, zkey = KEYS[1], KEYS[2], KEYS[3]
local dedup = ARGV[4] == '1'
if dedup then
  local prev = redis.call('GET', dkey)
  if prev then return prev end
end
local id
if tonumber(ARGV[2]) > 0 then
  id = 'delayed-' .. redis.call('INCR', zkey .. ':seq')
  redis.call('HSET', zkey .. ':' .. id, unpack(ARGV, 5))
  redis.call('ZADD', zkey, ARGV[2], id)
elseif tonumber(ARGV[1]) > 0 then
  id = redis.call('XADD', stream, 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 5))
else
  id = redis.call('XADD', stream, '*', unpack(ARGV, 5))
end
if dedup then redis.call('SET', dkey, id, 'PX', ARGV[3]) end
return id
"#,
    )
});

/// Moves delayed messages that are due into the stream.
/// KEYS: delayed zset, stream. ARGV: max to move. Returns how many moved.
pub(crate) static MOVE_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local zkey, stream = KEYS[1], KEYS[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', zkey, '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(due) do
  local h = zkey .. ':' .. id
  local fields = redis.call('HGETALL', h)
  if #fields > 0 then redis.call('XADD', stream, '*', unpack(fields)) end
  redis.call('DEL', h)
  redis.call('ZREM', zkey, id)
end
return #due
"#,
    )
});

/// Claims pending entries idle for at least min-idle, with their delivery counts.
/// KEYS: stream. ARGV: group, consumer, min idle ms, start cursor, count.
/// Returns {next cursor, entries, delivery counts}.
pub(crate) static RECLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local counts = {}
for i, e in ipairs(r[2]) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
  if p[1] then counts[i] = p[1][4] else counts[i] = 1 end
end
return {r[1], r[2], counts}
"#,
    )
});

/// Restarts an entry's idle time (its ack timeout) if `consumer` still
/// holds it: a reclaim by another consumer is not undone.
/// KEYS: stream. ARGV: group, consumer, entry id. Returns 1 if restarted.
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if not p[1] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', 0, 'JUSTID')
return 1
"#,
    )
});
