//! Flush passes: the background flusher's (the backlog that is due, then
//! the cells their policy says are due) and the explicit, barrier flush
//! (everything). Cells the store refuses wait for their held piece; a store
//! that is down or failing ends a pass, leaving the rest pending.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tracing::{debug, info, warn};

use crate::backlog::{Origin, refuses_cell};
use crate::batch::{Batch, BatchId, now_ms};
use crate::cache::CacheLayer;
use crate::cell::Cell;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::landing::worst;
use crate::report::FlushReport;
use crate::store::DurableStore;

/// Passes of an explicit flush over the dirty cells.
const MAX_FLUSH_PASSES: usize = 1_000;
/// Least time between two "age bound exceeded" warnings in the log.
const LATE_WARNING_EVERY_MS: u64 = 10_000;

/// Cells a pass found pending past their age bound.
#[derive(Debug, Default)]
struct Lateness {
    cells: u64,
    oldest_ms: u64,
    bound_ms: u64,
}

impl Lateness {
    fn note(&mut self, age_ms: u64, bound_ms: u64) {
        self.cells += 1;
        if age_ms > self.oldest_ms {
            self.oldest_ms = age_ms;
            self.bound_ms = bound_ms;
        }
    }
}

impl<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> Engine<C, S> {
    /// The most cells in one claim and batch.
    pub(crate) fn batch_size(&self) -> usize {
        self.cache.capabilities().max_claim.min(self.store.capabilities().max_batch).max(1)
    }

    /// Claims the pending deltas of `cells` and lands them, batch by batch,
    /// up to `flush_in_flight` batches at once (the next one is claimed
    /// while the store applies the last). Stops claiming at the first batch
    /// that fails for a reason other than a refused cell (the store is
    /// down, or failing as a whole): the rest stays pending in the cache.
    ///
    /// The cells are cut into batches in key order, not in the order they
    /// came (the dirty index's, by time): a batch then covers a range of
    /// keys, which a store ordered by key (SQLite's B-tree) writes in a few
    /// pages instead of one page per cell.
    pub(crate) async fn flush_cells(&self, cells: &[Cell], report: &mut FlushReport) -> Vec<Error> {
        let mut sorted: Vec<&Cell> = cells.iter().collect();
        sorted.sort_unstable();
        let parts: Vec<Vec<Cell>> =
            sorted.chunks(self.batch_size()).map(|part| part.iter().map(|&c| c.clone()).collect()).collect();
        let stop = AtomicBool::new(false);
        let mut parts = parts.iter();
        let mut in_flight = FuturesOrdered::new();
        let mut outcomes = Vec::new();
        loop {
            while in_flight.len() < self.config.flush_in_flight.max(1) {
                match parts.next() {
                    Some(part) => in_flight.push_back(self.claim_and_land(part, &stop)),
                    None => break,
                }
            }
            match in_flight.next().await {
                Some(outcome) => outcomes.push(outcome),
                None => break,
            }
        }
        let mut errors = Vec::new();
        for (moved, failed) in outcomes {
            report.add_moved(&moved);
            errors.extend(failed);
        }
        errors
    }

    /// One batch of [`flush_cells`](Self::flush_cells): claimed and landed,
    /// unless an earlier one failed (`stop`); what it moved and its errors.
    async fn claim_and_land(&self, part: &[Cell], stop: &AtomicBool) -> (FlushReport, Vec<Error>) {
        let mut moved = FlushReport::default();
        if stop.load(Relaxed) {
            return (moved, Vec::new());
        }
        let batch = match self.cache.claim(BatchId::new(), part).await {
            Ok(batch) => Arc::new(batch),
            Err(e) => {
                stop.store(true, Relaxed);
                return (moved, vec![e]);
            }
        };
        if batch.is_empty() {
            return (moved, Vec::new());
        }
        self.backlog().add(batch.clone(), Origin::Claimed);
        let failed = self.land_pieces(vec![(batch.id, batch)], &mut moved).await;
        if failed.iter().any(|e| !refuses_cell(e)) {
            stop.store(true, Relaxed);
        }
        (moved, failed)
    }

