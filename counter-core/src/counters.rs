//! The `Counters` handle: the API users call.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

use crate::background::Background;
use crate::batch::now_ms;
use crate::cache::CacheLayer;
use crate::cell::{Cell, SliceId};
use crate::config::{BackpressureMode, Config, RetryPolicy};
use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::idempotency::{MAX_IDEMPOTENCY_RETENTION, Once, check_idempotency_key};
use crate::key::Key;
use crate::metrics::MetricsSnapshot;
use crate::policy::{Family, Policy};
use crate::report::{FlushReport, HeldCell};
use crate::store::{CleanReport, DurableStore, ListOrder, ListQuery};
use crate::timeslice::{TimeSlices, epoch_secs};
use tracing::warn;

/// Options of one increment; every field defaults to the counter family's
/// setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IncrOptions {
    /// If the counter does not exist (in cache or store), it starts at this
    /// value before the delta is added.
    pub default: Option<i64>,
    /// Write-behind policy for this call.
    pub policy: Option<Policy>,
    /// Whether to count into time slices.
    pub time_sliced: Option<bool>,
    /// When the event happened (for time slices); now if unset.
    pub at: Option<SystemTime>,
    /// Whether to count into the key's ancestors as well.
    pub rollup: Option<bool>,
    /// Count this increment once per counter and key (see
    /// [`idempotency_key`](Self::idempotency_key)).
    pub idempotency_key: Option<String>,
}

impl IncrOptions {
    /// Options that follow the family's settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Start a missing counter at `value`.
    pub fn default_value(mut self, value: i64) -> Self {
        self.default = Some(value);
        self
    }

    /// Use `policy` for this call.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Count into time slices (at `at`, or now).
    pub fn time_sliced(mut self, at: Option<SystemTime>) -> Self {
        self.time_sliced = Some(true);
        self.at = at;
        self
    }

    /// Count into the ancestors too (or not).
    pub fn rollup(mut self, rollup: bool) -> Self {
        self.rollup = Some(rollup);
        self
    }

    /// Count this increment at most once per counter and `key` within the
    /// retention window (default 24 h, see
    /// [`CountersBuilder::idempotency_retention`]): a repeat with the same
    /// key and the same request counts nothing and answers the first
    /// call's total, even if the first call's reply was lost, even from
    /// another process sharing the cache, even while the first call is
    /// still in flight (the repeat waits for it). The same key with another
    /// delta or other options is [`Conflict`](ErrorKind::Conflict).
    ///
    /// Keys are per counter: the same key on two counters names two
    /// increments. A key has 1 to 128 bytes of visible ASCII; anything else
    /// is [`InvalidInput`](ErrorKind::InvalidInput), checked before
    /// anything is counted. The window is as durable as the cache: a cache
    /// that loses its data (a restart of an in-process cache, a flushed
    /// Redis) forgets the keys with it.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// Builds a [`Counters`] handle.
pub struct CountersBuilder<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> {
    cache: Arc<C>,
    store: Arc<S>,
    config: Config,
}

impl<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> CountersBuilder<C, S> {
    /// The default family's write-behind policy.
    pub fn policy(mut self, policy: Policy) -> Self {
        let mut family = *self.config.families.default_family();
        family.policy = policy;
        self.config.families.set_default(family);
        self
    }

    /// The default family's settings (policy, time slices, rollup).
    pub fn default_family(mut self, family: Family) -> Self {
        self.config.families.set_default(family);
        self
    }

    /// Settings for the counters of `namespace` whose names start with `prefix`.
    pub fn family(mut self, namespace: &str, prefix: &str, family: Family) -> Self {
        self.config.families.insert(namespace, prefix, family);
        self
    }

    /// Precisions and retention of time-sliced counters.
    pub fn time_slices(mut self, slices: TimeSlices) -> Self {
        self.config.time_slices = slices;
        self
    }

    /// Retry of transient store errors.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.config.retry = retry;
        self
    }

    /// Most cells pending (cache plus held batches) before increments get
    /// backpressure. Default 1,000,000.
    pub fn max_pending(mut self, cells: u64) -> Self {
        self.config.max_pending_cells = cells;
        self
    }

    /// Fail or wait when the pending bound is reached.
    pub fn backpressure(mut self, mode: BackpressureMode) -> Self {
        self.config.backpressure = mode;
        self
    }

    /// How long a claim may stay unacknowledged before another flusher
    /// takes it for orphaned and applies it (a no-op if it had landed).
    /// Default 30 s.
    pub fn claim_lease(mut self, lease: Duration) -> Self {
        self.config.claim_lease = lease;
        self
    }

