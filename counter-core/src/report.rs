//! What flushes report: batches and cells written, claims recovered and
//! outstanding, and the cells the store refused.

use std::time::Duration;

use crate::batch::Batch;
use crate::cell::Cell;
use crate::error::Error;

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
    pub(crate) fn add(&mut self, batch: &Batch) {
        self.batches += 1;
        for entry in &batch.entries {
            match entry.cell {
                Cell::Counter(_) => self.counters += 1,
                Cell::Slice(_) => self.slices += 1,
            }
        }
    }

    /// Adds what another report moved (batches, cells, recoveries).
    pub(crate) fn add_moved(&mut self, other: &FlushReport) {
        self.batches += other.batches;
        self.counters += other.counters;
        self.slices += other.slices;
        self.recovered += other.recovered;
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
