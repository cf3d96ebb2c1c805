//! The write-behind engine: claims pending deltas from the cache, applies
//! them to the store exactly once, retries, recovers claims of dead
//! flushers, and reports lag.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use crate::batch::{ApplyOutcome, Batch, BatchId, now_ms};
use crate::cache::{CacheIncr, CacheLayer};
use crate::cell::{Cell, SliceId};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::key::Key;
use crate::metrics::Metrics;
use crate::store::{CleanReport, DurableStore};
use crate::timeslice::epoch_secs;

/// Most dirty cells looked at in one pass.
const DIRTY_PAGE: usize = 10_000;
/// Passes of an explicit flush over the dirty cells.
const MAX_FLUSH_PASSES: usize = 1_000;

/// What a flush moved to the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlushReport {
    /// Batches the store applied.
    pub batches: u64,
    /// Counter totals written (one per dirty counter per batch).
    pub counters: u64,
    /// Time buckets written.
    pub slices: u64,
    /// Claims of a dead flusher that were applied (or found applied).
    pub recovered: u64,
}

impl FlushReport {
    fn add(&mut self, batch: &Batch) {
        self.batches += 1;
        for entry in &batch.entries {
            match entry.cell {
                Cell::Counter(_) => self.counters += 1,
                Cell::Slice(_) => self.slices += 1,
            }
        }
    }

    /// Merges another report into this one.
    pub fn merge(&mut self, other: FlushReport) {
        self.batches += other.batches;
        self.counters += other.counters;
        self.slices += other.slices;
        self.recovered += other.recovered;
    }
}

pub(crate) struct Engine<C: ?Sized, S: ?Sized> {
    pub(crate) cache: Arc<C>,
    pub(crate) store: Arc<S>,
    pub(crate) config: Config,
    pub(crate) metrics: Metrics,
    /// This engine's batches claimed and not yet acknowledged.
    inflight: Mutex<HashMap<BatchId, Arc<Batch>>>,
    /// Batches whose apply failed, applied again before anything new is
    /// claimed, oldest first.
    held: Mutex<VecDeque<Arc<Batch>>>,
    /// Cells to flush once their due time (ms) has come: threshold reached,
    /// or a per-call interval shorter than the family's.
    urgent: Mutex<HashMap<Cell, u64>>,
    pub(crate) wake: Notify,
    pub(crate) over_bound: AtomicBool,
    pub(crate) relieved: Notify,
    pub(crate) closed: AtomicBool,
    last_orphan_scan_ms: AtomicU64,
    last_clean_ms: AtomicU64,
}

