//! A reference store kept in memory, for tests and examples.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::batch::{ApplyOutcome, Batch, BatchId};
use crate::cell::{Cell, Precision};
use crate::error::{Error, ErrorKind, Result};
use crate::key::Key;
use crate::store::{CleanReport, DurableStore, ListQuery, StoreCapabilities};

#[derive(Debug, Default)]
struct Data {
    counters: BTreeMap<Key, i64>,
    /// Per counter and precision: bucket start -> count.
    series: BTreeMap<(Key, Precision), BTreeMap<i64, i64>>,
    applied: HashSet<BatchId>,
}

/// A store in memory: **not durable**, everything is gone with the process.
///
/// It is the reference implementation of [`DurableStore`]'s contract
/// (atomic, idempotent batches; deltas only), for tests and examples. Use
/// SQLite for an embedded store that keeps data.
#[derive(Debug, Default)]
pub struct MemoryStore {
    data: Mutex<Data>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of batch identities remembered.
    pub fn applied_batches(&self) -> usize {
        self.data.lock().expect("store lock").applied.len()
    }
}

fn overflow(cell: &Cell) -> Error {
    Error::new(ErrorKind::Overflow, format!("applying the batch would take {cell} out of the i64 range"))
        .with_key(cell.key())
}

#[async_trait]
impl DurableStore for MemoryStore {
    fn capabilities(&self) -> StoreCapabilities {
        let mut caps = StoreCapabilities::new("memory");
        caps.durable = false;
        caps.max_batch = 10_000;
        caps
    }

    async fn apply(&self, batch: &Batch) -> Result<ApplyOutcome> {
        let mut data = self.data.lock().expect("store lock");
        if std::iter::once(&batch.id).chain(&batch.lineage).any(|id| data.applied.contains(id)) {
            return Ok(ApplyOutcome::AlreadyApplied);
        }
        if data.applied.contains(&batch.id.split_marker()) {
            return Ok(ApplyOutcome::Split);
        }
        // Compute every new value first: all of the batch or none of it.
        let mut counters: HashMap<&Key, i64> = HashMap::new();
        let mut buckets: HashMap<(&Key, Precision, i64), i64> = HashMap::new();
        for entry in &batch.entries {
            match &entry.cell {
                Cell::Counter(key) => {
                    let old = match counters.get(key) {
                        Some(v) => *v,
                        None => data.counters.get(key).copied().unwrap_or(0),
                    };
                    let new = old.checked_add(entry.delta).ok_or_else(|| overflow(&entry.cell))?;
                    counters.insert(key, new);
                }
                Cell::Slice(s) => {
                    let id = (&s.key, s.precision, s.start);
                    let old = match buckets.get(&id) {
                        Some(v) => *v,
                        None => data
                            .series
                            .get(&(s.key.clone(), s.precision))
                            .and_then(|b| b.get(&s.start))
                            .copied()
                            .unwrap_or(0),
                    };
                    let new = old.checked_add(entry.delta).ok_or_else(|| overflow(&entry.cell))?;
                    buckets.insert(id, new);
                }
            }
        }
        let counters: Vec<(Key, i64)> = counters.into_iter().map(|(k, v)| (k.clone(), v)).collect();
        let buckets: Vec<((Key, Precision), i64, i64)> =
            buckets.into_iter().map(|((k, p, s), v)| ((k.clone(), p), s, v)).collect();
        for (key, value) in counters {
            data.counters.insert(key, value);
        }
        for (series, start, value) in buckets {
            data.series.entry(series).or_default().insert(start, value);
        }
        data.applied.insert(batch.id);
        data.applied.extend(batch.lineage.iter().map(|id| id.split_marker()));
        Ok(ApplyOutcome::Applied)
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<i64>>> {
        let data = self.data.lock().expect("store lock");
        Ok(keys.iter().map(|k| data.counters.get(k).copied()).collect())
    }

    async fn delete(&self, key: &Key) -> Result<bool> {
        let mut data = self.data.lock().expect("store lock");
        data.series.retain(|(k, _), _| k != key);
        Ok(data.counters.remove(key).is_some())
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<(Key, i64)>> {
        let data = self.data.lock().expect("store lock");
        let mut out: Vec<(Key, i64)> =
            data.counters.iter().filter(|(k, _)| query.matches(k)).map(|(k, v)| (k.clone(), *v)).collect();
        query.finish(&mut out);
        Ok(out)
    }

    async fn series(&self, key: &Key, precision: Precision, from: i64, to: i64) -> Result<Vec<(i64, i64)>> {
        let data = self.data.lock().expect("store lock");
        Ok(data
            .series
            .get(&(key.clone(), precision))
            .map(|b| b.range(from..=to).map(|(s, v)| (*s, *v)).collect())
            .unwrap_or_default())
    }

    async fn clean(&self, precision: Precision, cutoff: i64) -> Result<CleanReport> {
        let mut data = self.data.lock().expect("store lock");
        let mut report = CleanReport::default();
        data.series.retain(|(_, p), buckets| {
            if *p != precision {
                return true;
            }
            let before = buckets.len();
            buckets.retain(|start, _| *start >= cutoff);
            report.buckets_removed += (before - buckets.len()) as u64;
            if buckets.is_empty() {
                report.series_removed += 1;
                false
            } else {
                true
            }
        });
        Ok(report)
    }
}
