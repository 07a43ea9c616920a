//! Settings of the NATS backend.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use pubsub_core::{redact_url, Secret, TlsConfig};

/// How to reach NATS and how to size the JetStream streams it creates.
///
/// ```
/// use pubsub_core::Secret;
/// let cfg = pubsub_nats::NatsConfig::new("nats://127.0.0.1:4222").with_token(Secret::new("t0ken"));
/// assert!(!format!("{cfg:?}").contains("t0ken"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct NatsConfig {
    /// `nats://host:4222` (a password or token in it is never printed), or
    /// the servers of a cluster separated by commas
    /// (`nats://h1:4222,nats://h2:4222,h3:4222`), optionally followed by
    /// `?replicas=N` (see [`replicas`](Self::replicas)).
    pub url: String,
    /// Token authentication (`NATS_TOKEN`); never printed.
    pub token: Option<Secret>,
    /// User and password authentication (`NATS_USER`, `NATS_PASSWORD`).
    pub user: Option<(String, Secret)>,
    /// NKey authentication: the user's seed (`NATS_NKEY_SEED`, `SU...`).
    pub nkey_seed: Option<Secret>,
    /// A `.creds` file (JWT and NKey seed) for decentralized auth (`NATS_CREDS_FILE`).
    pub credentials_file: Option<PathBuf>,
    /// TLS settings; setting them requires TLS, whatever the URL's scheme.
    /// A `tls://` URL with none uses the system's trust store.
    pub tls: Option<TlsConfig>,
    /// Bound on connecting and on each request to the server.
    pub timeout: Duration,
    /// `max_age` of the streams this backend creates.
    pub stream_max_age: Duration,
    /// JetStream `duplicate_window`: how long a q2 `Nats-Msg-Id` is remembered.
    pub dedup_window: Duration,
    /// Bytes of each message kept free for headers (properties, key): the
    /// payload limit is the server's `max_payload` minus this.
    pub header_reserve: usize,
    /// Replicas of the streams this backend creates (1 to 5; JetStream's
    /// limit). `None`: `?replicas=N` of the URL if there, else what the
    /// cluster allows: 3, or fewer when the server knows fewer servers in
    /// its cluster (its INFO's `connect_urls`), 1 on a single server.
    /// Durable consumers inherit the stream's replicas. Streams that exist
    /// already keep theirs.
    pub replicas: Option<usize>,
}

/// JetStream's largest replica count.
pub(crate) const MAX_REPLICAS: usize = 5;

/// The replicas a stream gets by default: an odd quorum of three where the
/// cluster has that many servers, so one may fail without losing a
/// confirmed message.
pub(crate) const DEFAULT_CLUSTER_REPLICAS: usize = 3;

impl NatsConfig {
    /// Defaults for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        NatsConfig {
            url: url.into(),
            token: None,
            user: None,
            nkey_seed: None,
            credentials_file: None,
            tls: None,
            timeout: Duration::from_secs(5),
            stream_max_age: Duration::from_secs(7 * 24 * 3600),
            dedup_window: Duration::from_secs(120),
            header_reserve: 4096,
            replicas: None,
        }
    }

    /// Sets the token.
    pub fn with_token(mut self, token: Secret) -> Self {
        self.token = Some(token);
        self
    }

    /// Authenticates as `user` with `password`.
    pub fn with_user_password(mut self, user: impl Into<String>, password: Secret) -> Self {
        self.user = Some((user.into(), password));
        self
    }

    /// Authenticates with the NKey whose seed is `seed`.
    pub fn with_nkey(mut self, seed: Secret) -> Self {
        self.nkey_seed = Some(seed);
        self
    }

    /// Authenticates with the JWT and seed of a `.creds` file.
    pub fn with_credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.credentials_file = Some(path.into());
        self
    }

    /// Connects over TLS with these settings.
    ///
    /// ```
    /// use pubsub_core::TlsConfig;
    /// let cfg = pubsub_nats::NatsConfig::new("tls://nats.internal:4222")
    ///     .with_tls(TlsConfig::default().with_ca_file("/etc/ssl/nats-ca.pem"));
    /// assert!(cfg.tls.is_some());
    /// ```
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Streams this backend creates get `replicas` copies (1 to 5), over
    /// any `?replicas=N` of the URL and the cluster's default.
    ///
    /// ```
    /// let cfg = pubsub_nats::NatsConfig::new("nats://n1:4222,nats://n2:4222,nats://n3:4222").with_replicas(3);
    /// assert_eq!(cfg.replicas, Some(3));
    /// ```
    pub fn with_replicas(mut self, replicas: usize) -> Self {
        self.replicas = Some(replicas);
        self
    }

    /// Sets the timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &redact_url(&self.url))
            .field("token", &self.token)
            .field("user", &self.user)
            .field("nkey_seed", &self.nkey_seed)
            .field("credentials_file", &self.credentials_file)
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .field("stream_max_age", &self.stream_max_age)
            .field("dedup_window", &self.dedup_window)
            .field("replicas", &self.replicas)
            .finish()
    }
}

