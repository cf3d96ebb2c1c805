//! What the load loop drives: the library's `Counters::incr`, and the
//! in-process baselines it is compared with.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use counters::{Batch, BatchEntry, BatchId, CacheLayer, Cell, Counters, DurableStore, Key};
use dashmap::DashMap;

use crate::driver::IncrTarget;

/// The library: `Counters::incr` on a key, the full API with the
/// write-behind engine behind it.
#[derive(Debug)]
pub struct LibraryTarget<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> {
    /// The handle driven.
    pub counters: Counters<C, S>,
    /// The keys, by index.
    pub keys: Vec<Key>,
}

impl<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> IncrTarget for LibraryTarget<C, S> {
    async fn incr(&self, key: usize, delta: i64) -> Result<(), String> {
        match self.counters.incr(&self.keys[key], delta).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Baseline 1, the in-process ceiling: a bare `DashMap<String, AtomicI64>`
/// lookup-and-add on keys inserted beforehand.
#[derive(Debug)]
pub struct DashMapBaseline {
    map: DashMap<String, AtomicI64>,
    keys: Vec<String>,
}

impl DashMapBaseline {
    /// A map holding every key of `names` at 0.
    pub fn new(names: &[String]) -> Self {
        let map = DashMap::new();
        for name in names {
            map.insert(name.clone(), AtomicI64::new(0));
        }
        DashMapBaseline { map, keys: names.to_vec() }
    }

    /// Sum of every value (a check that the increments happened).
    pub fn sum(&self) -> i64 {
        self.map.iter().map(|e| e.value().load(Relaxed)).sum()
    }
}

impl IncrTarget for DashMapBaseline {
    fn incr(&self, key: usize, delta: i64) -> impl Future<Output = Result<(), String>> + Send {
        let outcome = match self.map.get(self.keys[key].as_str()) {
            Some(value) => {
                value.fetch_add(delta, Relaxed);
                Ok(())
            }
            None => Err(format!("{} is not in the map", self.keys[key])),
        };
        std::future::ready(outcome)
    }
}

/// Baseline 2, no write-behind: every increment is its own durable write
/// (one store batch of one delta: one SQLite transaction, one DynamoDB
/// `TransactWriteItems`), the way a plain database counter works.
#[derive(Debug)]
pub struct DirectStoreBaseline<S: DurableStore + ?Sized> {
    store: Arc<S>,
    keys: Vec<Key>,
}

impl<S: DurableStore + ?Sized> DirectStoreBaseline<S> {
    /// Writes increments of `keys` straight to `store`.
    pub fn new(store: Arc<S>, keys: Vec<Key>) -> Self {
        DirectStoreBaseline { store, keys }
    }
}

impl<S: DurableStore + ?Sized> IncrTarget for DirectStoreBaseline<S> {
    async fn incr(&self, key: usize, delta: i64) -> Result<(), String> {
        let entry = BatchEntry { cell: Cell::Counter(self.keys[key].clone()), delta };
        let batch = Batch::claimed(BatchId::new(), vec![entry]);
        self.store.apply(&batch).await.map(|_| ()).map_err(|e| e.to_string())
    }
}
