//! The suite on a Redis Cluster cache (3 masters, counters spread over 64
//! hash tags) over SQLite files.
#![cfg(all(feature = "redis", feature = "sqlite"))]

use std::path::PathBuf;
use std::sync::Arc;

use backend_redis::RedisCache;
use backend_sqlite::SqliteStore;
use conformance::Backends;

async fn setup() -> Option<Backends<RedisCache, SqliteStore>> {
    let cache = conformance::redis::redis_cache("COUNTERS_TEST_REDIS_CLUSTER_URL").await?;
    assert!(cache.shards() > 1, "a Cluster cache spreads counters over several hash tags");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance-cluster-sqlite");
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let store =
        SqliteStore::open(dir.join(format!("{:016x}.sqlite", rand::random::<u64>()))).await.expect("open SQLite");
    Some(Backends::new(Arc::new(cache), Arc::new(store)))
}

conformance::conformance_suite!(setup, model_cases = 16);
