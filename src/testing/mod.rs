//! Real brokers for tests, each on a free loopback port with its data in a
//! temp dir (feature `testing`). No Docker, no broker already running.
//!
//! ```no_run
//! # async fn demo() -> pubsub::Result<()> {
//! use pubsub::testing::TestBroker;
//! use pubsub::{BackendKind, OutgoingMessage, Topic};
//!
//! let mut broker = TestBroker::start(BackendKind::Redis).await?;
//! let backend = broker.backend().await?;
//! let topic: Topic = "q1/test/restart/jobs".parse()?;
//! let producer = backend.create_producer(&topic, Default::default()).await?;
//! producer.send(OutgoingMessage::new("before")).await?;
//! broker.restart().await?;            // same port, same data
//! producer.send(OutgoingMessage::new("after")).await?;
//! broker.stop().await?;               // or just drop it
//! # Ok(()) }
//! ```
//!
//! Brokers: Redis (`redis-server`, AOF with `appendfsync always`, so an
//! acknowledged write survives a kill), NATS (`nats-server -js`, file
//! storage), MQTT (`mosquitto`, persistence saved on shutdown, `max_queued_messages
//! 100000` and `set_tcp_nodelay true` as the README advises, optional
//! password file), Kafka (Apache Kafka 4.4 in KRaft mode on the machine's
//! Java, from the jars `scripts/brokers.sh` fetches from Maven Central into
//! `target/kafka/libs`, or `PUBSUB_KAFKA_LIBS`) and Pulsar (pulsar-lite
//! from PyPI, behind the `pulsar-lite-relay` of this workspace, which adds
//! the frame checksum the Rust client needs; the relay stays up across
//! [`TestBroker::restart`], so the URL does not change).
//!
//! Binaries are looked up on `PATH`, in `/usr/sbin`, `~/.cargo/bin`, the
//! directories in `PUBSUB_TEST_BIN_DIRS` (`:`-separated), and the
//! workspace's `target/debug` and `target/pyenv/bin` (where
//! `scripts/brokers.sh` puts the relay and pulsar-lite).

use std::fmt;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pubsub_core::{Error, PubSubBackend, Result, Secret, TlsConfig};

use crate::{BackendConfig, BackendKind};

mod certs;
pub use certs::{CertFiles, TestCertificates};
mod redis_cluster;
pub use redis_cluster::{TestRedisCluster, CLUSTER_NODES};
mod nats_cluster;
pub use nats_cluster::TestNatsCluster;
mod kafka_cluster;
pub use kafka_cluster::TestKafkaCluster;
mod failover;
pub use failover::{FailoverTally, FailoverTraffic};

/// The server side of a TLS [`TestBroker`]: its certificate, the CA it
/// checks client certificates against, and whether it demands one.
/// [`TestCertificates::server_tls`] makes one.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// CA file the broker checks client certificates against.
    pub ca_file: PathBuf,
    /// The broker's certificate and key.
    pub cert: CertFiles,
    /// Mutual TLS: refuse clients without a certificate from `ca_file`.
    pub require_client_cert: bool,
}

/// How long [`TestBroker::start`] waits for the broker to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One broker process owned by a test; stopped when dropped.
pub struct TestBroker {
    kind: BackendKind,
    port: u16,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
    credentials: Option<(String, Secret)>,
    tls: Option<ServerTls>,
    child: Option<Child>,
    /// Pulsar: the port pulsar-lite listens on, behind the relay on `port`.
    /// Kafka: the KRaft controller's port. Others: `port`.
    inner_port: u16,
    /// Pulsar only: the relay process.
    relay: Option<Child>,
}

impl fmt::Debug for TestBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestBroker")
            .field("kind", &self.kind)
            .field("port", &self.port)
            .finish()
    }
}

struct Spec {
    binary: &'static str,
    /// How to install the binary, for the error when it is missing.
    install: &'static str,
    args: Vec<String>,
}

