//! A Redis Cluster for tests that kill nodes: 3 masters and 3 replicas,
//! each a `redis-server --cluster-enabled yes` child process on a free
//! loopback port (its cluster bus on port + 10000), data in a temp dir,
//! made a cluster by `redis-cli --cluster create --cluster-replicas 1`.
//! `cluster-node-timeout` is 2 s, so a killed master's replica takes over
//! within a few seconds; a restarted node rejoins (as a replica of the
//! master that replaced it).
//!
//! ```no_run
//! # async fn demo() -> pubsub::Result<()> {
//! use pubsub::testing::TestRedisCluster;
//!
//! let mut cluster = TestRedisCluster::start().await?;
//! let backend = cluster.backend().await?;
//! let killed = cluster.kill_master_of("pubsub:{tenant.ns.queue}").await?;
//! cluster.wait_failover("pubsub:{tenant.ns.queue}", killed).await?; // a replica was promoted
//! cluster.restart(killed).await?;      // back, as a replica
//! # drop(backend); Ok(()) }
//! ```

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pubsub_core::{Error, PubSubBackend, Result};

use super::{find_binary, missing, START_TIMEOUT};
use crate::{BackendConfig, BackendKind};

/// Nodes of a [`TestRedisCluster`]: 3 masters, each with one replica.
pub const CLUSTER_NODES: usize = 6;

/// A 6-node Redis Cluster owned by a test; every node is killed when it is dropped.
pub struct TestRedisCluster {
    dir: tempfile::TempDir,
    server: PathBuf,
    cli: PathBuf,
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
}

impl std::fmt::Debug for TestRedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRedisCluster").field("ports", &self.ports).finish()
    }
}

/// Where the next port search of this process starts: clusters started
/// at once by the tests of one binary get different ports.
static NEXT_PORT: std::sync::Mutex<u16> = std::sync::Mutex::new(0);

/// `n` free loopback ports whose cluster bus ports (+10000) are free too.
fn free_cluster_ports(n: usize) -> Result<Vec<u16>> {
    const LOW: u16 = 20_000;
    const HIGH: u16 = 45_000;
    let mut next = NEXT_PORT.lock().unwrap_or_else(|e| e.into_inner());
    if *next == 0 {
        // Processes start at different places too.
        *next = LOW + (std::process::id() % 2_000) as u16 * 10;
    }
    let mut ports = Vec::new();
    let mut port = *next;
    for _ in LOW..HIGH {
        if ports.len() == n {
            break;
        }
        let free =
            TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok();
        if free {
            ports.push(port);
        }
        port = if port + 1 >= HIGH { LOW } else { port + 1 };
    }
    *next = port;
    if ports.len() < n {
        return Err(Error::broker_msg("testing", "no free ports for a Redis Cluster"));
    }
    Ok(ports)
}

