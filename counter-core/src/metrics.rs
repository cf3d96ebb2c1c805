//! Metrics the caller can read: counts of what the engine did and gauges of
//! what is pending.

use std::cell::Cell as StdCell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

const STRIPES: usize = 16;

/// A counter incremented from many threads without a shared cache line:
/// each thread adds to its own stripe.
#[derive(Debug, Default)]
pub(crate) struct StripedCounter {
    stripes: [Padded; STRIPES],
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: StdCell<usize> = StdCell::new(NEXT_STRIPE.fetch_add(1, Relaxed) % STRIPES);
}

/// This thread's stripe: a small number, fixed per thread, spreading
/// threads over striped counters.
pub(crate) fn stripe() -> usize {
    STRIPE.with(|s| s.get())
}

impl StripedCounter {
    pub(crate) fn add(&self, n: u64) {
        self.stripes[stripe()].0.fetch_add(n, Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.stripes.iter().map(|s| s.0.load(Relaxed)).sum()
    }
}

/// The engine's live metrics.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) increments: StripedCounter,
    pub(crate) batches: AtomicU64,
    pub(crate) cells_flushed: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) recovered_claims: AtomicU64,
    pub(crate) rebased: AtomicU64,
    pub(crate) backpressure: AtomicU64,
    pub(crate) pending_cells: AtomicU64,
    pub(crate) held_batches: AtomicU64,
    pub(crate) refused_cells: AtomicU64,
    pub(crate) open_claims: AtomicU64,
    /// Oldest dirty stamp, ms since the epoch; 0 when none.
    pub(crate) oldest_dirty_ms: AtomicU64,
    pub(crate) store_nanos: AtomicU64,
    pub(crate) store_calls: AtomicU64,
    /// Cells found pending past their age bound (plus two ticks).
    pub(crate) late_cells: AtomicU64,
    /// Flush passes (background and explicit) and the time they took.
    pub(crate) flush_passes: AtomicU64,
    pub(crate) flush_nanos: AtomicU64,
    /// When the last "age bound exceeded" warning was logged (ms).
    pub(crate) last_late_warning_ms: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
}

impl Metrics {
    pub(crate) fn record_failure(&self, error: &crate::Error) {
        self.failures.fetch_add(1, Relaxed);
        *self.last_error.lock().expect("metrics lock") = Some(error.to_string());
    }

    /// A store call succeeded: the last error is no longer current.
    pub(crate) fn clear_last_error(&self) {
        let mut last = self.last_error.lock().expect("metrics lock");
        if last.is_some() {
            *last = None;
        }
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let oldest = self.oldest_dirty_ms.load(Relaxed);
        let calls = self.store_calls.load(Relaxed);
        MetricsSnapshot {
            increments: self.increments.get(),
            batches_flushed: self.batches.load(Relaxed),
            cells_flushed: self.cells_flushed.load(Relaxed),
            retries: self.retries.load(Relaxed),
            failures: self.failures.load(Relaxed),
            recovered_claims: self.recovered_claims.load(Relaxed),
            rebased_counters: self.rebased.load(Relaxed),
            backpressure_rejections: self.backpressure.load(Relaxed),
            pending_cells: self.pending_cells.load(Relaxed),
            held_batches: self.held_batches.load(Relaxed),
            refused_cells: self.refused_cells.load(Relaxed),
            open_claims: self.open_claims.load(Relaxed),
            store_failure: None,
            oldest_pending_age: (oldest != 0)
                .then(|| Duration::from_millis(crate::batch::now_ms().saturating_sub(oldest))),
            store_applies: calls,
            store_apply_time: Duration::from_nanos(self.store_nanos.load(Relaxed)),
            age_bound_exceeded: self.late_cells.load(Relaxed),
            flush_passes: self.flush_passes.load(Relaxed),
            flush_time: Duration::from_nanos(self.flush_nanos.load(Relaxed)),
            last_error: self.last_error.lock().expect("metrics lock").clone(),
        }
    }
}

/// A reading of the engine's metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Increments accepted (rollups and time slices not counted separately).
    pub increments: u64,
    /// Batches the store applied (a batch it found applied already, from an
    /// earlier attempt whose answer was lost, is not counted again).
    pub batches_flushed: u64,
    /// Cells written by those batches: one per dirty counter or time bucket per flush.
    pub cells_flushed: u64,
    /// Store calls retried after a transient error.
    pub retries: u64,
    /// Store calls that failed for good (after retries, or permanent errors).
    pub failures: u64,
    /// Claims left by a dead flusher and applied by this one.
    pub recovered_claims: u64,
    /// Cached totals corrected to the store's value after they drifted
    /// (another writer of the store, a reload that missed a batch in flight).
    pub rebased_counters: u64,
    /// Increments refused with a backpressure error.
    pub backpressure_rejections: u64,
    /// Cells not durable yet, at the last reading: pending in the cache,
    /// plus those taken from it in batches that have not landed.
    pub pending_cells: u64,
    /// Batches this handle claimed (or adopted) that have not landed in
    /// full: being applied, waiting for a retry, or holding refused cells.
    pub held_batches: u64,
    /// Cells the store refused for good, held and tried again on a slow
    /// schedule (see [`Counters::held_cells`](crate::Counters::held_cells)).
    pub refused_cells: u64,
    /// Claims recorded in the cache and not acknowledged (every
    /// process's), at the last reading.
    pub open_claims: u64,
    /// The store's permanent failure that stops flushing, while it lasts.
    pub store_failure: Option<String>,
    /// Age of the oldest pending delta, at the last reading of the cache.
    pub oldest_pending_age: Option<Duration>,
    /// Calls to the store's `apply`.
    pub store_applies: u64,
    /// Time spent in those calls.
    pub store_apply_time: Duration,
    /// Cells the flusher found pending longer than their policy's age bound
    /// plus two flusher ticks (one tick is the bound's allowance, the other
    /// absorbs timer jitter): the store, or the flusher, is not keeping up
    /// with the counters being dirtied. Each is also logged, at most once
    /// every 10 seconds. Rising means the age bound no longer holds.
    pub age_bound_exceeded: u64,
    /// Flush passes run (background and explicit ones).
    pub flush_passes: u64,
    /// Time those passes took: busy time of the flusher. Cells flushed over
    /// this time is the flush rate while flushing.
    pub flush_time: Duration,
    /// The error of the flusher's last failed store call, until a store
    /// call succeeds again (then `None`; [`failures`](Self::failures) keeps
    /// the count).
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn striped_counter_sums_across_threads() {
        let c = std::sync::Arc::new(StripedCounter::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.add(1)))
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(c.get(), 4000);
    }
}