fn spec(
    kind: BackendKind,
    port: u16,
    inner_port: u16,
    dir: &Path,
    credentials: Option<&(String, Secret)>,
    tls: Option<&ServerTls>,
) -> Result<Spec> {
    let d = dir.display().to_string();
    let secured = matches!(
        kind,
        BackendKind::Mqtt | BackendKind::Nats | BackendKind::Redis | BackendKind::Kafka
    );
    if credentials.is_some() && !secured {
        return Err(Error::unsupported(
            "testing",
            format!("credentials for a {kind} TestBroker"),
        ));
    }
    if tls.is_some() && !secured {
        return Err(Error::unsupported("testing", format!("a TLS {kind} TestBroker")));
    }
    Ok(match kind {
        BackendKind::Redis => Spec {
            binary: "redis-server",
            install: "apt-get install redis-server",
            args: redis_security_args(port, credentials, tls)
                .into_iter()
                .chain(
                    [
                        "--bind",
                        "127.0.0.1",
                        "--dir",
                        &d,
                        "--appendonly",
                        "yes",
                        "--appendfsync",
                        "always",
                        "--save",
                        "",
                        "--logfile",
                        "broker.log",
                        "--daemonize",
                        "no",
                    ]
                    .map(String::from),
                )
                .collect(),
        },
        BackendKind::Nats => {
            let mut args: Vec<String> = [
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-js",
                "-sd",
                &d,
                "-l",
                &format!("{d}/broker.log"),
            ]
            .map(String::from)
            .to_vec();
            if credentials.is_some() || tls.is_some() {
                let conf = dir.join("nats.conf");
                std::fs::write(&conf, nats_security_conf(credentials, tls))
                    .map_err(|e| Error::broker("testing", "nats.conf", e))?;
                args.extend(["-c".to_string(), conf.display().to_string()]);
            }
            Spec {
                binary: "nats-server",
                install: "apt-get install nats-server",
                args,
            }
        }
        BackendKind::Mqtt => {
            let mut conf = format!(
                "listener {port} 127.0.0.1\npersistence true\npersistence_location {d}/\n\
                 log_dest file {d}/broker.log\nmax_queued_messages 100000\nset_tcp_nodelay true\n"
            );
            if let Some(tls) = tls {
                conf.push_str(&format!(
                    "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
                    tls.ca_file.display(),
                    tls.cert.cert.display(),
                    tls.cert.key.display(),
                    tls.require_client_cert
                ));
            }
            match credentials {
                Some((user, password)) => {
                    let file = dir.join("passwd");
                    let status = Command::new("mosquitto_passwd")
                        .arg("-b")
                        .arg("-c")
                        .arg(&file)
                        .arg(user)
                        .arg(password.expose())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                    if !matches!(status, Ok(s) if s.success()) {
                        return Err(Error::NotFound(
                            "mosquitto_passwd failed or is missing; install it with `apt-get install mosquitto`".into(),
                        ));
                    }
                    conf.push_str(&format!("allow_anonymous false\npassword_file {}\n", file.display()));
                }
                None => conf.push_str("allow_anonymous true\n"),
            }
            let conf_path = dir.join("mosquitto.conf");
            std::fs::write(&conf_path, conf).map_err(|e| Error::broker("testing", "mosquitto.conf", e))?;
            Spec {
                binary: "mosquitto",
                install: "apt-get install mosquitto",
                args: vec!["-c".into(), conf_path.display().to_string()],
            }
        }
        BackendKind::Kafka => kafka_spec(port, inner_port, dir, credentials, tls)?,
        BackendKind::Pulsar => {
            let conf = dir.join("pulsar-lite.toml");
            std::fs::write(&conf, "[metrics]\nenabled = false\n")
                .map_err(|e| Error::broker("testing", "pulsar-lite config", e))?;
            Spec {
                binary: "pulsar-lite",
                install: "pip install pulsar-lite==0.2.0 and link pulsar_lite/bin/pulsar-lite onto PATH",
                args: [
                    "--config",
                    &conf.display().to_string(),
                    "--addr",
                    &format!("127.0.0.1:{inner_port}"),
                    "--db-path",
                    &format!("{d}/data"),
                    "--log-level",
                    "warn",
                ]
                .map(String::from)
                .to_vec(),
            }
        }
        BackendKind::Embedded => {
            return Err(Error::unsupported(
                "testing",
                "a TestBroker for the embedded backend (it runs in process: use embedded://memory or a temp dir)",
            ))
        }
    })
}

