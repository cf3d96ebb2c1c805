//! The engine's numbers as [`metrics`](https://docs.rs/metrics) series
//! (cargo feature `metrics`): the same names, types and help texts the
//! counters HTTP service exports on `/metrics`, so that a service embedding
//! the library exports the same series through whichever exporter it
//! installed (Prometheus, StatsD, ...).
//!
//! Call [`describe`] once, then [`record`] with a fresh
//! [`Counters::metrics`](counter_core::Counters::metrics) reading before
//! each scrape, or on a timer:
//!
//! ```no_run
//! # async fn demo(counters: counters::Counters) {
//! counters::metrics::describe();
//! loop {
//!     counters::metrics::record(&counters.metrics());
//!     tokio::time::sleep(std::time::Duration::from_secs(5)).await;
//! }
//! # }
//! ```
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `counters_increments_total` | counter | increments accepted |
//! | `counters_flushed_batches_total` | counter | batches the store applied |
//! | `counters_flushed_cells_total` | counter | cells those batches wrote |
//! | `counters_flush_retries_total` | counter | store calls retried after a transient error |
//! | `counters_flush_failures_total` | counter | store calls that failed for good |
//! | `counters_recovered_claims_total` | counter | claims of a dead flusher applied by this one |
//! | `counters_backpressure_rejections_total` | counter | increments refused with backpressure |
//! | `counters_store_applies_total` | counter | calls to the store's apply |
//! | `counters_age_bound_exceeded_total` | counter | cells found pending past their age bound |
//! | `counters_pending_cells` | gauge | cells with a pending delta |
//! | `counters_oldest_pending_age_seconds` | gauge | age of the oldest pending delta, 0 if none |
//! | `counters_last_flush_error` | gauge | 1 from a failed store call until one succeeds |
//! | `counters_held_batches` | gauge | batches claimed and not landed in full |
//! | `counters_refused_cells` | gauge | cells the store refused, held |
//! | `counters_open_claims` | gauge | claims in the cache, every process's |
//! | `counters_store_failed` | gauge | 1 while the store fails for good |

use counter_core::MetricsSnapshot;
use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};

/// Describes every series [`record`] sets, in the current recorder.
pub fn describe() {
    describe_counter!("counters_increments_total", "Increments accepted.");
    describe_counter!(
        "counters_flushed_batches_total",
        "Batches the store applied (one found applied already is not counted again)."
    );
    describe_counter!("counters_flushed_cells_total", "Cells (counters and time buckets) written by flushes.");
    describe_counter!("counters_flush_retries_total", "Store calls retried after a transient error.");
    describe_counter!("counters_flush_failures_total", "Store calls that failed for good.");
    describe_counter!("counters_recovered_claims_total", "Claims of a dead flusher applied by this one.");
    describe_counter!("counters_backpressure_rejections_total", "Increments refused with backpressure.");
    describe_counter!("counters_store_applies_total", "Calls to the store's apply.");
    describe_counter!(
        "counters_age_bound_exceeded_total",
        "Cells found pending longer than their policy's age bound plus two flusher ticks: the store is not keeping up."
    );
    describe_gauge!("counters_pending_cells", "Cells with a pending delta at the engine's last reading.");
    describe_gauge!(
        "counters_oldest_pending_age_seconds",
        Unit::Seconds,
        "Age of the oldest pending delta (flush lag); 0 when nothing is pending."
    );
    describe_gauge!(
        "counters_last_flush_error",
        "1 from a failed store call of the flusher until one succeeds again, else 0."
    );
    describe_gauge!(
        "counters_held_batches",
        "Batches claimed and not landed in full (being applied, retried, or holding refused cells)."
    );
    describe_gauge!("counters_refused_cells", "Cells the store refused for good, held and retried on a slow schedule.");
    describe_gauge!("counters_open_claims", "Claims recorded in the cache and not acknowledged, every process's.");
    describe_gauge!("counters_store_failed", "1 while the store fails for good and flushing has stopped, else 0.");
}

/// Sets every series from one reading of the engine, in the current
/// recorder: counters to their absolute totals, gauges to their values.
pub fn record(snapshot: &MetricsSnapshot) {
    counter!("counters_increments_total").absolute(snapshot.increments);
    counter!("counters_flushed_batches_total").absolute(snapshot.batches_flushed);
    counter!("counters_flushed_cells_total").absolute(snapshot.cells_flushed);
    counter!("counters_flush_retries_total").absolute(snapshot.retries);
    counter!("counters_flush_failures_total").absolute(snapshot.failures);
    counter!("counters_recovered_claims_total").absolute(snapshot.recovered_claims);
    counter!("counters_backpressure_rejections_total").absolute(snapshot.backpressure_rejections);
    counter!("counters_store_applies_total").absolute(snapshot.store_applies);
    counter!("counters_age_bound_exceeded_total").absolute(snapshot.age_bound_exceeded);
    gauge!("counters_pending_cells").set(snapshot.pending_cells as f64);
    gauge!("counters_oldest_pending_age_seconds").set(snapshot.oldest_pending_age.map_or(0.0, |age| age.as_secs_f64()));
    gauge!("counters_last_flush_error").set(if snapshot.last_error.is_some() { 1.0 } else { 0.0 });
    gauge!("counters_held_batches").set(snapshot.held_batches as f64);
    gauge!("counters_refused_cells").set(snapshot.refused_cells as f64);
    gauge!("counters_open_claims").set(snapshot.open_claims as f64);
    gauge!("counters_store_failed").set(if snapshot.store_failure.is_some() { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use counter_core::{Counters, Key, MemoryCache, MemoryStore};
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[tokio::test]
    async fn a_reading_becomes_the_services_series() {
        let counters = Counters::builder(Arc::new(MemoryCache::new()), Arc::new(MemoryStore::new()))
            .background(false)
            .build()
            .unwrap();
        let key = Key::new("clicks", "ad42").unwrap();
        counters.incr(&key, 2).await.unwrap();
        counters.incr(&key, 1).await.unwrap();
        counters.flush().await.unwrap();
        counters.incr(&key, 1).await.unwrap();
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            super::describe();
            super::record(&counters.metrics());
        });
        let text = handle.render();
        for line in [
            "# HELP counters_increments_total Increments accepted.",
            "# TYPE counters_increments_total counter",
            "counters_increments_total 3",
            "counters_flushed_batches_total 1",
            "counters_flushed_cells_total 1",
            "# TYPE counters_pending_cells gauge",
            "counters_last_flush_error 0",
            "counters_store_failed 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
        counters.shutdown().await.unwrap();
    }
}
