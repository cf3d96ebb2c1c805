//! The cache layer: fast, possibly lossy, holds per counter the best-known
//! total and the pending delta not yet in the store.

use async_trait::async_trait;

use crate::batch::{Batch, BatchId};
use crate::cell::{Cell, SliceId};
use crate::error::{Error, ErrorKind, Result};
use crate::idempotency::{CacheIncrOnce, Once};
use crate::key::Key;

/// What a cache backend can do; the engine and the conformance suite adapt
/// to it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheCapabilities {
    /// Short name for logs and test names (`memory`, `redis`, ...).
    pub name: &'static str,
    /// Several processes can share this cache (and see each other's totals).
    /// The engine keeps what shutdown could not flush in the cache then,
    /// instead of a spill journal.
    pub shared: bool,
    /// Claims are atomic (two flushers never take the same delta). The
    /// conformance suite races two flushers over caches that claim it.
    pub atomic_claim: bool,
    /// Claims survive the death of the process that made them, so another
    /// process can recover them. With `shared`, the conformance suite runs
    /// its multi-process and SIGKILL cases over caches that claim it.
    pub durable_claims: bool,
    /// Most cells worth claiming in one call.
    pub max_claim: usize,
}

impl CacheCapabilities {
    /// Capabilities of a backend named `name`, with conservative defaults
    /// (not shared, no cross-process claims, 1,000 cells per claim).
    pub fn new(name: &'static str) -> Self {
        CacheCapabilities { name, shared: false, atomic_claim: false, durable_claims: false, max_claim: 1_000 }
    }
}

/// Outcome of adding to a cached counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheIncr {
    /// Added; the new total and the pending delta (total minus the part
    /// handed to the store).
    Applied {
        /// The counter's new total.
        total: i64,
        /// Its pending delta after the increment (the difference of two i64
        /// values, so it can exceed the i64 range).
        pending: i128,
    },
    /// The counter is not cached; nothing changed. The engine loads it with
    /// [`CacheLayer::load`] and tries again.
    Missing,
}

/// A cached cell's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CachedValue {
    /// Best-known total (for a time slice: the pending delta, as the cache
    /// holds no base for slices).
    pub total: i64,
    /// Part of the total not yet handed to the store (`T - F`: the
    /// difference of two i64 values, so it can exceed the i64 range).
    pub pending: i128,
}

/// A cell with a pending delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyCell {
    /// The cell.
    pub cell: Cell,
    /// Its pending delta when listed.
    pub pending: i128,
    /// When it went from clean to dirty, milliseconds since the epoch.
    pub dirty_since_ms: u64,
}

/// Gauges a cache reports about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Cells with a pending delta.
    pub dirty_cells: u64,
    /// When the oldest dirty cell became dirty (ms since the epoch), if any.
    pub oldest_dirty_ms: Option<u64>,
    /// Claims recorded and not acknowledged.
    pub open_claims: u64,
}