/// Redis's port and security arguments: `--tls-port` instead of `--port`
/// for TLS, and an ACL user for credentials (the default user then off).
fn redis_security_args(port: u16, credentials: Option<&(String, Secret)>, tls: Option<&ServerTls>) -> Vec<String> {
    let mut args = Vec::new();
    match tls {
        Some(tls) => {
            args.extend([
                "--port".to_string(),
                "0".to_string(),
                "--tls-port".to_string(),
                port.to_string(),
            ]);
            args.extend(["--tls-cert-file".to_string(), tls.cert.cert.display().to_string()]);
            args.extend(["--tls-key-file".to_string(), tls.cert.key.display().to_string()]);
            args.extend(["--tls-ca-cert-file".to_string(), tls.ca_file.display().to_string()]);
            let clients = if tls.require_client_cert { "yes" } else { "no" };
            args.extend(["--tls-auth-clients".to_string(), clients.to_string()]);
        }
        None => args.extend(["--port".to_string(), port.to_string()]),
    }
    if let Some((user, password)) = credentials {
        let secret = format!(">{}", password.expose());
        let acl = [user.as_str(), "on", &secret, "~*", "&*", "+@all"];
        args.extend(["--user", "default", "off", "--user"].map(String::from));
        args.extend(acl.map(String::from));
    }
    args
}

/// A nats-server config file with a `tls {}` block and one user.
fn nats_security_conf(credentials: Option<&(String, Secret)>, tls: Option<&ServerTls>) -> String {
    let mut conf = String::new();
    if let Some(tls) = tls {
        conf.push_str(&format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: {}\n  timeout: 5\n}}\n",
            tls.cert.cert.display(),
            tls.cert.key.display(),
            tls.ca_file.display(),
            tls.require_client_cert
        ));
    }
    if let Some((user, password)) = credentials {
        conf.push_str(&format!(
            "authorization {{\n  user: \"{user}\"\n  password: \"{}\"\n}}\n",
            password.expose()
        ));
    }
    conf
}

/// Where the Apache Kafka jars are: `PUBSUB_KAFKA_LIBS`, else the
/// workspace's `target/kafka/libs` (filled by `scripts/brokers.sh`).
fn kafka_libs() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PUBSUB_KAFKA_LIBS") {
        return Some(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().ok()?;
    // Test binaries live in target/<profile>/deps, examples in target/<profile>/examples.
    let dir = exe.parent()?.parent()?.parent()?.join("kafka/libs");
    dir.join(KAFKA_MAIN_JAR).is_file().then_some(dir)
}

/// The jar whose presence says the Kafka classpath is there.
const KAFKA_MAIN_JAR: &str = "kafka_2.13-4.4.0.jar";

/// Any fixed base64 UUID serves as the cluster id: each broker has its own data dir.
const KAFKA_CLUSTER_ID: &str = "I5rc0JjaSZCAw_Nof5vRlQ";

/// Apache Kafka in KRaft mode, broker and controller in one process, on the
/// machine's `java`. The storage is formatted once; a restart keeps it.
fn kafka_spec(
    port: u16,
    controller_port: u16,
    dir: &Path,
    credentials: Option<&(String, Secret)>,
    tls: Option<&ServerTls>,
) -> Result<Spec> {
    const INSTALL: &str = "scripts/brokers.sh (it fetches Apache Kafka from Maven Central into target/kafka/libs; \
                           or set PUBSUB_KAFKA_LIBS to a directory of its jars) and a Java 17 runtime";
    let libs = kafka_libs().ok_or_else(|| missing(BackendKind::Kafka, "kafka_2.13-4.4.0.jar", INSTALL))?;
    let d = dir.display();
    let properties = format!(
        "process.roles=broker,controller\nnode.id=1\ncontroller.quorum.voters=1@127.0.0.1:{controller_port}\n\
         {}controller.listener.names=CONTROLLER\nlog.dirs={d}/data\nnum.partitions=1\n\
         offsets.topic.replication.factor=1\ntransaction.state.log.replication.factor=1\n\
         transaction.state.log.min.isr=1\nshare.coordinator.state.topic.replication.factor=1\n\
         share.coordinator.state.topic.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n",
        kafka_listeners(port, controller_port, credentials, tls)?
    );
    let conf = dir.join("server.properties");
    std::fs::write(&conf, properties).map_err(|e| Error::broker("testing", "server.properties", e))?;
    let java = find_binary("java")
        .ok_or_else(|| missing(BackendKind::Kafka, "java", "apt-get install openjdk-17-jre-headless"))?;
    let classpath = format!("{}/*", libs.display());
    let jvm = ["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-cp", &classpath].map(String::from);
    if !dir.join("data/meta.properties").is_file() {
        // SCRAM users are created with the storage, as KRaft does it.
        let scram = credentials.into_iter().flat_map(|(user, password)| {
            ["SCRAM-SHA-256", "SCRAM-SHA-512"].map(|m| {
                [
                    "--add-scram".to_string(),
                    format!("{m}=[name={user},password={}]", password.expose()),
                ]
            })
        });
        let status = Command::new(&java)
            .args(&jvm)
            .args(["kafka.tools.StorageTool", "format", "-t", KAFKA_CLUSTER_ID, "-c"])
            .arg(&conf)
            .args(scram.flatten())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| Error::broker("testing", "kafka storage format", e))?;
        if !status.success() {
            return Err(Error::broker_msg(
                "testing",
                format!("formatting Kafka's storage failed: {status}"),
            ));
        }
    }
    let mut args = jvm.to_vec();
    args.extend(["kafka.Kafka".to_string(), conf.display().to_string()]);
    Ok(Spec {
        binary: "java",
        install: "apt-get install openjdk-17-jre-headless",
        args,
    })
}

