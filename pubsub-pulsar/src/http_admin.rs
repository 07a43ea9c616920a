//! The little of Pulsar's HTTP admin API the adapter uses: making a
//! topic's tenant and namespace when they do not exist yet. Apache Pulsar
//! creates topics on first use but never tenants or namespaces, so without
//! this every SDK topic outside an existing namespace is refused with
//! "Namespace not found". Plain HTTP/1.0 over a TCP stream (one request per
//! connection, no TLS): enough for these three calls, no HTTP stack needed.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use pubsub_core::{Error, Result, Secret, Topic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::errors::NAME;

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
        match answer.status {
            // Made, or there already.
            200..=299 | 409 => {}
            _ => return Err(self.refused(&format!("create namespace {namespace}"), answer)),
        }
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
        let answer = self
            .call("PUT", &format!("/admin/v2/tenants/{tenant}"), Some(&body))
            .await?;
        match answer.status {
            200..=299 | 409 => Ok(()),
            _ => Err(self.refused(&format!("create tenant {tenant}"), answer)),
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
}
