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

        /// A new cache: an in-process cache is never shared, whatever the id.
        pub async fn open_shared(_id: &str) -> Option<Cache> {
            open().await
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

        /// The cache of the multi-process run `id` (its prefix).
        pub async fn open_shared(id: &str) -> Option<Cache> {
            crate::redis::redis_cache_at("COUNTERS_TEST_REDIS_URL", &format!("{id}:")).await
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

        /// The cache of the multi-process run `id` (its prefix).
        pub async fn open_shared(id: &str) -> Option<Cache> {
            crate::redis::redis_cache_at("COUNTERS_TEST_REDIS_CLUSTER_URL", &format!("{id}:")).await
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

        /// The cache of the multi-process run `id` (its prefix), with short
        /// dirty windows so that compaction happens within the run.
        pub async fn open_shared(id: &str) -> Option<Cache> {
            let url = crate::service_url("COUNTERS_TEST_MEMCACHE_URL")?;
            let target = MemcacheTarget::parse(&url).expect("test memcached URL parses");
            let mut options = MemcacheCacheOptions::with_prefix(format!("{id}:"));
            options.dirty_window = std::time::Duration::from_millis(200);
            options.clock_margin = std::time::Duration::from_millis(200);
            Some(Cache::connect_with(target, options).await.expect("connect to test memcached"))
        }
    }
}

/// Stores, one module each: `Store`, `MODEL_CASES`, `PROCESS_FLUSH_MS`
/// (the flush interval of the multi-process workers), `open(scratch)`
/// (`scratch`: a directory for files, the test crate's
/// `CARGO_TARGET_TMPDIR`) and `open_shared(scratch, id)` (the store of the
/// multi-process run `id`).
pub mod stores {
    use super::Path;

    /// The in-memory store (not durable: for tests).
    pub mod memory {
        use super::Path;

        /// Its type.
        pub type Store = counter_core::MemoryStore;
        /// Model sequences per pair.
        pub const MODEL_CASES: u32 = 64;

        /// Flush interval of multi-process workers (ms).
        pub const PROCESS_FLUSH_MS: u64 = 20;

        /// A new, empty store.
        pub async fn open(_scratch: &Path) -> Option<Store> {
            Some(Store::new())
        }

        /// A new store: an in-memory store is never shared, whatever the id.
        pub async fn open_shared(scratch: &Path, _id: &str) -> Option<Store> {
            open(scratch).await
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

        /// Flush interval of multi-process workers (ms).
        pub const PROCESS_FLUSH_MS: u64 = 20;

        /// A new file under `scratch/conformance-sqlite`.
        pub async fn open(scratch: &Path) -> Option<Store> {
            open_shared(scratch, &format!("{:016x}", rand::random::<u64>())).await
        }

        /// The file `scratch/conformance-sqlite/<id>.sqlite`.
        pub async fn open_shared(scratch: &Path, id: &str) -> Option<Store> {
            let dir = scratch.join("conformance-sqlite");
            std::fs::create_dir_all(&dir).expect("scratch directory");
            Some(Store::open(dir.join(format!("{id}.sqlite"))).await.expect("open SQLite"))
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

        /// Flush interval of multi-process workers (ms).
        pub const PROCESS_FLUSH_MS: u64 = 20;

        /// A store under a prefix of its own.
        pub async fn open(scratch: &Path) -> Option<Store> {
            open_shared(scratch, &format!("{:016x}", rand::random::<u64>())).await
        }

        /// The store under the prefix `conformance:store:<id>:`.
        pub async fn open_shared(_scratch: &Path, id: &str) -> Option<Store> {
            let url = crate::service_url("COUNTERS_TEST_REDIS_URL")?;
            let prefix = format!("conformance:store:{id}:");
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

        /// Flush interval of multi-process workers (ms): the local server
        /// answers one request at a time.
        pub const PROCESS_FLUSH_MS: u64 = 200;

        /// A table of its own.
        pub async fn open(scratch: &Path) -> Option<Store> {
            open_shared(scratch, &format!("t{:016x}", rand::random::<u64>())).await
        }

        /// The table `<id>`.
        pub async fn open_shared(_scratch: &Path, id: &str) -> Option<Store> {
            let endpoint = crate::service_url("COUNTERS_TEST_DYNAMODB_URL")?;
            let url = format!("dynamodb://{id}?endpoint={endpoint}&region=us-east-1");
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

                const PAIR: &str = concat!(stringify!($cache), "_x_", stringify!($store));

                /// The backends of the multi-process run `id`, as every process opens them.
                fn open_shared(
                    id: String,
                ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<(cache::Cache, store::Store)>> + Send>> {
                    Box::pin(async move {
                        let scratch = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
                        Some((cache::open_shared(&id).await?, store::open_shared(scratch, &id).await?))
                    })
                }

                fn process_pair() -> $crate::processes::ProcessPair<'static> {
                    $crate::processes::ProcessPair {
                        name: PAIR,
                        module: module_path!(),
                        scratch: std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
                        flush: std::time::Duration::from_millis(store::PROCESS_FLUSH_MS),
                    }
                }

                /// Not a case: the worker of the multi-process cases (a no-op unless they spawned it).
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn process_worker() {
                    $crate::processes::worker(open_shared).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn every_total_once_across_processes() {
                    $crate::processes::every_total_once_across_processes(&process_pair(), open_shared).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn a_killed_process_loses_and_doubles_nothing() {
                    $crate::processes::a_killed_process_loses_and_doubles_nothing(&process_pair(), open_shared).await;
                }

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