/// Kafka's listener settings. Plain: one PLAINTEXT listener. With TLS or
/// credentials the clients' listener (`CLIENT`, on `port`) is `SSL`,
/// `SASL_SSL` or `SASL_PLAINTEXT`, and the broker talks to itself on a
/// PLAINTEXT listener of its own (`INTERNAL`, on another free port), so a
/// client certificate or login is required of clients only. PEM key and
/// trust stores; SASL PLAIN and SCRAM-SHA-256/512 for the one user.
fn kafka_listeners(
    port: u16,
    controller_port: u16,
    credentials: Option<&(String, Secret)>,
    tls: Option<&ServerTls>,
) -> Result<String> {
    let controller = format!("CONTROLLER://127.0.0.1:{controller_port}");
    let protocol = match (credentials.is_some(), tls.is_some()) {
        (false, false) => {
            return Ok(format!(
            "listeners=PLAINTEXT://127.0.0.1:{port},{controller}\nadvertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
                 listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
                 inter.broker.listener.name=PLAINTEXT\n"
        ))
        }
        (false, true) => "SSL",
        (true, false) => "SASL_PLAINTEXT",
        (true, true) => "SASL_SSL",
    };
    let internal = free_port()?;
    let mut p = format!(
        "listeners=INTERNAL://127.0.0.1:{internal},CLIENT://127.0.0.1:{port},{controller}\n\
         advertised.listeners=INTERNAL://127.0.0.1:{internal},CLIENT://127.0.0.1:{port}\n\
         listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,CLIENT:{protocol}\n\
         inter.broker.listener.name=INTERNAL\n"
    );
    if let Some(tls) = tls {
        // A PEM key store is one file: the key, then the certificate.
        let key = std::fs::read_to_string(&tls.cert.key).map_err(|e| Error::broker("testing", "server key", e))?;
        let cert = std::fs::read_to_string(&tls.cert.cert).map_err(|e| Error::broker("testing", "server cert", e))?;
        let store = tls.cert.key.with_extension("keystore.pem");
        std::fs::write(&store, format!("{key}{cert}")).map_err(|e| Error::broker("testing", "key store", e))?;
        let auth = if tls.require_client_cert { "required" } else { "none" };
        p.push_str(&format!(
            "listener.name.client.ssl.keystore.type=PEM\nlistener.name.client.ssl.keystore.location={}\n\
             listener.name.client.ssl.truststore.type=PEM\nlistener.name.client.ssl.truststore.location={}\n\
             listener.name.client.ssl.client.auth={auth}\n",
            store.display(),
            tls.ca_file.display()
        ));
    }
    if let Some((user, password)) = credentials {
        let pw = password.expose();
        p.push_str(&format!(
            "listener.name.client.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512\n\
             listener.name.client.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule \
             required user_{user}=\"{pw}\";\n\
             listener.name.client.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
             listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n"
        ));
    }
    Ok(p)
}

/// The relay pulsar-lite needs (tools/pulsar-lite-relay; `cargo build -p pulsar-lite-relay`).
const PULSAR_RELAY: &str = "pulsar-lite-relay";

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::connection("testing", "no free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::connection("testing", "no free port", e))
}

/// Where a broker binary is: PATH, the sbin directories, cargo's bin
/// directory (where `cargo install` puts Tansu), `PUBSUB_TEST_BIN_DIRS`,
/// and the target directory this test binary was built in.
fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = std::env::var_os("PUBSUB_TEST_BIN_DIRS").unwrap_or_default();
    let cargo_bin = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin"));
    // Test binaries live in target/<profile>/deps.
    let target_dirs = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        .map(|profile| vec![profile.clone(), profile.join("../pyenv/bin")])
        .unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .chain(cargo_bin)
        .chain(std::env::split_paths(&extra))
        .chain(target_dirs)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Waits until something accepts connections on the loopback `port`.