    /// How often the background flusher looks for due counters.
    pub fn tick(mut self, tick: Duration) -> Self {
        self.config.tick = Some(tick);
        self
    }

    /// How long one store call may take before it counts as failed
    /// (transiently: a batch whose apply timed out is retried under its
    /// identity). Default 10 s.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.config.store_timeout = timeout;
        self
    }

    /// How often a cell the store refused for good (an overflow caused by
    /// another writer, a value it cannot read), or a store that failed for
    /// good as a whole, is tried again. Default 30 s.
    pub fn refused_retry(mut self, every: Duration) -> Self {
        self.config.refused_retry = every;
        self
    }

    /// How long [`Counters::shutdown`] tries to drain before it spills what
    /// is left (or, with a shared cache, leaves it there). Default 30 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// The spill journal: a directory where `shutdown` writes, durably,
    /// what an in-process cache could not deliver to the store (it was
    /// down, hung or refused cells), and whose batches the next handle
    /// built over it lands first, exactly once. Without one, such a
    /// shutdown fails and can be called again. See the crate README.
    pub fn spill_journal(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.config.spill_dir = Some(dir.into());
        self
    }

    /// How often the background flusher reconciles the cached totals of
    /// the counters this handle loaded or flushed with the store (they
    /// drift when someone else writes the store). Default: the shortest
    /// interval of any family (10 s).
    pub fn reconcile_every(mut self, every: Duration) -> Self {
        self.config.reconcile_every = Some(every);
        self
    }

    /// Most counters one reconciliation pass reads (the others wait for the
    /// next passes, round robin). Default 10,000.
    pub fn reconcile_limit(mut self, counters: usize) -> Self {
        self.config.reconcile_limit = counters.max(1);
        self
    }

    /// Most batches one flush has in flight at once (default 2, at least
    /// 1): while the store applies one, the next is claimed and sent, so
    /// that the engine's own work overlaps the store's. Every batch keeps
    /// its identity, so this changes nothing about exactly-once; the cells
    /// of the batches in flight at once are distinct.
    pub fn flush_in_flight(mut self, batches: usize) -> Self {
        self.config.flush_in_flight = batches.max(1);
        self
    }

    /// Whether to run the background flusher (default yes). Without it,
    /// only `flush`, `shutdown` and eager policies write to the store.
    pub fn background(mut self, on: bool) -> Self {
        self.config.background = on;
        self
    }

    /// How long caches remember the idempotency keys of increments
    /// (default 24 h). From a second to 30 days.
    pub fn idempotency_retention(mut self, retention: Duration) -> Self {
        // (At most 30 days: memcached reads a longer TTL as a date.)
        self.config.idempotency_retention = retention;
        self
    }

    /// Builds the handle and starts its background flusher (which needs a
    /// Tokio runtime).
    pub fn build(self) -> Result<Counters<C, S>> {
        if self.config.retry.attempts == 0 {
            return Err(Error::new(ErrorKind::Config, "retry attempts must be at least 1"));
        }
        if self.config.max_pending_cells == 0 {
            return Err(Error::new(ErrorKind::Config, "the pending bound must be at least 1"));
        }
        let retention = self.config.idempotency_retention;
        if retention < Duration::from_secs(1) || retention > MAX_IDEMPOTENCY_RETENTION {
            return Err(Error::new(ErrorKind::Config, "the idempotency retention must be from a second to 30 days"));
        }
        if self.config.store_timeout.is_zero() || self.config.shutdown_timeout.is_zero() {
            return Err(Error::new(ErrorKind::Config, "the store and shutdown timeouts must be above zero"));
        }
        let engine = Arc::new(Engine::new(self.cache, self.store, self.config));
        engine.adopt_journal()?;
        let background = Arc::new(Background::start(engine.clone())?);
        Ok(Counters { engine, background })
    }
}

/// Real-time counters: increments in a fast cache, written behind to a
/// durable store exactly once.
///
/// Generic over the cache and the store so that concrete backends are called
/// without dynamic dispatch; `Counters` alone means
/// `Counters<dyn CacheLayer, dyn DurableStore>`.
///
/// ```
/// # tokio_test_block_on(async {
/// use std::sync::Arc;
/// use counter_core::{Counters, Key, MemoryCache, MemoryStore};
///
/// let counters = Counters::builder(Arc::new(MemoryCache::new()), Arc::new(MemoryStore::new())).build()?;
/// let key = Key::new("clicks", "ad42")?;
/// assert_eq!(counters.incr(&key, 5).await?, 5);
/// assert_eq!(counters.get(&key).await?, 5);
/// let report = counters.shutdown().await?;
/// assert_eq!(report.counters, 1);
/// # Ok::<(), counter_core::Error>(())
/// # }).unwrap();
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
pub struct Counters<C: CacheLayer + ?Sized = dyn CacheLayer, S: DurableStore + ?Sized = dyn DurableStore> {
    pub(crate) engine: Arc<Engine<C, S>>,
    pub(crate) background: Arc<Background<C, S>>,
}

