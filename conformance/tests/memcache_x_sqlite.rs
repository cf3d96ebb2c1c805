//! The suite on a memcached cache over SQLite files.
#![cfg(all(feature = "memcache", feature = "sqlite"))]

use std::path::PathBuf;
use std::sync::Arc;

use backend_memcache::{MemcacheCache, MemcacheCacheOptions, MemcacheTarget};
use backend_sqlite::SqliteStore;
use conformance::Backends;

/// A memcached cache under a fresh random prefix, so that tests running in
/// parallel against one server never see each other.
async fn memcache_cache() -> Option<MemcacheCache> {
    let url = conformance::service_url("COUNTERS_TEST_MEMCACHE_URL")?;
    let target = MemcacheTarget::parse(&url).expect("test memcached URL parses");
    let options = MemcacheCacheOptions::with_prefix(format!("t{:016x}:", rand::random::<u64>()));
    Some(MemcacheCache::connect_with(target, options).await.expect("connect to test memcached"))
}

async fn setup() -> Option<Backends<MemcacheCache, SqliteStore>> {
    let cache = memcache_cache().await?;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance-memcache-sqlite");
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let store =
        SqliteStore::open(dir.join(format!("{:016x}.sqlite", rand::random::<u64>()))).await.expect("open SQLite");
    Some(Backends::new(Arc::new(cache), Arc::new(store)))
}

conformance::conformance_suite!(setup, model_cases = 16);