async fn wait_for_port(port: u16, child: &mut Child, what: &str, logs: impl Fn() -> String) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if !matches!(child.try_wait(), Ok(None)) {
            return Err(Error::broker_msg(
                "testing",
                format!("{what} exited during start-up; its log:\n{}", logs()),
            ));
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout(START_TIMEOUT));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn missing(kind: BackendKind, binary: &str, install: &str) -> Error {
    Error::NotFound(format!(
        "the {kind} broker binary `{binary}` is not installed; install it with `{install}` \
         (scripts/brokers.sh does this)"
    ))
}

impl TestBroker {
    /// Starts a broker of `kind` on a free port and waits until it answers.
    ///
    /// A missing binary is [`Error::NotFound`] naming it and how to install it.
    pub async fn start(kind: BackendKind) -> Result<Self> {
        Self::start_with_args(kind, &[]).await
    }

    /// Like [`start`](Self::start), with extra broker command-line arguments
    /// (e.g. `["--proto-max-bulk-len", "1mb"]` for Redis).
    pub async fn start_with_args(kind: BackendKind, extra_args: &[&str]) -> Result<Self> {
        Self::start_configured(kind, extra_args.iter().map(|s| s.to_string()).collect(), None, None).await
    }

    /// Starts a broker that accepts only this user and password (MQTT so
    /// far: a Mosquitto password file). [`url`](Self::url) includes them,
    /// so treat it as a secret.
    pub async fn start_with_credentials(kind: BackendKind, user: &str, password: Secret) -> Result<Self> {
        Self::start_configured(kind, Vec::new(), Some((user.to_string(), password)), None).await
    }

