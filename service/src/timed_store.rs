//! A store wrapper that times every call into the service's metrics.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use counters::{ApplyOutcome, Batch, CleanReport, DurableStore, Key, ListQuery, Precision, Result, StoreCapabilities};

use crate::metrics::ServiceMetrics;

/// A [`DurableStore`] that forwards every call to `inner` and records its
/// duration and outcome in `counters_store_call_duration_seconds{op,outcome}`.
#[derive(Debug)]
pub struct TimedStore {
    inner: Arc<dyn DurableStore>,
    metrics: Arc<ServiceMetrics>,
}

impl TimedStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn DurableStore>, metrics: Arc<ServiceMetrics>) -> Self {
        TimedStore { inner, metrics }
    }

    fn record<T>(&self, op: &'static str, started: Instant, result: Result<T>) -> Result<T> {
        self.metrics.record_store_call(op, result.is_ok(), started.elapsed());
        result
    }
}

#[async_trait]
impl DurableStore for TimedStore {
    fn capabilities(&self) -> StoreCapabilities {
        self.inner.capabilities()
    }

    async fn apply(&self, batch: &Batch) -> Result<ApplyOutcome> {
        let started = Instant::now();
        let result = self.inner.apply(batch).await;
        self.record("apply", started, result)
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<i64>>> {
        let started = Instant::now();
        let result = self.inner.get_many(keys).await;
        self.record("get_many", started, result)
    }

    async fn delete(&self, key: &Key) -> Result<bool> {
        let started = Instant::now();
        let result = self.inner.delete(key).await;
        self.record("delete", started, result)
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<(Key, i64)>> {
        let started = Instant::now();
        let result = self.inner.list(query).await;
        self.record("list", started, result)
    }

    async fn series(&self, key: &Key, precision: Precision, from: i64, to: i64) -> Result<Vec<(i64, i64)>> {
        let started = Instant::now();
        let result = self.inner.series(key, precision, from, to).await;
        self.record("series", started, result)
    }

    async fn clean(&self, precision: Precision, cutoff: i64) -> Result<CleanReport> {
        let started = Instant::now();
        let result = self.inner.clean(precision, cutoff).await;
        self.record("clean", started, result)
    }
}
