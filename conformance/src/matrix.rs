//! The backends of the suite, each opened fresh for one test, and
//! [`conformance_matrix!`](crate::conformance_matrix), which stamps the
//! suite for every cache x store pair of them.
//!
//! A backend joins the matrix with a module here (its type, how to open
//! it, how many model sequences it can afford) and one line in
//! `tests/matrix.rs`. Shared servers are named by the `COUNTERS_TEST_*`
//! variables that `scripts/test` exports; each test gets its own key
//! prefix, table or file, so tests running in parallel never meet.

use std::path::Path;

/// Caches, one module each: `Cache` (its type), `MODEL_CASES` (the model
/// sequences a pair with it runs, each way) and `open()`.
pub mod caches {
    /// The in-process cache.
    pub mod memory {
        /// Its type.
        pub type Cache = counter_core::MemoryCache;
        /// Model sequences per pair.
        pub const MODEL_CASES: u32 = 64;

        /// A new, empty cache.
        pub async fn open() -> Option<Cache> {
            Some(Cache::new())
        }
    }

    /// A Redis cache on the standalone server at `COUNTERS_TEST_REDIS_URL`.
    #[cfg(feature = "redis")]
    pub mod redis {
        /// Its type.
        pub type Cache = backend_redis::RedisCache;
        /// Model sequences per pair.
        pub const MODEL_CASES: u32 = 24;

        /// A cache under a prefix of its own (see [`crate::redis::redis_cache`]).
        pub async fn open() -> Option<Cache> {
            crate::redis::redis_cache("COUNTERS_TEST_REDIS_URL").await
        }
    }

    /// A Redis cache on the Cluster at `COUNTERS_TEST_REDIS_CLUSTER_URL`.
    #[cfg(feature = "redis")]
    pub mod redis_cluster {
        /// Its type.
        pub type Cache = backend_redis::RedisCache;
        /// Model sequences per pair.
        pub const MODEL_CASES: u32 = 16;

        /// A cache under a prefix of its own, spread over several hash tags.
        pub async fn open() -> Option<Cache> {
            let cache = crate::redis::redis_cache("COUNTERS_TEST_REDIS_CLUSTER_URL").await?;
            assert!(cache.shards() > 1, "a Cluster cache spreads counters over several hash tags");
            Some(cache)
        }
    }

    /// A memcached cache on the server at `COUNTERS_TEST_MEMCACHE_URL`.
    #[cfg(feature = "memcache")]
    pub mod memcache {
        use backend_memcache::{MemcacheCacheOptions, MemcacheTarget};

        /// Its type.
        pub type Cache = backend_memcache::MemcacheCache;
        /// Model sequences per pair.
        pub const MODEL_CASES: u32 = 24;

        /// A cache under a prefix of its own.
        pub async fn open() -> Option<Cache> {
            let url = crate::service_url("COUNTERS_TEST_MEMCACHE_URL")?;
            let target = MemcacheTarget::parse(&url).expect("test memcached URL parses");
            let options = MemcacheCacheOptions::with_prefix(format!("t{:016x}:", rand::random::<u64>()));
            Some(Cache::connect_with(target, options).await.expect("connect to test memcached"))
        }
    }
}

/// Stores, one module each: `Store`, `MODEL_CASES` and `open(scratch)`
/// (`scratch`: a directory for files, the test crate's
/// `CARGO_TARGET_TMPDIR`).
pub mod stores {
    use super::Path;

    /// The in-memory store (not durable: for tests).
    pub mod memory {
        use super::Path;

        /// Its type.
        pub type Store = counter_core::MemoryStore;
        /// Model sequences per pair.
        pub const MODEL_CASES: u32 = 64;

        /// A new, empty store.
        pub async fn open(_scratch: &Path) -> Option<Store> {
            Some(Store::new())
        }
    }

    /// An SQLite file of its own.
    #[cfg(feature = "sqlite")]
    pub mod sqlite {
        use super::Path;

        /// Its type.
        pub type Store = backend_sqlite::SqliteStore;
        /// Model sequences per pair.
        pub const MODEL_CASES: u32 = 32;

        /// A new file under `scratch/conformance-sqlite`.
        pub async fn open(scratch: &Path) -> Option<Store> {
            let dir = scratch.join("conformance-sqlite");
            std::fs::create_dir_all(&dir).expect("scratch directory");
            let file = dir.join(format!("{:016x}.sqlite", rand::random::<u64>()));
            Some(Store::open(file).await.expect("open SQLite"))
        }
    }