/// A cache backend.
///
/// The protocol: per counter the
/// cache keeps a total `T` and a flushed mark `F`; the pending delta is
/// `T - F`. An increment adds to `T` atomically and returns it. A claim sets
/// `F := T` atomically per cell and records the claimed deltas under a batch
/// identity until they are acknowledged; a claim whose owner died is found
/// with [`claims`](Self::claims) and applied again under the same identity.
///
/// All methods must leave the cache unchanged when they return an error,
/// and must never turn a missing counter into a wrong total: a counter whose
/// total is lost reports [`CacheIncr::Missing`] until it is loaded.
#[async_trait]
pub trait CacheLayer: Send + Sync + std::fmt::Debug + 'static {
    /// What this cache can do.
    fn capabilities(&self) -> CacheCapabilities;

    /// A synchronous increment for in-process caches, so the hot path needs
    /// no future and no allocation. `None` means "no fast path: use
    /// [`incr`](Self::incr)".
    fn incr_now(&self, key: &Key, delta: i64) -> Option<Result<CacheIncr>> {
        let _ = (key, delta);
        None
    }

    /// Adds `delta` to a cached counter's total. Fails with
    /// [`Overflow`](crate::ErrorKind::Overflow), changing nothing, if the
    /// total would leave the i64 range.
    async fn incr(&self, key: &Key, delta: i64) -> Result<CacheIncr>;

    /// Adds `delta` once per `once.key`: in the same atomic step as the add,
    /// records the key and the new total for `once.retention`, or, if the
    /// key is recorded for this counter already, adds nothing and answers
    /// [`CacheIncrOnce::Repeated`] with what it recorded. A call that finds
    /// the counter missing records nothing. Caches that cannot do this
    /// keep the default, which refuses with [`Config`](crate::ErrorKind::Config).
    async fn incr_once(&self, key: &Key, delta: i64, once: &Once) -> Result<CacheIncrOnce> {
        let _ = (delta, once);
        Err(Error::new(
            ErrorKind::Config,
            format!("the {} cache does not remember idempotency keys", self.capabilities().name),
        )
        .with_key(key))
    }

    /// Forgets the record of `idempotency_key` for `key` (an increment
    /// whose other parts failed was undone: a retry must count).
    async fn forget_once(&self, key: &Key, idempotency_key: &str) -> Result<()> {
        let _ = (key, idempotency_key);
        Ok(())
    }

    /// Installs a counter that is not cached, with flushed mark `durable`
    /// and total `durable + extra` (`extra` is pending from the start: a
    /// default value). If the counter is cached already, changes nothing.
    /// Returns the cached total afterwards.
    async fn load(&self, key: &Key, durable: i64, extra: i64) -> Result<i64>;

    /// Adds `delta` to the pending delta of each time-slice cell, creating
    /// missing ones at zero.
    async fn incr_slices(&self, slices: &[SliceId], delta: i64) -> Result<()>;

    /// Sets a cached counter's total, keeping its flushed mark, so the
    /// change reaches the store as a delta. Returns the previous total, or
    /// `None` (changing nothing) if the counter is not cached.
    async fn set(&self, key: &Key, total: i64) -> Result<Option<i64>>;

    /// The cached state of each cell, `None` where it is not cached.
    async fn get_many(&self, cells: &[Cell]) -> Result<Vec<Option<CachedValue>>>;

    /// Forgets a counter and its time slices, pending deltas included.
    async fn remove(&self, key: &Key) -> Result<()>;

    /// Adds `shift` to a cached counter's total and flushed mark at once
    /// (its pending delta `T - F` unchanged), if its flushed mark is still
    /// `flushed`; returns whether it did. A counter not cached, or whose
    /// mark moved (a claim since it was read), is left alone (`false`). A
    /// shift that would take either out of the i64 range fails with
    /// [`Overflow`](crate::ErrorKind::Overflow), changing nothing.
    ///
    /// The engine calls it to make the cache converge to the store when
    /// they drifted apart (another writer of the store, a reload that
    /// missed a batch in flight): with no claim of the counter in flight,
    /// `F` must equal the durable value, so it shifts both by the
    /// difference. It must be atomic with respect to increments and
    /// claims of the counter.
    async fn rebase(&self, key: &Key, flushed: i64, shift: i64) -> Result<bool>;

    /// Up to `limit` cells with a pending delta that became dirty at or
    /// before `dirty_before_ms`, oldest first where the backend can.
    ///
    /// A cache whose hot path does not index every write (see
    /// [`sweep`](Self::sweep)) lists what its last sweep found.
    async fn dirty(&self, dirty_before_ms: u64, limit: usize) -> Result<Vec<DirtyCell>>;

    /// Up to `limit` counters (not time slices) with a pending delta in
    /// `namespace` whose names start with `prefix`, in name order: what a
    /// listing of that namespace adds to the store's counters.
    ///
    /// A listing must not cost in proportion to every dirty cell of the
    /// cache (the admin page lists once a second per open page), so a
    /// cache should answer from an index by name. The default filters
    /// [`dirty`](Self::dirty) of every cell. Like `dirty`, it lists what
    /// the last [`sweep`](Self::sweep) indexed.
    async fn dirty_counters(&self, namespace: &str, prefix: &str, limit: usize) -> Result<Vec<DirtyCell>> {
        let mut found: Vec<DirtyCell> = self
            .dirty(u64::MAX, usize::MAX)
            .await?
            .into_iter()
            .filter(|d| match &d.cell {
                Cell::Counter(key) => key.namespace() == namespace && key.name().starts_with(prefix),
                Cell::Slice(_) => false,
            })
            .collect();
        found.sort_by(|a, b| a.cell.key().cmp(b.cell.key()));
        found.truncate(limit);
        Ok(found)
    }

    /// For each of `keys`, when its counter became dirty (ms since the
    /// epoch), or `None` if it has no pending delta indexed: the age of a
    /// pending delta, for a report of a few counters. A cache should answer
    /// by key; the default filters [`dirty`](Self::dirty) of every cell.
    async fn dirty_since(&self, keys: &[Key]) -> Result<Vec<Option<u64>>> {
        let wanted: std::collections::HashSet<&Key> = keys.iter().collect();
        let mut since = std::collections::HashMap::new();
        for d in self.dirty(u64::MAX, usize::MAX).await? {
            if let Cell::Counter(key) = d.cell {
                if wanted.contains(&key) {
                    since.insert(key, d.dirty_since_ms);
                }
            }
        }
        Ok(keys.iter().map(|k| since.get(k).copied()).collect())
    }

    /// Makes deltas counted before the call visible to
    /// [`dirty`](Self::dirty) and [`stats`](Self::stats): every delta this
    /// process counted, and with `thorough` every process's (a cache may
    /// also do the thorough part when it is due, on its own schedule).
    ///
    /// Most caches index a cell as dirty in the same step as the increment,
    /// and need nothing here (the default). A cache whose hot path is a bare
    /// add (the Redis cache: counters registered for a lease take one
    /// command per increment) indexes the cells it added to since the last
    /// sweep, and when thorough, the cells any process added to. The engine
    /// sweeps thoroughly at the start of every flush barrier, and in the
    /// background at least twice per shortest flush interval; a listing
    /// sweeps too.
    async fn sweep(&self, thorough: bool) -> Result<()> {
        let _ = thorough;
        Ok(())
    }

    /// Atomically moves the pending deltas of `cells` into a claim recorded
    /// under `id` and returns it as a batch (cells with nothing pending are
    /// left out; an empty batch records nothing). A pending delta beyond the
    /// i64 range moves in i64-sized parts: the claim takes the part that
    /// fits and the cell stays dirty with the rest.
    async fn claim(&self, id: BatchId, cells: &[Cell]) -> Result<Batch>;

    /// Forgets a claim whose batch the store applied. Acknowledging an
    /// unknown claim is not an error.
    async fn ack(&self, id: BatchId) -> Result<()>;

    /// Recorded claims not acknowledged, made at least `older_than_ms`
    /// milliseconds ago (0: all of them).
    async fn claims(&self, older_than_ms: u64) -> Result<Vec<Batch>>;

    /// Recorded claims, not acknowledged, with a cell of one of `keys`: the
    /// claims a reload of those counters must see landed first. A shared
    /// cache should answer from an index by key; the default filters
    /// [`claims(0)`](Self::claims).
    async fn claims_for(&self, keys: &[Key]) -> Result<Vec<Batch>> {
        let claims = self.claims(0).await?;
        let wanted: std::collections::HashSet<&Key> = keys.iter().collect();
        Ok(claims.into_iter().filter(|batch| batch.touches_any(&wanted)).collect())
    }

    /// The claims recorded and not acknowledged with a cell of one of
    /// `keys`, as their identities and the counters they touch: what
    /// [`claims_for`](Self::claims_for) finds, but only looked at (a cache
    /// whose `claims_for` takes claims over from their makers, as
    /// memcached's does, should answer without disturbing them). A claim
    /// must be visible here from before it moves any flushed mark until it
    /// is acknowledged. The engine asks before it rebases a counter.
    async fn claimed_keys(&self, keys: &[Key]) -> Result<Vec<(BatchId, Vec<Key>)>> {
        Ok(self
            .claims_for(keys)
            .await?
            .into_iter()
            .map(|batch| {
                let mut touched: Vec<Key> = batch.entries.iter().map(|e| e.cell.key().clone()).collect();
                touched.dedup();
                (batch.id, touched)
            })
            .collect())
    }

    /// Gauges for metrics and backpressure.
    async fn stats(&self) -> Result<CacheStats>;
}