/// A clone is another handle on the same counters: one engine, one
/// background flusher. `shutdown` through any clone shuts them all down;
/// dropping clones without `shutdown` stops the flusher when the last one
/// goes.
impl<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> Clone for Counters<C, S> {
    fn clone(&self) -> Self {
        Counters { engine: self.engine.clone(), background: self.background.clone() }
    }
}

impl<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> Counters<C, S> {
    /// A builder over `cache` and `store`, with the default policy (every
    /// 10 s), default time slices, and the background flusher on.
    pub fn builder(cache: Arc<C>, store: Arc<S>) -> CountersBuilder<C, S> {
        CountersBuilder { cache, store, config: Config::default() }
    }

    /// The cache.
    pub fn cache(&self) -> &Arc<C> {
        &self.engine.cache
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.engine.store
    }

    /// Adds `delta` and returns the counter's new total.
    pub async fn incr(&self, key: &Key, delta: i64) -> Result<i64> {
        self.incr_with(key, delta, &IncrOptions::default()).await
    }

    /// Subtracts `delta` and returns the counter's new total.
    pub async fn decr(&self, key: &Key, delta: i64) -> Result<i64> {
        let negated = delta
            .checked_neg()
            .ok_or_else(|| Error::new(ErrorKind::Overflow, "cannot negate the delta i64::MIN").with_key(key))?;
        self.incr(key, negated).await
    }

