//! `XINFO STREAM` and `XINFO GROUPS` replies as name → value fields, for
//! the admin API (backlog) and replay (positions).

use crate::conn::Conn;
use pubsub_core::Result;
use redis::Value;

use crate::backend::map_err;
use crate::fields::{items, text_of};

/// One reply's fields, in the order Redis gave them.
pub(crate) type Fields = Vec<(String, Value)>;

/// A flat `[name, value, ...]` array (or RESP3 map) as pairs.
fn pairs(v: &Value) -> Fields {
    match v {
        Value::Map(m) => m.iter().filter_map(|(k, v)| Some((text_of(k)?, v.clone()))).collect(),
        other => items(other)
            .chunks(2)
            .filter_map(|p| Some((text_of(p.first()?)?, p.get(1)?.clone())))
            .collect(),
    }
}

pub(crate) fn field<'a>(fields: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// A numeric field; `None` where it is missing or nil (Redis gives nil
/// where it cannot tell, e.g. a lag after deletions inside the range).
pub(crate) fn int_field(fields: &[(String, Value)], name: &str) -> Option<u64> {
    field(fields, name).and_then(|v| redis::from_redis_value::<u64>(v.clone()).ok())
}

pub(crate) fn text_field(fields: &[(String, Value)], name: &str) -> Option<String> {
    field(fields, name).and_then(text_of)
}

/// `XINFO STREAM`; empty if the stream does not exist.
pub(crate) async fn stream_info(conn: &mut Conn, key: &str) -> Result<Fields> {
    let reply: redis::RedisResult<Value> = redis::cmd("XINFO").arg("STREAM").arg(key).query_async(conn).await;
    match reply {
        Ok(v) => Ok(pairs(&v)),
        Err(e) if e.to_string().contains("no such key") => Ok(Vec::new()),
        Err(e) => Err(map_err("XINFO STREAM", e)),
    }
}

/// `XINFO GROUPS`: one entry per consumer group.
pub(crate) async fn groups_info(conn: &mut Conn, key: &str) -> Result<Vec<Fields>> {
    let reply: Vec<Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await
        .map_err(|e| map_err("XINFO GROUPS", e))?;
    Ok(reply.iter().map(pairs).collect())
}
