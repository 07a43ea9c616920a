//! The conformance suite against a real Redis (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`; scripts/brokers.sh starts one).

use std::sync::Arc;
use std::time::Duration;

use pubsub_core::{Error, PubSubBackend};
use pubsub_redis::{RedisBackend, RedisConfig};

async fn backend() -> Result<Arc<dyn PubSubBackend>, Error> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let config = RedisConfig::new(url).with_timeout(Duration::from_secs(3));
    Ok(Arc::new(RedisBackend::connect(config).await?))
}

pubsub_core::conformance_tests!(backend);
