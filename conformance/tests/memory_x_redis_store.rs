//! The suite on an in-process cache over the Redis store: MemoryCache x
//! RedisStore, on the standalone Redis at `COUNTERS_TEST_REDIS_URL`, each
//! setup under a random key prefix so runs never see each other's keys.
#![cfg(feature = "redis")]

use std::sync::Arc;

use backend_redis::{RedisStore, RedisStoreOptions, RedisTarget};
use conformance::Backends;
use counter_core::MemoryCache;

async fn setup() -> Option<Backends<MemoryCache, RedisStore>> {
    let url = conformance::service_url("COUNTERS_TEST_REDIS_URL")?;
    let prefix = format!("conformance:store:{:016x}:", rand::random::<u64>());
    let target = RedisTarget::parse(&url).expect("COUNTERS_TEST_REDIS_URL is a Redis URL");
    let store = RedisStore::connect_with(target, RedisStoreOptions::default().prefix(prefix)).await.expect("connect");
    Some(Backends::new(Arc::new(MemoryCache::new()), Arc::new(store)))
}

conformance::conformance_suite!(setup, model_cases = 32);
