//! Landing batches in the store: each piece is applied (transient failures
//! retried with backoff within the store timeout), split when the store
//! refuses one of its cells for good or a part of it landed before, or held
//! with its error for a later try; a root whose pieces all landed has its
//! claim acknowledged. A permanent failure of the store as a whole stops
//! new claims until the store takes a batch again.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use tracing::{debug, error, info, warn};

use crate::backlog::{Done, Origin, refuses_cell};
use crate::batch::{ApplyOutcome, Batch, BatchId, now_ms};
use crate::cache::CacheLayer;
use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::report::FlushReport;
use crate::store::DurableStore;

impl<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> Engine<C, S> {
    /// One batch to the store: transient failures are retried with backoff
    /// (each attempt within the store timeout), other errors returned.
    pub(crate) async fn apply_with_retry(&self, batch: &Batch) -> Result<ApplyOutcome> {
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

    /// The store took a batch: a failure it had is over (and so is the
    /// last error the metrics show; the count of failures stays).
    pub(crate) fn store_recovered(&self) {
        self.metrics.clear_last_error();
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

    pub(crate) fn store_failed(&self, e: &Error) {
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
    pub(crate) fn retry_at(&self, e: &Error, failures: u32, now: u64) -> u64 {
        let wait =
            if e.is_transient() { self.config.retry.backoff(failures.min(8)) } else { self.config.refused_retry };
        now + wait.as_millis() as u64
    }

    /// Lands pieces, depth first: a piece lands, or is split (the store
    /// refused one of its cells, or a part of it landed before) and its
    /// halves land, or fails and stays in the backlog. Returns the errors
    /// of the pieces that did not land.
    pub(crate) async fn land_pieces(&self, pieces: Vec<(BatchId, Arc<Batch>)>, report: &mut FlushReport) -> Vec<Error> {
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

    pub(crate) fn piece_failed(&self, root: BatchId, piece: &Batch, e: Error) {
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
    pub(crate) async fn root_done(&self, done: Done, report: &mut FlushReport) {
        self.reconcile_soon(done.keys);
        if done.origin == Origin::Orphan {
            report.recovered += 1;
            self.metrics.recovered_claims.fetch_add(1, Relaxed);
        }
        // A journal's batch may be recorded as a claim too (a shared cache
        // keeps the claims it spilled): forgotten all the same.
        if let Err(e) = self.cache.ack(done.root).await {
            // The claim stays recorded; a later pass applies it again, a no-op.
            warn!(batch = %done.root, error = %e, "could not acknowledge a flushed claim");
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
    pub(crate) async fn land_in_passes(
        &self,
        mut pieces: Vec<(BatchId, Arc<Batch>)>,
        report: &mut FlushReport,
    ) -> Vec<Error> {
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
