//! Backends chosen by URL (`memory://`, `sqlite://PATH`, ...) or by the
//! environment (`COUNTERS_CACHE`, `COUNTERS_STORE`).

use std::sync::Arc;

use counter_core::{CacheLayer, DurableStore, Error, ErrorKind, MemoryCache, MemoryStore, Result, redact_url};

/// Environment variable naming the cache URL.
pub const CACHE_ENV: &str = "COUNTERS_CACHE";
/// Environment variable naming the store URL.
pub const STORE_ENV: &str = "COUNTERS_STORE";
/// The default cache: in-process memory.
pub const DEFAULT_CACHE_URL: &str = "memory://";
/// The default store: an SQLite file in the current directory.
pub const DEFAULT_STORE_URL: &str = "sqlite://counters.sqlite";

/// The cache URL from the environment, or the default.
pub fn cache_url_from_env() -> String {
    std::env::var(CACHE_ENV).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| DEFAULT_CACHE_URL.to_string())
}

/// The store URL from the environment, or the default.
pub fn store_url_from_env() -> String {
    std::env::var(STORE_ENV).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| DEFAULT_STORE_URL.to_string())
}

/// Environment variable naming the spill journal directory.
pub const JOURNAL_ENV: &str = "COUNTERS_JOURNAL";

/// The default spill journal for the store a URL names (see
/// [`CountersBuilder::spill_journal`](counter_core::CountersBuilder::spill_journal)):
/// next to the SQLite file for `sqlite://PATH` (`PATH.spill`), otherwise
/// `counters-<hash>.spill` in the current directory, the hash being of the
/// URL without its credentials, so that each store keeps its own journal.
pub fn default_journal(store_url: &str) -> std::path::PathBuf {
    if let Some(path) = store_url.strip_prefix("sqlite://") {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        return std::path::PathBuf::from(format!("{path}.spill"));
    }
    let without_credentials = match (store_url.find("://"), store_url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme && !store_url[scheme + 3..at].contains('/') => {
            format!("{}{}", &store_url[..scheme + 3], &store_url[at + 1..])
        }
        _ => store_url.to_string(),
    };
    let hash = without_credentials.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    std::path::PathBuf::from(format!("counters-{hash:08x}.spill"))
}

/// The spill journal from the environment, or the default for `store_url`.
pub fn journal_from_env(store_url: &str) -> std::path::PathBuf {
    std::env::var_os(JOURNAL_ENV)
        .filter(|v| !v.is_empty())
        .map(Into::into)
        .unwrap_or_else(|| default_journal(store_url))
}

fn scheme(url: &str) -> Result<&str> {
    url.split_once("://").map(|(s, _)| s).ok_or_else(|| {
        Error::new(ErrorKind::Config, format!("{:?} is not a backend URL (expected scheme://...)", redact_url(url)))
    })
}

#[cfg(not(all(feature = "sqlite", feature = "redis", feature = "memcache", feature = "dynamo")))]
fn not_compiled(url: &str, feature: &str) -> Error {
    Error::new(
        ErrorKind::Config,
        format!(
            "{:?} needs the `{feature}` backend, which is not compiled in (cargo feature `{feature}`)",
            redact_url(url)
        ),
    )
}

/// Opens the cache a URL names: `memory://` (in-process),
/// `redis://HOST:PORT` / `redis+cluster://HOST:PORT,HOST:PORT` (shared; with
/// the `redis` feature), or `memcache://HOST:PORT` (shared; with the
/// `memcache` feature).
pub async fn cache_from_url(url: &str) -> Result<Arc<dyn CacheLayer>> {
    match scheme(url)? {
        "memory" if url == "memory://" => Ok(Arc::new(MemoryCache::new())),
        #[cfg(feature = "redis")]
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => {
            Ok(Arc::new(backend_redis::RedisCache::connect(url).await?))
        }
        #[cfg(not(feature = "redis"))]
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => Err(not_compiled(url, "redis")),
        #[cfg(feature = "memcache")]
        "memcache" => Ok(Arc::new(backend_memcache::MemcacheCache::connect(url).await?)),
        #[cfg(not(feature = "memcache"))]
        "memcache" => Err(not_compiled(url, "memcache")),
        _ => Err(Error::new(
            ErrorKind::Config,
            format!(
                "unknown cache URL {:?} (known: memory://, redis://HOST:PORT, redis+cluster://HOST:PORT,..., \
                 memcache://HOST:PORT)",
                redact_url(url)
            ),
        )),
    }
}

/// Opens the store a URL names: `sqlite://PATH`, `redis://HOST:PORT` (with
/// the `redis` feature), `dynamodb://TABLE?endpoint=...&region=...` (with
/// the `dynamo` feature), or `memory://` (a store in memory: **not
/// durable**, for trials only).
pub async fn store_from_url(url: &str) -> Result<Arc<dyn DurableStore>> {
    match scheme(url)? {
        "memory" if url == "memory://" => Ok(Arc::new(MemoryStore::new())),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Arc::new(backend_sqlite::SqliteStore::from_url(url).await?)),
        #[cfg(not(feature = "sqlite"))]
        "sqlite" => Err(not_compiled(url, "sqlite")),
        #[cfg(feature = "dynamo")]
        "dynamodb" => Ok(Arc::new(backend_dynamo::DynamoStore::connect(url).await?)),
        #[cfg(not(feature = "dynamo"))]
        "dynamodb" => Err(not_compiled(url, "dynamo")),
        #[cfg(feature = "redis")]
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => {
            Ok(Arc::new(backend_redis::RedisStore::connect(url).await?))
        }
        #[cfg(not(feature = "redis"))]
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => Err(not_compiled(url, "redis")),
        _ => Err(Error::new(
            ErrorKind::Config,
            format!(
                "unknown store URL {:?} (known: sqlite://PATH, redis://HOST:PORT, dynamodb://TABLE, memory://)",
                redact_url(url)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn malformed_and_unknown_urls_are_config_errors() {
        for bad in ["", "memory", "memory://x", "ftp://x", "rediss://localhost:1?insecure=true", "redis://h:1/notadb"] {
            let e = cache_from_url(bad).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{bad}: {e}");
        }
        for bad in ["nope", "ftp://x", "dynamodb://t", "redis+cluster://a:1,b:2"] {
            let e = store_from_url(bad).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{bad}: {e}");
        }
        assert_eq!(cache_from_url("memory://").await.unwrap().capabilities().name, "memory");
    }

    #[test]
    fn default_journals_sit_next_to_sqlite_files_or_are_named_by_the_store() {
        use std::path::PathBuf;
        assert_eq!(default_journal("sqlite://counters.sqlite"), PathBuf::from("counters.sqlite.spill"));
        assert_eq!(default_journal("sqlite:///var/lib/c.db"), PathBuf::from("/var/lib/c.db.spill"));
        let a = default_journal("redis://10.0.0.1:6379");
        let b = default_journal("redis://10.0.0.2:6379");
        assert_ne!(a, b);
        assert_eq!(default_journal("redis://user:secret@10.0.0.1:6379"), a, "credentials do not change it");
        assert!(a.to_string_lossy().starts_with("counters-") && a.to_string_lossy().ends_with(".spill"));
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn sqlite_url_opens_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.sqlite").display());
        let store = store_from_url(&url).await.unwrap();
        assert_eq!(store.capabilities().name, "sqlite");
        assert!(dir.path().join("c.sqlite").exists());
    }
}