    /// Claims that their flusher left unacknowledged for longer than the
    /// lease (it died, or lost its ack), adopted to be applied again under
    /// the same identity: a no-op if they had landed. Scanned every half
    /// lease unless `force`; with `take_over`, every claim, whatever its age.
    pub(crate) async fn adopt_orphans(&self, force: bool, take_over: bool) -> Result<()> {
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
    pub(crate) async fn land_backlog(
        &self,
        report: &mut FlushReport,
        everything: bool,
        take_over: bool,
    ) -> Result<Vec<Error>> {
        self.adopt_orphans(everything, take_over).await?;
        let now = now_ms();
        let todo = self.backlog().pieces(|p| everything || p.retry_at_ms <= now);
        Ok(self.land_in_passes(todo, report).await)
    }

    /// One pass of the background flusher: the backlog, then every cell
    /// whose policy says it is due (none while the store fails as a whole;
    /// cells the store refuses wait for their held piece to land).
    pub(crate) async fn flush_due(&self) -> Result<FlushReport> {
        self.timed_pass(self.flush_due_pass()).await
    }

    async fn flush_due_pass(&self) -> Result<FlushReport> {
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
        let slack = 2 * self.config.tick().as_millis() as u64;
        let page = self.config.dirty_page(self.batch_size());
        // Twice per interval, so a cell the sweep finds late is still due in time.
        if now.saturating_sub(self.last_cache_sweep_ms.load(Relaxed)) >= shortest / 2 {
            // A failed sweep is tried again at the next pass; this one goes
            // on with what the cache indexed already.
            match self.cache.sweep(false).await {
                Ok(()) => self.last_cache_sweep_ms.store(now, Relaxed),
                Err(e) => debug!(error = %e, "the cache's sweep failed"),
            }
        }
        while errors.iter().all(refuses_cell) {
            let dirty = self.cache.dirty(now.saturating_sub(shortest), page).await?;
            let full = dirty.len() == page;
            // Due as of the pass's start (so that a pass ends under constant
            // traffic); late as of now, when they are about to be claimed.
            let claimed_at = now_ms();
            let mut late = Lateness::default();
            due.clear();
            for d in dirty {
                let policy = &self.config.families.of(d.cell.key()).policy;
                let age = now.saturating_sub(d.dirty_since_ms);
                let bound = policy.age_bound().as_millis() as u64;
                let counter_reached = matches!(d.cell, Cell::Counter(_)) && policy.reached(d.pending);
                if (age >= bound || counter_reached) && !refused.contains(&d.cell) {
                    let waited = claimed_at.saturating_sub(d.dirty_since_ms);
                    if waited > bound + slack {
                        late.note(waited, bound);
                    }
                    due.push(d.cell);
                }
            }
            self.report_lateness(&late);
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

    /// Runs a flush pass, counting it and its time in the metrics.
    async fn timed_pass<T>(&self, pass: impl Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let out = pass.await;
        self.metrics.flush_passes.fetch_add(1, Relaxed);
        self.metrics.flush_nanos.fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
        out
    }

    /// Counts the cells a pass found past their age bound, and says so in
    /// the log at most every [`LATE_WARNING_EVERY_MS`].
    fn report_lateness(&self, late: &Lateness) {
        if late.cells == 0 {
            return;
        }
        self.metrics.late_cells.fetch_add(late.cells, Relaxed);
        let now = now_ms();
        let last = self.metrics.last_late_warning_ms.load(Relaxed);
        if now.saturating_sub(last) >= LATE_WARNING_EVERY_MS
            && self.metrics.last_late_warning_ms.compare_exchange(last, now, Relaxed, Relaxed).is_ok()
        {
            warn!(
                cells = late.cells,
                oldest_ms = late.oldest_ms,
                bound_ms = late.bound_ms,
                total = self.metrics.late_cells.load(Relaxed),
                "age bound exceeded: cells waited longer than their policy allows; the store (or the flusher) \
                 is not keeping up with the counters being dirtied"
            );
        }
    }

    /// Flushes everything pending, whatever the policy. A barrier: when it
    /// returns Ok, every delta counted before it was called is in the store,
    /// including batches the background flusher was landing meanwhile
    /// (landing one twice is a no-op). With `take_over`, claims of other
    /// processes are landed too, whatever their age. With `reconcile`, the
    /// cached totals of what landed are checked against the store after
    /// (not worth it in the drain at shutdown).
    pub(crate) async fn flush_all(&self, take_over: bool, reconcile: bool) -> Result<FlushReport> {
        self.timed_pass(self.flush_all_pass(take_over, reconcile)).await
    }

    async fn flush_all_pass(&self, take_over: bool, reconcile: bool) -> Result<FlushReport> {
        let mut report = FlushReport::default();
        let mut errors = self.land_backlog(&mut report, true, take_over).await?;
        self.cache.sweep(true).await?;
        // Passes until nothing is dirty; bounded, so that a flush under
        // constant traffic drains what was pending when it started and ends.
        // (A pending delta beyond the i64 range needs up to three passes.)
        // A store that is down or failing ends it: the rest stays pending.
        let mut passes = 0;
        while errors.iter().all(refuses_cell) && passes < MAX_FLUSH_PASSES {
            passes += 1;
            let dirty = self.cache.dirty(u64::MAX, self.config.dirty_page(self.batch_size())).await?;
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
        if reconcile {
            if let Err(e) = self.converge(false, false).await {
                debug!(error = %e, "could not reconcile cached totals with the store");
            }
        }
        match worst(errors) {
            None => Ok(report),
            Some(e) => Err(self.describe_held(e)),
        }
    }

    /// Adds to `report` the claims other flushers hold in the cache.
    pub(crate) async fn outstanding_claims(&self, report: &mut FlushReport) {
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
    pub(crate) fn describe_held(&self, e: Error) -> Error {
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
}
