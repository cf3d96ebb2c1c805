//! The write-behind engine: claims pending deltas from the cache, lands them
//! in the store exactly once (splitting a batch the store refuses for good
//! so that its other cells land), retries, recovers claims of dead
//! flushers, spills what it cannot deliver at shutdown, and reports lag.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, warn};

use crate::backlog::{Backlog, Done, Origin, Piece, refuses_cell};
use crate::batch::{ApplyOutcome, Batch, BatchId, now_ms};
use crate::cache::{CacheIncr, CacheLayer};
use crate::cell::{Cell, SliceId};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::gate::Gate;
use crate::key::Key;
use crate::metrics::Metrics;
use crate::spill::Journal;
use crate::store::{CleanReport, DurableStore};
use crate::timeslice::epoch_secs;

/// Most dirty cells looked at in one pass.
const DIRTY_PAGE: usize = 10_000;
/// Passes of an explicit flush over the dirty cells.
const MAX_FLUSH_PASSES: usize = 1_000;

/// What a flush moved to the store, and what it left behind.
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
    /// Claims other processes hold in the cache and have not seen land
    /// (they are landing them, or died: then any flusher recovers them once
    /// they are older than the claim lease, or at once with
    /// [`FlushOptions::recover_claims`](crate::FlushOptions::recover_claims)).
    pub outstanding_claims: u64,
    /// Age of the oldest of those claims.
    pub oldest_claim_age: Option<Duration>,
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

    /// Merges another report into this one (the outstanding claims are the
    /// other's: the later reading).
    pub fn merge(&mut self, other: FlushReport) {
        self.batches += other.batches;
        self.counters += other.counters;
        self.slices += other.slices;
        self.recovered += other.recovered;
        self.outstanding_claims = other.outstanding_claims;
        self.oldest_claim_age = other.oldest_claim_age;
    }
}

/// A cell the store refused for good, held until it takes it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HeldCell {
    /// The cell.
    pub cell: Cell,
    /// The delta waiting for the store.
    pub delta: i64,
    /// Why the store refused it, last time.
    pub error: Error,
    /// Attempts so far.
    pub attempts: u32,
    /// How long it has been refused.
    pub refused_for: Duration,
    /// When it is tried next (unless a flush forces it sooner).
    pub next_attempt_in: Duration,
}

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
    backlog: Mutex<Backlog>,
    /// Cells to flush once their due time (ms) has come: threshold reached,
    /// or a per-call interval shorter than the family's.
    urgent: Mutex<HashMap<Cell, u64>>,
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
    dirtied: AtomicU64,
    /// Dirty cells in the cache at the last reading.
    last_dirty: AtomicU64,
    probe: tokio::sync::Mutex<Probe>,
    probe_passed: AtomicBool,
    /// A permanent failure of the store as a whole (no key named), and
    /// since when (ms): no new claims are made while it lasts.
    store_failure: Mutex<Option<(Error, u64)>>,
    journal: Option<Journal>,
    last_orphan_scan_ms: AtomicU64,
    last_clean_ms: AtomicU64,
}

