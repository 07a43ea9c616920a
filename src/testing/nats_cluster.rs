//! A NATS cluster with replicated JetStream for tests that kill nodes.

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pubsub_core::{Error, PubSubBackend, Result, Topic};

use super::{find_binary, free_port, missing, wait_for_port, START_TIMEOUT};
use crate::{BackendConfig, BackendKind};

/// One node of a [`TestNatsCluster`].
struct Node {
    name: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// `nats-server` nodes with JetStream on free loopback ports, routed into
/// one cluster, each with its own store in a temp dir; stopped when
/// dropped. Streams the SDK makes on it get 3 replicas (with 3 nodes), so
/// a test can SIGKILL the node that leads a topic's stream
/// ([`stream_leader`](Self::stream_leader), [`kill`](Self::kill)) and
/// bring it back ([`restart`](Self::restart)).
///
/// ```no_run
/// # async fn demo() -> pubsub::Result<()> {
/// use pubsub::testing::TestNatsCluster;
/// use pubsub::{OutgoingMessage, Topic};
///
/// let mut cluster = TestNatsCluster::start().await?;
/// let backend = cluster.backend().await?;       // all three servers
/// let topic: Topic = "q1/test/cluster/jobs".parse()?;
/// let producer = backend.create_producer(&topic, Default::default()).await?;
/// producer.send(OutgoingMessage::new("before")).await?;
/// let leader = cluster.stream_leader(&topic).await?.expect("a leader");
/// cluster.kill(leader).await?;                  // SIGKILL
/// producer.send(OutgoingMessage::new("after")).await?; // once a new leader is elected
/// cluster.restart(leader).await?;
/// # Ok(()) }
/// ```
pub struct TestNatsCluster {
    _dir: tempfile::TempDir,
    binary: PathBuf,
    nodes: Vec<Node>,
}

impl fmt::Debug for TestNatsCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestNatsCluster")
            .field("ports", &self.nodes.iter().map(|n| n.port).collect::<Vec<_>>())
            .finish()
    }
}

impl TestNatsCluster {
    /// Starts a 3-node cluster and waits until it has elected its JetStream
    /// meta leader (streams can be made then).
    pub async fn start() -> Result<Self> {
        Self::start_nodes(3).await
    }

    /// Starts a cluster of `nodes` servers (at least 1).
    pub async fn start_nodes(nodes: usize) -> Result<Self> {
        if nodes == 0 {
            return Err(Error::InvalidConfiguration("a NATS cluster of 0 nodes".into()));
        }
        let binary = find_binary("nats-server")
            .ok_or_else(|| missing(BackendKind::Nats, "nats-server", "apt-get install nats-server"))?;
        let dir = tempfile::tempdir().map_err(|e| Error::broker("testing", "temp dir", e))?;
        let ports: Vec<(u16, u16)> = (0..nodes)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Result<_>>()?;
        let routes = ports
            .iter()
            .map(|(_, route)| format!("nats-route://127.0.0.1:{route}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut cluster = TestNatsCluster {
            binary,
            nodes: Vec::new(),
            _dir: dir,
        };
        for (i, (port, route)) in ports.into_iter().enumerate() {
            let name = format!("n{}", i + 1);
            let node_dir = cluster._dir.path().join(&name);
            std::fs::create_dir_all(&node_dir).map_err(|e| Error::broker("testing", "node dir", e))?;
            let conf = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{port}\n\
                 jetstream {{ store_dir: \"{store}\" }}\n\
                 cluster {{\n  name: pubsub-test\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n\
                 log_file: \"{log}\"\n",
                store = node_dir.display(),
                log = node_dir.join("broker.log").display(),
            );
            std::fs::write(node_dir.join("nats.conf"), conf).map_err(|e| Error::broker("testing", "nats.conf", e))?;
            cluster.nodes.push(Node {
                name,
                port,
                dir: node_dir,
                child: None,
            });
        }
        for i in 0..nodes {
            cluster.spawn(i)?;
        }
        for i in 0..nodes {
            cluster.wait_up(i).await?;
        }
        cluster.wait_for_meta_leader().await?;
        Ok(cluster)
    }

    fn spawn(&mut self, node: usize) -> Result<()> {
        let n = &mut self.nodes[node];
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.dir.join("stdout.log"))
            .map_err(|e| Error::broker("testing", "log file", e))?;
        let err = out.try_clone().map_err(|e| Error::broker("testing", "log file", e))?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(n.dir.join("nats.conf"))
            .current_dir(&n.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::broker("testing", format!("cannot run {}: {e}", self.binary.display()), e))?;
        n.child = Some(child);
        Ok(())
    }

    async fn wait_up(&mut self, node: usize) -> Result<()> {
        let n = &mut self.nodes[node];
        let dir = n.dir.clone();
        let child = n.child.as_mut().expect("spawned");
        wait_for_port(n.port, child, "nats-server", || read_node_logs(&dir)).await
    }

    /// How many nodes the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's URL, separated by commas, as [`crate::connect`] and
    /// `NATS_URL` take it: the client reconnects to another when its node dies.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `node`'s URL alone (0-based): a client given it connects there
    /// and learns the other nodes from the cluster.
    pub fn node_url(&self, node: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[node].port)
    }