    /// Adds `delta` with per-call options (default value, policy, time
    /// slices, event time, rollup) and returns the counter's new total.
    ///
    /// Either the whole increment is counted (counter, ancestors, time
    /// slices) or, on error, none of it.
    ///
    /// With the immediate policy the store is written before this returns.
    /// If that write does not complete, the increment is still counted: the
    /// error is [`Deferred`](ErrorKind::Deferred), carries the new total
    /// ([`Error::value`]), and the delta lands exactly once later. Do not
    /// retry it.
    ///
    /// With a shared cache, an increment whose reply is lost (a connection
    /// failure) is [`Unavailable`](ErrorKind::Unavailable) and may or may
    /// not have counted; give it an
    /// [`idempotency_key`](IncrOptions::idempotency_key) to retry it safely.
    pub async fn incr_with(&self, key: &Key, delta: i64, options: &IncrOptions) -> Result<i64> {
        let engine = &*self.engine;
        if let Some(k) = &options.idempotency_key {
            check_idempotency_key(k).map_err(|e| e.with_key(key))?;
        }
        let _call = engine.gate.enter()?;
        engine.check_store_for_writes().await?;
        self.admit(key).await?;
        let family = engine.config.families.of(key);
        let rollup = options.rollup.unwrap_or(family.rollup);
        let sliced = options.time_sliced.unwrap_or(family.time_sliced);
        let policy = options.policy.unwrap_or(family.policy);
        if let (true, Some(at)) = (sliced, options.at) {
            // Out of years 1-9999, or older than every retention: refused
            // before anything is counted.
            engine.config.time_slices.check_event_time(at, SystemTime::now()).map_err(|e| e.with_key(key))?;
        }

        let ancestors: Vec<Key> = if rollup { key.ancestors().collect() } else { Vec::new() };
        let slices = if sliced {
            let keys: Vec<&Key> = std::iter::once(key).chain(ancestors.iter()).collect();
            engine.slice_ids(&keys, options.at)
        } else {
            Vec::new()
        };
        self.check_room(&ancestors, &slices, delta).await?;

        let once = options.idempotency_key.as_ref().map(|k| Once {
            key: k.clone(),
            fingerprint: request_fingerprint(delta, options, rollup, sliced),
            retention: engine.config.idempotency_retention,
        });
        let (total, pending) = match &once {
            None => engine.add_total(key, delta, options.default).await.map_err(|e| self.maybe_counted(e))?,
            Some(once) => match engine.add_total_once(key, delta, options.default, once).await? {
                Ok(added) => added,
                // A repeat: counted by the first call, nothing more to do.
                Err(first_total) => {
                    if policy.is_immediate() {
                        // The first call may have answered Deferred: the
                        // retry answers only once the store has it (landing
                        // is idempotent: a landed delta is not written again).
                        self.write_through(&[Cell::Counter(key.clone())])
                            .await
                            .map_err(|e| e.with_value(first_total))?;
                    }
                    return Ok(first_total);
                }
            },
        };
        let dirtied = delta != 0 && pending == i128::from(delta);
        let mut counted: Vec<Key> = Vec::new();
        if rollup || sliced {
            let mut result = Ok(());
            if rollup {
                for ancestor in ancestors {
                    match engine.add_total(&ancestor, delta, None).await {
                        Ok(_) => counted.push(ancestor),
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
            }
            if result.is_ok() && sliced {
                result = engine.cache.incr_slices(&slices, delta).await.map_err(|e| e.or_key(key));
            }
            if let Err(e) = result {
                let undone = self.compensate(key, &counted, delta).await;
                if let (Some(once), true) = (&once, undone) {
                    // Undone: a retry with the key must count. (Not undone
                    // in full: the key stays, so a retry cannot count twice.)
                    if let Err(forget) = engine.cache.forget_once(key, &once.key).await {
                        warn!(key = %key, error = %forget, "could not forget the idempotency key of an undone increment");
                    }
                }
                return Err(e);
            }
        }
        engine.metrics.increments.add(1);
        if policy.is_immediate() {
            let mut cells: Vec<Cell> = std::iter::once(key).chain(counted.iter()).cloned().map(Cell::Counter).collect();
            cells.extend(slices.into_iter().map(Cell::Slice));
            self.write_through(&cells).await.map_err(|e| e.with_value(total))?;
            if dirtied {
                // Landed: it no longer counts toward the pending bound.
                engine.note_cleaned(1);
            }
        }

        if !policy.is_immediate() {
            if policy.reached(pending) {
                engine.flush_soon(Cell::Counter(key.clone()), 0);
                for ancestor in counted {
                    engine.flush_soon(Cell::Counter(ancestor), 0);
                }
            } else if let Some(call) = options.policy {
                if call.age_bound() < family.policy.age_bound() {
                    engine.flush_soon(Cell::Counter(key.clone()), now_ms() + call.age_bound().as_millis() as u64);
                }
            }
        }
        Ok(total)
    }

    /// An error of a shared cache's add that may have reached the server
    /// says so (its reply may be what was lost).
    fn maybe_counted(&self, e: Error) -> Error {
        if e.kind() != ErrorKind::Unavailable || !self.engine.cache.capabilities().shared {
            return e;
        }
        let message =
            format!("{}: the increment may or may not have counted; retry with an idempotency key", e.message());
        let key = e.key().map(str::to_string);
        let out = Error::new(ErrorKind::Unavailable, message).with_source(e);
        match key {
            Some(k) => out.with_key(k),
            None => out,
        }
    }

    /// Refuses, before anything is counted, a rollup or time-sliced
    /// increment that would take an ancestor's total or a time slice out of
    /// the i64 range, so that the refused call creates nothing: not even the
    /// counter it names, which is checked (and refused unchanged) by the
    /// increment itself. Reads the cached cells in one call and the store
    /// only for ancestors not cached. A writer racing between this check
    /// and the increment can still make a part overflow; the increment is
    /// then undone by [`compensate`](Self::compensate).
    async fn check_room(&self, ancestors: &[Key], slices: &[SliceId], delta: i64) -> Result<()> {
        if delta == 0 || (ancestors.is_empty() && slices.is_empty()) {
            return Ok(());
        }
        let engine = &*self.engine;
        let overflow = |key: &Key, what: &str| {
            Error::new(ErrorKind::Overflow, format!("the {what} would leave the signed 64-bit range")).with_key(key)
        };
        let cells: Vec<Cell> =
            ancestors.iter().cloned().map(Cell::Counter).chain(slices.iter().cloned().map(Cell::Slice)).collect();
        let cached = engine.cache.get_many(&cells).await?;
        let mut uncached = Vec::new();
        for (cell, value) in cells.iter().zip(&cached) {
            match (cell, value) {
                (Cell::Counter(k), Some(v)) if v.total.checked_add(delta).is_none() => {
                    return Err(overflow(k, "total of this ancestor"));
                }
                (Cell::Slice(s), Some(v)) if v.total.checked_add(delta).is_none() => {
                    return Err(overflow(&s.key, "time slice"));
                }
                (Cell::Counter(k), None) => uncached.push(k.clone()),
                _ => {}
            }
        }
        if !uncached.is_empty() {
            for (k, durable) in uncached.iter().zip(engine.resolve(&uncached).await?) {
                if durable.unwrap_or(0).checked_add(delta).is_none() {
                    return Err(overflow(k, "total of this ancestor"));
                }
            }
        }
        Ok(())
    }

    /// Undoes a partly counted increment (the undo flows to the store as a
    /// delta, like any other).
    /// Returns whether every undo succeeded.
    async fn compensate(&self, key: &Key, ancestors: &[Key], delta: i64) -> bool {
        // -i64::MIN is not an i64: undo it as +i64::MAX then +1, both in range.
        let steps: &[i64] = match delta.checked_neg() {
            Some(undo) => &[undo],
            None => &[i64::MAX, 1],
        };
        let mut undone = true;
        for k in std::iter::once(key).chain(ancestors) {
            for &step in steps {
                if let Err(e) = self.engine.add_total(k, step, None).await {
                    warn!(key = %k, error = %e, "could not undo a partly counted increment");
                    undone = false;
                }
            }
        }
        undone
    }

    /// Writes cells through to the store now: claims them, lands them, and
    /// lands whatever else is in flight with them (a flusher may have
    /// claimed the delta first). On failure the deltas stay held or
    /// pending, never lost, and the error is [`Deferred`](ErrorKind::Deferred).
    async fn write_through(&self, cells: &[Cell]) -> Result<()> {
        let engine = &*self.engine;
        let mut report = FlushReport::default();
        let mut failed = crate::landing::worst(engine.flush_cells(cells, &mut report).await);
        if failed.is_none() {
            let mut keys: Vec<Key> = cells.iter().map(|c| c.key().clone()).collect();
            keys.dedup();
            failed = engine.land_touching(&keys).await.err();
        }
        match failed {
            None => Ok(()),
            Some(e) => {
                warn!(error = %e, "write-through did not complete; the delta is held and lands later, exactly once");
                Err(Error::new(
                    ErrorKind::Deferred,
                    format!(
                        "counted, but the write-through did not complete ({e}); the delta is held under its batch \
                         identity and lands exactly once later: do not retry"
                    ),
                )
                .with_key(cells[0].key())
                .with_source(e))
            }
        }
    }

    /// Fails or waits while too many cells are pending.
    async fn admit(&self, key: &Key) -> Result<()> {
        let engine = &*self.engine;
        if !engine.over_bound.load(Relaxed) {
            return Ok(());
        }
        if let BackpressureMode::Wait(limit) = engine.config.backpressure {
            let deadline = tokio::time::Instant::now() + limit;
            while engine.over_bound.load(Relaxed) && tokio::time::Instant::now() < deadline {
                let relieved = engine.relieved.notified();
                engine.wake.notify_one();
                let slice = (deadline - tokio::time::Instant::now()).min(Duration::from_millis(50));
                let _ = tokio::time::timeout(slice, relieved).await;
            }
            if !engine.over_bound.load(Relaxed) {
                return Ok(());
            }
        }
        engine.metrics.backpressure.fetch_add(1, Relaxed);
        Err(Error::new(
            ErrorKind::Backpressure,
            format!(
                "{} cells are pending, the bound is {}; the store is not keeping up",
                engine.metrics.pending_cells.load(Relaxed),
                engine.config.max_pending_cells
            ),
        )
        .with_key(key))
    }

    /// The counter's total: durable value plus pending delta (0 for a
    /// counter that does not exist).
    pub async fn get(&self, key: &Key) -> Result<i64> {
        Ok(self.get_many(std::slice::from_ref(key)).await?[0])
    }

    /// Totals of many counters, in order, with one cache call and at most
    /// one store call.
    pub async fn get_many(&self, keys: &[Key]) -> Result<Vec<i64>> {
        let engine = &*self.engine;
        let _call = engine.gate.enter()?;
        let cells: Vec<Cell> = keys.iter().cloned().map(Cell::Counter).collect();
        // A cached total this process reads is kept in line with the store.
        engine.ensure_watched(keys).await;
        let cached = engine.cache.get_many(&cells).await?;
        let mut out = vec![0; keys.len()];
        let mut missing = Vec::new();
        for (i, value) in cached.iter().enumerate() {
            match value {
                Some(v) => out[i] = v.total,
                None => missing.push(i),
            }
        }
        if !missing.is_empty() {
            let missing_keys: Vec<Key> = missing.iter().map(|&i| keys[i].clone()).collect();
            let durable = engine.resolve(&missing_keys).await?;
            for (i, value) in missing.into_iter().zip(durable) {
                out[i] = value.unwrap_or(0);
            }
        }
        Ok(out)
    }

    /// Sets a counter's value: when no increment races with it, the durable
    /// value is exactly `value` afterwards, whatever the cache believed
    /// before (it is first reconciled with the store, so a put needs the
    /// store: while it cannot be read, the put fails transiently and
    /// changes nothing). The change reaches
    /// the store as a delta and is written through at once (a write-through
    /// that does not complete is a [`Deferred`](ErrorKind::Deferred) error:
    /// the value is set and lands later). Increments racing with it are not
    /// lost: those counted after the set add to `value`; those counted just
    /// before it may be replaced by it, as if they came first.
    pub async fn put(&self, key: &Key, value: i64) -> Result<()> {
        let engine = &*self.engine;
        let _call = engine.gate.enter()?;
        engine.check_store_for_writes().await?;
        // The change reaches the store as `value - F`: first make `F` the
        // durable value (land what is in flight, correct any drift), so
        // that the store ends at `value` whatever the cache believed.
        engine.land_touching(std::slice::from_ref(key)).await?;
        engine.reconcile(std::slice::from_ref(key)).await?;
        for _ in 0..3 {
            if engine.cache.set(key, value).await.map_err(|e| e.or_key(key))?.is_some() {
                return self.write_through(&[Cell::Counter(key.clone())]).await.map_err(|e| e.with_value(value));
            }
            let durable = engine.resolve(std::slice::from_ref(key)).await?[0];
            engine.cache.load(key, durable.unwrap_or(0), 0).await.map_err(|e| e.or_key(key))?;
        }
        Err(Error::new(ErrorKind::Unavailable, "the counter kept disappearing from the cache").with_key(key))
    }

    /// Deletes a counter, its pending delta and its time series. Returns
    /// whether it existed. Increments racing with a delete may survive it.
    ///
    /// A transient error ([`ErrorKind::Unavailable`]) may come after the
    /// store deleted the counter (a store that answered after the
    /// [`store_timeout`](CountersBuilder::store_timeout)); a delete is
    /// idempotent, so retry it until it answers.
    pub async fn delete(&self, key: &Key) -> Result<bool> {
        let engine = &*self.engine;
        let _call = engine.gate.enter()?;
        engine.check_store_for_writes().await?;
        let cached = engine.cache.get_many(&[Cell::Counter(key.clone())]).await?[0].is_some();
        // Land what is in flight for it first, so it cannot come back; any
        // error up to the store's delete leaves everything as it was.
        engine.resolve(std::slice::from_ref(key)).await?;
        let stored = engine.store_call("a delete", engine.store.delete(key)).await?;
        engine.cache.remove(key).await?;
        Ok(cached || stored)
    }

    /// Counters of a namespace by name prefix, by name or top-N by value,
    /// including counters not flushed yet: every one this process counted
    /// (pending in the cache, or in a batch of this handle on its way to
    /// the store), and other processes' once the cache indexed them (at
    /// once for most caches; with the Redis cache, whose increments are
    /// bare adds, at the other process's next sweep: within half its flush
    /// interval, or half a lease if it runs no flusher). A counter whose
    /// only count is in another process's batch on its way (or in a claim
    /// of a flusher that died, until it is recovered) shows once that lands.
    /// The totals listed are the cache's current ones. A namespace or prefix that breaks
    /// the key rules ([`Key::validate_namespace`], [`Key::validate_prefix`])
    /// is an [`InvalidKey`](ErrorKind::InvalidKey) error, not an empty list.
    pub async fn list(&self, query: &ListQuery) -> Result<Vec<(Key, i64)>> {
        Key::validate_namespace(&query.namespace)?;
        Key::validate_prefix(&query.prefix)?;
        let engine = &*self.engine;
        let _call = engine.gate.enter()?;
        // Read in the order a delta moves: pending in the cache, then on its
        // way to the store, then the store. A delta that moves on between
        // two reads is found by the next one (read the other way round, a
        // batch that lands between the store's read and the in-flight one
        // would be in neither).
        //
        // Pending deltas count in the order (top-N): this process's must all
        // be listed (a cheap sweep of its own; see the docs for others').
        engine.cache.sweep(false).await?;
        // By name, the first `limit` pending ones are all the listing can
        // take from the cache; by value, any of them may be among the top.
        let wanted = match query.order {
            ListOrder::ByName => query.limit,
            ListOrder::ByValueDesc => usize::MAX,
        };
        let mut pending: Vec<Key> = engine
            .cache
            .dirty_counters(&query.namespace, &query.prefix, wanted)
            .await?
            .into_iter()
            .map(|dirty| dirty.cell.key().clone())
            .collect();
        // And so do deltas on their way to the store from this handle (held
        // ones among them). Another process's batches are not looked for:
        // reading every claim would disturb their makers (a shared cache
        // freezes a claim it is asked for); they show once they land.
        let mut landing = HashSet::new();
        for entry in engine.inflight_batches(false).into_iter().flat_map(|batch| batch.entries) {
            if let Cell::Counter(key) = entry.cell {
                if query.matches(&key) {
                    pending.push(key.clone());
                    landing.insert(key);
                }
            }
        }
        let mut values: BTreeMap<Key, i64> =
            engine.store_call("a listing", engine.store.list(query)).await?.into_iter().collect();
        for key in pending {
            values.entry(key).or_insert(0);
        }
        let keys: Vec<Key> = values.keys().cloned().collect();
        engine.ensure_watched(&keys).await;
        let cells: Vec<Cell> = keys.iter().cloned().map(Cell::Counter).collect();
        let mut unresolved = Vec::new();
        for (key, cached) in keys.into_iter().zip(engine.cache.get_many(&cells).await?) {
            match cached {
                Some(c) => {
                    values.insert(key, c.total);
                }
                // Not cached, with a batch on its way: the store's value
                // lacks it. Read it as `get` does (the batch lands first).
                None if landing.contains(&key) => unresolved.push(key),
                None => {}
            }
        }
        if !unresolved.is_empty() {
            let totals = engine.resolve(&unresolved).await?;
            for (key, total) in unresolved.into_iter().zip(totals) {
                values.insert(key, total.unwrap_or(0));
            }
        }
        let mut out: Vec<(Key, i64)> = values.into_iter().collect();
        query.finish(&mut out);
        Ok(out)
    }

    /// `(bucket start, count)` pairs of a time-sliced counter at a
    /// configured precision (seconds), for buckets starting in `from..=to`,
    /// pending deltas included. An unknown precision, a bound outside years
    /// 1 to 9999, `from > to`, or a range of more than
    /// [`MAX_SERIES_BUCKETS`](crate::MAX_SERIES_BUCKETS) buckets is an
    /// [`InvalidInput`](ErrorKind::InvalidInput) error
    /// ([`TimeSlices::series_range`]).
    pub async fn series(
        &self,
        key: &Key,
        precision_secs: u32,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Vec<(i64, i64)>> {
        let engine = &*self.engine;
        let _call = engine.gate.enter()?;
        let (precision, from, to) =
            engine.config.time_slices.series_range(precision_secs, from, to).map_err(|e| e.with_key(key))?;
        let mut buckets: BTreeMap<i64, i64> =
            engine.store_call("a series", engine.store.series(key, precision, from, to)).await?.into_iter().collect();
        // Pending deltas can only sit in buckets within retention.
        let now = epoch_secs(SystemTime::now());
        let step = i64::from(precision.secs());
        let mut start = precision.bucket_start(from.max(engine.config.time_slices.cutoff(precision, now)));
        let mut cells = Vec::new();
        while start <= to && cells.len() <= engine.config.time_slices.samples() as usize + 1 {
            if start >= from {
                cells.push(Cell::Slice(SliceId { key: key.clone(), precision, start }));
            }
            match start.checked_add(step) {
                Some(next) => start = next,
                None => break,
            }
        }
        for (cell, cached) in cells.iter().zip(engine.cache.get_many(&cells).await?) {
            if let (Cell::Slice(s), Some(c)) = (cell, cached) {
                if c.pending != 0 {
                    let bucket = buckets.entry(s.start).or_insert(0);
                    *bucket = i64::try_from(i128::from(*bucket) + c.pending).map_err(|_| {
                        Error::new(ErrorKind::Overflow, format!("bucket {} holds more than an i64", s.start))
                            .with_key(key)
                    })?;
                }
            }
        }
        Ok(buckets.into_iter().collect())
    }

    /// Removes time buckets past their retention now (the background
    /// flusher also does it periodically).
    pub async fn clean_time_slices(&self) -> Result<CleanReport> {
        let _call = self.engine.gate.enter()?;
        self.engine.clean().await
    }

    /// Writes every pending delta to the store now, whatever the policy. A
    /// barrier: when it returns `Ok`, every delta counted before the call is
    /// in the store. When the store refuses some cells for good, the others
    /// land, the refused ones are held ([`held_cells`](Self::held_cells)),
    /// and the error names them.
    pub async fn flush(&self) -> Result<FlushReport> {
        self.flush_with(&FlushOptions::default()).await
    }

    /// [`flush`](Self::flush) with options.
    pub async fn flush_with(&self, options: &FlushOptions) -> Result<FlushReport> {
        let _call = self.engine.gate.enter()?;
        let result = self.engine.flush_all(options.recover_claims, true).await;
        self.engine.refresh_gauges().await?;
        result
    }

    /// Reconciles now every counter this handle watches (those it loaded or
    /// flushed) with the store: where a cached total drifted from durable
    /// value plus pending (another writer of the store, a second cache over
    /// it, a reload that missed a batch in flight), it is corrected, the
    /// pending delta untouched. The background flusher does this every
    /// [`reconcile_every`](CountersBuilder::reconcile_every). Returns how
    /// many counters it corrected.
    pub async fn converge(&self) -> Result<u64> {
        let _call = self.engine.gate.enter()?;
        self.engine.converge(true, false).await
    }

    /// The deltas of each counter taken from the cache that have not landed
    /// in the store yet: with no drift, a counter's total is durable value +
    /// in flight + pending. `None` where another process holds a claim of
    /// the counter (its amount is not read: that would take the claim over).
    /// For diagnostics.
    pub async fn in_flight(&self, keys: &[Key]) -> Result<Vec<Option<i128>>> {
        let engine = &*self.engine;
        let _call = engine.gate.enter()?;
        let mut sums: Vec<Option<i128>> = vec![Some(0); keys.len()];
        let held = engine.inflight_batches(false);
        for entry in held.iter().flat_map(|b| &b.entries) {
            if let Cell::Counter(k) = &entry.cell {
                if let Some(sum) = keys.iter().position(|key| key == k).and_then(|i| sums[i].as_mut()) {
                    *sum += i128::from(entry.delta);
                }
            }
        }
        let roots: std::collections::HashSet<_> = held.iter().map(|b| b.root()).collect();
        for (id, touched) in engine.cache.claimed_keys(keys).await? {
            if !roots.contains(&id) {
                for k in touched {
                    if let Some(i) = keys.iter().position(|key| *key == k) {
                        sums[i] = None;
                    }
                }
            }
        }
        Ok(sums)
    }

    /// Batches this handle claimed (or adopted) and has not seen land yet
    /// (being applied, held for retry after a store failure, or holding
    /// cells the store refused), as the pieces still to land. For
    /// diagnostics and tests.
    pub fn inflight_batches(&self) -> Vec<crate::batch::Batch> {
        self.engine.inflight_batches(false)
    }

    /// Those of [`inflight_batches`](Self::inflight_batches) adopted from the
    /// spill journal: they stay in its files until they land, whatever
    /// becomes of this process. Of the others, a crash loses those whose
    /// claims the cache does not record.
    pub fn journal_batches(&self) -> Vec<crate::batch::Batch> {
        self.engine.inflight_batches(true)
    }

    /// The time slices this handle counts into (precisions and retention),
    /// for a caller that checks an event time before it asks
    /// ([`TimeSlices::check_event_time`]).
    pub fn time_slice_config(&self) -> &TimeSlices {
        &self.engine.config.time_slices
    }

    /// Cells the store refused for good (an overflow another writer caused,
    /// a value it cannot read) and this handle holds: their deltas wait, and
    /// are tried again every [`refused_retry`](CountersBuilder::refused_retry)
    /// and at every flush. Other counters are not held up by them.
    pub fn held_cells(&self) -> Vec<HeldCell> {
        self.engine.held_cells()
    }

    /// The store's permanent failure (bad credentials, a missing table, a
    /// store that cannot keep the protocol) while it stops flushing: new
    /// batches are not claimed, held ones are tried again on a slow
    /// schedule, increments keep counting up to the pending bound.
    pub fn store_failure(&self) -> Option<Error> {
        self.engine.store_failure()
    }

    /// A reading of the engine's metrics (gauges as of the last flusher pass).
    pub fn metrics(&self) -> MetricsSnapshot {
        let mut m = self.engine.metrics.snapshot();
        m.store_failure = self.engine.store_failure().map(|e| e.to_string());
        m
    }
}

/// Options of [`Counters::flush_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlushOptions {
    /// Also land the claims other processes hold in a shared cache, at once
    /// instead of after the claim lease (safe while they are alive: a claim
    /// lands once, whoever lands it). For "flush, then read the store" when
    /// a process was killed mid-flush.
    pub recover_claims: bool,
}

impl FlushOptions {
    /// The default: this process's deltas, and claims past their lease.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`recover_claims`](Self::recover_claims).
    pub fn recover_claims(mut self, on: bool) -> Self {
        self.recover_claims = on;
        self
    }
}

impl<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> std::fmt::Debug for Counters<C, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("cache", &self.engine.cache)
            .field("store", &self.engine.store)
            .finish_non_exhaustive()
    }
}

/// What an idempotent increment asked for, as its record's fingerprint:
/// the delta, the default, rollup, time slices and their event time.
fn request_fingerprint(delta: i64, options: &IncrOptions, rollup: bool, sliced: bool) -> u64 {
    let at = options.at.map(|at| epoch_secs(at).to_string()).unwrap_or_default();
    let default = options.default.map(|d| d.to_string()).unwrap_or_default();
    crate::idempotency::fingerprint(&[
        delta.to_string().as_bytes(),
        default.as_bytes(),
        &[u8::from(rollup), u8::from(sliced)],
        at.as_bytes(),
    ])
}
