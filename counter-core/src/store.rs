//! The durable store: the source of truth, receiving only deltas, each
//! batch exactly once.

use async_trait::async_trait;

use crate::batch::{ApplyOutcome, Batch};
use crate::cell::Precision;
use crate::error::Result;
use crate::key::Key;

/// What a store backend can do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreCapabilities {
    /// Short name for logs and test names (`memory`, `sqlite`, ...).
    pub name: &'static str,
    /// Data survives a restart of the process (false only for test stores).
    pub durable: bool,
    /// Several processes can use the store at once.
    pub shared: bool,
    /// Most entries worth putting in one batch.
    pub max_batch: usize,
}

impl StoreCapabilities {
    /// Capabilities of a backend named `name`, with conservative defaults.
    pub fn new(name: &'static str) -> Self {
        StoreCapabilities { name, durable: true, shared: false, max_batch: 500 }
    }
}

/// Order of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListOrder {
    /// By name, ascending.
    #[default]
    ByName,
    /// By value, largest first (top-N); ties by name.
    ByValueDesc,
}

/// Which counters to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Namespace to list (empty: the default namespace).
    pub namespace: String,
    /// Only names starting with this.
    pub prefix: String,
    /// Order of the result.
    pub order: ListOrder,
    /// Most entries to return.
    pub limit: usize,
}

impl ListQuery {
    /// Every counter of `namespace` whose name starts with `prefix`, by name,
    /// at most 1,000.
    pub fn new(namespace: impl Into<String>, prefix: impl Into<String>) -> Self {
        ListQuery { namespace: namespace.into(), prefix: prefix.into(), order: ListOrder::ByName, limit: 1_000 }
    }

    /// The `n` largest instead.
    pub fn top(mut self, n: usize) -> Self {
        self.order = ListOrder::ByValueDesc;
        self.limit = n;
        self
    }

    /// At most `n` entries.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = n;
        self
    }

    /// Whether `key` falls in this query.
    pub fn matches(&self, key: &Key) -> bool {
        key.namespace() == self.namespace && key.name().starts_with(&self.prefix)
    }

    /// Sorts and truncates `entries` as this query asks.
    pub fn finish(&self, entries: &mut Vec<(Key, i64)>) {
        match self.order {
            ListOrder::ByName => entries.sort_by(|a, b| a.0.cmp(&b.0)),
            ListOrder::ByValueDesc => entries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0))),
        }
        entries.truncate(self.limit);
    }
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CleanReport {
    /// Buckets deleted.
    pub buckets_removed: u64,
    /// Series forgotten because no bucket was left.
    pub series_removed: u64,
}

/// A durable store backend.
///
/// A store only ever receives deltas (never totals), so no cached total can
/// overwrite a durable value. [`apply`](Self::apply) must be atomic (all of a
/// batch or none of it) and idempotent by [`Batch::id`]: the identities of
/// applied batches are remembered long enough for any retry, and a batch
/// seen before changes nothing.
#[async_trait]
pub trait DurableStore: Send + Sync + std::fmt::Debug + 'static {
    /// What this store can do.
    fn capabilities(&self) -> StoreCapabilities;

    /// Checks that the store can keep the protocol (atomic batches recorded
    /// by identity, the expected key schema). The engine calls it once,
    /// before it acknowledges the first write; an error there refuses every
    /// write. A store that cannot keep the protocol answers a
    /// [`Permanent`](crate::ErrorKind::Permanent) error saying why. The
    /// default does nothing.
    async fn probe(&self) -> Result<()> {
        Ok(())
    }

    /// Applies every delta of `batch` once, atomically: all of it, or (on
    /// any error) nothing.
    ///
    /// With `guards` the batch's identity and those of its
    /// [`lineage`](Batch::lineage), the contract is:
    ///
    /// 1. if any guard was recorded as applied, change nothing and answer
    ///    [`AlreadyApplied`](ApplyOutcome::AlreadyApplied) (the batch, or a
    ///    batch it is part of, landed before);
    /// 2. else if [`id.split_marker()`](crate::BatchId::split_marker) was
    ///    recorded, change nothing and answer [`Split`](ApplyOutcome::Split)
    ///    (a part of it landed; it must never land whole);
    /// 3. else add every delta, record the identity as applied and the split
    ///    marker of every batch of the lineage, in one atomic step, and
    ///    answer [`Applied`](ApplyOutcome::Applied).
    ///
    /// A delta that would take a value out of the i64 range fails the whole
    /// batch with [`Overflow`](crate::ErrorKind::Overflow), naming the key,
    /// and changes nothing; so does any other refusal of one cell, which
    /// should name its key too, so that the engine can split the batch and
    /// land the other cells.
    async fn apply(&self, batch: &Batch) -> Result<ApplyOutcome>;

    /// The durable value of each key, `None` where the store has none.
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<i64>>>;

    /// Deletes a counter and its time series. Returns whether it existed.
    async fn delete(&self, key: &Key) -> Result<bool>;

    /// Counters of a namespace by prefix, by name or top-N by value.
    async fn list(&self, query: &ListQuery) -> Result<Vec<(Key, i64)>>;

    /// `(bucket start, count)` of a time-sliced counter at `precision`, for
    /// buckets starting in `from..=to` (epoch seconds), oldest first.
    async fn series(&self, key: &Key, precision: Precision, from: i64, to: i64) -> Result<Vec<(i64, i64)>>;

    /// Deletes buckets of `precision` that start before `cutoff` (epoch
    /// seconds) and forgets series left without buckets.
    async fn clean(&self, precision: Precision, cutoff: i64) -> Result<CleanReport>;
}