impl TestRedisCluster {
    /// Starts 6 nodes, makes them a cluster of 3 masters with a replica
    /// each, and waits until every node reports `cluster_state:ok`.
    ///
    /// A missing `redis-server` or `redis-cli` is [`Error::NotFound`].
    pub async fn start() -> Result<Self> {
        let server = find_binary("redis-server")
            .ok_or_else(|| missing(BackendKind::Redis, "redis-server", "apt-get install redis-server"))?;
        let cli = find_binary("redis-cli")
            .ok_or_else(|| missing(BackendKind::Redis, "redis-cli", "apt-get install redis-tools"))?;
        let dir = tempfile::Builder::new()
            .prefix("pubsub-redis-cluster-")
            .tempdir()
            .map_err(|e| Error::broker("testing", "temp dir", e))?;
        let ports = free_cluster_ports(CLUSTER_NODES)?;
        let mut cluster = TestRedisCluster {
            dir,
            server,
            cli,
            children: (0..ports.len()).map(|_| None).collect(),
            ports,
        };
        for node in 0..CLUSTER_NODES {
            cluster.launch(node)?;
        }
        for node in 0..CLUSTER_NODES {
            cluster.wait_answers(node).await?;
        }
        let mut create = Command::new(&cluster.cli);
        create.args(["--cluster", "create"]);
        for port in &cluster.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = create
            .spawn()
            .map_err(|e| Error::broker("testing", "redis-cli --cluster create", e))?;
        let pid = child.id();
        // Bounded: redis-cli waits for ever for a node that never joins.
        let out = match tokio::time::timeout(
            START_TIMEOUT,
            tokio::task::spawn_blocking(move || child.wait_with_output()),
        )
        .await
        {
            Ok(out) => out
                .map_err(|e| Error::broker("testing", "redis-cli --cluster create", e))?
                .map_err(|e| Error::broker("testing", "redis-cli --cluster create", e))?,
            Err(_) => {
                let _ = Command::new("kill").arg(pid.to_string()).status();
                return Err(Error::broker_msg(
                    "testing",
                    format!("redis-cli --cluster create did not finish; logs:\n{}", cluster.logs()),
                ));
            }
        };
        if !out.status.success() {
            return Err(Error::broker_msg(
                "testing",
                format!(
                    "redis-cli --cluster create failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ));
        }
        cluster.wait_healthy().await?;
        Ok(cluster)
    }

    fn node_dir(&self, node: usize) -> PathBuf {
        self.dir.path().join(self.ports[node].to_string())
    }

    fn launch(&mut self, node: usize) -> Result<()> {
        let port = self.ports[node];
        let dir = self.node_dir(node);
        std::fs::create_dir_all(&dir).map_err(|e| Error::broker("testing", "node dir", e))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stdout.log"))
            .map_err(|e| Error::broker("testing", "log file", e))?;
        let err = log.try_clone().map_err(|e| Error::broker("testing", "log file", e))?;
        let child = Command::new(&self.server)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", "2000"])
            .args(["--appendonly", "yes", "--save", ""])
            // Replicas sync at once (a replica that never synced is not promoted).
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&dir)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::broker("testing", format!("start redis-server on {port}"), e))?;
        self.children[node] = Some(child);
        Ok(())
    }

    async fn wait_answers(&mut self, node: usize) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while self.cli_at(node, &["PING"]).await.as_deref() != Some("PONG") {
            if !self.is_running(node) {
                return Err(Error::broker_msg(
                    "testing",
                    format!(
                        "redis-server on {} exited during start-up; logs:\n{}",
                        self.ports[node],
                        self.logs()
                    ),
                ));
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(START_TIMEOUT));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// `redis-cli -p <node's port> args...`, its output trimmed; `None` if
    /// the node did not answer.
    async fn cli_at(&self, node: usize, args: &[&str]) -> Option<String> {
        let mut cmd = Command::new(&self.cli);
        cmd.args(["-p", &self.ports[node].to_string()]).args(args);
        let out = tokio::task::spawn_blocking(move || cmd.output()).await.ok()?.ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
    }

    /// The loopback ports of the nodes, by node index.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// `redis+cluster://127.0.0.1:p0,...` with every node as a seed.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// [`url`](Self::url) as a configuration.
    pub fn config(&self) -> Result<BackendConfig> {
        BackendConfig::from_url(&self.url())
    }

    /// Connects a backend to the cluster.
    pub async fn backend(&self) -> Result<Arc<dyn PubSubBackend>> {
        self.config()?.connect().await
    }

    /// Whether node `node`'s process is alive.
    pub fn is_running(&mut self, node: usize) -> bool {
        matches!(self.children[node].as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The node that is master of `key`'s slot now, as seen by a live node.
    pub async fn master_of(&mut self, key: &str) -> Result<usize> {
        for asked in 0..CLUSTER_NODES {
            if !self.is_running(asked) {
                continue;
            }
            let Some(slot) = self.cli_at(asked, &["CLUSTER", "KEYSLOT", key]).await else {
                continue;
            };
            let slot: u16 = slot
                .parse()
                .map_err(|_| Error::broker_msg("testing", format!("CLUSTER KEYSLOT answered {slot:?}")))?;
            let Some(nodes) = self.cli_at(asked, &["CLUSTER", "NODES"]).await else {
                continue;
            };
            if let Some(port) = master_port_of_slot(&nodes, slot) {
                if let Some(node) = self.ports.iter().position(|p| *p == port) {
                    return Ok(node);
                }
            }
        }
        Err(Error::broker_msg(
            "testing",
            format!("no master serves the slot of {key}"),
        ))
    }

    /// SIGKILLs node `node`, as a crash would.
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.children[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILLs the master of `key`'s slot; returns which node it was.
    pub async fn kill_master_of(&mut self, key: &str) -> Result<usize> {
        let node = self.master_of(key).await?;
        self.kill(node);
        Ok(node)
    }

    /// Starts node `node` again on its port and data; it rejoins the
    /// cluster (a replica, if its slots were taken over meanwhile).
    pub async fn restart(&mut self, node: usize) -> Result<()> {
        if self.is_running(node) {
            return Ok(());
        }
        self.launch(node)?;
        self.wait_answers(node).await
    }

    /// After [`kill`](Self::kill)ing `killed`, waits until another node is
    /// master of `key`'s slot (a replica took over, after the 2 s node
    /// timeout) and the cluster is healthy; returns how long that took.
    pub async fn wait_failover(&mut self, key: &str, killed: usize) -> Result<Duration> {
        let started = Instant::now();
        let deadline = started + START_TIMEOUT;
        loop {
            match self.master_of(key).await {
                Ok(node) if node != killed && self.is_running(node) => break,
                _ if Instant::now() > deadline => {
                    return Err(Error::broker_msg(
                        "testing",
                        format!(
                            "no replica took over {key} within {START_TIMEOUT:?}; logs:\n{}",
                            self.logs()
                        ),
                    ))
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        self.wait_healthy().await?;
        Ok(started.elapsed())
    }

    /// Waits until every running node reports `cluster_state:ok` (all
    /// slots served by a live master: after a kill, until a replica took
    /// over) and every replica's link to its master is up.
    pub async fn wait_healthy(&mut self) -> Result<Duration> {
        let started = Instant::now();
        let deadline = started + START_TIMEOUT;
        loop {
            let mut ok = true;
            for node in 0..CLUSTER_NODES {
                if !self.is_running(node) {
                    continue;
                }
                let info = self.cli_at(node, &["CLUSTER", "INFO"]).await.unwrap_or_default();
                ok &= info.contains("cluster_state:ok");
                // A replica counts once it has synced with its master: one
                // that never did cannot take over.
                let repl = self.cli_at(node, &["INFO", "replication"]).await.unwrap_or_default();
                ok &= !repl.contains("role:slave") || repl.contains("master_link_status:up");
            }
            if ok {
                return Ok(started.elapsed());
            }
            if Instant::now() > deadline {
                return Err(Error::broker_msg(
                    "testing",
                    format!(
                        "the Redis Cluster is not healthy after {START_TIMEOUT:?}; logs:\n{}",
                        self.logs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every node's log so far, for failure reports.
    pub fn logs(&self) -> String {
        (0..self.ports.len())
            .map(|n| {
                let text = std::fs::read_to_string(self.node_dir(n).join("stdout.log")).unwrap_or_default();
                format!("--- node {n} (port {}) ---\n{}", self.ports[n], tail(&text, 40))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Where the nodes keep their data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The port of the live master serving `slot`, from `CLUSTER NODES`.
fn master_port_of_slot(nodes: &str, slot: u16) -> Option<u16> {
    nodes.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let flags = f.get(2)?;
        if !flags.split(',').any(|x| x == "master") || flags.contains("fail") {
            return None;
        }
        let serves = f.iter().skip(8).any(|range| {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
        });
        if !serves {
            return None;
        }
        let addr = f.get(1)?.split(['@', ',']).next()?;
        addr.rsplit_once(':')?.1.parse().ok()
    })
}

impl Drop for TestRedisCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut() {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_master_of_a_slot_is_found() {
        let nodes = "\
a 127.0.0.1:7005@17005 slave b 0 1 3 connected
c 127.0.0.1:7000@17000 myself,master - 0 1 1 connected 0-5460
d 127.0.0.1:7001@17001 master,fail - 0 1 2 connected 5461-10922
e 127.0.0.1:7004@17004 master - 0 1 4 connected 5461-10922 16000
";
        assert_eq!(super::master_port_of_slot(nodes, 0), Some(7000));
        assert_eq!(super::master_port_of_slot(nodes, 6000), Some(7004));
        assert_eq!(super::master_port_of_slot(nodes, 16000), Some(7004));
        assert_eq!(super::master_port_of_slot(nodes, 12000), None);
    }
}
