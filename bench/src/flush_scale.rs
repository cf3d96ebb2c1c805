//! `counters-load flush-scale`: a flush costs in proportion to the dirty
//! counters, not to all counters held.
//!
//! For each idle size N: an in-process cache holding N clean counters and a
//! counting SQLite store; then, a few rounds of "increment D distinct
//! counters through the API, time `flush()`", reporting the median flush
//! time and how many rows the flush wrote. Flat times across N, and D rows
//! per flush, show the flusher only looks at dirty counters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use counters::{CacheLayer, Counters, DurableStore, Key, MemoryCache, Policy};
use serde::Serialize;

use crate::backends;
use crate::counting_store::CountingStore;

/// Rounds of increment-then-flush per idle size.
const ROUNDS: usize = 7;

/// One idle size's figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FlushAtScale {
    /// Counters held in the cache.
    pub idle_counters: u64,
    /// Counters made dirty before each flush.
    pub dirty_counters: u64,
    /// Median flush time, milliseconds.
    pub flush_ms_median: f64,
    /// Slowest flush, milliseconds.
    pub flush_ms_max: f64,
    /// Counter rows each flush wrote to the store (median).
    pub rows_per_flush: u64,
    /// Store requests per flush (median).
    pub requests_per_flush: u64,
    /// Time to install the idle counters, seconds.
    pub fill_s: f64,
}

/// Measures flushes of `dirty` counters among each of `idle_sizes` counters,
/// with an SQLite store in a temporary directory (or `store` if given).
pub async fn measure(idle_sizes: &[usize], dirty: usize, store: Option<&str>) -> Result<Vec<FlushAtScale>, String> {
    let mut out = Vec::new();
    for &idle in idle_sizes {
        let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let url = store.map_or_else(|| backends::sqlite_url_in(temp.path(), "scale.sqlite"), str::to_string);
        let store = Arc::new(CountingStore::new(backends::open_store(&url).await?));
        out.push(one_size(Arc::new(MemoryCache::new()), store, idle, dirty).await?);
    }
    Ok(out)
}

async fn one_size<C: CacheLayer>(
    cache: Arc<C>,
    store: Arc<CountingStore<dyn DurableStore>>,
    idle: usize,
    dirty: usize,
) -> Result<FlushAtScale, String> {
    let width = idle.saturating_sub(1).max(1).to_string().len();
    let key = |i: usize| Key::named(format!("scale:{i:0width$}")).map_err(|e| e.to_string());
    let filled = Instant::now();
    for i in 0..idle {
        cache.load(&key(i)?, 0, 0).await.map_err(|e| e.to_string())?;
    }
    let fill_s = filled.elapsed().as_secs_f64();
    let policy = Policy::interval(Duration::from_secs(3600)).map_err(|e| e.to_string())?;
    let counters =
        Counters::builder(cache, store.clone()).policy(policy).background(false).build().map_err(|e| e.to_string())?;
    let dirty = dirty.min(idle);
    let stride = (idle / dirty.max(1)).max(1);
    let (mut times, mut rows, mut requests) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for j in 0..dirty {
            let i = (j * stride + round) % idle;
            counters.incr(&key(i)?, 1).await.map_err(|e| e.to_string())?;
        }
        let before = store.counts();
        let started = Instant::now();
        counters.flush().await.map_err(|e| e.to_string())?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        let spent = store.counts().since(&before);
        rows.push(spent.counter_writes);
        requests.push(spent.requests());
    }
    counters.shutdown().await.map_err(|e| e.to_string())?;
    times.sort_by(f64::total_cmp);
    rows.sort_unstable();
    requests.sort_unstable();
    Ok(FlushAtScale {
        idle_counters: idle as u64,
        dirty_counters: dirty as u64,
        flush_ms_median: times[ROUNDS / 2],
        flush_ms_max: times[ROUNDS - 1],
        rows_per_flush: rows[ROUNDS / 2],
        requests_per_flush: requests[ROUNDS / 2],
        fill_s,
    })
}

/// The figures as text.
pub fn table(rows: &[FlushAtScale]) -> String {
    let mut out = format!(
        "{:>14} {:>8} {:>15} {:>12} {:>14} {:>18}\n",
        "idle counters", "dirty", "flush ms (med)", "flush ms max", "rows / flush", "requests / flush"
    );
    for r in rows {
        out.push_str(&format!(
            "{:>14} {:>8} {:>15.2} {:>12.2} {:>14} {:>18}\n",
            r.idle_counters,
            r.dirty_counters,
            r.flush_ms_median,
            r.flush_ms_max,
            r.rows_per_flush,
            r.requests_per_flush
        ));
    }
    out
}
