//! Stores that misbehave on purpose: one that fails before applying, one
//! that applies and then loses its ack, one that is down altogether, one
//! that hangs, one that is slow (every apply takes a while, then lands), one that refuses some cells or everything for good, one that
//! cannot keep the protocol, and deliberately broken ones (a retried batch
//! applied twice, refused batches dropped) to prove the suite catches them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use counter_core::{
    ApplyOutcome, Batch, BatchId, Cell, CleanReport, DurableStore, Error, ErrorKind, Key, ListQuery, Precision, Result,
    StoreCapabilities,
};
use tokio::sync::watch;

/// Wraps a store and injects faults on command. Also counts what reached
/// the inner store.
#[derive(Debug)]
pub struct FaultyStore<S: DurableStore + ?Sized> {
    inner: Arc<S>,
    fail_before: AtomicU32,
    lose_ack: AtomicU32,
    down: AtomicBool,
    permanent: AtomicBool,
    refusing: AtomicBool,
    no_transactions: AtomicBool,
    refused: Mutex<HashSet<Key>>,
    /// While true, applies wait (and then reach the store, even if their
    /// caller gave up meanwhile).
    hanging: watch::Sender<bool>,
    /// Applies hung and not answered yet.
    hung: Arc<AtomicU64>,
    /// Microseconds every apply waits before it reaches the store.
    apply_delay_us: AtomicU64,
    apply_calls: AtomicU64,
    /// Microseconds every read of counters waits before it reaches the store.
    read_delay_us: AtomicU64,
    read_calls: AtomicU64,
    ledger: Arc<Ledger>,
}

/// What reached the inner store (kept apart so that a hung apply records
/// its outcome even when its caller gave up waiting).
#[derive(Debug, Default)]
struct Ledger {
    applies: AtomicU64,
    cells_written: AtomicU64,
    /// Per root batch, the cells of the batches (or parts) that landed.
    landed: Mutex<HashMap<BatchId, HashSet<Cell>>>,
    landed_ids: Mutex<HashSet<BatchId>>,
}

