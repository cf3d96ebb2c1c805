//! The suite on a memcached cache over the in-process store.
#![cfg(feature = "memcache")]

use std::sync::Arc;

use backend_memcache::{MemcacheCache, MemcacheCacheOptions, MemcacheTarget};
use conformance::Backends;
use counter_core::MemoryStore;

/// A memcached cache under a fresh random prefix, so that tests running in
/// parallel against one server never see each other.
async fn memcache_cache() -> Option<MemcacheCache> {
    let url = conformance::service_url("COUNTERS_TEST_MEMCACHE_URL")?;
    let target = MemcacheTarget::parse(&url).expect("test memcached URL parses");
    let options = MemcacheCacheOptions::with_prefix(format!("t{:016x}:", rand::random::<u64>()));
    Some(MemcacheCache::connect_with(target, options).await.expect("connect to test memcached"))
}

async fn setup() -> Option<Backends<MemcacheCache, MemoryStore>> {
    let cache = memcache_cache().await?;
    Some(Backends::new(Arc::new(cache), Arc::new(MemoryStore::new())))
}

conformance::conformance_suite!(setup, model_cases = 24);
