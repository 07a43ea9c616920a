//! The little of Pulsar's HTTP admin API the adapter uses: making a
//! topic's tenant and namespace when they do not exist yet (Apache Pulsar
//! creates topics on first use but never tenants or namespaces, so without
//! this every SDK topic outside an existing namespace is refused with
//! "Namespace not found"), and the topic calls of the [`Admin`] interface
//! the binary protocol lacks: creating, listing and deleting topics of
//! both domains (`GetTopicsOfNamespace` leaves out non-persistent ones) and
//! a topic's subscriptions with their backlog (its stats). Plain HTTP/1.0
//! over a TCP stream (one request per connection, no TLS): enough for
//! these few calls, no HTTP stack needed.
//!
//! [`Admin`]: pubsub_core::Admin

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use pubsub_core::{Error, Qos, Result, Secret, SubscriptionInfo, Topic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::errors::NAME;
use crate::naming::pulsar_topic;

/// The admin API at `http://host:port[/prefix]`, and the namespaces known to exist.
pub(crate) struct HttpAdmin {
    /// `host:port`.
    authority: String,
    /// The path before `/admin/v2`, without a trailing `/`.
    prefix: String,
    token: Option<Secret>,
    timeout: Duration,
    /// `tenant/namespace` of every namespace seen to exist.
    known: Mutex<HashSet<String>>,
}

/// An answer: status code and body.
struct Answer {
    status: u16,
    body: String,
}

impl HttpAdmin {
    /// The admin API at `url` (`http://host[:port][/prefix]`; port 80 if none).
    pub(crate) fn new(url: &str, token: Option<Secret>, timeout: Duration) -> Result<Self> {
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some(("https", _)) => {
                return Err(Error::unsupported(
                    NAME,
                    "an https admin URL (the adapter's admin client speaks plain HTTP only)",
                ))
            }
            _ => {
                return Err(Error::InvalidConfiguration(format!(
                    "admin URL {:?} is not http://host[:port][/path]",
                    pubsub_core::redact_url(url)
                )))
            }
        };
        let (authority, prefix) = match rest.split_once('/') {
            Some((a, p)) => (a, format!("/{}", p.trim_end_matches('/'))),
            None => (rest, String::new()),
        };
        let prefix = if prefix == "/" { String::new() } else { prefix };
        if authority.is_empty() || authority.contains('@') {
            return Err(Error::InvalidConfiguration(format!(
                "admin URL {:?} needs a host (and no user info: the token is sent as a bearer token)",
                pubsub_core::redact_url(url)
            )));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(HttpAdmin {
            authority,
            prefix,
            token,
            timeout,
            known: Mutex::new(HashSet::new()),
        })
    }

    /// Makes `topic`'s tenant (allowed on every cluster of the instance)
    /// and namespace unless they exist. Once per namespace and client.
    pub(crate) async fn ensure_namespace(&self, topic: &Topic) -> Result<()> {
        let namespace = format!("{}/{}", topic.tenant(), topic.namespace());
        if self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&namespace)
        {
            return Ok(());
        }
        let path = format!("/admin/v2/namespaces/{namespace}");
        let mut answer = self.call("PUT", &path, None).await?;
        if answer.status == 404 {
            // "Tenant does not exist": make it, then the namespace.
            self.ensure_tenant(topic.tenant()).await?;
            answer = self.call("PUT", &path, None).await?;
        }
        self.made_or_there(&format!("create namespace {namespace}"), answer, &path)
            .await?;
        self.known.lock().unwrap_or_else(|e| e.into_inner()).insert(namespace);
        Ok(())
    }

    async fn ensure_tenant(&self, tenant: &str) -> Result<()> {
        let clusters = self.call("GET", "/admin/v2/clusters", None).await?;
        if clusters.status != 200 {
            return Err(self.refused("list clusters", clusters));
        }
        // A JSON array of names, e.g. ["standalone"]: names are
        // [-=:.\w]+, so passing the array on as is keeps it valid JSON.
        let list = clusters.body.trim();
        if !(list.starts_with('[') && list.ends_with(']')) {
            return Err(Error::broker_msg(
                NAME,
                format!("list clusters: unexpected answer {list:?}"),
            ));
        }
        let body = format!("{{\"adminRoles\":[],\"allowedClusters\":{list}}}");
        let path = format!("/admin/v2/tenants/{tenant}");
        let answer = self.call("PUT", &path, Some(&body)).await?;
        self.made_or_there(&format!("create tenant {tenant}"), answer, &path)
            .await
    }

    /// Whether the PUT that creates `path` left it there: made (2xx), there
    /// already (409), or made by a concurrent creator. Apache Pulsar answers
    /// two clients creating one tenant at once with HTTP 500 "BadVersion"
    /// to the one that lost (seen on a fresh broker, when two tests made
    /// their first topics side by side), so a refusal is checked by a GET
    /// of `path` before it is reported.
    async fn made_or_there(&self, what: &str, answer: Answer, path: &str) -> Result<()> {
        if matches!(answer.status, 200..=299 | 409) {
            return Ok(());
        }
        match self.call("GET", path, None).await {
            Ok(check) if check.status == 200 => Ok(()),
            _ => Err(self.refused(what, answer)),
        }
    }

    /// Creates `topic` (non-partitioned): `Ok(false)` if it existed.
    pub(crate) async fn create_topic(&self, topic: &Topic) -> Result<bool> {
        let answer = self.call("PUT", &topic_path(topic), None).await?;
        match answer.status {
            200..=299 => Ok(true),
            409 => Ok(false),
            _ => Err(self.refused(&format!("create topic {}", pulsar_topic(topic)), answer)),
        }
    }

    /// The Pulsar names of the topics of `tenant/namespace`, persistent and
    /// non-persistent; none if the namespace does not exist.
    pub(crate) async fn list_topics(&self, tenant: &str, namespace: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for domain in ["persistent", "non-persistent"] {
            names.extend(self.domain_topics(domain, tenant, namespace).await?);
        }
        Ok(names)
    }

    async fn domain_topics(&self, domain: &str, tenant: &str, namespace: &str) -> Result<Vec<String>> {
        let answer = self
            .call("GET", &format!("/admin/v2/{domain}/{tenant}/{namespace}"), None)
            .await?;
        match answer.status {
            200 => serde_json::from_str(&answer.body)
                .map_err(|e| Error::broker_msg(NAME, format!("list {domain} topics of {tenant}/{namespace}: {e}"))),
            // "Namespace does not exist" (or the tenant): no topics.
            404 => Ok(Vec::new()),
            _ => Err(self.refused(&format!("list {domain} topics of {tenant}/{namespace}"), answer)),
        }
    }

    /// Whether `topic` exists: listed in its namespace.
    pub(crate) async fn topic_exists(&self, topic: &Topic) -> Result<bool> {
        let domain = domain(topic.qos());
        let name = pulsar_topic(topic);
        let names = self.domain_topics(domain, topic.tenant(), topic.namespace()).await?;
        Ok(names.contains(&name))
    }

    /// Deletes `topic` with its messages and subscriptions. Refused while
    /// a producer or consumer is attached to it (Pulsar's own rule without
    /// `force`: a forced delete would be undone by the SDK consumers, which
    /// subscribe again and so make the topic anew). `NotFound` if missing.
    pub(crate) async fn delete_topic(&self, topic: &Topic) -> Result<()> {
        let name = pulsar_topic(topic);
        // Apache Pulsar answers 204 to deleting a missing non-persistent topic.
        if topic.qos() == Qos::AtMostOnce && !self.topic_exists(topic).await? {
            return Err(Error::NotFound(format!("topic {topic} ({name})")));
        }
        let answer = self.call("DELETE", &topic_path(topic), None).await?;
        match answer.status {
            200..=299 => Ok(()),
            404 => Err(Error::NotFound(format!("topic {topic} ({name})"))),
            412 => Err(Error::broker_msg(
                NAME,
                format!(
                    "delete topic {name}: producers or consumers are attached; close them first ({})",
                    answer.body.trim()
                ),
            )),
            _ => Err(self.refused(&format!("delete topic {name}"), answer)),
        }
    }

    /// `topic`'s subscriptions with their backlog (`msgBacklog` of the
    /// topic's stats), sorted by name. `NotFound` if the topic is missing.
    pub(crate) async fn subscriptions(&self, topic: &Topic) -> Result<Vec<SubscriptionInfo>> {
        let name = pulsar_topic(topic);
        let answer = self.call("GET", &format!("{}/stats", topic_path(topic)), None).await?;
        match answer.status {
            200 => {
                parse_subscriptions(&answer.body).map_err(|e| Error::broker_msg(NAME, format!("stats of {name}: {e}")))
            }
            404 => Err(Error::NotFound(format!("topic {topic} ({name})"))),
            _ => Err(self.refused(&format!("stats of {name}"), answer)),
        }
    }

    /// The error for a refusal: 401/403 say the token lacks the rights.
    fn refused(&self, what: &str, answer: Answer) -> Error {
        let text = answer.body.trim();
        let text = &text[..text.len().min(300)];
        match answer.status {
            401 | 403 => Error::broker_msg(NAME, format!("{what}: not authorized (HTTP {}): {text}", answer.status)),
            status => Error::broker_msg(NAME, format!("{what}: HTTP {status}: {text}")),
        }
    }

    /// One request on a connection of its own, bounded by the timeout.
    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> Result<Answer> {
        let what = format!("{method} {}{path}", self.prefix);
        tokio::time::timeout(self.timeout, self.exchange(method, path, body))
            .await
            .map_err(|_| Error::Connection {
                backend: NAME,
                message: format!("admin API: {what}: no answer within {:?}", self.timeout),
                source: None,
            })?
            .map_err(|e| Error::connection(NAME, format!("admin API at {}: {what}", self.authority), e))
    }

    async fn exchange(&self, method: &str, path: &str, body: Option<&str>) -> std::io::Result<Answer> {
        let mut stream = TcpStream::connect(&self.authority).await?;
        let body = body.unwrap_or("");
        let mut request = format!(
            "{method} {}{path} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            self.prefix,
            self.authority,
            body.len()
        );
        if let Some(token) = &self.token {
            request.push_str(&format!("Authorization: Bearer {}\r\n", token.expose()));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream.write_all(request.as_bytes()).await?;
        // HTTP/1.0: the server closes the connection after the answer.
        let mut raw = Vec::new();
        stream.take(1 << 20).read_to_end(&mut raw).await?;
        parse_answer(&raw)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer".to_string()))
    }
}

/// `persistent` (q1, q2) or `non-persistent` (q0).
fn domain(qos: Qos) -> &'static str {
    match qos {
        Qos::AtMostOnce => "non-persistent",
        Qos::AtLeastOnce | Qos::ExactlyOnce => "persistent",
    }
}

