//! Opening the backends a run names by URL: caches as their concrete types
//! (so the library is measured without dynamic dispatch, as an application
//! that picks its backends at build time would use it), stores through the
//! facade's `store_from_url`.

use std::path::Path;
use std::sync::Arc;

use counters::{DurableStore, MemoryCache};

/// A cache opened by URL.
#[derive(Debug)]
pub enum OpenedCache {
    /// `memory://`.
    Memory(Arc<MemoryCache>),
    /// `redis://` or `redis+cluster://`.
    #[cfg(feature = "redis")]
    Redis(Arc<counters::redis::RedisCache>),
    /// `memcache://`.
    #[cfg(feature = "memcache")]
    Memcache(Arc<backend_memcache::MemcacheCache>),
}

/// The scheme of a URL (`memory`, `redis`, ...), empty if it has none.
pub fn scheme(url: &str) -> &str {
    url.split_once("://").map_or("", |(s, _)| s)
}

/// Whether `url` names a shared cache whose keys outlive the run.
pub fn is_shared_cache(url: &str) -> bool {
    matches!(scheme(url), "redis" | "redis+cluster" | "memcache")
}

/// `url` with `prefix=PREFIX` added, unless it names a prefix already or is
/// not a shared cache: a run's keys then never meet an earlier run's.
pub fn with_prefix(url: &str, prefix: &str) -> String {
    if !is_shared_cache(url) || url.contains("prefix=") {
        return url.to_string();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}prefix={prefix}")
}

/// Opens the cache `url` names.
pub async fn open_cache(url: &str) -> Result<OpenedCache, String> {
    let failed = |e: counters::Error| format!("cannot open the cache {url}: {e}");
    match scheme(url) {
        "memory" if url == "memory://" => Ok(OpenedCache::Memory(Arc::new(MemoryCache::new()))),
        #[cfg(feature = "redis")]
        "redis" | "redis+cluster" => {
            Ok(OpenedCache::Redis(Arc::new(counters::redis::RedisCache::connect(url).await.map_err(failed)?)))
        }
        #[cfg(feature = "memcache")]
        "memcache" => {
            Ok(OpenedCache::Memcache(Arc::new(backend_memcache::MemcacheCache::connect(url).await.map_err(failed)?)))
        }
        #[cfg(not(feature = "redis"))]
        "redis" | "redis+cluster" => Err(format!("{url} needs the `redis` feature of counters-bench")),
        #[cfg(not(feature = "memcache"))]
        "memcache" => Err(format!("{url} needs the `memcache` feature of counters-bench")),
        _ => Err(failed(counters::Error::new(counters::ErrorKind::Config, "unknown cache URL"))),
    }
}

/// Opens the store `url` names, through `counters::store_from_url`.
pub async fn open_store(url: &str) -> Result<Arc<dyn DurableStore>, String> {
    counters::store_from_url(url).await.map_err(|e| format!("cannot open the store {url}: {e}"))
}

/// The URL of an SQLite file in `dir`.
pub fn sqlite_url_in(dir: &Path, file: &str) -> String {
    format!("sqlite://{}", dir.join(file).display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_a_prefix_to_shared_caches_only() {
        assert_eq!(with_prefix("redis://h:1", "p:"), "redis://h:1?prefix=p:");
        assert_eq!(with_prefix("redis://h:1?shards=2", "p:"), "redis://h:1?shards=2&prefix=p:");
        assert_eq!(with_prefix("redis://h:1?prefix=x", "p:"), "redis://h:1?prefix=x");
        assert_eq!(with_prefix("memory://", "p:"), "memory://");
    }
}