/// The servers of a URL list and its `?replicas=N`: `nats://a:1,nats://b:2`
/// or `nats://a:1,b:2` (a server without a scheme takes the first one's).
/// Errors never show a password.
pub(crate) fn parse_servers(url: &str) -> Result<(Vec<async_nats::ServerAddr>, Option<usize>), pubsub_core::Error> {
    let bad = |why: String| pubsub_core::Error::InvalidConfiguration(format!("NATS URL {}: {why}", redact_url(url)));
    // The query follows the last server; a `?` inside credentials (before
    // the last `@`) is not one.
    let after_at = url.rfind('@').map_or(0, |at| at + 1);
    let (list, query) = match url[after_at..].find('?') {
        Some(q) => (&url[..after_at + q], Some(&url[after_at + q + 1..])),
        None => (url, None),
    };
    let mut replicas = None;
    for pair in query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("replicas", n)) => {
                let n = n
                    .parse::<usize>()
                    .map_err(|_| bad(format!("replicas={n:?} is not a number")))?;
                replicas = Some(check_replicas(n)?);
            }
            _ => {
                return Err(bad(format!(
                    "unknown parameter {:?} (the only one is replicas=N)",
                    pair.split('=').next().unwrap_or(pair)
                )))
            }
        }
    }
    let mut scheme = None;
    let mut servers = Vec::new();
    for server in list.split(',').map(str::trim) {
        if server.is_empty() {
            return Err(bad("an empty server in the list".into()));
        }
        let full = match (server.contains("://"), scheme) {
            (false, Some(s)) => format!("{s}://{server}"),
            _ => server.to_string(),
        };
        if scheme.is_none() {
            scheme = server.split_once("://").map(|(s, _)| s);
        }
        let addr = full
            .parse::<async_nats::ServerAddr>()
            .map_err(|e| bad(format!("server {}: {e}", redact_url(&full))))?;
        servers.push(addr);
    }
    Ok((servers, replicas))
}

/// `n` if JetStream takes it as a replica count.
pub(crate) fn check_replicas(n: usize) -> Result<usize, pubsub_core::Error> {
    if (1..=MAX_REPLICAS).contains(&n) {
        Ok(n)
    } else {
        Err(pubsub_core::Error::InvalidConfiguration(format!(
            "NATS stream replicas {n}: JetStream takes 1 to {MAX_REPLICAS}"
        )))
    }
}

/// The replicas a JetStream stream gets by default on the server whose
/// INFO is `info` (`client.server_info()`): 3 where its cluster has as
/// many servers (its `connect_urls`), else as many as it has; 1 on a
/// server outside a cluster. Shared with the task layer's key-value store,
/// so every stream the SDK makes follows one rule.
///
/// ```
/// let single = async_nats::ServerInfo::default();
/// assert_eq!(pubsub_nats::default_stream_replicas(&single), 1);
/// ```
pub fn default_stream_replicas(info: &async_nats::ServerInfo) -> usize {
    match &info.cluster {
        Some(name) if !name.is_empty() => info.connect_urls.len().clamp(1, DEFAULT_CLUSTER_REPLICAS),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_and_replicas() {
        let (servers, replicas) =
            parse_servers("nats://127.0.0.1:4231,127.0.0.1:4232, nats://h3:4233?replicas=3").unwrap();
        assert_eq!(servers.len(), 3);
        assert_eq!((servers[1].host(), servers[1].port()), ("127.0.0.1", 4232));
        assert_eq!(replicas, Some(3));
        let (servers, replicas) = parse_servers("nats://127.0.0.1:4222").unwrap();
        assert_eq!((servers.len(), replicas), (1, None));
        // TLS is kept for a server written without a scheme.
        let (servers, _) = parse_servers("tls://a:4222,b:4222").unwrap();
        assert!(servers[1].tls_required());
    }

    #[test]
    fn bad_lists_say_why_without_the_password() {
        for (url, why) in [
            ("nats://u:s3cret@a:4222?replicas=7", "1 to 5"),
            ("nats://u:s3cret@a:4222?replicas=x", "not a number"),
            ("nats://u:s3cret@a:4222?replica=3", "unknown parameter \"replica\""),
            ("nats://u:s3cret@a:4222,,b:1", "empty server"),
            ("nats://u:s3cret@a:4222,b:port", "server"),
        ] {
            let e = parse_servers(url).unwrap_err();
            let text = e.to_string();
            assert!(matches!(e, pubsub_core::Error::InvalidConfiguration(_)), "{url}: {e:?}");
            assert!(text.contains(why), "{url}: {text}");
            assert!(!text.contains("s3cret"), "{url}: {text}");
        }
    }

    #[test]
    fn default_replicas_follow_the_cluster() {
        let mut info = async_nats::ServerInfo::default();
        assert_eq!(default_stream_replicas(&info), 1);
        info.cluster = Some("c".into());
        info.connect_urls = vec!["a:1".into(), "b:1".into()];
        assert_eq!(default_stream_replicas(&info), 2);
        info.connect_urls = (0..5).map(|i| format!("h{i}:1")).collect();
        assert_eq!(default_stream_replicas(&info), 3);
    }
}
