//! The suite on a standalone Redis cache over the in-process store.
#![cfg(feature = "redis")]

use std::sync::Arc;

use backend_redis::RedisCache;
use conformance::Backends;
use counter_core::MemoryStore;

async fn setup() -> Option<Backends<RedisCache, MemoryStore>> {
    let cache = conformance::redis::redis_cache("COUNTERS_TEST_REDIS_URL").await?;
    Some(Backends::new(Arc::new(cache), Arc::new(MemoryStore::new())))
}

conformance::conformance_suite!(setup, model_cases = 24);
