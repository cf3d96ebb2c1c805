//! [`CountingStore`]: a [`DurableStore`] decorator that counts what reaches
//! the store, so write amplification and store requests are measured, not
//! estimated.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use async_trait::async_trait;
use counters::{
    ApplyOutcome, Batch, Cell, CleanReport, DurableStore, Key, ListQuery, Precision, Result, StoreCapabilities,
};
use serde::Serialize;

/// Keys one DynamoDB `BatchGetItem` request reads at most.
const DYNAMO_KEYS_PER_READ: usize = 100;

/// What a [`CountingStore`] saw, at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreCounts {
    /// Calls to `apply` (each one store request: one SQLite transaction,
    /// one DynamoDB `TransactWriteItems`, one Redis script call).
    pub applies: u64,
    /// Applies whose batch was new (the others were found applied already).
    pub applied: u64,
    /// Counter rows written by applied batches (one per dirty counter per batch).
    pub counter_writes: u64,
    /// Time-slice buckets written by applied batches.
    pub slice_writes: u64,
    /// Read requests: `get_many` calls (for DynamoDB, one per 100 keys, as
    /// `BatchGetItem` reads at most 100).
    pub reads: u64,
    /// Keys those reads asked for.
    pub keys_read: u64,
    /// Other calls (list, series, delete, clean).
    pub other: u64,
}

impl StoreCounts {
    /// Every request: applies, reads and other calls.
    pub fn requests(&self) -> u64 {
        self.applies + self.reads + self.other
    }

    /// The counts seen since `earlier`.
    pub fn since(&self, earlier: &StoreCounts) -> StoreCounts {
        StoreCounts {
            applies: self.applies - earlier.applies,
            applied: self.applied - earlier.applied,
            counter_writes: self.counter_writes - earlier.counter_writes,
            slice_writes: self.slice_writes - earlier.slice_writes,
            reads: self.reads - earlier.reads,
            keys_read: self.keys_read - earlier.keys_read,
            other: self.other - earlier.other,
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    applies: AtomicU64,
    applied: AtomicU64,
    counter_writes: AtomicU64,
    slice_writes: AtomicU64,
    reads: AtomicU64,
    keys_read: AtomicU64,
    other: AtomicU64,
}

/// A store that forwards every call to another one and counts requests and
/// rows written.
///
/// An `apply` is one request; each entry of a batch the store applied is one
/// row written (a counter or a time bucket). A batch found applied already
/// (a retry) counts as a request but writes nothing.
#[derive(Debug)]
pub struct CountingStore<S: DurableStore + ?Sized> {
    inner: Arc<S>,
    keys_per_read: usize,
    tally: Tally,
}

impl<S: DurableStore + ?Sized> CountingStore<S> {
    /// Counts the calls made to `inner`.
    pub fn new(inner: Arc<S>) -> Self {
        let keys_per_read = if inner.capabilities().name == "dynamodb" { DYNAMO_KEYS_PER_READ } else { usize::MAX };
        CountingStore { inner, keys_per_read, tally: Tally::default() }
    }

    /// The store counted.
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    /// The counts so far.
    pub fn counts(&self) -> StoreCounts {
        let t = &self.tally;
        StoreCounts {
            applies: t.applies.load(Relaxed),
            applied: t.applied.load(Relaxed),
            counter_writes: t.counter_writes.load(Relaxed),
            slice_writes: t.slice_writes.load(Relaxed),
            reads: t.reads.load(Relaxed),
            keys_read: t.keys_read.load(Relaxed),
            other: t.other.load(Relaxed),
        }
    }
}

#[async_trait]
impl<S: DurableStore + ?Sized> DurableStore for CountingStore<S> {
    fn capabilities(&self) -> StoreCapabilities {
        self.inner.capabilities()
    }

    async fn apply(&self, batch: &Batch) -> Result<ApplyOutcome> {
        self.tally.applies.fetch_add(1, Relaxed);
        let outcome = self.inner.apply(batch).await?;
        if outcome == ApplyOutcome::Applied {
            self.tally.applied.fetch_add(1, Relaxed);
            let counters = batch.entries.iter().filter(|e| matches!(e.cell, Cell::Counter(_))).count() as u64;
            self.tally.counter_writes.fetch_add(counters, Relaxed);
            self.tally.slice_writes.fetch_add(batch.entries.len() as u64 - counters, Relaxed);
        }
        Ok(outcome)
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<i64>>> {
        let requests = keys.len().div_ceil(self.keys_per_read).max(1) as u64;
        self.tally.reads.fetch_add(requests, Relaxed);
        self.tally.keys_read.fetch_add(keys.len() as u64, Relaxed);
        self.inner.get_many(keys).await
    }

    async fn delete(&self, key: &Key) -> Result<bool> {
        self.tally.other.fetch_add(1, Relaxed);
        self.inner.delete(key).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<(Key, i64)>> {
        self.tally.other.fetch_add(1, Relaxed);
        self.inner.list(query).await
    }

    async fn series(&self, key: &Key, precision: Precision, from: i64, to: i64) -> Result<Vec<(i64, i64)>> {
        self.tally.other.fetch_add(1, Relaxed);
        self.inner.series(key, precision, from, to).await
    }

    async fn clean(&self, precision: Precision, cutoff: i64) -> Result<CleanReport> {
        self.tally.other.fetch_add(1, Relaxed);
        self.inner.clean(precision, cutoff).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use counters::{BatchEntry, BatchId, MemoryStore};

    #[tokio::test]
    async fn counts_requests_and_rows_and_not_retries() {
        let store = CountingStore::new(Arc::new(MemoryStore::new()));
        let key = |n: &str| Key::named(n).unwrap();
        let batch = Batch::claimed(
            BatchId::new(),
            vec![
                BatchEntry { cell: Cell::Counter(key("a")), delta: 1 },
                BatchEntry { cell: Cell::Counter(key("b")), delta: 2 },
            ],
        );
        assert_eq!(store.apply(&batch).await.unwrap(), ApplyOutcome::Applied);
        assert_eq!(store.apply(&batch).await.unwrap(), ApplyOutcome::AlreadyApplied);
        store.get_many(&[key("a"), key("b")]).await.unwrap();
        let counts = store.counts();
        assert_eq!((counts.applies, counts.applied, counts.counter_writes), (2, 1, 2));
        assert_eq!((counts.reads, counts.keys_read, counts.requests()), (1, 2, 3));
    }
}
