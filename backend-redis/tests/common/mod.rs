//! What the Redis tests share: the test servers' URLs (a missing one fails
//! under CI and skips loudly elsewhere) and private servers for tests that
//! stop or flush them, both from the conformance crate, and fresh caches
//! under random prefixes.
#![allow(dead_code, unused_imports)]

use backend_redis::{RedisCache, RedisCacheOptions, RedisTarget};

pub use conformance::servers::PrivateRedis;
pub use conformance::service_url;

pub fn random_prefix() -> String {
    format!("t{:016x}:", rand::random::<u64>())
}

/// A cache on `url` under `prefix`, with `shards` hash tags if given.
pub async fn cache_at(url: &str, prefix: &str, shards: Option<u16>) -> RedisCache {
    let mut options = RedisCacheOptions::with_prefix(prefix);
    if let Some(shards) = shards {
        options = options.shards(shards);
    }
    RedisCache::connect_with(RedisTarget::parse(url).unwrap(), options).await.expect("connect to Redis")
}