    /// Starts a broker that speaks only TLS on its port, with the server
    /// certificate of `tls` (MQTT, NATS and Redis). [`url`](Self::url) has
    /// the TLS scheme and [`backend`](Self::backend) trusts `tls.ca_file`.
    ///
    /// ```no_run
    /// # async fn demo() -> pubsub::Result<()> {
    /// use pubsub::testing::{TestBroker, TestCertificates};
    /// use pubsub::BackendKind;
    ///
    /// let certs = TestCertificates::generate()?;
    /// let broker = TestBroker::start_tls(BackendKind::Nats, certs.server_tls(true), None).await?;
    /// let backend = broker.backend_with_tls(certs.mutual_tls()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start_tls(kind: BackendKind, tls: ServerTls, credentials: Option<(String, Secret)>) -> Result<Self> {
        Self::start_configured(kind, Vec::new(), credentials, Some(tls)).await
    }

    async fn start_configured(
        kind: BackendKind,
        extra_args: Vec<String>,
        credentials: Option<(String, Secret)>,
        tls: Option<ServerTls>,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("pubsub-{kind}-"))
            .tempdir()
            .map_err(|e| Error::broker("testing", "temp dir", e))?;
        let port = free_port()?;
        let inner_port = if matches!(kind, BackendKind::Pulsar | BackendKind::Kafka) {
            free_port()?
        } else {
            port
        };
        let mut broker = TestBroker {
            kind,
            port,
            dir,
            extra_args,
            credentials,
            tls,
            child: None,
            inner_port,
            relay: None,
        };
        broker.launch().await?;
        Ok(broker)
    }

    async fn launch(&mut self) -> Result<()> {
        let spec = spec(
            self.kind,
            self.port,
            self.inner_port,
            self.dir.path(),
            self.credentials.as_ref(),
            self.tls.as_ref(),
        )?;
        let binary = find_binary(spec.binary).ok_or_else(|| missing(self.kind, spec.binary, spec.install))?;
        // The relay is looked for before anything starts, so a missing one
        // is the same clear error as a missing broker.
        let relay = match self.kind {
            BackendKind::Pulsar if self.relay.is_none() => Some(
                find_binary(PULSAR_RELAY)
                    .ok_or_else(|| missing(self.kind, PULSAR_RELAY, "cargo build -p pulsar-lite-relay"))?,
            ),
            _ => None,
        };
        let mut child = self.spawn(&binary, &spec.args, &self.extra_args)?;
        let dir = self.dir.path().to_path_buf();
        let listen = if self.kind == BackendKind::Pulsar {
            self.inner_port
        } else {
            self.port
        };
        let result = wait_for_port(listen, &mut child, spec.binary, || read_logs(&dir)).await;
        self.child = Some(child);
        result?;
        if let Some(relay) = relay {
            let args = [
                "--listen".to_string(),
                format!("127.0.0.1:{}", self.port),
                "--broker".to_string(),
                format!("127.0.0.1:{}", self.inner_port),
            ];
            let mut child = self.spawn(&relay, &args, &[])?;
            let result = wait_for_port(self.port, &mut child, PULSAR_RELAY, || read_logs(&dir)).await;
            self.relay = Some(child);
            result?;
        }
        Ok(())
    }

    /// Runs `binary` in the data dir, its output appended to stdout.log.
    fn spawn(&self, binary: &Path, args: &[String], extra_args: &[String]) -> Result<Child> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stdout.log"))
            .map_err(|e| Error::broker("testing", "log file", e))?;
        let err = out.try_clone().map_err(|e| Error::broker("testing", "log file", e))?;
        Command::new(binary)
            .args(args)
            .args(extra_args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::broker("testing", format!("cannot run {}: {e}", binary.display()), e))
    }

    /// The backend kind.
    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (kept across [`restart`](Self::restart)).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The URL to connect to, as [`crate::connect`] takes it (with the
    /// credentials, if any: treat it as a secret then).
    pub fn url(&self) -> String {
        let userinfo = match &self.credentials {
            Some((user, password)) => format!("{user}:{}@", password.expose()),
            None => String::new(),
        };
        let tls = self.tls.is_some();
        let port = self.port;
        match self.kind {
            BackendKind::Redis => format!("{}://{userinfo}127.0.0.1:{port}", if tls { "rediss" } else { "redis" }),
            BackendKind::Nats => format!("{}://{userinfo}127.0.0.1:{port}", if tls { "tls" } else { "nats" }),
            BackendKind::Mqtt => format!("{}://{userinfo}127.0.0.1:{port}", if tls { "mqtts" } else { "mqtt" }),
            BackendKind::Kafka => format!("kafka://127.0.0.1:{}", self.port),
            BackendKind::Pulsar => format!("pulsar://127.0.0.1:{}?broker=lite", self.port),
            BackendKind::Embedded => format!("embedded://{}", self.dir.path().display()),
        }
    }

    /// A backend connected to this broker; for a TLS broker, trusting its
    /// CA but presenting no client certificate (a broker started with
    /// `require_client_cert` refuses it: use
    /// [`backend_with_tls`](Self::backend_with_tls) with
    /// [`TestCertificates::mutual_tls`]).
    pub async fn backend(&self) -> Result<Arc<dyn PubSubBackend>> {
        self.config()?.connect().await
    }

    /// The configuration [`backend`](Self::backend) connects with.
    pub fn config(&self) -> Result<BackendConfig> {
        let config = self.config_without_tls()?;
        match &self.tls {
            Some(tls) => config.with_tls(TlsConfig::default().with_ca_file(&tls.ca_file)),
            None => Ok(config),
        }
    }

    /// [`url`](Self::url) as a configuration, with Kafka's SASL login
    /// (SCRAM-SHA-512) when the broker has credentials.
    fn config_without_tls(&self) -> Result<BackendConfig> {
        let config = BackendConfig::from_url(&self.url())?;
        match (&self.credentials, self.kind) {
            (Some((user, password)), BackendKind::Kafka) => config.with_sasl("SCRAM-SHA-512", user, password.clone()),
            _ => Ok(config),
        }
    }

    /// A backend connected to this broker with the client TLS settings
    /// `tls` (another CA, a client certificate, a server name).
    pub async fn backend_with_tls(&self, tls: TlsConfig) -> Result<Arc<dyn PubSubBackend>> {
        self.config_without_tls()?.with_tls(tls)?.connect().await
    }

    /// Whether the broker process is alive.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kills the broker at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// Stops the broker gracefully (SIGTERM, then SIGKILL after 10 s).
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        Ok(())
    }

    /// Stops the broker gracefully and starts it again on the same port
    /// with the same data.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.launch().await
    }

    /// Starts the broker again after [`kill`](Self::kill) or [`stop`](Self::stop).
    pub async fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        self.launch().await
    }

    /// The broker's log so far, for failure reports.
    pub fn logs(&self) -> String {
        read_logs(self.dir.path())
    }
}

fn read_logs(dir: &Path) -> String {
    ["broker.log", "stdout.log"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .collect::<Vec<_>>()
        .join("\n")
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        for mut child in [self.child.take(), self.relay.take()].into_iter().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
