//! Set-up of Redis backends for the suite: a fresh key prefix per test, so
//! tests running in parallel against one server never see each other.

use std::time::Duration;

use backend_redis::{RedisCache, RedisCacheOptions, RedisTarget};

use crate::harness::service_url;

/// The lease the suite gives Redis caches: short, so that registrations
/// expire within the cases (see [`crate::leases`]).
pub const LEASE: Duration = Duration::from_secs(1);

/// A Redis cache on the server named by `url_env` (standalone or Cluster),
/// under a random prefix, with a [`LEASE`]; `None` (a loud skip) when the
/// variable is unset outside CI.
pub async fn redis_cache(url_env: &str) -> Option<RedisCache> {
    redis_cache_at(url_env, &format!("t{:016x}:", rand::random::<u64>())).await
}

/// A Redis cache on the server named by `url_env` under `prefix` (several
/// handles, or processes, share a prefix), with a [`LEASE`].
pub async fn redis_cache_at(url_env: &str, prefix: &str) -> Option<RedisCache> {
    let url = service_url(url_env)?;
    let target = RedisTarget::parse(&url).expect("test Redis URL parses");
    Some(
        RedisCache::connect_with(target, RedisCacheOptions::with_prefix(prefix).lease(LEASE))
            .await
            .expect("connect to test Redis"),
    )
}
