//! What the memcached tests share: the test server's URL (a missing one
//! fails under CI and skips loudly elsewhere) and private servers for tests
//! that stop or flush them, both from the conformance crate, and caches
//! under random prefixes.
#![allow(dead_code, unused_imports)]

use backend_memcache::{MemcacheCache, MemcacheCacheOptions, MemcacheTarget};

pub use conformance::servers::PrivateMemcached;

/// The URL of the shared test server, or `None` after a loud message (a
/// panic under `CI=true`).
pub fn service_url() -> Option<String> {
    conformance::service_url("COUNTERS_TEST_MEMCACHE_URL")
}

pub fn random_prefix() -> String {
    format!("t{:016x}:", rand::random::<u64>())
}

/// A cache on `url` under `prefix` with these options.
pub async fn cache_with(url: &str, options: MemcacheCacheOptions) -> MemcacheCache {
    MemcacheCache::connect_with(MemcacheTarget::parse(url).unwrap(), options).await.expect("connect to memcached")
}

/// A cache on `url` under `prefix`.
pub async fn cache_at(url: &str, prefix: &str) -> MemcacheCache {
    cache_with(url, MemcacheCacheOptions::with_prefix(prefix)).await
}
