//! Credentials that never show up in `Debug`, `Display`, logs or errors.

use std::fmt;
use std::str::FromStr;

/// A password, API key or token. `Debug` and `Display` print `***`; the
/// value is read only through [`Secret::expose`], at the one place a
/// client library needs it.
///
/// ```
/// let key = pubsub_core::Secret::new("s3cr3t");
/// assert_eq!(format!("{key:?} {key}"), "Secret(***) ***");
/// assert_eq!(key.expose(), "s3cr3t");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The credential itself, for handing to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// A URL with any password in it replaced by `***`, for logs and errors:
/// `redis://user:pw@host:6379` becomes `redis://user:***@host:6379`.
///
/// ```
/// use pubsub_core::redact_url;
/// assert_eq!(redact_url("redis://:hunter2@localhost:6379/0"), "redis://:***@localhost:6379/0");
/// assert_eq!(redact_url("nats://localhost:4222"), "nats://localhost:4222");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    // The last `@` anywhere, not only in the authority: a password with an
    // unescaped `#`, `/`, `?` or `@` would otherwise end the authority early
    // and be printed. A query value with an `@` is hidden too: better too
    // much than a password.
    let Some(at) = rest.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    let user = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None => "***".to_string(), // a lone token in the user part
    };
    format!("{}{}@{}", &url[..scheme_end + 3], user, &rest[at + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(redact_url("mqtt://bob:pw@h:1883"), "mqtt://bob:***@h:1883");
        assert_eq!(redact_url("nats://tok3n@h:4222"), "nats://***@h:4222");
        // Unescaped URL characters in a password never show.
        assert_eq!(redact_url("redis://app:weird#frag@h:6379"), "redis://app:***@h:6379");
        assert_eq!(
            redact_url("rediss://app:p@ss:w0rd/x?y@h:6380/0"),
            "rediss://app:***@h:6380/0"
        );
        // An `@` in a query hides what comes before it: too much, never too little.
        assert_eq!(redact_url("redis://h:6379/0?x=a@b"), "redis://h:***@b");
        assert_eq!(redact_url("not a url"), "not a url");
        assert!(!format!("{:?}", Secret::new("pw")).contains("pw"));
    }
}
