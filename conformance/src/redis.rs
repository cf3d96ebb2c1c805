//! Set-up of Redis backends for the suite: a fresh key prefix per test, so
//! tests running in parallel against one server never see each other.

use backend_redis::{RedisCache, RedisCacheOptions, RedisTarget};

use crate::harness::service_url;

/// A Redis cache on the server named by `url_env` (standalone or Cluster),
/// under a random prefix; `None` (a loud skip) when the variable is unset
/// outside CI.
pub async fn redis_cache(url_env: &str) -> Option<RedisCache> {
    let url = service_url(url_env)?;
    let target = RedisTarget::parse(&url).expect("test Redis URL parses");
    let prefix = format!("t{:016x}:", rand::random::<u64>());
    Some(RedisCache::connect_with(target, RedisCacheOptions::with_prefix(prefix)).await.expect("connect to test Redis"))
}
