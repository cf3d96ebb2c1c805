//! The write-behind engine: claims pending deltas from the cache, lands them
//! in the store exactly once (splitting a batch the store refuses for good
//! so that its other cells land), retries, recovers claims of dead
//! flushers, spills what it cannot deliver at shutdown, and reports lag.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, warn};

use crate::backlog::{Backlog, Origin, Piece, refuses_cell};
use crate::batch::{Batch, now_ms};
use crate::cache::{CacheIncr, CacheLayer};
use crate::cell::{Cell, SliceId};
use crate::cold_reads::{GroupRead, Joined};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::gate::Gate;
use crate::idempotency::{CacheIncrOnce, Once};
use crate::key::Key;
use crate::landing::worst;
use crate::metrics::Metrics;
use crate::report::{FlushReport, HeldCell};
use crate::spill::Journal;
use crate::store::{CleanReport, DurableStore};
use crate::timeslice::epoch_secs;

/// Loads of one counter an increment makes before it gives up (the counter
/// keeps disappearing from the cache).
const MAX_LOADS: u32 = 3;

/// Loads and waits of one add that found its counter missing.
#[derive(Default)]
struct Misses {
    loads: u32,
    waits: u32,
}

/// Waits of one increment for other misses' reads of its counter.
const MAX_MISS_WAITS: u32 = 16;

/// Whether the store proved it can keep the protocol.
#[derive(Debug, Clone)]
enum Probe {
    /// Not asked yet.
    Unknown,
    /// Asked; the store did not answer: asked again before the next apply.
    Deferred,
    /// It can.
    Passed,
    /// It cannot: every write is refused with this.
    Refused(Error),
}

pub(crate) struct Engine<C: ?Sized, S: ?Sized> {
    pub(crate) cache: Arc<C>,
    pub(crate) store: Arc<S>,
    pub(crate) config: Config,
    pub(crate) metrics: Metrics,
    /// Batches claimed or adopted and not landed in full.
    pub(crate) backlog: Mutex<Backlog>,
    /// Cells to flush once their due time (ms) has come: threshold reached,
    /// or a per-call interval shorter than the family's.
    pub(crate) urgent: Mutex<HashMap<Cell, u64>>,
    pub(crate) wake: Notify,
    pub(crate) over_bound: AtomicBool,
    pub(crate) relieved: Notify,
    /// Admission of calls, closed by shutdown.
    pub(crate) gate: Gate,
    /// Shut down for good: drained or spilled.
    pub(crate) closed: AtomicBool,
    /// Cells this process turned from clean to dirty since the last reading
    /// of the cache's gauges, so that the pending bound holds between
    /// readings (a hung store stalls the flusher that takes them).
    pub(crate) dirtied: AtomicU64,
    /// Dirty cells in the cache at the last reading.
    pub(crate) last_dirty: AtomicU64,
    /// When the background flusher last had the cache index what its hot
    /// path does not ([`CacheLayer::sweep`]; ms since the epoch).
    pub(crate) last_cache_sweep_ms: AtomicU64,
    probe: tokio::sync::Mutex<Probe>,
    pub(crate) probe_passed: AtomicBool,
    /// A permanent failure of the store as a whole (no key named), and
    /// since when (ms): no new claims are made while it lasts.
    pub(crate) store_failure: Mutex<Option<(Error, u64)>>,
    pub(crate) journal: Option<Journal>,
    /// Counters watched for drift from the store.
    pub(crate) watched: crate::converge::Watched,
    /// Store reads of cache misses, coalesced.
    cold: crate::cold_reads::ColdReads,
    /// Whether the cache is shared with other processes.
    pub(crate) shared_cache: bool,
    pub(crate) last_sweep_ms: AtomicU64,
    pub(crate) last_orphan_scan_ms: AtomicU64,
    pub(crate) last_clean_ms: AtomicU64,
}

impl<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> Engine<C, S> {
    pub(crate) fn new(cache: Arc<C>, store: Arc<S>, config: Config) -> Self {
        let journal = config.spill_dir.clone().map(Journal::new);
        let shared_cache = cache.capabilities().shared;
        Engine {
            cache,
            store,
            config,
            metrics: Metrics::default(),
            backlog: Mutex::new(Backlog::default()),
            urgent: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            over_bound: AtomicBool::new(false),
            relieved: Notify::new(),
            gate: Gate::default(),
            closed: AtomicBool::new(false),
            dirtied: AtomicU64::new(0),
            last_dirty: AtomicU64::new(0),
            last_cache_sweep_ms: AtomicU64::new(0),
            probe: tokio::sync::Mutex::new(Probe::Unknown),
            probe_passed: AtomicBool::new(false),
            store_failure: Mutex::new(None),
            journal,
            watched: Default::default(),
            cold: Default::default(),
            shared_cache,
            last_sweep_ms: AtomicU64::new(now_ms()),
            last_orphan_scan_ms: AtomicU64::new(0),
            last_clean_ms: AtomicU64::new(now_ms()),
        }
    }

