//! The backends under test and the services they need.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use counter_core::testing::CacheFaults;
use counter_core::{CacheLayer, Counters, CountersBuilder, DurableStore, Key, Policy, RetryPolicy};
use rand::Rng;

use crate::faults::FaultyStore;

/// One cache x store combination under test.
pub struct Backends<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> {
    /// The cache under test.
    pub cache: Arc<C>,
    /// The store under test, behind a fault injector (well-behaved until told).
    pub store: Arc<FaultyStore<S>>,
    /// Fault injection into the cache (the same object as `cache`).
    pub cache_faults: Arc<dyn CacheFaults>,
    /// A namespace unique to this run, so runs against shared servers never
    /// see each other's counters.
    pub namespace: String,
    /// A spill journal directory unique to this run.
    pub journal: PathBuf,
}

impl<C: CacheLayer, S: DurableStore> Backends<C, S> {
    /// Backends over a cache (which must also implement [`CacheFaults`]) and a
    /// store, with a fresh random namespace.
    pub fn new(cache: Arc<C>, store: Arc<S>) -> Self
    where
        C: CacheFaults,
    {
        let namespace = random_namespace();
        let journal = std::env::temp_dir().join("counters-conformance").join(&namespace);
        Backends { cache_faults: cache.clone(), cache, store: Arc::new(FaultyStore::new(store)), namespace, journal }
    }

    /// The same backends, called through `dyn CacheLayer` and `dyn DurableStore`.
    pub fn into_dyn(self) -> Backends<dyn CacheLayer, dyn DurableStore> {
        let inner: Arc<dyn DurableStore> = self.store.inner().clone();
        Backends {
            cache: self.cache,
            store: Arc::new(FaultyStore::new(inner)),
            cache_faults: self.cache_faults,
            namespace: self.namespace,
            journal: self.journal,
        }
    }
}

impl<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> Backends<C, S> {
    /// A key in this run's namespace.
    pub fn key(&self, name: &str) -> Key {
        Key::new(&self.namespace, name).expect("test keys are valid")
    }

    /// A builder over these backends with test-friendly settings: no
    /// background flusher, fast retries, claims recoverable at once, this
    /// run's spill journal, refused cells retried only when forced.
    pub fn builder(&self) -> CountersBuilder<C, FaultyStore<S>> {
        Counters::builder(self.cache.clone(), self.store.clone())
            .background(false)
            .claim_lease(Duration::ZERO)
            .retry(RetryPolicy { attempts: 3, base: Duration::from_millis(1), max: Duration::from_millis(5) })
            .store_timeout(Duration::from_secs(5))
            .refused_retry(Duration::from_secs(3600))
            .spill_journal(&self.journal)
    }

    /// [`builder`](Self::builder)'s settings with a background flusher that
    /// flushes every counter after `interval_ms` and looks every
    /// `interval_ms / 2` (at least 1 ms).
    pub fn flushing_every(&self, interval_ms: u64) -> CountersBuilder<C, FaultyStore<S>> {
        self.builder()
            .background(true)
            .policy(Policy::interval(Duration::from_millis(interval_ms)).expect("a positive interval"))
            .tick(Duration::from_millis((interval_ms / 2).max(1)))
    }

    /// A handle with [`builder`](Self::builder)'s settings.
    pub fn counters(&self) -> Counters<C, FaultyStore<S>> {
        self.builder().build().expect("test handle builds")
    }

    /// The durable value of `key`, read straight from the store.
    pub async fn durable(&self, key: &Key) -> Option<i64> {
        self.store.inner().get_many(std::slice::from_ref(key)).await.expect("store read")[0]
    }
}

fn random_namespace() -> String {
    let n: u64 = rand::rng().random();
    format!("t{n:016x}")
}

/// Whether a test service at `url_env` is configured. Locally a missing
/// service skips its tests with a loud message; under `CI=true` it fails.
pub fn service_url(url_env: &str) -> Option<String> {
    match std::env::var(url_env) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                !crate::servers::under_ci(),
                "{url_env} is not set and CI=true: a missing service is a failure, not a skip"
            );
            eprintln!(
                "\n*** SKIPPING: {url_env} is not set, so the tests that need it did not run. \
                 Run ./scripts/test to start every service. ***\n"
            );
            None
        }
    }
}
