//! [`CombiningCache`]: in-process combining of increments in front of a
//! shared cache (opt-in).
//!
//! With a plain shared cache every `incr` is one round trip to the server and
//! returns the counter's exact total across all processes. Many services
//! count far more often than they need that exact total: for them this
//! decorator adds increments of a counter up in the process and sends the
//! sum to the shared cache as one increment every push interval (default
//! 100 ms), so Redis sees one call per hot counter per interval instead of
//! one per event.
//!
//! What changes, and what does not:
//!
//! - `incr` returns a **process-local estimate**: the total this process
//!   last saw in the shared cache plus its own increments not sent yet. It
//!   is not the cluster-wide total, so "every N calls, cluster-wide" needs
//!   the plain cache. `get` still sees this process's own increments at once.
//! - Everything still **reaches the store exactly once**: combined deltas
//!   become ordinary increments of the shared cache, flushed by its claims.
//!   Every listing of dirty cells (each flusher pass, `flush`, `shutdown`)
//!   first sends what the process holds, so a drain drains it too.
//! - **Loss is bounded like an in-process cache's**: a crash of the process
//!   loses the increments it had not sent yet (at most one push interval's
//!   worth), where the plain shared cache loses nothing.
//! - A push whose outcome is unknown (the connection dropped after Redis
//!   ran it) is retried, so that push can count twice; the plain cache
//!   reports the same failure to the caller of `incr` instead.
//! - A counter the shared cache lost (eviction, `FLUSHALL`) keeps its unsent
//!   delta in the process until the counter is reloaded (the engine does so
//!   on its next increment), or until a flush claims that delta straight
//!   into a batch of its own.
//! - Counters near the ends of the i64 range (beyond ±2^61) are not combined:
//!   their increments go to the shared cache one by one, with its exact
//!   overflow checks.
//!
//! Time slices are not combined: they go to the shared cache as they come.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::{
    Batch, BatchEntry, BatchId, CacheCapabilities, CacheIncr, CacheLayer, CacheStats, CachedValue, Cell, DirtyCell,
    Key, Result, SliceId, now_ms,
};
use async_trait::async_trait;
use dashmap::DashMap;
use futures_util::future::join_all;

/// Counters pushed concurrently (one call each to the shared cache).
const PUSH_CONCURRENCY: usize = 256;

/// Beyond this magnitude a counter's increments are not combined.
const COMBINE_LIMIT: i64 = 1 << 61;

/// Settings of a [`CombiningCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CombiningOptions {
    /// How often combined increments are sent to the shared cache (also
    /// the most a crash of the process can lose). Default 100 ms.
    pub push_interval: Duration,
}

impl Default for CombiningOptions {
    fn default() -> Self {
        CombiningOptions { push_interval: Duration::from_millis(100) }
    }
}

/// What the process knows of one counter.
#[derive(Debug, Default)]
struct Local {
    /// The total the shared cache last returned.
    base: AtomicI64,
    /// `base` minus the pending delta the shared cache last returned.
    flushed: AtomicI64,
    /// Increments counted here and not sent yet.
    unsent: AtomicI64,
    /// When `unsent` last went from zero to non-zero (ms since the epoch).
    since_ms: AtomicU64,
    /// The shared cache lost the counter: wait for a reload (or a claim).
    lost: AtomicBool,
}

impl Local {
    fn learn(&self, total: i64, pending: i128) {
        self.base.store(total, SeqCst);
        self.flushed.store(i64::try_from(i128::from(total) - pending).unwrap_or(total), SeqCst);
    }

    /// The estimate after adding `unsent`: (total, pending).
    fn estimate(&self, unsent: i64) -> (i64, i128) {
        let base = self.base.load(SeqCst);
        let pending = i128::from(base) - i128::from(self.flushed.load(SeqCst)) + i128::from(unsent);
        (base.saturating_add(unsent), pending)
    }
}

/// A cache layer that combines increments of a counter in the process
/// before they reach the shared cache `C` (see the module documentation for
/// what that trades). Build it with [`CombiningCache::start`] over a shared
/// cache, and hand it to `Counters::builder` in place of that cache.
#[derive(Debug)]
pub struct CombiningCache<C: CacheLayer + ?Sized> {
    inner: Arc<C>,
    local: DashMap<Key, Local>,
    /// The parts of claims taken from counters the shared cache lost.
    claims: Mutex<HashMap<BatchId, Batch>>,
    pushes_running: AtomicUsize,
    options: CombiningOptions,
}

