//! Settings of the Redis backend.

use std::fmt;
use std::time::Duration;

use pubsub_core::{redact_url, Error, TlsConfig};

/// How to reach Redis and how to use it.
///
/// ```
/// let cfg = pubsub_redis::RedisConfig::new("redis://:pw@127.0.0.1:6379");
/// assert!(!format!("{cfg:?}").contains("pw@"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[[user]:password@]host:port[/db]`, or `rediss://` for TLS
    /// (a password is never printed). A user name selects a Redis 6 ACL user.
    ///
    /// A Redis Cluster: `redis+cluster://[[user]:password@]host1:port1,host2:port2,...`
    /// (`rediss+cluster://` for TLS), or a `redis://` URL with several
    /// comma-separated nodes. The nodes are seeds: the others are found
    /// from them. The credentials apply to every node; a cluster has only
    /// database 0.
    pub url: String,
    /// TLS settings: a CA file instead of the system's trust store, and a
    /// client certificate for servers with `tls-auth-clients yes`. Setting
    /// them turns TLS on for a `redis://` URL too. `server_name` is not
    /// supported (redis-rs checks the URL's host).
    pub tls: Option<TlsConfig>,
    /// Largest payload sent; the server's `proto-max-bulk-len` lowers it further.
    pub max_payload: usize,
    /// How long a q2 dedup id is remembered.
    pub dedup_window: Duration,
    /// Trim streams to about this many entries on every add (`XADD MAXLEN ~`).
    /// Trimming drops the oldest entries even if unacknowledged: off by default.
    pub max_len: Option<usize>,
    /// How long one blocking read waits; also how often a waiting consumer
    /// looks for redeliveries and due delayed messages.
    pub poll_interval: Duration,
    /// Bound on connecting and on each command.
    pub timeout: Duration,
    /// After each q1/q2 send, `WAIT` until this many replicas have it, for
    /// at most the given time; fewer in time fail the send with a
    /// retriable [`pubsub_core::Error::Broker`] (the message may still be
    /// delivered: resending makes a duplicate, never a loss). Replication
    /// is asynchronous: without it a send confirmed by a master that dies
    /// before its replica copied it is lost when the replica takes over.
    /// Off by default (one more round trip per send).
    pub wait_replicas: Option<(usize, Duration)>,
}

impl RedisConfig {
    /// Defaults for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            tls: None,
            max_payload: 16 * 1024 * 1024,
            dedup_window: Duration::from_secs(600),
            max_len: None,
            poll_interval: Duration::from_millis(250),
            timeout: Duration::from_secs(5),
            wait_replicas: None,
        }
    }

    /// Waits after each q1/q2 send until `replicas` replicas have it, for
    /// at most `timeout` (see [`RedisConfig::wait_replicas`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// let cfg = pubsub_redis::RedisConfig::new("redis+cluster://10.0.0.1:7000,10.0.0.2:7000")
    ///     .with_wait_replicas(1, Duration::from_millis(500));
    /// assert_eq!(cfg.wait_replicas, Some((1, Duration::from_millis(500))));
    /// ```
    pub fn with_wait_replicas(mut self, replicas: usize, timeout: Duration) -> Self {
        self.wait_replicas = Some((replicas, timeout));
        self
    }

    /// The seed nodes' URLs if `url` names a cluster, with the credentials
    /// of the URL on each; `None` for a single server.
    pub(crate) fn cluster_nodes(&self) -> Result<Option<Vec<String>>, Error> {
        cluster_nodes(&self.url)
    }

    /// Sets the stream trimming length.
    pub fn with_max_len(mut self, n: usize) -> Self {
        self.max_len = Some(n);
        self
    }

    /// Connects over TLS with these settings.
    ///
    /// ```
    /// use pubsub_core::TlsConfig;
    /// let cfg = pubsub_redis::RedisConfig::new("rediss://app:pw@redis.internal:6380")
    ///     .with_tls(TlsConfig::default().with_ca_file("/etc/ssl/redis-ca.pem"));
    /// assert!(cfg.tls.is_some());
    /// ```
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the connect/command timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("tls", &self.tls)
            .field("max_payload", &self.max_payload)
            .field("dedup_window", &self.dedup_window)
            .field("max_len", &self.max_len)
            .field("poll_interval", &self.poll_interval)
            .field("timeout", &self.timeout)
            .field("wait_replicas", &self.wait_replicas)
            .finish()
    }
}

/// Splits a cluster URL into one URL per seed node (see [`RedisConfig::url`]).
fn cluster_nodes(url: &str) -> Result<Option<Vec<String>>, Error> {
    let (scheme, rest, explicit) = match url.split_once("://") {
        Some(("redis+cluster", rest)) => ("redis", rest, true),
        Some(("rediss+cluster", rest)) => ("rediss", rest, true),
        Some((s @ ("redis" | "rediss"), rest)) => (s, rest, false),
        _ => return Ok(None),
    };
    let bad = |why: &str| Error::InvalidConfiguration(format!("redis cluster URL {}: {why}", redact_url(url)));
    // Everything before the last @ is credentials (a password may hold '/', ',' or '@').
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (hosts, path) = hosts.split_once('/').unwrap_or((hosts, ""));
    if !explicit && !hosts.contains(',') {
        return Ok(None);
    }
    if !matches!(path, "" | "0") {
        return Err(bad("a Redis Cluster has only database 0"));
    }
    if hosts.contains('?') {
        return Err(bad("URL parameters are not supported with a cluster"));
    }
    let mut nodes = Vec::new();
    for host in hosts.split(',').map(str::trim) {
        if host.is_empty() {
            return Err(bad("an empty node in the list"));
        }
        let host = if host.contains(':') && !host.ends_with(']') {
            host.to_string()
        } else {
            format!("{host}:6379")
        };
        nodes.push(match userinfo {
            Some(u) => format!("{scheme}://{u}@{host}"),
            None => format!("{scheme}://{host}"),
        });
    }
    Ok(Some(nodes))
}

#[cfg(test)]
mod tests {
    use super::cluster_nodes;

    #[test]
    fn cluster_urls_become_seed_nodes() {
        assert_eq!(cluster_nodes("redis://h:6379").unwrap(), None);
        assert_eq!(cluster_nodes("redis://:p@w@h:6379/2").unwrap(), None);
        assert_eq!(
            cluster_nodes("redis+cluster://a:7000,b").unwrap().unwrap(),
            vec!["redis://a:7000", "redis://b:6379"]
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://u:p/,@x@a:1,b:2/").unwrap().unwrap(),
            vec!["rediss://u:p/,@x@a:1", "rediss://u:p/,@x@b:2"]
        );
        assert_eq!(
            cluster_nodes("redis://:pw@a:1, b:2").unwrap().unwrap(),
            vec!["redis://:pw@a:1", "redis://:pw@b:2"]
        );
        for bad in ["redis+cluster://:secret@a:1,,b:2", "redis+cluster://:secret@a:1,b:2/3"] {
            let e = cluster_nodes(bad).unwrap_err().to_string();
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