    pub(crate) fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.backlog.lock().expect("backlog lock")
    }

    /// Adopts the batches of the spill journal, to be landed before
    /// anything else. A damaged file is logged and left where it is.
    pub(crate) fn adopt_journal(&self) -> Result<()> {
        let Some(journal) = &self.journal else { return Ok(()) };
        let (files, damaged) = journal.read_all()?;
        for (path, e) in damaged {
            error!(file = %path.display(), error = %e, "a spill journal file cannot be read; it is left in place");
        }
        let mut backlog = self.backlog();
        for file in files {
            info!(file = %file.path.display(), batches = file.batches.len(), "replaying a spill journal file");
            for batch in file.batches {
                backlog.adopt(Arc::new(batch), file.path.clone());
            }
        }
        Ok(())
    }

    /// Runs a store call within the store timeout.
    pub(crate) async fn store_call<T>(&self, what: &str, call: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.config.store_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorKind::Unavailable,
                format!("the store did not answer {what} within {:?}", self.config.store_timeout),
            )),
        }
    }

    /// Before a write is acknowledged: whether the store can keep the
    /// protocol. Asked once; a store that does not answer is asked again
    /// before the next apply, and the write goes ahead meanwhile.
    pub(crate) async fn check_store_for_writes(&self) -> Result<()> {
        if self.probe_passed.load(Relaxed) {
            return Ok(());
        }
        let mut probe = self.probe.lock().await;
        match &*probe {
            Probe::Unknown => {
                self.run_probe(&mut probe).await.or_else(|e| if e.is_transient() { Ok(()) } else { Err(e) })
            }
            Probe::Deferred | Probe::Passed => Ok(()),
            Probe::Refused(e) => Err(e.clone()),
        }
    }

    /// Before an apply: the store must have passed the probe.
    pub(crate) async fn check_store_for_apply(&self) -> Result<()> {
        if self.probe_passed.load(Relaxed) {
            return Ok(());
        }
        let mut probe = self.probe.lock().await;
        match &*probe {
            Probe::Unknown | Probe::Deferred => self.run_probe(&mut probe).await,
            Probe::Passed => Ok(()),
            Probe::Refused(e) => Err(e.clone()),
        }
    }

    async fn run_probe(&self, probe: &mut Probe) -> Result<()> {
        match self.store_call("the protocol probe", self.store.probe()).await {
            Ok(()) => {
                *probe = Probe::Passed;
                self.probe_passed.store(true, Relaxed);
                Ok(())
            }
            Err(e) if e.is_transient() => {
                *probe = Probe::Deferred;
                Err(e)
            }
            Err(e) => {
                error!(error = %e, "the store cannot keep the counters protocol: every write is refused");
                self.metrics.record_failure(&e);
                self.store_failed(&e);
                *probe = Probe::Refused(e.clone());
                Err(e)
            }
        }
    }

    /// Adds `delta` to a counter's total, loading it on a cache miss.
    /// Returns (new total, pending delta).
    pub(crate) async fn add_total(&self, key: &Key, delta: i64, default: Option<i64>) -> Result<(i64, i128)> {
        self.reconcile_first(key).await;
        let mut misses = Misses::default();
        loop {
            let outcome = match self.cache.incr_now(key, delta) {
                Some(outcome) => outcome,
                None => self.cache.incr(key, delta).await,
            };
            match outcome.map_err(|e| e.or_key(key))? {
                CacheIncr::Applied { total, pending } => {
                    self.added(delta, pending);
                    return Ok((total, pending));
                }
                CacheIncr::Missing => self.load_missing(key, delta, default, &mut misses).await?,
            }
        }
    }

    /// [`add_total`](Self::add_total) once per idempotency key: `Ok(None)`
    /// for a repeat of the same request (nothing added; the first call's
    /// total is the second member), [`Conflict`](ErrorKind::Conflict) for
    /// the key reused with another request.
    pub(crate) async fn add_total_once(
        &self,
        key: &Key,
        delta: i64,
        default: Option<i64>,
        once: &Once,
    ) -> Result<Result<(i64, i128), i64>> {
        self.reconcile_first(key).await;
        let mut misses = Misses::default();
        loop {
            match self.cache.incr_once(key, delta, once).await.map_err(|e| e.or_key(key))? {
                CacheIncrOnce::Applied { total, pending } => {
                    self.added(delta, pending);
                    return Ok(Ok((total, pending)));
                }
                CacheIncrOnce::Repeated { total, fingerprint } if fingerprint == once.fingerprint => {
                    return Ok(Err(total));
                }
                CacheIncrOnce::Repeated { .. } => {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!(
                            "the idempotency key {:?} was used for this counter with another request (another \
                             delta or other options); nothing was counted",
                            once.key
                        ),
                    )
                    .with_key(key));
                }
                CacheIncrOnce::Missing => self.load_missing(key, delta, default, &mut misses).await?,
            }
        }
    }

    /// A counter other processes cached may have drifted: the first time
    /// this one counts it, it is reconciled. (An in-process cache holds
    /// only what this engine loaded, which it watches.)
    async fn reconcile_first(&self, key: &Key) {
        if self.shared_cache && !self.watched.contains(key) {
            self.ensure_watched(std::slice::from_ref(key)).await;
        }
    }

    fn added(&self, delta: i64, pending: i128) {
        if delta != 0 && pending == i128::from(delta) {
            self.note_dirtied();
        }
    }

    /// An add found the counter missing: loads it (from the store, or waits
    /// for another miss's read of it), or gives up after a few rounds.
    async fn load_missing(&self, key: &Key, delta: i64, default: Option<i64>, misses: &mut Misses) -> Result<()> {
        if misses.loads == MAX_LOADS || misses.waits == MAX_MISS_WAITS {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "the counter kept disappearing from the cache while loading it",
            )
            .with_key(key));
        }
        // None: another miss's read of it was in flight; its member has
        // loaded it since (or failed to: then this miss reads for itself).
        let Some(durable) = self.resolve_miss(key).await? else {
            misses.waits += 1;
            return Ok(());
        };
        misses.loads += 1;
        let extra = match durable {
            Some(_) => 0,
            None => default.unwrap_or(0),
        };
        // Check before loading, so an overflow changes nothing.
        durable.unwrap_or(0).checked_add(extra).and_then(|v| v.checked_add(delta)).ok_or_else(|| {
            Error::new(ErrorKind::Overflow, "the total would leave the signed 64-bit range").with_key(key)
        })?;
        self.cache.load(key, durable.unwrap_or(0), extra).await.map_err(|e| e.or_key(key))?;
        self.watch(std::slice::from_ref(key));
        Ok(())
    }

    /// A cell went from clean to dirty in this process: it counts toward
    /// the pending bound at once.
    pub(crate) fn note_dirtied(&self) {
        let dirtied = self.dirtied.fetch_add(1, Relaxed) + 1;
        if !self.over_bound.load(Relaxed) && self.pending_estimate(dirtied) >= self.config.max_pending_cells {
            self.set_over_bound(true);
        }
    }

    /// A cell this process dirtied landed before the next reading (a
    /// write-through): it no longer counts toward the pending bound.
    pub(crate) fn note_cleaned(&self, cells: u64) {
        let _ = self.dirtied.fetch_update(Relaxed, Relaxed, |d| Some(d.saturating_sub(cells)));
        if self.over_bound.load(Relaxed)
            && self.pending_estimate(self.dirtied.load(Relaxed)) < self.config.max_pending_cells
        {
            self.set_over_bound(false);
        }
    }

    /// Cells not durable: dirty in the cache at the last reading, turned
    /// dirty since, and taken from the cache and not landed.
    pub(crate) fn pending_estimate(&self, dirtied: u64) -> u64 {
        self.last_dirty.load(Relaxed).saturating_add(dirtied).saturating_add(self.backlog().cells())
    }

    pub(crate) fn set_over_bound(&self, over: bool) {
        let was = self.over_bound.swap(over, Relaxed);
        if over && !was {
            warn!(
                pending = self.pending_estimate(self.dirtied.load(Relaxed)),
                bound = self.config.max_pending_cells,
                "pending bound reached: increments get backpressure"
            );
        }
        if !over {
            self.relieved.notify_waiters();
        }
    }

    /// Durable values of `keys` once every batch in flight that touches
    /// them has landed: the base a cache miss reloads from (the protocol:
    /// durable value plus claims in flight that have not landed).
    pub(crate) async fn resolve(&self, keys: &[Key]) -> Result<Vec<Option<i64>>> {
        self.land_touching(keys).await?;
        self.store_call("a read", self.store.get_many(keys)).await
    }

    /// [`resolve`](Self::resolve) for a counter that missed in the cache,
    /// read together with the other misses of the moment (see
    /// [`cold_reads`](crate::cold_reads)). `None` when a read of the
    /// counter was in flight already: it has been loaded since, so the
    /// caller tries the cache again. If the group's read fails, the counter
    /// is read alone, so another counter's trouble is not its own.
    pub(crate) async fn resolve_miss(&self, key: &Key) -> Result<Option<Option<i64>>> {
        let (group, in_flight) = match self.cold.join(key) {
            Joined::Open(group) => (group, false),
            Joined::InFlight(group) => (group, true),
        };
        let read = group
            .read()
            .get_or_init(|| async {
                let (_turn, keys) = self.cold.close(&group).await;
                let _finish = self.cold.finish_on_drop(&group, &keys);
                let values = self.resolve(&keys).await.map(|values| keys.iter().cloned().zip(values).collect());
                GroupRead { keys: keys.len(), values }
            })
            .await;
        if in_flight {
            return Ok(None);
        }
        match &read.values {
            Ok(values) if values.contains_key(key) => return Ok(Some(values[key])),
            // The store's trouble, not one counter's: every member gets it.
            Err(e) if read.keys == 1 || e.key().is_none() => return Err(e.clone()),
            Err(e) => debug!(error = %e, counters = read.keys, "a coalesced read failed; its counters read one by one"),
            // Not reached: every member joined before its group closed.
            Ok(_) => {}
        }
        Ok(Some(self.resolve(std::slice::from_ref(key)).await?[0]))
    }

    /// Lands every batch this engine holds, and every claim the cache
    /// records, with a cell of one of `keys`. Fails if a part with a cell of
    /// one of them did not land (a part with other cells only may).
    pub(crate) async fn land_touching(&self, keys: &[Key]) -> Result<()> {
        let claims = self.cache.claims_for(keys).await?;
        {
            let mut backlog = self.backlog();
            for claim in claims {
                if !backlog.contains(claim.id) {
                    backlog.add(Arc::new(claim), Origin::Orphan);
                }
            }
        }
        let wanted: std::collections::HashSet<&Key> = keys.iter().collect();
        let touching = |p: &Piece| p.batch.touches_any(&wanted);
        let todo = self.backlog().pieces(touching);
        let mut report = FlushReport::default();
        let errors = self.land_in_passes(todo, &mut report).await;
        if self.backlog().pieces(touching).is_empty() {
            return Ok(());
        }
        let mine = errors.iter().position(|e| e.key().is_none_or(|k| keys.iter().any(|key| key.to_string() == k)));
        Err(match mine {
            Some(i) => errors[i].clone(),
            None => {
                worst(errors).unwrap_or_else(|| Error::new(ErrorKind::Unavailable, "a batch in flight did not land"))
            }
        })
    }

    pub(crate) fn slice_ids(&self, keys: &[&Key], at: Option<std::time::SystemTime>) -> Vec<SliceId> {
        let now = epoch_secs(std::time::SystemTime::now());
        let at = at.map(epoch_secs).unwrap_or(now);
        let mut out = Vec::new();
        for key in keys {
            self.config.time_slices.slices_for(key, at, now, &mut out);
        }
        out
    }

    /// Marks a cell for flushing at `due_ms` (0: now) and wakes the flusher.
    pub(crate) fn flush_soon(&self, cell: Cell, due_ms: u64) {
        let mut urgent = self.urgent.lock().expect("urgent lock");
        let due = urgent.entry(cell).or_insert(due_ms);
        *due = (*due).min(due_ms);
        drop(urgent);
        if due_ms == 0 {
            self.wake.notify_one();
        }
    }

    /// Cells the store refused and this engine holds.
    pub(crate) fn held_cells(&self) -> Vec<HeldCell> {
        let now = now_ms();
        let mut out: Vec<HeldCell> = self
            .backlog()
            .all()
            .into_iter()
            .filter(|p: &Piece| p.error.as_ref().is_some_and(refuses_cell) && p.batch.entries.len() == 1)
            .map(|p| HeldCell {
                cell: p.batch.entries[0].cell.clone(),
                delta: p.batch.entries[0].delta,
                error: p.error.clone().expect("filtered"),
                attempts: p.failures,
                refused_for: Duration::from_millis(now.saturating_sub(p.failing_since_ms)),
                next_attempt_in: Duration::from_millis(p.retry_at_ms.saturating_sub(now)),
            })
            .collect();
        out.sort_by(|a, b| a.cell.cmp(&b.cell));
        out
    }

    /// What this engine holds and has not seen land, as the batches
    /// (pieces) to land; with `journal`, only those adopted from the spill
    /// journal (its files keep them when the process dies).
    pub(crate) fn inflight_batches(&self, journal: bool) -> Vec<Batch> {
        let pieces = if journal { self.backlog().all_from_journal() } else { self.backlog().all() };
        pieces.into_iter().map(|p| Batch::clone(&p.batch)).collect()
    }

    /// (roots, cells) in the backlog.
    pub(crate) fn backlog_size(&self) -> (usize, u64) {
        let backlog = self.backlog();
        (backlog.roots(), backlog.cells())
    }

    pub(crate) fn journal_dir(&self) -> Option<&std::path::Path> {
        self.journal.as_ref().map(Journal::dir)
    }

    /// Reads the cache's gauges into the metrics and sets or clears
    /// backpressure.
    pub(crate) async fn refresh_gauges(&self) -> Result<()> {
        let dirtied_before = self.dirtied.load(Relaxed);
        let stats = self.cache.stats().await?;
        // Cells cleaned meanwhile (write-through) may have lowered it already.
        let _ = self.dirtied.fetch_update(Relaxed, Relaxed, |d| Some(d.saturating_sub(dirtied_before)));
        self.last_dirty.store(stats.dirty_cells, Relaxed);
        let (roots, held) = self.backlog_size();
        self.metrics.pending_cells.store(stats.dirty_cells + held, Relaxed);
        self.metrics.held_batches.store(roots as u64, Relaxed);
        self.metrics.refused_cells.store(self.backlog().refused_cells().len() as u64, Relaxed);
        self.metrics.open_claims.store(stats.open_claims, Relaxed);
        self.metrics.oldest_dirty_ms.store(stats.oldest_dirty_ms.unwrap_or(0), Relaxed);
        let over = self.pending_estimate(self.dirtied.load(Relaxed)) >= self.config.max_pending_cells;
        self.set_over_bound(over);
        Ok(())
    }

    /// Removes time buckets past their retention.
    pub(crate) async fn clean(&self) -> Result<CleanReport> {
        let now = epoch_secs(std::time::SystemTime::now());
        let mut total = CleanReport::default();
        for &precision in self.config.time_slices.precisions() {
            let cutoff = self.config.time_slices.cutoff(precision, now);
            let r = self.store_call("a clean", self.store.clean(precision, cutoff)).await?;
            total.buckets_removed += r.buckets_removed;
            total.series_removed += r.series_removed;
        }
        self.last_clean_ms.store(now_ms(), Relaxed);
        Ok(total)
    }

    /// The background flusher: runs until `stop` changes or its sender is dropped.
    pub(crate) async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let tick = self.config.tick();
        let mut failures: u32 = 0;
        // Passes start a tick apart, counted from the start of the last one
        // (a pass that took longer is followed at once): a counter due just
        // after a pass started waits at most a tick past its bound. After a
        // failure, the backoff counts from the end of the failed pass.
        let mut last_start = tokio::time::Instant::now();
        loop {
            let (from, pause) = if failures == 0 {
                (last_start, tick)
            } else {
                (tokio::time::Instant::now(), self.config.retry.backoff(failures.min(8)).max(tick))
            };
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep_until(from + pause) => {}
                _ = self.wake.notified() => {}
            }
            last_start = tokio::time::Instant::now();
            match self.flush_due().await {
                Ok(report) if report.batches > 0 => {
                    failures = 0;
                    debug!(?report, "flushed");
                }
                Ok(_) => failures = 0,
                Err(e) if refuses_cell(&e) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        warn!(error = %e, failures, "background flush failed; pending deltas are kept and retried");
                    }
                }
            }
            if let Err(e) = self.converge(false, true).await {
                debug!(error = %e, "could not reconcile cached totals with the store");
            }
            if let Err(e) = self.refresh_gauges().await {
                warn!(error = %e, "could not read cache gauges");
            }
            let clean_every = self.config.time_slices.cleaner_interval().as_millis() as u64;
            if now_ms().saturating_sub(self.last_clean_ms.load(Relaxed)) >= clean_every
                && self.store_failure().is_none()
            {
                if let Err(e) = self.clean().await {
                    warn!(error = %e, "time-slice cleaner failed");
                }
            }
        }
    }

    /// Marks the engine closed for good.
    pub(crate) fn close(&self) {
        self.closed.store(true, SeqCst);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(SeqCst)
    }
}