    /// The Redis store on the standalone server at `COUNTERS_TEST_REDIS_URL`.
    #[cfg(feature = "redis")]
    pub mod redis_store {
        use super::Path;
        use backend_redis::{RedisStoreOptions, RedisTarget};

        /// Its type.
        pub type Store = backend_redis::RedisStore;
        /// Model sequences per pair.
        pub const MODEL_CASES: u32 = 32;

        /// A store under a prefix of its own.
        pub async fn open(_scratch: &Path) -> Option<Store> {
            let url = crate::service_url("COUNTERS_TEST_REDIS_URL")?;
            let prefix = format!("conformance:store:{:016x}:", rand::random::<u64>());
            let target = RedisTarget::parse(&url).expect("COUNTERS_TEST_REDIS_URL is a Redis URL");
            Some(Store::connect_with(target, RedisStoreOptions::default().prefix(prefix)).await.expect("connect"))
        }
    }

    /// The DynamoDB store on the local server at `COUNTERS_TEST_DYNAMODB_URL`.
    #[cfg(feature = "dynamo")]
    pub mod dynamo {
        use super::Path;

        /// Its type.
        pub type Store = backend_dynamo::DynamoStore;
        /// Model sequences per pair (the local server answers one request
        /// at a time).
        pub const MODEL_CASES: u32 = 12;

        /// A table of its own.
        pub async fn open(_scratch: &Path) -> Option<Store> {
            let endpoint = crate::service_url("COUNTERS_TEST_DYNAMODB_URL")?;
            let url = format!("dynamodb://t{:016x}?endpoint={endpoint}&region=us-east-1", rand::random::<u64>());
            Some(Store::connect(&url).await.expect("open DynamoDB store"))
        }
    }
}

/// Notes that a test of `pair` was skipped (a service it needs is not
/// configured, which only happens outside CI: see
/// [`service_url`](crate::service_url)): a line in the file
/// `COUNTERS_TEST_SKIP_LOG` names, if set, so that `scripts/test` counts
/// it as a skip, not as a pass.
pub fn skipped(pair: &str) {
    use std::io::Write;
    let Some(path) = std::env::var_os("COUNTERS_TEST_SKIP_LOG") else { return };
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path);
    if let Ok(mut file) = file {
        let _ = writeln!(file, "{pair}");
    }
}

/// The smaller of two model case counts (a pair runs what both afford).
pub const fn model_cases(cache: u32, store: u32) -> u32 {
    if cache < store { cache } else { store }
}

/// Stamps the whole suite for every pair of the caches and stores named,
/// each a module of [`caches`] or [`stores`] (an attribute such as
/// `#[cfg(feature = "redis")]` before a name applies to its pairs). The
/// tests of a pair are `<cache>::<store>::concrete::<case>` and
/// `<cache>::<store>::dyn_dispatch::<case>`. Invoke it in an integration
/// test (file stores go under its `CARGO_TARGET_TMPDIR`).
///
/// ```ignore
/// conformance::conformance_matrix! {
///     caches: [memory, #[cfg(feature = "redis")] redis],
///     stores: [memory, #[cfg(feature = "sqlite")] sqlite],
/// }
/// ```
#[macro_export]
macro_rules! conformance_matrix {
    (
        caches: [$($(#[$cache_meta:meta])* $cache:ident),* $(,)?],
        stores: $stores:tt $(,)?
    ) => {
        $(
            $(#[$cache_meta])*
            mod $cache {
                $crate::__matrix_row!($cache; $stores);
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __matrix_row {
    ($cache:ident; [$($(#[$store_meta:meta])* $store:ident),* $(,)?]) => {
        $(
            $(#[$store_meta])*
            mod $store {
                use $crate::matrix::{caches::$cache as cache, stores::$store as store};

                async fn setup() -> Option<$crate::Backends<cache::Cache, store::Store>> {
                    let scratch = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
                    let backends = match (cache::open().await, store::open(scratch).await) {
                        (Some(cache), Some(store)) => {
                            $crate::Backends::new(std::sync::Arc::new(cache), std::sync::Arc::new(store))
                        }
                        _ => {
                            $crate::matrix::skipped(concat!(stringify!($cache), "_x_", stringify!($store)));
                            return None;
                        }
                    };
                    Some(backends)
                }

                /// Model sequences this pair runs, each way.
                const MODEL_CASES: u32 = $crate::matrix::model_cases(cache::MODEL_CASES, store::MODEL_CASES);

                // The stamped modules sit one level down.
                $crate::conformance_suite!(setup, model_cases = super::MODEL_CASES);
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pair_runs_the_smaller_count() {
        assert_eq!(super::model_cases(64, 12), 12);
        assert_eq!(super::model_cases(16, 32), 16);
    }
}
