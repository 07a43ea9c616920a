//! A result store named by a URL (`PUBSUB_RESULTS`), so examples, services
//! and the CLI pick one the same way.

use std::sync::Arc;

use pubsub_core::{Error, Result};

use super::{DirResultStore, MemoryResultStore, ResultStore};

/// The variable [`result_store_from_env`] reads.
pub const RESULTS_ENV: &str = "PUBSUB_RESULTS";

/// Opens the result store `url` names:
///
/// | URL | store |
/// |---|---|
/// | `memory:` | [`MemoryResultStore`] (this process only) |
/// | `dir:/path` or `file:///path` | [`DirResultStore`] in that directory |
/// | `redis://…`, `rediss://…` | `RedisResultStore` (feature `redis`) |
/// | `nats://…`, `tls://…` | `NatsResultStore`, bucket `pubsub-tasks` (feature `nats`) |
///
/// Anything else, or a scheme whose feature is not compiled in, is
/// [`Error::InvalidConfiguration`] naming the URL without its credentials.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let store = pubsub_tasks::open_result_store(&format!("dir:{}", dir.path().display())).await?;
/// assert!(store.get("none").await?.is_none());
/// assert!(pubsub_tasks::open_result_store("ftp://x").await.is_err());
/// # Ok::<(), pubsub_core::Error>(()) }).unwrap();
/// ```
pub async fn open_result_store(url: &str) -> Result<Arc<dyn ResultStore>> {
    let url = url.trim();
    let (scheme, rest) = url.split_once(':').unwrap_or((url, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "memory" => Ok(Arc::new(MemoryResultStore::new())),
        "dir" | "file" => {
            let path = if scheme.eq_ignore_ascii_case("file") {
                rest.strip_prefix("//").unwrap_or(rest)
            } else {
                rest
            };
            if path.is_empty() {
                return Err(Error::InvalidConfiguration(format!(
                    "result store {url:?}: no directory (dir:/path)"
                )));
            }
            Ok(Arc::new(DirResultStore::open(path)?))
        }
        #[cfg(feature = "redis")]
        "redis" | "rediss" => Ok(Arc::new(super::RedisResultStore::connect(url).await?)),
        #[cfg(feature = "nats")]
        "nats" | "tls" => Ok(Arc::new(super::NatsResultStore::connect(url).await?)),
        // Reached only where one of the features above is off.
        #[allow(unreachable_patterns)]
        "redis" | "rediss" | "nats" | "tls" => Err(Error::InvalidConfiguration(format!(
            "result store {}: this build has no {scheme} result store (feature {})",
            pubsub_core::redact_url(url),
            if scheme.starts_with("redis") { "redis" } else { "nats" },
        ))),
        _ => Err(Error::InvalidConfiguration(format!(
            "result store {}: unknown kind (memory:, dir:/path, redis://…, nats://…)",
            pubsub_core::redact_url(url)
        ))),
    }
}

/// The result store `PUBSUB_RESULTS` names ([`open_result_store`]), or
/// `None` when it is unset or empty.
pub async fn result_store_from_env() -> Result<Option<Arc<dyn ResultStore>>> {
    match std::env::var(RESULTS_ENV) {
        Ok(url) if !url.trim().is_empty() => open_result_store(&url).await.map(Some),
        _ => Ok(None),
    }
}
