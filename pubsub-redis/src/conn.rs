//! One connection type for a single server and for a Redis Cluster, so the
//! adapter has one code path: every command goes through [`Conn`], which is
//! a [`ConnectionLike`] over redis-rs's connection manager, a plain
//! multiplexed connection (blocking reads) or its async cluster connection
//! (which follows `MOVED`/`ASK` and refreshes its slot map after a failover).
//!
//! What differs on a cluster is kept here: finding the masters for a `SCAN`
//! of every node, routing `WAIT` to the master of a key's slot, and
//! opening Pub/Sub connections (classic Pub/Sub is broadcast to every node
//! of a cluster, so any reachable node will do).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::ClusterConfig;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// A connection to a server or to a cluster; cheap to clone (shared).
#[derive(Clone)]
pub(crate) enum Conn {
    /// The shared connection to a single server (reconnects by itself).
    Manager(ConnectionManager),
    /// A connection of its own to a single server, for blocking reads.
    Direct(MultiplexedConnection),
    /// A cluster connection (shared, or one of its own for blocking reads);
    /// boxed, as it is much larger than the others.
    Cluster(Box<ClusterConn>),
}

/// A cluster connection that is made again from the seed nodes after a
/// connection error, as a safeguard: redis-rs 1.8 rebuilds its slot map on
/// `MOVED`/`ASK` and when it finds no connection for a node, but retries a
/// refused or timed-out node as it is. A fresh connection asks the live
/// seeds for the slots (`CLUSTER SLOTS`), so it follows a failover once
/// the cluster has made it; until then errors repeat and it is made again,
/// at most every 500 ms.
#[derive(Clone)]
pub(crate) struct ClusterConn {
    current: Arc<RwLock<ClusterConnection>>,
    client: redis::cluster::ClusterClient,
    config: ClusterConfig,
    rebuilding: Arc<AtomicBool>,
}

impl ClusterConn {
    async fn connect(client: &redis::cluster::ClusterClient, config: ClusterConfig) -> RedisResult<Self> {
        let conn = client.get_async_connection_with_config(config.clone()).await?;
        Ok(ClusterConn {
            current: Arc::new(RwLock::new(conn)),
            client: client.clone(),
            config,
            rebuilding: Arc::new(AtomicBool::new(false)),
        })
    }

    fn get(&self) -> ClusterConnection {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// After a connection-level error, makes the connection again in the
    /// background (one rebuild at a time, then a 500 ms pause).
    fn note(&self, e: &redis::RedisError) {
        let lost = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.kind() == redis::ErrorKind::ClusterConnectionNotFound;
        if !lost || self.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let timeout = Duration::from_secs(5);
            if let Ok(Ok(conn)) = tokio::time::timeout(
                timeout,
                this.client.get_async_connection_with_config(this.config.clone()),
            )
            .await
            {
                *this.current.write().unwrap_or_else(|e| e.into_inner()) = conn;
                tracing::debug!("redis cluster: connection made again from the seed nodes");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            this.rebuilding.store(false, Ordering::Release);
        });
    }