    /// The client port of node `node` (0-based).
    pub fn port(&self, node: usize) -> u16 {
        self.nodes[node].port
    }

    /// The server name of node `node` (`n1`, `n2`, ...), as JetStream names
    /// a stream's leader.
    pub fn node_name(&self, node: usize) -> &str {
        &self.nodes[node].name
    }

    /// A backend connected to all the nodes.
    pub async fn backend(&self) -> Result<Arc<dyn PubSubBackend>> {
        BackendConfig::from_url(&self.url())?.connect().await
    }

    /// Whether node `node`'s process is alive.
    pub fn is_running(&mut self, node: usize) -> bool {
        matches!(self.nodes[node].child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kills node `node` at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self, node: usize) -> Result<()> {
        if let Some(mut child) = self.nodes[node].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// Starts node `node` again (same port, same store) if it is not
    /// running, and waits until it accepts clients. It catches up with its
    /// streams' leaders by itself.
    pub async fn restart(&mut self, node: usize) -> Result<()> {
        if self.is_running(node) {
            return Ok(());
        }
        self.spawn(node)?;
        self.wait_up(node).await
    }

    /// Waits until the running nodes have a JetStream meta leader: the
    /// JetStream API answers without an error.
    pub async fn wait_for_meta_leader(&self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(answer) = self.api("$JS.API.INFO", "").await {
                if !answer.contains("\"error\"") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(Error::broker_msg(
                    "testing",
                    format!(
                        "the NATS cluster elected no JetStream meta leader; logs:\n{}",
                        self.logs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The node (0-based) that leads the JetStream stream holding `topic`'s
    /// subject, as any running node tells it; `None` when there is no such
    /// stream or it has no leader right now (an election is under way).
    pub async fn stream_leader(&self, topic: &Topic) -> Result<Option<usize>> {
        let subject = topic.joined(".");
        let Some(names) = self
            .api("$JS.API.STREAM.NAMES", &format!("{{\"subject\":\"{subject}\"}}"))
            .await
        else {
            return Ok(None);
        };
        let Some(stream) = json_string_after(&names, "\"streams\":[") else {
            return Ok(None);
        };
        let Some(info) = self.api(&format!("$JS.API.STREAM.INFO.{stream}"), "").await else {
            return Ok(None);
        };
        Ok(json_string_after(&info, "\"leader\":").and_then(|leader| self.nodes.iter().position(|n| n.name == leader)))
    }

    /// A JetStream API request to the first running node that answers.
    async fn api(&self, subject: &str, payload: &str) -> Option<String> {
        for node in &self.nodes {
            let (port, subject, payload) = (node.port, subject.to_string(), payload.to_string());
            let answer =
                tokio::task::spawn_blocking(move || nats_request(port, &subject, &payload, Duration::from_secs(2)))
                    .await;
            if let Ok(Ok(answer)) = answer {
                return Some(answer);
            }
        }
        None
    }

    /// Every node's log so far, for failure reports.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("== {}\n{}", n.name, read_node_logs(&n.dir)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for TestNatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn read_node_logs(dir: &Path) -> String {
    super::read_logs(dir)
}

/// The string value that follows `prefix` in compact JSON (`"key":"value"`
/// or the first of an array), without a JSON parser in the facade's
/// dependencies; `None` for `null` or anything else.
fn json_string_after(json: &str, prefix: &str) -> Option<String> {
    let rest = &json[json.find(prefix)? + prefix.len()..];
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

/// One request over the plain NATS protocol (a test helper that needs no
/// NATS client): the answer's payload, or an error after `timeout` without one.
fn nats_request(port: u16, subject: &str, payload: &str, timeout: Duration) -> std::io::Result<String> {
    const INBOX: &str = "_INBOX.pubsub-testing";
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?; // INFO
    write!(
        stream,
        "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB {INBOX} 1\r\nPUB {subject} {INBOX} {}\r\n{payload}\r\n",
        payload.len()
    )?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        if line.starts_with("PING") {
            stream.write_all(b"PONG\r\n")?;
        } else if let Some(rest) = line.strip_prefix("MSG ") {
            let len: usize = rest
                .split_whitespace()
                .last()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("bad MSG line {line:?}")))?;
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body)?;
            body.truncate(len);
            return Ok(String::from_utf8_lossy(&body).into_owned());
        } else if line.starts_with("-ERR") {
            return Err(std::io::Error::other(line.trim().to_string()));
        }
    }
    Err(std::io::ErrorKind::TimedOut.into())
}
