//! A 3-broker Apache Kafka cluster (KRaft) for tests that kill brokers.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use pubsub_core::{Error, Result};

use super::{find_binary, free_port, kafka_libs, missing, read_logs, wait_for_port, KAFKA_CLUSTER_ID};
use crate::BackendKind;

struct Node {
    id: usize,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// Apache Kafka brokers in KRaft mode (each broker and controller, from
/// the jars `scripts/brokers.sh` fetches into `target/kafka/libs`, or
/// `PUBSUB_KAFKA_LIBS`) on free loopback ports, each with its own log dir
/// in a temp dir, `min.insync.replicas` 2; stopped when dropped. Connect
/// with [`bootstrap_servers`](Self::bootstrap_servers) and topics of 3
/// replicas (`KafkaConfig::replication`), then [`kill`](Self::kill) the
/// broker leading a partition ([`partition_leaders`](Self::partition_leaders))
/// and [`restart`](Self::restart) it.
pub struct TestKafkaCluster {
    dir: tempfile::TempDir,
    java: PathBuf,
    libs: PathBuf,
    nodes: Vec<Node>,
}

impl fmt::Debug for TestKafkaCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestKafkaCluster")
            .field("bootstrap_servers", &self.bootstrap_servers())
            .finish()
    }
}

/// The JVM settings of each broker: small, so three fit beside the rest.
const JVM: [&str; 3] = ["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC"];

impl TestKafkaCluster {
    /// Starts 3 brokers and waits until each accepts clients.
    pub async fn start() -> Result<Self> {
        const INSTALL: &str = "scripts/brokers.sh (it fetches Apache Kafka into target/kafka/libs) and Java 17";
        let libs = kafka_libs().ok_or_else(|| missing(BackendKind::Kafka, "kafka_2.13-4.4.0.jar", INSTALL))?;
        let java = find_binary("java")
            .ok_or_else(|| missing(BackendKind::Kafka, "java", "apt-get install openjdk-17-jre-headless"))?;
        let dir = tempfile::tempdir().map_err(|e| Error::broker("testing", "temp dir", e))?;
        let ports: Vec<(u16, u16)> = (0..3)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Result<_>>()?;
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = TestKafkaCluster {
            dir,
            java,
            libs,
            nodes: Vec::new(),
        };
        let mut formats = Vec::new();
        for (i, (port, controller)) in ports.into_iter().enumerate() {
            let id = i + 1;
            let node_dir = cluster.dir.path().join(format!("n{id}"));
            std::fs::create_dir_all(&node_dir).map_err(|e| Error::broker("testing", "node dir", e))?;
            let properties = format!(
                "process.roles=broker,controller\nnode.id={id}\ncontroller.quorum.voters={voters}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}\ncontroller.listener.names=CONTROLLER\n\
                 listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
                 inter.broker.listener.name=PLAINTEXT\nlog.dirs={d}/data\nnum.partitions=1\n\
                 offsets.topic.replication.factor=3\ntransaction.state.log.replication.factor=3\n\
                 transaction.state.log.min.isr=2\nshare.coordinator.state.topic.replication.factor=3\n\
                 share.coordinator.state.topic.min.isr=2\nmin.insync.replicas=2\n\
                 group.initial.rebalance.delay.ms=0\n",
                d = node_dir.display()
            );
            let conf = node_dir.join("server.properties");
            std::fs::write(&conf, properties).map_err(|e| Error::broker("testing", "server.properties", e))?;
            // The three formats run together.
            formats.push(
                cluster
                    .java_command()
                    .args(["kafka.tools.StorageTool", "format", "-t", KAFKA_CLUSTER_ID, "-c"])
                    .arg(&conf)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| Error::broker("testing", "kafka storage format", e))?,
            );
            cluster.nodes.push(Node {
                id,
                port,
                dir: node_dir,
                child: None,
            });
        }
        for mut format in formats {
            let status = format
                .wait()
                .map_err(|e| Error::broker("testing", "kafka storage format", e))?;
            if !status.success() {
                return Err(Error::broker_msg(
                    "testing",
                    format!("formatting Kafka's storage failed: {status}"),
                ));
            }
        }
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_up(i).await?;
        }
        Ok(cluster)
    }

    fn java_command(&self) -> Command {
        let mut command = Command::new(&self.java);
        command.args(JVM).arg("-cp").arg(format!("{}/*", self.libs.display()));
        command
    }

    fn spawn(&mut self, node: usize) -> Result<()> {
        let dir = self.nodes[node].dir.clone();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stdout.log"))
            .map_err(|e| Error::broker("testing", "log file", e))?;
        let err = out.try_clone().map_err(|e| Error::broker("testing", "log file", e))?;
        let child = self
            .java_command()
            .arg("kafka.Kafka")
            .arg(dir.join("server.properties"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::broker("testing", format!("cannot run {}: {e}", self.java.display()), e))?;
        self.nodes[node].child = Some(child);
        Ok(())
    }

    async fn wait_up(&mut self, node: usize) -> Result<()> {
        let n = &mut self.nodes[node];
        let dir = n.dir.clone();
        let child = n.child.as_mut().expect("spawned");
        wait_for_port(n.port, child, "kafka", || read_logs(&dir)).await
    }

    /// `host:port,host:port,host:port`, as `KafkaConfig::new` takes it.
    pub fn bootstrap_servers(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The broker id (`node.id`, 1-based) of node `node` (0-based).
    pub fn broker_id(&self, node: usize) -> usize {
        self.nodes[node].id
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

    /// Starts node `node` again (same ports, same log dir) if it is not
    /// running, and waits until it accepts clients.
    pub async fn restart(&mut self, node: usize) -> Result<()> {
        if self.is_running(node) {
            return Ok(());
        }
        self.spawn(node)?;
        self.wait_up(node).await
    }

    /// The node (0-based) leading each partition of every Kafka topic whose
    /// name contains `name_part`, by partition, as Kafka's own
    /// `TopicCommand --describe` reports it (a JVM run: seconds); `None`
    /// for a partition without a leader.
    pub async fn partition_leaders(&self, name_part: &str) -> Result<Vec<Option<usize>>> {
        let running = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",");
        let mut command = self.java_command();
        command
            .args([
                "org.apache.kafka.tools.TopicCommand",
                "--bootstrap-server",
                &running,
                "--describe",
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .map_err(|e| Error::broker("testing", "kafka topics", e))?
            .map_err(|e| Error::broker("testing", "kafka topics", e))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let mut leaders = Vec::new();
        for line in text
            .lines()
            .filter(|l| l.contains("Partition:") && l.contains(name_part))
        {
            let field = |key: &str| {
                line.split('\t')
                    .find_map(|f| f.trim().strip_prefix(key).map(|v| v.trim().to_string()))
            };
            let id: Option<usize> = field("Leader:").and_then(|l| l.parse().ok());
            leaders.push(id.and_then(|id| self.nodes.iter().position(|n| n.id == id)));
        }
        Ok(leaders)
    }

    /// Every node's log so far, for failure reports.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("== broker {}\n{}", n.id, read_node_logs(&n.dir)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn read_node_logs(dir: &Path) -> String {
    read_logs(dir)
}

impl Drop for TestKafkaCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