impl<C: CacheLayer + ?Sized> CombiningCache<C> {
    /// Combines increments in front of `inner`, and, inside a Tokio
    /// runtime, starts a task that sends them every
    /// [`push_interval`](CombiningOptions::push_interval) until the cache is
    /// dropped. (Outside a runtime they are sent at each listing of dirty
    /// cells only.)
    pub fn start(inner: Arc<C>, options: CombiningOptions) -> Arc<Self> {
        let cache = Arc::new(CombiningCache {
            inner,
            local: DashMap::new(),
            claims: Mutex::new(HashMap::new()),
            pushes_running: AtomicUsize::new(0),
            options,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(push_periodically(Arc::downgrade(&cache), options.push_interval));
        }
        cache
    }

    /// The shared cache behind this one.
    pub fn inner(&self) -> &Arc<C> {
        &self.inner
    }

    /// The settings.
    pub fn options(&self) -> CombiningOptions {
        self.options
    }

    /// Sends every combined increment to the shared cache now. Returns the
    /// first error (the others are tried anyway; failed ones stay here and
    /// are sent again).
    pub async fn push(&self) -> Result<()> {
        self.pushes_running.fetch_add(1, SeqCst);
        let result = self.push_all().await;
        self.pushes_running.fetch_sub(1, SeqCst);
        result
    }

    async fn push_all(&self) -> Result<()> {
        let keys: Vec<Key> = self
            .local
            .iter()
            .filter(|e| e.unsent.load(SeqCst) != 0 && !e.lost.load(SeqCst))
            .map(|e| e.key().clone())
            .collect();
        let mut first_error = None;
        for chunk in keys.chunks(PUSH_CONCURRENCY) {
            for outcome in join_all(chunk.iter().map(|key| self.push_one(key))).await {
                if let Err(e) = outcome {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn push_one(&self, key: &Key) -> Result<()> {
        // Read the amount without holding the map's lock across the call.
        let amount = match self.local.get(key) {
            Some(e) if !e.lost.load(SeqCst) => e.unsent.load(SeqCst),
            _ => return Ok(()),
        };
        if amount == 0 {
            return Ok(());
        }
        let outcome = self.inner.incr(key, amount).await?;
        let Some(entry) = self.local.get(key) else { return Ok(()) };
        match outcome {
            CacheIncr::Applied { total, pending } => {
                entry.unsent.fetch_sub(amount, SeqCst);
                entry.learn(total, pending);
            }
            CacheIncr::Missing => entry.lost.store(true, SeqCst),
        }
        Ok(())
    }

    /// Waits for pushes other callers started.
    async fn settle(&self) {
        while self.pushes_running.load(SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Counts `delta` here if the counter is known and far from the i64
    /// limits; `None` otherwise.
    fn combine(&self, key: &Key, delta: i64) -> Option<CacheIncr> {
        let entry = self.local.get(key)?;
        if entry.lost.load(SeqCst) || entry.base.load(SeqCst).unsigned_abs() >= COMBINE_LIMIT as u64 {
            return None;
        }
        let mut current = entry.unsent.load(SeqCst);
        loop {
            let new = current.checked_add(delta).filter(|n| n.unsigned_abs() < COMBINE_LIMIT as u64)?;
            match entry.unsent.compare_exchange_weak(current, new, SeqCst, SeqCst) {
                Ok(_) => {
                    if current == 0 {
                        entry.since_ms.store(now_ms(), SeqCst);
                    }
                    let (total, pending) = entry.estimate(new);
                    return Some(CacheIncr::Applied { total, pending });
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Moves the unsent deltas of lost counters among `cells` into a local
    /// claim under `id`.
    fn claim_lost(&self, id: BatchId, cells: &[Cell]) -> Batch {
        let mut batch = Batch::claimed(id, Vec::new());
        for cell in cells {
            let Cell::Counter(key) = cell else { continue };
            let Some(entry) = self.local.get(key) else { continue };
            if !entry.lost.load(SeqCst) || batch.touches(key) {
                continue;
            }
            let delta = entry.unsent.swap(0, SeqCst);
            if delta != 0 {
                batch.entries.push(BatchEntry { cell: cell.clone(), delta });
            }
        }
        if !batch.is_empty() {
            self.claims.lock().expect("claims lock").insert(id, batch.clone());
        }
        batch
    }

    fn local_claims(&self, keep: impl Fn(&Batch) -> bool) -> Vec<Batch> {
        self.claims.lock().expect("claims lock").values().filter(|b| keep(b)).cloned().collect()
    }
}

/// Sends combined increments every `interval` until the cache is dropped.
async fn push_periodically<C: CacheLayer + ?Sized>(cache: Weak<CombiningCache<C>>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(cache) = cache.upgrade() else { return };
        // Failures leave the deltas here; the next push tries again.
        let _ = cache.push().await;
    }
}

#[async_trait]
impl<C: CacheLayer + ?Sized> CacheLayer for CombiningCache<C> {
    fn capabilities(&self) -> CacheCapabilities {
        self.inner.capabilities()
    }

    fn incr_now(&self, key: &Key, delta: i64) -> Option<Result<CacheIncr>> {
        self.combine(key, delta).map(Ok)
    }

    async fn incr(&self, key: &Key, delta: i64) -> Result<CacheIncr> {
        if let Some(done) = self.combine(key, delta) {
            return Ok(done);
        }
        match self.inner.incr(key, delta).await? {
            CacheIncr::Applied { total, pending } => {
                let entry = self.local.entry(key.clone()).or_default();
                entry.learn(total, pending);
                entry.lost.store(false, SeqCst);
                let (total, pending) = entry.estimate(entry.unsent.load(SeqCst));
                Ok(CacheIncr::Applied { total, pending })
            }
            CacheIncr::Missing => {
                if let Some(entry) = self.local.get(key) {
                    entry.lost.store(true, SeqCst);
                }
                Ok(CacheIncr::Missing)
            }
        }
    }

    /// Keyed increments are not combined: each goes to the inner cache at
    /// once, which records its key in the same step as the add.
    async fn incr_once(&self, key: &Key, delta: i64, once: &crate::Once) -> Result<crate::CacheIncrOnce> {
        match self.inner.incr_once(key, delta, once).await? {
            crate::CacheIncrOnce::Applied { total, pending } => {
                let entry = self.local.entry(key.clone()).or_default();
                entry.learn(total, pending);
                entry.lost.store(false, SeqCst);
                // With this process's deltas not sent yet, as `incr` answers.
                let (total, pending) = entry.estimate(entry.unsent.load(SeqCst));
                Ok(crate::CacheIncrOnce::Applied { total, pending })
            }
            crate::CacheIncrOnce::Missing => {
                if let Some(entry) = self.local.get(key) {
                    entry.lost.store(true, SeqCst);
                }
                Ok(crate::CacheIncrOnce::Missing)
            }
            repeated => Ok(repeated),
        }
    }

    async fn forget_once(&self, key: &Key, idempotency_key: &str) -> Result<()> {
        self.inner.forget_once(key, idempotency_key).await
    }

    async fn load(&self, key: &Key, durable: i64, extra: i64) -> Result<i64> {
        let total = self.inner.load(key, durable, extra).await?;
        if let Some(entry) = self.local.get(key) {
            entry.lost.store(false, SeqCst);
        }
        Ok(total)
    }

    async fn incr_slices(&self, slices: &[SliceId], delta: i64) -> Result<()> {
        self.inner.incr_slices(slices, delta).await
    }

    async fn set(&self, key: &Key, total: i64) -> Result<Option<i64>> {
        // Increments counted before the set land before it.
        self.push_one(key).await?;
        self.inner.set(key, total).await
    }

    async fn get_many(&self, cells: &[Cell]) -> Result<Vec<Option<CachedValue>>> {
        let mut values = self.inner.get_many(cells).await?;
        for (cell, value) in cells.iter().zip(values.iter_mut()) {
            let (Cell::Counter(key), Some(v)) = (cell, value.as_mut()) else { continue };
            if let Some(entry) = self.local.get(key) {
                let unsent = entry.unsent.load(SeqCst);
                v.total = v.total.saturating_add(unsent);
                v.pending += i128::from(unsent);
            }
        }
        Ok(values)
    }

    async fn remove(&self, key: &Key) -> Result<()> {
        self.local.remove(key);
        self.inner.remove(key).await
    }

    async fn rebase(&self, key: &Key, flushed: i64, shift: i64) -> Result<bool> {
        // The unsent part is pending here and counted in neither mark.
        if !self.inner.rebase(key, flushed, shift).await? {
            return Ok(false);
        }
        if let Some(entry) = self.local.get(key) {
            entry.base.fetch_add(shift, SeqCst);
            entry.flushed.fetch_add(shift, SeqCst);
        }
        Ok(true)
    }

    async fn dirty(&self, dirty_before_ms: u64, limit: usize) -> Result<Vec<DirtyCell>> {
        self.push().await?;
        self.settle().await;
        let mut out = self.inner.dirty(dirty_before_ms, limit).await?;
        for entry in self.local.iter() {
            let unsent = entry.unsent.load(SeqCst);
            let since = entry.since_ms.load(SeqCst);
            if out.len() >= limit || unsent == 0 || !entry.lost.load(SeqCst) || since > dirty_before_ms {
                continue;
            }
            let cell = Cell::Counter(entry.key().clone());
            if !out.iter().any(|d| d.cell == cell) {
                out.push(DirtyCell { cell, pending: i128::from(unsent), dirty_since_ms: since });
            }
        }
        Ok(out)
    }

    async fn dirty_counters(&self, namespace: &str, prefix: &str, limit: usize) -> Result<Vec<DirtyCell>> {
        self.push().await?;
        self.settle().await;
        let mut out = self.inner.dirty_counters(namespace, prefix, limit).await?;
        for entry in self.local.iter() {
            let (key, unsent) = (entry.key(), entry.unsent.load(SeqCst));
            if unsent == 0
                || !entry.lost.load(SeqCst)
                || key.namespace() != namespace
                || !key.name().starts_with(prefix)
            {
                continue;
            }
            let cell = Cell::Counter(key.clone());
            if !out.iter().any(|d| d.cell == cell) {
                out.push(DirtyCell { cell, pending: i128::from(unsent), dirty_since_ms: entry.since_ms.load(SeqCst) });
            }
        }
        out.sort_by(|a, b| a.cell.key().cmp(b.cell.key()));
        out.truncate(limit);
        Ok(out)
    }

    async fn dirty_since(&self, keys: &[Key]) -> Result<Vec<Option<u64>>> {
        self.push().await?;
        self.settle().await;
        let mut since = self.inner.dirty_since(keys).await?;
        for (key, since) in keys.iter().zip(since.iter_mut()) {
            if since.is_none() {
                *since = self
                    .local
                    .get(key)
                    .filter(|e| e.unsent.load(SeqCst) != 0 && e.lost.load(SeqCst))
                    .map(|e| e.since_ms.load(SeqCst));
            }
        }
        Ok(since)
    }

    async fn claim(&self, id: BatchId, cells: &[Cell]) -> Result<Batch> {
        let batch = self.inner.claim(id, cells).await?;
        // A batch is all shared or all local: another process recovering the
        // shared part of a mixed batch would mark its identity applied, and
        // the local part would never land. Local parts wait for a batch of
        // their own (the next claim).
        if !batch.is_empty() {
            return Ok(batch);
        }
        Ok(self.claim_lost(id, cells))
    }

    async fn ack(&self, id: BatchId) -> Result<()> {
        if self.claims.lock().expect("claims lock").remove(&id).is_some() {
            return Ok(());
        }
        self.inner.ack(id).await
    }

    async fn claims(&self, older_than_ms: u64) -> Result<Vec<Batch>> {
        let now = now_ms();
        let mut out = self.inner.claims(older_than_ms).await?;
        out.extend(self.local_claims(|b| now.saturating_sub(b.id.created_ms()) >= older_than_ms));
        Ok(out)
    }

    async fn claims_for(&self, keys: &[Key]) -> Result<Vec<Batch>> {
        let mut out = self.inner.claims_for(keys).await?;
        let wanted: std::collections::HashSet<&Key> = keys.iter().collect();
        out.extend(self.local_claims(|b| b.touches_any(&wanted)));
        Ok(out)
    }

    async fn claimed_keys(&self, keys: &[Key]) -> Result<Vec<(BatchId, Vec<Key>)>> {
        let mut out = self.inner.claimed_keys(keys).await?;
        let wanted: std::collections::HashSet<&Key> = keys.iter().collect();
        for batch in self.local_claims(|b| b.touches_any(&wanted)) {
            out.push((batch.id, batch.entries.iter().map(|e| e.cell.key().clone()).collect()));
        }
        Ok(out)
    }

    async fn sweep(&self, thorough: bool) -> Result<()> {
        self.push().await?;
        self.settle().await;
        self.inner.sweep(thorough).await
    }

    async fn stats(&self) -> Result<CacheStats> {
        let mut stats = self.inner.stats().await?;
        for entry in self.local.iter().filter(|e| e.unsent.load(SeqCst) != 0) {
            let since = entry.since_ms.load(SeqCst);
            if entry.lost.load(SeqCst) {
                stats.dirty_cells += 1;
            }
            stats.oldest_dirty_ms = Some(stats.oldest_dirty_ms.map_or(since, |o| o.min(since)));
        }
        stats.open_claims += self.claims.lock().expect("claims lock").len() as u64;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::CacheFaults;
    use crate::{Counters, DurableStore, MemoryCache, MemoryStore, Policy};

    fn key(name: &str) -> Key {
        Key::named(name).unwrap()
    }

    /// A cache chosen at run time (`Arc<dyn CacheLayer>`, as the CLI and
    /// the service open them by URL) can be wrapped too.
    #[tokio::test]
    async fn wraps_a_cache_chosen_at_run_time() {
        let inner: Arc<dyn CacheLayer> = Arc::new(MemoryCache::new());
        let cache = CombiningCache::start(inner, CombiningOptions::default());
        let counters = Counters::builder(cache, Arc::new(MemoryStore::new())).build().unwrap();
        counters.incr(&key("dyn"), 3).await.unwrap();
        assert_eq!(counters.incr(&key("dyn"), 4).await.unwrap(), 7);
        counters.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn combined_increments_reach_the_store_once() {
        let inner = Arc::new(MemoryCache::new());
        let cache = CombiningCache::start(inner.clone(), CombiningOptions::default());
        let store = Arc::new(MemoryStore::new());
        let policy = Policy::interval(Duration::from_millis(50)).unwrap();
        let counters = Arc::new(Counters::builder(cache.clone(), store.clone()).policy(policy).build().unwrap());
        let mut tasks = Vec::new();
        for t in 0..4 {
            let counters = counters.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..5_000 {
                    counters.incr(&key(&format!("k{}", (i + t) % 7)), 1).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(counters.get(&key("k0")).await.unwrap() > 0, "reads see own increments");
        counters.shutdown().await.unwrap();
        let keys: Vec<Key> = (0..7).map(|i| key(&format!("k{i}"))).collect();
        let total: i64 = store.get_many(&keys).await.unwrap().into_iter().map(|v| v.unwrap_or(0)).sum();
        assert_eq!(total, 20_000);
    }

    #[tokio::test]
    async fn a_lost_counter_flushes_its_unsent_delta_in_a_batch_of_its_own() {
        let inner = Arc::new(MemoryCache::new());
        let cache = CombiningCache::start(inner.clone(), CombiningOptions { push_interval: Duration::from_secs(3600) });
        let store = Arc::new(MemoryStore::new());
        let counters = Counters::builder(cache.clone(), store.clone()).background(false).build().unwrap();
        let (a, b) = (key("a"), key("b"));
        counters.incr(&a, 1).await.unwrap();
        counters.incr(&b, 1).await.unwrap();
        assert!(matches!(cache.incr_now(&a, 2), Some(Ok(CacheIncr::Applied { total: 3, .. }))));
        cache.incr_now(&b, 5).unwrap().unwrap();
        inner.lose_part(&a, crate::testing::CachePart::Total).await.unwrap();
        counters.shutdown().await.unwrap();
        // a's first increment was pending in the entry the cache lost (as
        // with any cache loss); the 2 combined since then land on their own.
        assert_eq!(store.get_many(&[a, b]).await.unwrap(), vec![Some(2), Some(6)]);
    }
}