impl<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> Engine<C, S> {
    pub(crate) fn new(cache: Arc<C>, store: Arc<S>, config: Config) -> Self {
        Engine {
            cache,
            store,
            config,
            metrics: Metrics::default(),
            inflight: Mutex::new(HashMap::new()),
            held: Mutex::new(VecDeque::new()),
            urgent: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            over_bound: AtomicBool::new(false),
            relieved: Notify::new(),
            closed: AtomicBool::new(false),
            last_orphan_scan_ms: AtomicU64::new(0),
            last_clean_ms: AtomicU64::new(now_ms()),
        }
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Relaxed) {
            return Err(Error::new(ErrorKind::ShutDown, "the counters handle was shut down"));
        }
        Ok(())
    }

    /// Adds `delta` to a counter's total, loading it on a cache miss.
    /// Returns (new total, pending delta).
    pub(crate) async fn add_total(&self, key: &Key, delta: i64, default: Option<i64>) -> Result<(i64, i128)> {
        for _ in 0..3 {
            let outcome = match self.cache.incr_now(key, delta) {
                Some(outcome) => outcome,
                None => self.cache.incr(key, delta).await,
            };
            match outcome.map_err(|e| e.or_key(key))? {
                CacheIncr::Applied { total, pending } => return Ok((total, pending)),
                CacheIncr::Missing => {
                    let durable = self.resolve(std::slice::from_ref(key)).await?[0];
                    let extra = match durable {
                        Some(_) => 0,
                        None => default.unwrap_or(0),
                    };
                    // Check before loading, so an overflow changes nothing.
                    durable.unwrap_or(0).checked_add(extra).and_then(|v| v.checked_add(delta)).ok_or_else(|| {
                        Error::new(ErrorKind::Overflow, "the total would leave the signed 64-bit range").with_key(key)
                    })?;
                    self.cache.load(key, durable.unwrap_or(0), extra).await.map_err(|e| e.or_key(key))?;
                }
            }
        }
        Err(Error::new(ErrorKind::Unavailable, "the counter kept disappearing from the cache while loading it")
            .with_key(key))
    }

    /// Durable values of `keys` once every claim in flight that touches them
    /// has landed: the base a cache miss reloads from (DESIGN.md: durable
    /// value plus claims in flight that have not landed).
    pub(crate) async fn resolve(&self, keys: &[Key]) -> Result<Vec<Option<i64>>> {
        let touches = |b: &Batch| keys.iter().any(|k| b.touches(k));
        let mut todo: Vec<Arc<Batch>> =
            self.inflight.lock().expect("inflight lock").values().filter(|b| touches(b)).cloned().collect();
        for claim in self.cache.claims_for(keys).await? {
            if !todo.iter().any(|b| b.id == claim.id) {
                todo.push(Arc::new(claim));
            }
        }
        let mut report = FlushReport::default();
        self.land_all(todo.into_iter().map(|b| (b, false)).collect(), &mut report).await?;
        self.store.get_many(keys).await
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

    async fn apply_with_retry(&self, batch: &Batch) -> Result<ApplyOutcome> {
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let outcome = self.store.apply(batch).await;
            self.metrics.store_calls.fetch_add(1, Relaxed);
            self.metrics.store_nanos.fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
            match outcome {
                Ok(outcome) => return Ok(outcome),
                Err(e) if e.is_transient() && attempt + 1 < self.config.retry.attempts => {
                    self.metrics.retries.fetch_add(1, Relaxed);
                    debug!(batch = %batch.id, attempt, error = %e, "store apply failed, retrying");
                    tokio::time::sleep(self.config.retry.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    self.metrics.record_failure(&e);
                    return Err(e);
                }
            }
        }
    }

    /// Applies a batch, acknowledges its claim and forgets it.
    async fn land(&self, batch: Arc<Batch>, report: &mut FlushReport) -> Result<()> {
        if self.apply_with_retry(&batch).await? == ApplyOutcome::Applied {
            self.metrics.batches.fetch_add(1, Relaxed);
            self.metrics.cells_flushed.fetch_add(batch.entries.len() as u64, Relaxed);
            report.add(&batch);
        }
        if let Err(e) = self.cache.ack(batch.id).await {
            // The claim stays recorded; a later pass applies it again, a no-op.
            warn!(batch = %batch.id, error = %e, "could not acknowledge a flushed claim");
        }
        self.inflight.lock().expect("inflight lock").remove(&batch.id);
        self.held.lock().expect("held lock").retain(|b| b.id != batch.id);
        Ok(())
    }

    /// Claims the pending deltas of `cells` and lands them, batch by batch.
    /// A batch that fails is held for the next pass. A batch the store
    /// refuses with an overflow is held too, but the others go on: see
    /// [`defer_overflow`].
    pub(crate) async fn flush_cells(&self, cells: &[Cell], report: &mut FlushReport) -> Result<()> {
        let chunk = self.cache.capabilities().max_claim.min(self.store.capabilities().max_batch).max(1);
        let mut deferred = None;
        for part in cells.chunks(chunk) {
            let batch = Arc::new(self.cache.claim(BatchId::new(), part).await?);
            if batch.is_empty() {
                continue;
            }
            self.inflight.lock().expect("inflight lock").insert(batch.id, batch.clone());
            let landed = self.land(batch.clone(), report).await;
            if landed.is_err() {
                self.held.lock().expect("held lock").push_back(batch);
            }
            defer_overflow(landed, &mut deferred)?;
        }
        deferred.map_or(Ok(()), Err)
    }

    /// Lands `batches` (each flagged whether it is an orphan), in passes: a
    /// batch refused with an overflow waits for the others (see
    /// [`defer_overflow`]) and is tried again while a pass makes progress.
    async fn land_all(&self, mut batches: Vec<(Arc<Batch>, bool)>, report: &mut FlushReport) -> Result<()> {
        loop {
            let before = batches.len();
            let mut refused = Vec::new();
            let mut overflow = None;
            for (batch, orphan) in batches {
                match self.land(batch.clone(), report).await {
                    Ok(()) if orphan => {
                        report.recovered += 1;
                        self.metrics.recovered_claims.fetch_add(1, Relaxed);
                    }
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::Overflow => {
                        overflow.get_or_insert(e);
                        refused.push((batch, orphan));
                    }
                    Err(e) => return Err(e),
                }
            }
            match overflow {
                None => return Ok(()),
                Some(e) if refused.len() == before => return Err(e),
                Some(_) => batches = refused,
            }
        }
    }

    /// Claims that their flusher left unacknowledged for longer than the
    /// lease (it died, or lost its ack), to be applied again under the same
    /// identity: a no-op if they had landed. Scanned every half lease unless
    /// `force`.
    async fn orphans(&self, force: bool) -> Result<Vec<(Arc<Batch>, bool)>> {
        let lease = self.config.claim_lease.as_millis() as u64;
        let now = now_ms();
        if !force && lease > 0 && now.saturating_sub(self.last_orphan_scan_ms.load(Relaxed)) < lease / 2 {
            return Ok(Vec::new());
        }
        self.last_orphan_scan_ms.store(now, Relaxed);
        let claims = self.cache.claims(lease).await?;
        let inflight = self.inflight.lock().expect("inflight lock");
        Ok(claims
            .into_iter()
            .filter(|claim| !inflight.contains_key(&claim.id))
            .inspect(|claim| info!(batch = %claim.id, cells = claim.entries.len(), "recovering an orphaned claim"))
            .map(|claim| (Arc::new(claim), true))
            .collect())
    }

    /// Lands the backlog: batches held after a failure, and orphaned claims
    /// (or, with `everything`, every batch this engine has in flight too).
    async fn land_backlog(&self, report: &mut FlushReport, everything: bool) -> Result<()> {
        let mut batches: Vec<(Arc<Batch>, bool)> = if everything {
            self.inflight.lock().expect("inflight lock").values().map(|b| (b.clone(), false)).collect()
        } else {
            self.held.lock().expect("held lock").iter().map(|b| (b.clone(), false)).collect()
        };
        batches.extend(self.orphans(everything).await?);
        self.land_all(batches, report).await
    }

    /// One pass of the background flusher: the backlog, then every cell
    /// whose policy says it is due.
    pub(crate) async fn flush_due(&self) -> Result<FlushReport> {
        let mut report = FlushReport::default();
        let mut deferred = None;
        defer_overflow(self.land_backlog(&mut report, false).await, &mut deferred)?;
        let now = now_ms();
        let mut due: Vec<Cell> = {
            let mut urgent = self.urgent.lock().expect("urgent lock");
            let ready: Vec<Cell> = urgent.iter().filter(|(_, d)| **d <= now).map(|(c, _)| c.clone()).collect();
            ready.iter().for_each(|c| {
                urgent.remove(c);
            });
            ready
        };
        defer_overflow(self.flush_cells(&due, &mut report).await, &mut deferred)?;
        let shortest = self.config.families.shortest_interval().as_millis() as u64;
        loop {
            let dirty = self.cache.dirty(now.saturating_sub(shortest), DIRTY_PAGE).await?;
            let full = dirty.len() == DIRTY_PAGE;
            due.clear();
            for d in dirty {
                let policy = &self.config.families.of(d.cell.key()).policy;
                let age = now.saturating_sub(d.dirty_since_ms);
                let counter_reached = matches!(d.cell, Cell::Counter(_)) && policy.reached(d.pending);
                if age >= policy.age_bound().as_millis() as u64 || counter_reached {
                    due.push(d.cell);
                }
            }
            if due.is_empty() {
                break;
            }
            defer_overflow(self.flush_cells(&due, &mut report).await, &mut deferred)?;
            if !full {
                break;
            }
        }
        if deferred.is_some() {
            self.land_backlog(&mut report, true).await?;
        }
        Ok(report)
    }

    /// Flushes everything pending, whatever the policy. A barrier: when it
    /// returns Ok, every delta counted before it was called is in the store,
    /// including batches the background flusher was landing meanwhile
    /// (landing one twice is a no-op).
    pub(crate) async fn flush_all(&self) -> Result<FlushReport> {
        let mut report = FlushReport::default();
        let mut deferred = None;
        defer_overflow(self.land_backlog(&mut report, true).await, &mut deferred)?;
        // Passes until nothing is dirty; bounded, so that a flush under
        // constant traffic drains what was pending when it started and ends.
        // (A pending delta beyond the i64 range needs up to three passes.)
        for _ in 0..MAX_FLUSH_PASSES {
            let dirty = self.cache.dirty(u64::MAX, DIRTY_PAGE).await?;
            if dirty.is_empty() {
                break;
            }
            let cells: Vec<Cell> = dirty.into_iter().map(|d| d.cell).collect();
            defer_overflow(self.flush_cells(&cells, &mut report).await, &mut deferred)?;
        }
        self.land_backlog(&mut report, true).await?;
        self.urgent.lock().expect("urgent lock").clear();
        Ok(report)
    }

    /// Reads the cache's gauges into the metrics and sets or clears
    /// backpressure.
    pub(crate) async fn refresh_gauges(&self) -> Result<()> {
        let stats = self.cache.stats().await?;
        let held: u64 = self.held.lock().expect("held lock").iter().map(|b| b.entries.len() as u64).sum();
        self.metrics.pending_cells.store(stats.dirty_cells + held, Relaxed);
        self.metrics.oldest_dirty_ms.store(stats.oldest_dirty_ms.unwrap_or(0), Relaxed);
        let over = stats.dirty_cells + held >= self.config.max_pending_cells;
        let was = self.over_bound.swap(over, Relaxed);
        if over && !was {
            warn!(
                pending = stats.dirty_cells + held,
                bound = self.config.max_pending_cells,
                "pending bound reached: increments get backpressure"
            );
        }
        if !over {
            self.relieved.notify_waiters();
        }
        Ok(())
    }

    pub(crate) fn inflight_batches(&self) -> Vec<Batch> {
        self.inflight.lock().expect("inflight lock").values().map(|b| Batch::clone(b)).collect()
    }

    pub(crate) fn held_batches(&self) -> usize {
        self.held.lock().expect("held lock").len()
    }

    /// Removes time buckets past their retention.
    pub(crate) async fn clean(&self) -> Result<CleanReport> {
        let now = epoch_secs(std::time::SystemTime::now());
        let mut total = CleanReport::default();
        for &precision in self.config.time_slices.precisions() {
            let r = self.store.clean(precision, self.config.time_slices.cutoff(precision, now)).await?;
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
        loop {
            let pause = if failures == 0 { tick } else { self.config.retry.backoff(failures.min(8)).max(tick) };
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(pause) => {}
                _ = self.wake.notified() => {}
            }
            match self.flush_due().await {
                Ok(report) if report.batches > 0 => {
                    failures = 0;
                    debug!(?report, "flushed");
                }
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    warn!(error = %e, "background flush failed; pending deltas are kept and retried");
                }
            }
            if let Err(e) = self.refresh_gauges().await {
                warn!(error = %e, "could not read cache gauges");
            }
            let clean_every = self.config.time_slices.cleaner_interval().as_millis() as u64;
            if now_ms().saturating_sub(self.last_clean_ms.load(Relaxed)) >= clean_every {
                if let Err(e) = self.clean().await {
                    warn!(error = %e, "time-slice cleaner failed");
                }
            }
        }
    }
}

/// Deltas commute, but a store holds i64 values: a batch can overflow when
/// it lands before another batch it depends on (a held `-2^63` before an
/// orphaned `+1`), although every total is in range once all have landed.
/// So an overflow refusal is set aside (the batch stays held or recorded)
/// while the other batches land, and is returned only if it persists.
fn defer_overflow(result: Result<()>, deferred: &mut Option<Error>) -> Result<()> {
    match result {
        Err(e) if e.kind() == ErrorKind::Overflow => {
            deferred.get_or_insert(e);
            Ok(())
        }
        other => other,
    }
}