    /// The result of a command on the current connection, noting a connection error.
    fn noted<T>(&self, r: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &r {
            self.note(e);
        }
        r
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Direct(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => Box::pin(async move {
                let r = c.get().req_packed_command(cmd).await;
                c.noted(r)
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Direct(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => Box::pin(async move {
                let r = c.get().req_packed_commands(pipeline, offset, count).await;
                c.noted(r)
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(c) => c.get_db(),
            Conn::Direct(c) => c.get_db(),
            Conn::Cluster(c) => c.get().get_db(),
        }
    }
}

impl Conn {
    /// `WAIT replicas timeout` on the server holding `key` (the master of
    /// its slot on a cluster, where redis-rs would otherwise send `WAIT` to
    /// every master): how many replicas have the writes made so far on
    /// this connection.
    pub(crate) async fn wait_replicas(&mut self, key: &str, replicas: usize, timeout: Duration) -> RedisResult<i64> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(timeout.as_millis().max(1) as u64);
        match self {
            Conn::Cluster(c) => {
                let route = Route::with_slot(Slot::for_key(key), SlotAddr::Master);
                let to = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let r = c.get().route_command(cmd, to).await;
                let v = c.noted(r)?;
                Ok(redis::from_redis_value(v)?)
            }
            other => cmd.query_async(other).await,
        }
    }

    /// Every key matching `pattern` of type `kind`: one `SCAN` walk on a
    /// single server, one on each master of a cluster (a `SCAN` cursor is
    /// per node).
    pub(crate) async fn scan_all(&mut self, pattern: &str, kind: &str) -> RedisResult<Vec<String>> {
        let scan = |cursor: u64| {
            let mut c = redis::cmd("SCAN");
            c.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .arg("TYPE")
                .arg(kind);
            c
        };
        let mut names = Vec::new();
        match self {
            Conn::Cluster(c) => {
                let mut c = c.get();
                let c = &mut c;
                for (host, port) in masters(c).await? {
                    let mut cursor = 0u64;
                    loop {
                        let to = SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port,
                        };
                        let v = c.route_command(scan(cursor), RoutingInfo::SingleNode(to)).await?;
                        let (next, batch): (u64, Vec<String>) = redis::from_redis_value(v)?;
                        names.extend(batch);
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
                }
            }
            other => {
                let mut cursor = 0u64;
                loop {
                    let (next, batch): (u64, Vec<String>) = scan(cursor).query_async(other).await?;
                    names.extend(batch);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        }
        Ok(names)
    }
}

/// The masters serving slots, from `CLUSTER NODES` (a master without slots
/// holds no keys; one flagged `fail` is being replaced).
async fn masters(c: &mut ClusterConnection) -> RedisResult<Vec<(String, u16)>> {
    let text: String = redis::cmd("CLUSTER").arg("NODES").query_async(c).await?;
    Ok(parse_masters(&text))
}

fn parse_masters(text: &str) -> Vec<(String, u16)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let flags = f.get(2)?;
            let serving = flags.split(',').any(|x| x == "master") && !flags.contains("fail") && f.len() > 8;
            if !serving {
                return None;
            }
            // ip:port@cport[,hostname]
            let addr = f.get(1)?.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect()
}

/// How to open connections: one server, or a cluster (with a client per
/// seed node for Pub/Sub). One per backend, so its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Clients {
    /// A single server.
    Single(Client),
    /// A cluster: the cluster client and one client per seed node.
    Cluster {
        /// Opens cluster connections.
        client: redis::cluster::ClusterClient,
        /// The seed nodes, for Pub/Sub.
        nodes: Vec<Client>,
    },
}

impl Clients {
    /// The shared connection to a cluster.
    pub(crate) async fn shared_cluster(&self, timeout: Duration) -> RedisResult<Conn> {
        match self {
            Clients::Cluster { client, .. } => {
                let cfg = ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                Ok(Conn::Cluster(Box::new(ClusterConn::connect(client, cfg).await?)))
            }
            Clients::Single(_) => Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "not a cluster",
            ))),
        }
    }

    /// A connection of its own for blocking reads (`XREAD[GROUP] BLOCK`),
    /// which would hold up a shared one: replies may take `block` longer
    /// than a command. It does not reconnect: callers open another.
    pub(crate) async fn blocking(&self, timeout: Duration, block: Duration) -> RedisResult<Conn> {
        match self {
            Clients::Single(client) => {
                let cfg = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(None); // blocking reads wait longer than a command timeout
                Ok(Conn::Direct(
                    client.get_multiplexed_async_connection_with_config(&cfg).await?,
                ))
            }
            Clients::Cluster { client, .. } => {
                let cfg = ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout + block.max(Duration::from_secs(1)));
                Ok(Conn::Cluster(Box::new(ClusterConn::connect(client, cfg).await?)))
            }
        }
    }

    /// A Pub/Sub connection: to the server, or to the first seed node of a
    /// cluster that answers (`PUBLISH` reaches every node of a cluster).
    pub(crate) async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        match self {
            Clients::Single(client) => client.get_async_pubsub().await,
            Clients::Cluster { nodes, .. } => {
                let mut last = None;
                for node in nodes {
                    match node.get_async_pubsub().await {
                        Ok(ps) => return Ok(ps),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no cluster node"))
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn masters_serving_slots_are_found() {
        let nodes = "\
a 127.0.0.1:7005@17005 slave b 0 1 3 connected
c 127.0.0.1:7000@17000 myself,master - 0 1 1 connected 0-5460
d 127.0.0.1:7001@17001 master,fail - 0 1 2 connected 5461-10922
e 127.0.0.1:7004@17004 master - 0 1 4 connected 5461-10922
f 127.0.0.1:7006@17006 master - 0 1 5 connected
";
        assert_eq!(
            super::parse_masters(nodes),
            vec![("127.0.0.1".to_string(), 7000), ("127.0.0.1".to_string(), 7004)]
        );
    }
}
