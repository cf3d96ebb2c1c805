//! Stores that misbehave on purpose: one that fails before applying, one
//! that applies and then loses its ack, one that is down altogether, and a
//! deliberately broken one that applies a retried batch twice (to prove the
//! suite catches it).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use counter_core::{
    ApplyOutcome, Batch, BatchId, CleanReport, DurableStore, Error, ErrorKind, Key, ListQuery, Precision, Result,
    StoreCapabilities,
};

/// Wraps a store and injects faults on command. Also counts what reached
/// the inner store.
#[derive(Debug)]
pub struct FaultyStore<S: DurableStore + ?Sized> {
    inner: Arc<S>,
    fail_before: AtomicU32,
    lose_ack: AtomicU32,
    down: AtomicBool,
    permanent: AtomicBool,
    applies: AtomicU64,
    cells_written: AtomicU64,
    landed: Mutex<HashSet<BatchId>>,
}

impl<S: DurableStore + ?Sized> FaultyStore<S> {
    /// A well-behaved wrapper until told otherwise.
    pub fn new(inner: Arc<S>) -> Self {
        FaultyStore {
            inner,
            fail_before: AtomicU32::new(0),
            lose_ack: AtomicU32::new(0),
            down: AtomicBool::new(false),
            permanent: AtomicBool::new(false),
            applies: AtomicU64::new(0),
            cells_written: AtomicU64::new(0),
            landed: Mutex::new(HashSet::new()),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    /// The next `n` applies fail (transiently) before touching the store.
    pub fn fail_next(&self, n: u32) {
        self.fail_before.store(n, SeqCst);
    }

    /// The next `n` applies reach the store and then report a transient error.
    pub fn lose_next_acks(&self, n: u32) {
        self.lose_ack.store(n, SeqCst);
    }

    /// Every call fails transiently (`true`) until set back (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, SeqCst);
    }

    /// Every apply fails with a permanent error while set.
    pub fn set_permanent_failure(&self, on: bool) {
        self.permanent.store(on, SeqCst);
    }

    /// Apply calls that reached the inner store.
    pub fn applies(&self) -> u64 {
        self.applies.load(SeqCst)
    }

    /// Cells written by batches the inner store applied (not counting no-ops).
    pub fn cells_written(&self) -> u64 {
        self.cells_written.load(SeqCst)
    }

    /// Whether the inner store applied batch `id` (or found it applied).
    pub fn landed(&self, id: BatchId) -> bool {
        self.landed.lock().expect("landed lock").contains(&id)
    }

    fn check_up(&self) -> Result<()> {
        if self.down.load(SeqCst) {
            return Err(Error::new(ErrorKind::Unavailable, "injected fault: the store is down"));
        }
        Ok(())
    }

    fn take(counter: &AtomicU32) -> bool {
        counter.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

#[async_trait]
impl<S: DurableStore + ?Sized> DurableStore for FaultyStore<S> {
    fn capabilities(&self) -> StoreCapabilities {
        self.inner.capabilities()
    }

    async fn apply(&self, batch: &Batch) -> Result<ApplyOutcome> {
        self.check_up()?;
        if self.permanent.load(SeqCst) {
            return Err(Error::new(ErrorKind::Permanent, "injected fault: the store refuses this batch for good"));
        }
        if Self::take(&self.fail_before) {
            return Err(Error::new(ErrorKind::Unavailable, "injected fault: failed before applying"));
        }
        self.applies.fetch_add(1, SeqCst);
        let outcome = self.inner.apply(batch).await?;
        if outcome == ApplyOutcome::Applied {
            self.cells_written.fetch_add(batch.entries.len() as u64, SeqCst);
        }
        self.landed.lock().expect("landed lock").insert(batch.id);
        if Self::take(&self.lose_ack) {
            return Err(Error::new(ErrorKind::Unavailable, "injected fault: applied, then the ack was lost"));
        }
        Ok(outcome)
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<i64>>> {
        self.check_up()?;
        self.inner.get_many(keys).await
    }

    async fn delete(&self, key: &Key) -> Result<bool> {
        self.check_up()?;
        self.inner.delete(key).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<(Key, i64)>> {
        self.check_up()?;
        self.inner.list(query).await
    }

    async fn series(&self, key: &Key, precision: Precision, from: i64, to: i64) -> Result<Vec<(i64, i64)>> {
        self.check_up()?;
        self.inner.series(key, precision, from, to).await
    }

    async fn clean(&self, precision: Precision, cutoff: i64) -> Result<CleanReport> {
        self.check_up()?;
        self.inner.clean(precision, cutoff).await
    }
}

/// A deliberately broken store: it forwards every batch under a fresh
/// identity, so the inner store cannot recognise a retry and applies it
/// twice. The suite must fail against it.
#[derive(Debug)]
pub struct DoubleApplyStore<S: DurableStore + ?Sized> {
    inner: Arc<S>,
}

impl<S: DurableStore + ?Sized> DoubleApplyStore<S> {
    /// Breaks `inner`'s idempotency.
    pub fn new(inner: Arc<S>) -> Self {
        DoubleApplyStore { inner }
    }
}

#[async_trait]
impl<S: DurableStore + ?Sized> DurableStore for DoubleApplyStore<S> {
    fn capabilities(&self) -> StoreCapabilities {
        self.inner.capabilities()
    }
    async fn apply(&self, batch: &Batch) -> Result<ApplyOutcome> {
        let renamed = Batch { id: BatchId::new(), ..batch.clone() };
        self.inner.apply(&renamed).await
    }
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<i64>>> {
        self.inner.get_many(keys).await
    }
    async fn delete(&self, key: &Key) -> Result<bool> {
        self.inner.delete(key).await
    }
    async fn list(&self, query: &ListQuery) -> Result<Vec<(Key, i64)>> {
        self.inner.list(query).await
    }
    async fn series(&self, key: &Key, precision: Precision, from: i64, to: i64) -> Result<Vec<(i64, i64)>> {
        self.inner.series(key, precision, from, to).await
    }
    async fn clean(&self, precision: Precision, cutoff: i64) -> Result<CleanReport> {
        self.inner.clean(precision, cutoff).await
    }
}
