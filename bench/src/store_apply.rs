//! The store's own batch-apply rate, measured in the same run as the
//! library: batches of the store's largest size applied back to back, no
//! cache and no engine in between. The flush rate of the write-behind
//! engine is compared with it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use counters::{Batch, BatchEntry, BatchId, Cell, DurableStore, Key};

/// What the batch-apply baseline measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ApplyRate {
    /// Rows written (one per entry of an applied batch).
    pub rows: u64,
    /// Batches applied (one store request each).
    pub batches: u64,
    /// How long it ran.
    pub elapsed: Duration,
}

impl ApplyRate {
    /// Rows per second.
    pub fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Applies batches of `store.capabilities().max_batch` entries (delta 1
/// each) over `keys`, cycling through them, for `duration`. The first round
/// over the keys inserts them, later rounds update them, like a flusher
/// over counters that exist.
pub async fn measure(store: Arc<dyn DurableStore>, keys: &[Key], duration: Duration) -> Result<ApplyRate, String> {
    if keys.is_empty() {
        return Err("no keys to apply".into());
    }
    let size = store.capabilities().max_batch.clamp(1, keys.len());
    let mut rate = ApplyRate::default();
    let mut next = 0;
    let started = Instant::now();
    while started.elapsed() < duration {
        let entries: Vec<BatchEntry> = (0..size)
            .map(|i| BatchEntry { cell: Cell::Counter(keys[(next + i) % keys.len()].clone()), delta: 1 })
            .collect();
        next = (next + size) % keys.len();
        let batch = Batch::claimed(BatchId::new(), entries);
        store.apply(&batch).await.map_err(|e| format!("batch apply: {e}"))?;
        rate.rows += size as u64;
        rate.batches += 1;
    }
    rate.elapsed = started.elapsed();
    Ok(rate)
}
