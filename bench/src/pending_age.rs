//! Readings of the oldest pending delta's age, taken from the cache itself
//! while a load runs. The engine's own gauge (`Metrics::oldest_pending_age`)
//! is as of its last flush pass, so between two passes it keeps ageing a
//! cell that was claimed meanwhile; the cache's statistics are live.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use counters::{CacheLayer, now_ms};
use tokio::task::JoinHandle;

/// Time between two readings.
const EVERY: Duration = Duration::from_millis(100);

/// A running sampler: [`stop`](Self::stop) it to get its readings.
pub struct AgeSampler {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<u64>>,
}

impl AgeSampler {
    /// Starts reading `cache`'s oldest dirty cell every 100 ms (0 when
    /// nothing is dirty; a reading the cache cannot answer is skipped).
    pub fn start<C: CacheLayer + ?Sized + 'static>(cache: Arc<C>) -> AgeSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut ages = Vec::new();
            let mut every = tokio::time::interval(EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stopped.load(Relaxed) {
                every.tick().await;
                if let Ok(stats) = cache.stats().await {
                    ages.push(stats.oldest_dirty_ms.map_or(0, |since| now_ms().saturating_sub(since)));
                }
            }
            ages
        });
        AgeSampler { stop, task }
    }

    /// Stops the sampler; its readings in milliseconds, in order.
    pub async fn stop(self) -> Vec<u64> {
        self.stop.store(true, Relaxed);
        self.task.await.unwrap_or_default()
    }
}