impl<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> Engine<C, S> {
    pub(crate) fn new(cache: Arc<C>, store: Arc<S>, config: Config) -> Self {
        let journal = config.spill_dir.clone().map(Journal::new);
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
            probe: tokio::sync::Mutex::new(Probe::Unknown),
            probe_passed: AtomicBool::new(false),
            store_failure: Mutex::new(None),
            journal,
            last_orphan_scan_ms: AtomicU64::new(0),
            last_clean_ms: AtomicU64::new(now_ms()),
        }
    }

    fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
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
    async fn check_store_for_apply(&self) -> Result<()> {
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
                *probe = Probe::Refused(e.clone());
                Err(e)
            }
        }
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
                CacheIncr::Applied { total, pending } => {
                    if delta != 0 && pending == i128::from(delta) {
                        self.note_dirtied();
                    }
                    return Ok((total, pending));
                }
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

    /// A cell went from clean to dirty in this process: it counts toward
    /// the pending bound at once.
    pub(crate) fn note_dirtied(&self) {
        let dirtied = self.dirtied.fetch_add(1, Relaxed) + 1;
        if !self.over_bound.load(Relaxed) && self.pending_estimate(dirtied) >= self.config.max_pending_cells {
            self.set_over_bound(true);
        }
    }

    /// Cells not durable: dirty in the cache at the last reading, turned
    /// dirty since, and taken from the cache and not landed.
    fn pending_estimate(&self, dirtied: u64) -> u64 {
        self.last_dirty.load(Relaxed) + dirtied + self.backlog().cells()
    }

    fn set_over_bound(&self, over: bool) {
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
    /// them has landed: the base a cache miss reloads from (DESIGN.md:
    /// durable value plus claims in flight that have not landed).
    pub(crate) async fn resolve(&self, keys: &[Key]) -> Result<Vec<Option<i64>>> {
        self.land_touching(keys).await?;
        self.store_call("a read", self.store.get_many(keys)).await
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
        let touching = |p: &Piece| keys.iter().any(|k| p.batch.touches(k));
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

    /// One batch to the store: transient failures are retried with backoff
    /// (each attempt within the store timeout), other errors returned.
    async fn apply_with_retry(&self, batch: &Batch) -> Result<ApplyOutcome> {
        let mut attempt = 0;
        loop {
            self.check_store_for_apply().await?;
            let started = Instant::now();
            let outcome = self.store_call("a batch", self.store.apply(batch)).await;
            self.metrics.store_calls.fetch_add(1, Relaxed);
            self.metrics.store_nanos.fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
            match outcome {
                Ok(outcome) => {
                    self.store_recovered();
                    return Ok(outcome);
                }
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

    fn store_recovered(&self) {
        let mut failure = self.store_failure.lock().expect("store failure lock");
        if let Some((e, since)) = failure.take() {
            info!(after_ms = now_ms().saturating_sub(since), error = %e, "the store takes batches again");
        }
    }

    /// The permanent failure of the store as a whole that stops new claims,
    /// if there is one.
    pub(crate) fn store_failure(&self) -> Option<Error> {
        self.store_failure.lock().expect("store failure lock").as_ref().map(|(e, _)| e.clone())
    }

    fn store_failed(&self, e: &Error) {
        let mut failure = self.store_failure.lock().expect("store failure lock");
        if failure.is_none() {
            error!(
                error = %e,
                retry_every = ?self.config.refused_retry,
                "the store refuses batches for good: flushing stops, and is tried again on a slow schedule"
            );
            *failure = Some((e.clone(), now_ms()));
        }
    }

    /// When a piece that failed with `e` for the `failures`-th time is
    /// tried again.
    fn retry_at(&self, e: &Error, failures: u32, now: u64) -> u64 {
        let wait =
            if e.is_transient() { self.config.retry.backoff(failures.min(8)) } else { self.config.refused_retry };
        now + wait.as_millis() as u64
    }

    /// Lands pieces, depth first: a piece lands, or is split (the store
    /// refused one of its cells, or a part of it landed before) and its
    /// halves land, or fails and stays in the backlog. Returns the errors
    /// of the pieces that did not land.
    async fn land_pieces(&self, pieces: Vec<(BatchId, Arc<Batch>)>, report: &mut FlushReport) -> Vec<Error> {
        let mut todo: Vec<(BatchId, Arc<Batch>)> = pieces.into_iter().rev().collect();
        let mut errors = Vec::new();
        while let Some((root, piece)) = todo.pop() {
            let outcome = self.apply_with_retry(&piece).await;
            let split = match &outcome {
                Ok(ApplyOutcome::Split) => true,
                Err(e) => refuses_cell(e) && piece.entries.len() > 1,
                Ok(_) => false,
            };
            if split {
                let Some((left, right)) = piece.halves() else {
                    let e = Error::new(ErrorKind::Permanent, "the store says a single-cell batch was split");
                    self.piece_failed(root, &piece, e.clone());
                    errors.push(e);
                    continue;
                };
                if let Err(e) = &outcome {
                    info!(batch = %piece.id, cells = piece.entries.len(), error = %e, "the store refused a batch; splitting it");
                }
                let (left, right) = (Arc::new(left), Arc::new(right));
                self.backlog().split(root, piece.id, [left.clone(), right.clone()]);
                todo.push((root, right));
                todo.push((root, left));
                continue;
            }
            match outcome {
                Ok(outcome) => {
                    if outcome == ApplyOutcome::Applied {
                        self.metrics.batches.fetch_add(1, Relaxed);
                        self.metrics.cells_flushed.fetch_add(piece.entries.len() as u64, Relaxed);
                        report.add(&piece);
                    }
                    let done = self.backlog().landed(root, piece.id);
                    if let Some(done) = done {
                        self.root_done(done, report).await;
                    }
                }
                Err(e) => {
                    self.piece_failed(root, &piece, e.clone());
                    errors.push(e);
                }
            }
        }
        errors
    }

    fn piece_failed(&self, root: BatchId, piece: &Batch, e: Error) {
        if !e.is_transient() && !refuses_cell(&e) {
            self.store_failed(&e);
        } else if refuses_cell(&e) {
            warn!(
                cell = %piece.entries[0].cell,
                error = %e,
                retry_every = ?self.config.refused_retry,
                "the store refused a cell; it is held and tried again on a slow schedule"
            );
        }
        let now = now_ms();
        let mut backlog = self.backlog();
        let at = self.retry_at(&e, backlog.failures(root, piece.id), now);
        backlog.failed(root, piece.id, e, now, at);
    }

    /// A root landed in full: its claim is forgotten (or its journal file).
    async fn root_done(&self, done: Done, report: &mut FlushReport) {
        match done.origin {
            Origin::Claimed | Origin::Orphan => {
                if done.origin == Origin::Orphan {
                    report.recovered += 1;
                    self.metrics.recovered_claims.fetch_add(1, Relaxed);
                }
                if let Err(e) = self.cache.ack(done.root).await {
                    // The claim stays recorded; a later pass applies it again, a no-op.
                    warn!(batch = %done.root, error = %e, "could not acknowledge a flushed claim");
                }
            }
            Origin::Journal => {}
        }
        if let Some(journal) = &self.journal {
            for file in done.files_done {
                match journal.remove(&file) {
                    Ok(()) => info!(file = %file.display(), "spill journal file replayed and deleted"),
                    Err(e) => {
                        warn!(file = %file.display(), error = %e, "could not delete a replayed spill journal file")
                    }
                }
            }
        }
    }

    /// Lands `pieces` in passes: deltas commute, but a store holds i64
    /// values, so a batch can overflow when it lands before another one it
    /// depends on (a held `-2^63` before an orphaned `+1`), although every
    /// total is in range once all have landed. While a pass lands
    /// something, the pieces refused with an overflow are tried again.
    async fn land_in_passes(&self, mut pieces: Vec<(BatchId, Arc<Batch>)>, report: &mut FlushReport) -> Vec<Error> {
        loop {
            let before = self.backlog().cells();
            let errors = self.land_pieces(pieces, report).await;
            let overflowed = errors.iter().any(|e| e.kind() == ErrorKind::Overflow);
            if errors.is_empty() || !overflowed || self.backlog().cells() >= before {
                return errors;
            }
            pieces = self.backlog().pieces(|p| p.error.as_ref().is_some_and(|e| e.kind() == ErrorKind::Overflow));
        }
    }

    /// Claims the pending deltas of `cells` and lands them, batch by batch.
    /// Stops at the first batch that fails for a reason other than a
    /// refused cell (the store is down, or failing as a whole): the rest
    /// stays pending in the cache.
    pub(crate) async fn flush_cells(&self, cells: &[Cell], report: &mut FlushReport) -> Vec<Error> {
        let chunk = self.cache.capabilities().max_claim.min(self.store.capabilities().max_batch).max(1);
        let mut errors = Vec::new();
        for part in cells.chunks(chunk) {
            let batch = match self.cache.claim(BatchId::new(), part).await {
                Ok(batch) => Arc::new(batch),
                Err(e) => {
                    errors.push(e);
                    break;
                }
            };
            if batch.is_empty() {
                continue;
            }
            self.backlog().add(batch.clone(), Origin::Claimed);
            let failed = self.land_pieces(vec![(batch.id, batch)], report).await;
            let stop = failed.iter().any(|e| !refuses_cell(e));
            errors.extend(failed);
            if stop {
                break;
            }
        }
        errors
    }

    /// Claims that their flusher left unacknowledged for longer than the
    /// lease (it died, or lost its ack), adopted to be applied again under
    /// the same identity: a no-op if they had landed. Scanned every half
    /// lease unless `force`; with `take_over`, every claim, whatever its age.
    async fn adopt_orphans(&self, force: bool, take_over: bool) -> Result<()> {
        let lease = if take_over { 0 } else { self.config.claim_lease.as_millis() as u64 };
        let now = now_ms();
        if !force && lease > 0 && now.saturating_sub(self.last_orphan_scan_ms.load(Relaxed)) < lease / 2 {
            return Ok(());
        }
        self.last_orphan_scan_ms.store(now, Relaxed);
        let claims = self.cache.claims(lease).await?;
        let mut backlog = self.backlog();
        for claim in claims {
            if !backlog.contains(claim.id) {
                info!(batch = %claim.id, cells = claim.entries.len(), "recovering an orphaned claim");
                backlog.add(Arc::new(claim), Origin::Orphan);
            }
        }
        Ok(())
    }

    /// Lands the backlog: the pieces due (or all of them, with
    /// `everything`), after adopting orphaned claims.
    async fn land_backlog(&self, report: &mut FlushReport, everything: bool, take_over: bool) -> Result<Vec<Error>> {
        self.adopt_orphans(everything, take_over).await?;
        let now = now_ms();
        let todo = self.backlog().pieces(|p| everything || p.retry_at_ms <= now);
        Ok(self.land_in_passes(todo, report).await)
    }

    /// One pass of the background flusher: the backlog, then every cell
    /// whose policy says it is due (none while the store fails as a whole;
    /// cells the store refuses wait for their held piece to land).
    pub(crate) async fn flush_due(&self) -> Result<FlushReport> {
        let mut report = FlushReport::default();
        let mut errors = self.land_backlog(&mut report, false, false).await?;
        if self.store_failure().is_some() || errors.iter().any(|e| e.is_transient()) {
            return worst(errors).map_or(Ok(report), Err);
        }
        let refused = self.backlog().refused_cells();
        let now = now_ms();
        let mut due: Vec<Cell> = {
            let mut urgent = self.urgent.lock().expect("urgent lock");
            let ready: Vec<Cell> = urgent.iter().filter(|(_, d)| **d <= now).map(|(c, _)| c.clone()).collect();
            ready.iter().for_each(|c| {
                urgent.remove(c);
            });
            ready
        };
        due.retain(|c| !refused.contains(c));
        errors.extend(self.flush_cells(&due, &mut report).await);
        let shortest = self.config.families.shortest_interval().as_millis() as u64;
        while errors.iter().all(refuses_cell) {
            let dirty = self.cache.dirty(now.saturating_sub(shortest), DIRTY_PAGE).await?;
            let full = dirty.len() == DIRTY_PAGE;
            due.clear();
            for d in dirty {
                let policy = &self.config.families.of(d.cell.key()).policy;
                let age = now.saturating_sub(d.dirty_since_ms);
                let counter_reached = matches!(d.cell, Cell::Counter(_)) && policy.reached(d.pending);
                if (age >= policy.age_bound().as_millis() as u64 || counter_reached) && !refused.contains(&d.cell) {
                    due.push(d.cell);
                }
            }
            if due.is_empty() {
                break;
            }
            errors.extend(self.flush_cells(&due, &mut report).await);
            if !full {
                break;
            }
        }
        worst(errors).map_or(Ok(report), Err)
    }

    /// Flushes everything pending, whatever the policy. A barrier: when it
    /// returns Ok, every delta counted before it was called is in the store,
    /// including batches the background flusher was landing meanwhile
    /// (landing one twice is a no-op). With `take_over`, claims of other
    /// processes are landed too, whatever their age.
    pub(crate) async fn flush_all(&self, take_over: bool) -> Result<FlushReport> {
        let mut report = FlushReport::default();
        let mut errors = self.land_backlog(&mut report, true, take_over).await?;
        // Passes until nothing is dirty; bounded, so that a flush under
        // constant traffic drains what was pending when it started and ends.
        // (A pending delta beyond the i64 range needs up to three passes.)
        // A store that is down or failing ends it: the rest stays pending.
        let mut passes = 0;
        while errors.iter().all(refuses_cell) && passes < MAX_FLUSH_PASSES {
            passes += 1;
            let dirty = self.cache.dirty(u64::MAX, DIRTY_PAGE).await?;
            if dirty.is_empty() {
                break;
            }
            let cells: Vec<Cell> = dirty.into_iter().map(|d| d.cell).collect();
            errors.extend(self.flush_cells(&cells, &mut report).await);
        }
        if !errors.is_empty() && errors.iter().all(refuses_cell) {
            // Refusals may depend on order: once more, after everything else.
            errors = self.land_backlog(&mut report, true, false).await?;
        }
        self.urgent.lock().expect("urgent lock").clear();
        self.outstanding_claims(&mut report).await;
        match worst(errors) {
            None => Ok(report),
            Some(e) => Err(self.describe_held(e)),
        }
    }

    /// Adds to `report` the claims other flushers hold in the cache.
    async fn outstanding_claims(&self, report: &mut FlushReport) {
        match self.cache.claims(0).await {
            Ok(claims) => {
                let backlog = self.backlog();
                let others: Vec<&Batch> = claims.iter().filter(|c| !backlog.contains(c.id)).collect();
                report.outstanding_claims = others.len() as u64;
                report.oldest_claim_age = others
                    .iter()
                    .map(|c| c.id.created_ms())
                    .min()
                    .map(|ms| Duration::from_millis(now_ms().saturating_sub(ms)));
            }
            Err(e) => debug!(error = %e, "could not list the claims of other flushers"),
        }
    }

    /// The error a flush returns: `e`, and what is held.
    fn describe_held(&self, e: Error) -> Error {
        let backlog = self.backlog();
        let refused = backlog.refused_cells().len();
        if refused == 0 {
            return e;
        }
        let message = format!(
            "{}; {refused} cell(s) the store refused are held and tried again every {:?}, the other cells landed",
            e.message(),
            self.config.refused_retry
        );
        let mut described = Error::new(e.kind(), message).with_source(e.clone());
        if let Some(key) = e.key() {
            described = described.with_key(key);
        }
        described
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

    /// What this engine holds in memory only and has not seen land, as the
    /// batches (pieces) to land: what a crash of this process would leave
    /// behind (parts adopted from the spill journal stay in its files).
    pub(crate) fn inflight_batches(&self) -> Vec<Batch> {
        self.backlog().all_in_memory().into_iter().map(|p| Batch::clone(&p.batch)).collect()
    }

    /// Whether every batch this engine holds is recorded as a claim in the
    /// cache (so that other flushers can land it if this one stops).
    pub(crate) async fn backlog_recorded_in_cache(&self) -> Result<bool> {
        let roots = self.backlog().origins();
        if roots.is_empty() {
            return Ok(true);
        }
        let claims = self.cache.claims(0).await?;
        Ok(roots.iter().all(|(root, origin)| *origin == Origin::Journal || claims.iter().any(|c| c.id == *root)))
    }

    /// (roots, cells) in the backlog.
    pub(crate) fn backlog_size(&self) -> (usize, u64) {
        let backlog = self.backlog();
        (backlog.roots(), backlog.cells())
    }

    /// Shutdown could not drain: writes the backlog to the spill journal
    /// (with `claim_pending`, for an in-process cache, whatever is still
    /// pending in the cache too) and forgets it. Returns the file and what it
    /// holds (batches, cells).
    pub(crate) async fn spill(&self, claim_pending: bool) -> Result<Option<(std::path::PathBuf, usize, u64)>> {
        let Some(journal) = &self.journal else { return Ok(None) };
        while claim_pending {
            let dirty = self.cache.dirty(u64::MAX, DIRTY_PAGE).await?;
            if dirty.is_empty() {
                break;
            }
            let cells: Vec<Cell> = dirty.into_iter().map(|d| d.cell).collect();
            let chunk = self.cache.capabilities().max_claim.min(self.store.capabilities().max_batch).max(1);
            let mut claimed = false;
            for part in cells.chunks(chunk) {
                let batch = self.cache.claim(BatchId::new(), part).await?;
                if !batch.is_empty() {
                    claimed = true;
                    self.backlog().add(Arc::new(batch), Origin::Claimed);
                }
            }
            if !claimed {
                break;
            }
        }
        let pieces = self.backlog().all();
        if pieces.is_empty() {
            return Ok(None);
        }
        let batches: Vec<Batch> = pieces.iter().map(|p| Batch::clone(&p.batch)).collect();
        let cells = batches.iter().map(|b| b.entries.len() as u64).sum();
        let path = journal.write(&batches)?;
        let (roots, files) = self.backlog().take_all();
        // A shared cache keeps its claims, so that other processes land them
        // (the journal's copy then lands as a no-op); an in-process one dies
        // with the process anyway.
        if !self.cache.capabilities().shared {
            for (root, origin) in roots {
                if origin != Origin::Journal {
                    let _ = self.cache.ack(root).await;
                }
            }
        }
        // The batches of the files replayed are in the new file now.
        for file in files {
            if let Err(e) = journal.remove(&file) {
                warn!(file = %file.display(), error = %e, "could not delete a spill journal file rewritten into a new one");
            }
        }
        Ok(Some((path, batches.len(), cells)))
    }

    pub(crate) fn journal_dir(&self) -> Option<&std::path::Path> {
        self.journal.as_ref().map(Journal::dir)
    }

    /// Reads the cache's gauges into the metrics and sets or clears
    /// backpressure.
    pub(crate) async fn refresh_gauges(&self) -> Result<()> {
        let dirtied_before = self.dirtied.load(Relaxed);
        let stats = self.cache.stats().await?;
        self.dirtied.fetch_sub(dirtied_before, Relaxed);
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
                Err(e) if refuses_cell(&e) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        warn!(error = %e, failures, "background flush failed; pending deltas are kept and retried");
                    }
                }
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

/// The error that matters most among those of pieces that did not land:
/// the store failing as a whole, then the store unreachable, then a refused
/// cell.
pub(crate) fn worst(errors: Vec<Error>) -> Option<Error> {
    let rank = |e: &Error| {
        if refuses_cell(e) {
            2
        } else if e.is_transient() {
            1
        } else {
            0
        }
    };
    errors.into_iter().min_by_key(rank)
}