/// `/admin/v2/{domain}/{tenant}/{namespace}/{topic}`: the segments are
/// `[A-Za-z0-9_-]`, so nothing needs escaping.
fn topic_path(topic: &Topic) -> String {
    format!(
        "/admin/v2/{}/{}/{}/{}",
        domain(topic.qos()),
        topic.tenant(),
        topic.namespace(),
        topic.queue()
    )
}

/// The subscriptions of a topic's stats: `{"subscriptions": {name: {"msgBacklog": n, ..}, ..}, ..}`.
fn parse_subscriptions(body: &str) -> std::result::Result<Vec<SubscriptionInfo>, String> {
    let stats: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let subs = stats
        .get("subscriptions")
        .and_then(|s| s.as_object())
        .ok_or("no subscriptions object")?;
    let mut infos: Vec<SubscriptionInfo> = subs
        .iter()
        .map(|(name, s)| SubscriptionInfo::new(name.clone(), s.get("msgBacklog").and_then(|b| b.as_u64())))
        .collect();
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(infos)
}

/// Status and body of a raw HTTP/1.x answer.
fn parse_answer(raw: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next()?;
    let mut fields = status_line.split_whitespace();
    if !fields.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = fields.next()?.parse().ok()?;
    Some(Answer {
        status,
        body: body.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let a = HttpAdmin::new("http://127.0.0.1:8080", None, Duration::from_secs(1)).unwrap();
        assert_eq!((a.authority.as_str(), a.prefix.as_str()), ("127.0.0.1:8080", ""));
        let a = HttpAdmin::new("http://pulsar/base/", None, Duration::from_secs(1)).unwrap();
        assert_eq!((a.authority.as_str(), a.prefix.as_str()), ("pulsar:80", "/base"));
        assert!(matches!(
            HttpAdmin::new("https://pulsar:8443", None, Duration::from_secs(1)),
            Err(Error::Unsupported { .. })
        ));
        for bad in ["pulsar:8080", "http://", "http://user:pw@host:1"] {
            assert!(matches!(
                HttpAdmin::new(bad, None, Duration::from_secs(1)),
                Err(Error::InvalidConfiguration(_))
            ));
        }
    }

    #[test]
    fn answers() {
        let a = parse_answer(b"HTTP/1.1 409 Namespace already exists\r\nServer: x\r\n\r\n{\"reason\":\"x\"}").unwrap();
        assert_eq!((a.status, a.body.as_str()), (409, "{\"reason\":\"x\"}"));
        assert_eq!(parse_answer(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap().status, 204);
        assert!(parse_answer(b"garbage").is_none());
    }

    #[test]
    fn paths_and_stats() {
        let q0: Topic = "q0/tg/flow/a".parse().unwrap();
        let q1: Topic = "q1/tg/flow/b".parse().unwrap();
        assert_eq!(topic_path(&q0), "/admin/v2/non-persistent/tg/flow/a");
        assert_eq!(topic_path(&q1), "/admin/v2/persistent/tg/flow/b");
        let stats =
            r#"{"msgRateIn":0.0,"subscriptions":{"t":{"msgBacklog":5,"type":"Shared"},"s.one":{"msgBacklog":0}}}"#;
        assert_eq!(
            parse_subscriptions(stats).unwrap(),
            vec![
                SubscriptionInfo::new("s.one", Some(0)),
                SubscriptionInfo::new("t", Some(5))
            ]
        );
        assert_eq!(parse_subscriptions(r#"{"subscriptions":{}}"#).unwrap(), vec![]);
        assert!(parse_subscriptions("{}").is_err());
        assert!(parse_subscriptions("not json").is_err());
    }
}
