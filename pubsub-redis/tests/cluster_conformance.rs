//! The conformance suite against a Redis Cluster (`REDIS_CLUSTER_URL`,
//! default `redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002`:
//! the 3 masters + 3 replicas `scripts/brokers.sh` starts). Every case
//! runs: streams, consumer groups, the Lua scripts (dedup, delayed
//! delivery, reclaims), acks, replay and the admin API, each topic's keys
//! in the one slot of its hash tag.

use std::sync::Arc;
use std::time::Duration;

use pubsub_core::{Error, PubSubBackend};
use pubsub_redis::{RedisBackend, RedisConfig};

fn url() -> String {
    std::env::var("REDIS_CLUSTER_URL")
        .unwrap_or_else(|_| "redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002".into())
}

async fn backend() -> Result<Arc<dyn PubSubBackend>, Error> {
    let config = RedisConfig::new(url()).with_timeout(Duration::from_secs(3));
    Ok(Arc::new(RedisBackend::connect(config).await?))
}

pubsub_core::conformance_tests!(backend);