impl Ledger {
    fn applied(&self, batch: &Batch, outcome: ApplyOutcome) {
        self.applies.fetch_add(1, SeqCst);
        if outcome == ApplyOutcome::Applied {
            self.cells_written.fetch_add(batch.entries.len() as u64, SeqCst);
        }
        if outcome != ApplyOutcome::Split {
            self.landed_ids.lock().expect("landed lock").insert(batch.id);
            self.landed
                .lock()
                .expect("landed lock")
                .entry(batch.root())
                .or_default()
                .extend(batch.entries.iter().map(|e| e.cell.clone()));
        }
    }
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
            refusing: AtomicBool::new(false),
            no_transactions: AtomicBool::new(false),
            refused: Mutex::new(HashSet::new()),
            hanging: watch::channel(false).0,
            hung: Arc::new(AtomicU64::new(0)),
            apply_delay_us: AtomicU64::new(0),
            apply_calls: AtomicU64::new(0),
            read_delay_us: AtomicU64::new(0),
            read_calls: AtomicU64::new(0),
            ledger: Arc::default(),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    /// While on, every call (reads, the probe and applies) fails for good
    /// ([`Permanent`](ErrorKind::Permanent)): a store that refuses the
    /// credentials it was given, say.
    pub fn set_refusing(&self, on: bool) {
        self.refusing.store(on, SeqCst);
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

    /// Every apply fails with a permanent error (naming no key: the store
    /// as a whole, like a deleted table) while set.
    pub fn set_permanent_failure(&self, on: bool) {
        self.permanent.store(on, SeqCst);
    }

    /// While set, every batch with a cell of `key` is refused for good,
    /// naming the key (a poison cell: a value the store cannot add to).
    pub fn refuse_key(&self, key: &Key, on: bool) {
        let mut refused = self.refused.lock().expect("refused lock");
        if on {
            refused.insert(key.clone());
        } else {
            refused.remove(key);
        }
    }

    /// While set, the store cannot keep the protocol (like a DynamoDB
    /// endpoint without transactions): its probe and every apply fail for good.
    pub fn set_no_transactions(&self, on: bool) {
        self.no_transactions.store(on, SeqCst);
    }

    /// While set, every apply hangs; when cleared, the hung applies reach
    /// the store, also those whose caller gave up waiting (like a server
    /// that answers late).
    pub fn set_hanging(&self, on: bool) {
        self.hanging.send_replace(on);
    }

    /// Every apply waits `delay` before it reaches the store, and then
    /// lands normally: a store that works but cannot keep up. Zero ends it.
    pub fn set_apply_delay(&self, delay: std::time::Duration) {
        self.apply_delay_us.store(delay.as_micros().min(u128::from(u64::MAX)) as u64, SeqCst);
    }

    /// Ends a hang and waits until every hung apply reached the store.
    pub async fn release_hung(&self) {
        self.set_hanging(false);
        while self.hung.load(SeqCst) > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Every read of counters (`get_many`) waits `delay` before it reaches
    /// the store: a store far away. Zero ends it.
    pub fn set_read_delay(&self, delay: std::time::Duration) {
        self.read_delay_us.store(delay.as_micros().min(u128::from(u64::MAX)) as u64, SeqCst);
    }

    /// Reads of counters (`get_many` calls) made, whatever became of them.
    pub fn read_calls(&self) -> u64 {
        self.read_calls.load(SeqCst)
    }

    /// Apply calls the inner store answered with an outcome.
    pub fn applies(&self) -> u64 {
        self.ledger.applies.load(SeqCst)
    }

    /// Apply calls made, whatever became of them.
    pub fn apply_calls(&self) -> u64 {
        self.apply_calls.load(SeqCst)
    }

    /// Cells written by batches the inner store applied (not counting no-ops).
    pub fn cells_written(&self) -> u64 {
        self.ledger.cells_written.load(SeqCst)
    }

    /// Whether the inner store applied batch `id` (or found it applied).
    pub fn landed(&self, id: BatchId) -> bool {
        self.ledger.landed_ids.lock().expect("landed lock").contains(&id)
    }

    /// Whether the delta of `cell` in the batch claimed as `root` reached
    /// the store: in that batch, or in one of the parts it was split into.
    pub fn cell_landed(&self, root: BatchId, cell: &Cell) -> bool {
        self.ledger.landed.lock().expect("landed lock").get(&root).is_some_and(|cells| cells.contains(cell))
    }

    fn check_up(&self) -> Result<()> {
        if self.down.load(SeqCst) {
            return Err(Error::new(ErrorKind::Unavailable, "injected fault: the store is down"));
        }
        if self.refusing.load(SeqCst) {
            return Err(Error::new(ErrorKind::Permanent, "injected fault: the store refuses every call for good"));
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

    async fn probe(&self) -> Result<()> {
        self.check_up()?;
        if self.no_transactions.load(SeqCst) {
            return Err(Error::new(ErrorKind::Permanent, "injected fault: the store has no atomic batches"));
        }
        self.inner.probe().await
    }

    async fn apply(&self, batch: &Batch) -> Result<ApplyOutcome> {
        self.apply_calls.fetch_add(1, SeqCst);
        let mut hanging = self.hanging.subscribe();
        if *hanging.borrow() {
            // The request is on its way: it reaches the store when released,
            // whether or not the caller is still waiting.
            let (inner, batch, hung, ledger) =
                (self.inner.clone(), batch.clone(), self.hung.clone(), self.ledger.clone());
            hung.fetch_add(1, SeqCst);
            let landed = tokio::spawn(async move {
                let _ = hanging.wait_for(|h| !*h).await;
                let outcome = inner.apply(&batch).await;
                if let Ok(outcome) = &outcome {
                    ledger.applied(&batch, *outcome);
                }
                hung.fetch_sub(1, SeqCst);
                outcome
            });
            return landed.await.expect("hung apply task");
        }
        let delay = self.apply_delay_us.load(SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_micros(delay)).await;
        }
        self.check_up()?;
        if self.permanent.load(SeqCst) {
            return Err(Error::new(ErrorKind::Permanent, "injected fault: the store refuses this batch for good"));
        }
        if self.no_transactions.load(SeqCst) {
            return Err(Error::new(ErrorKind::Permanent, "injected fault: the store has no atomic batches"));
        }
        let poison = {
            let refused = self.refused.lock().expect("refused lock");
            batch.entries.iter().map(|e| e.cell.key()).find(|k| refused.contains(*k)).cloned()
        };
        if let Some(key) = poison {
            return Err(
                Error::new(ErrorKind::Permanent, "injected fault: the store refuses this cell for good").with_key(key)
            );
        }
        if Self::take(&self.fail_before) {
            return Err(Error::new(ErrorKind::Unavailable, "injected fault: failed before applying"));
        }
        let outcome = self.inner.apply(batch).await?;
        self.ledger.applied(batch, outcome);
        if Self::take(&self.lose_ack) {
            return Err(Error::new(ErrorKind::Unavailable, "injected fault: applied, then the ack was lost"));
        }
        Ok(outcome)
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<i64>>> {
        self.read_calls.fetch_add(1, SeqCst);
        let delay = self.read_delay_us.load(SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_micros(delay)).await;
        }
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

/// How a [`BrokenStore`] is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Breakage {
    /// It forwards every batch under a fresh identity, so the inner store
    /// cannot recognise a retry and applies it twice.
    AppliesRetriesTwice,
    /// It stands for an engine that drops refused batches: a batch with a
    /// cell of a counter of this name (in any namespace), or one the inner
    /// store refuses for good naming a key, is answered `Applied` without
    /// reaching the store, so its deltas are forgotten.
    DropsRefused(String),
}

/// A deliberately broken store. The suite must fail against it.
#[derive(Debug)]
pub struct BrokenStore<S: DurableStore + ?Sized> {
    inner: Arc<S>,
    breakage: Breakage,
}

impl<S: DurableStore + ?Sized> BrokenStore<S> {
    /// Breaks `inner` as `breakage` says.
    pub fn new(inner: Arc<S>, breakage: Breakage) -> Self {
        BrokenStore { inner, breakage }
    }
}

#[async_trait]
impl<S: DurableStore + ?Sized> DurableStore for BrokenStore<S> {
    fn capabilities(&self) -> StoreCapabilities {
        self.inner.capabilities()
    }
    async fn apply(&self, batch: &Batch) -> Result<ApplyOutcome> {
        match &self.breakage {
            Breakage::AppliesRetriesTwice => self.inner.apply(&Batch { id: BatchId::new(), ..batch.clone() }).await,
            Breakage::DropsRefused(name) => {
                if batch.entries.iter().any(|e| e.cell.key().name() == name) {
                    return Ok(ApplyOutcome::Applied);
                }
                match self.inner.apply(batch).await {
                    Err(e) if !e.is_transient() && e.key().is_some() => Ok(ApplyOutcome::Applied),
                    other => other,
                }
            }
        }
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
