//! `counters-load idempotency`: what idempotency keys cost, beside the same
//! increments without keys in the same run.
//!
//! Method: one handle over the cache (and a memory store: the store is not
//! what is measured), `keys` counters loaded first. Rounds alternate
//! without keys and with a fresh key per increment (A B A B), each
//! `increments` calls from `tasks` tasks; the report gives the median of
//! each and their ratio. Memory: the growth of what the cache holds across
//! the keyed rounds, per key remembered: the process's resident memory for
//! the in-process cache, Redis's `used_memory` for Redis (the records
//! expire after the handle's retention, 10 minutes here).

use std::sync::Arc;
use std::time::{Duration, Instant};

use counters::{CacheLayer, Counters, IncrOptions, Key, MemoryStore};
use serde::Serialize;

use crate::backends::{OpenedCache, open_cache};
use crate::process_memory;

/// One run's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdempotencyReport {
    /// The cache URL.
    pub cache: String,
    /// Increments per round.
    pub increments: usize,
    /// Counters incremented.
    pub keys: usize,
    /// Tasks calling at once.
    pub tasks: usize,
    /// Increments/s without keys, each round.
    pub plain: Vec<f64>,
    /// Increments/s with a fresh key per increment, each round.
    pub keyed: Vec<f64>,
    /// Median keyed over median plain.
    pub ratio: f64,
    /// Bytes the cache holds per remembered key (see the module docs).
    pub bytes_per_key: f64,
    /// Where that figure comes from.
    pub memory_source: &'static str,
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

async fn round<C: CacheLayer + ?Sized>(
    counters: &Arc<Counters<C, MemoryStore>>,
    keys: &Arc<Vec<Key>>,
    increments: usize,
    tasks: usize,
    keyed: Option<&str>,
) -> Result<f64, String> {
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let (counters, keys) = (counters.clone(), keys.clone());
            let keyed = keyed.map(|tag| format!("{tag}-{task}"));
            tokio::spawn(async move {
                for i in (task..increments).step_by(tasks) {
                    let key = &keys[i % keys.len()];
                    let result = match &keyed {
                        None => counters.incr(key, 1).await,
                        Some(tag) => {
                            counters.incr_with(key, 1, &IncrOptions::new().idempotency_key(format!("{tag}-{i}"))).await
                        }
                    };
                    result.map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for handle in handles {
        handle.await.map_err(|e| e.to_string())??;
    }
    Ok(increments as f64 / started.elapsed().as_secs_f64())
}

async fn rounds<C: CacheLayer + ?Sized>(
    cache: Arc<C>,
    increments: usize,
    keys: usize,
    tasks: usize,
    memory: impl AsyncFn() -> u64,
) -> Result<(Vec<f64>, Vec<f64>, f64), String> {
    let counters = Arc::new(
        Counters::builder(cache, Arc::new(MemoryStore::new()))
            .background(false)
            .max_pending(u64::MAX / 2)
            .idempotency_retention(Duration::from_secs(600))
            .build()
            .map_err(|e| e.to_string())?,
    );
    let names: Arc<Vec<Key>> = Arc::new((0..keys).map(|i| Key::named(format!("idem:{i}")).expect("valid")).collect());
    for key in names.iter() {
        counters.incr(key, 0).await.map_err(|e| e.to_string())?;
    }
    let (mut plain, mut keyed, mut grown) = (Vec::new(), Vec::new(), 0u64);
    let run = format!("{:08x}", rand::random::<u32>());
    for r in 0..2 {
        plain.push(round(&counters, &names, increments, tasks, None).await?);
        let before = memory().await;
        keyed.push(round(&counters, &names, increments, tasks, Some(&format!("{run}-{r}"))).await?);
        grown += memory().await.saturating_sub(before);
    }
    let counters = Arc::try_unwrap(counters).map_err(|_| "the handle is still shared".to_string())?;
    counters.shutdown().await.map_err(|e| e.to_string())?;
    Ok((plain, keyed, grown as f64 / (2 * increments) as f64))
}

/// Measures on the cache `url` (memory:// or a Redis URL).
pub async fn measure(url: &str, increments: usize, keys: usize, tasks: usize) -> Result<IdempotencyReport, String> {
    let own = crate::backends::with_prefix(url, &format!("bench-idem-{:08x}:", rand::random::<u32>()));
    let (plain, keyed, bytes_per_key, memory_source) = match open_cache(&own).await? {
        OpenedCache::Memory(cache) => {
            let rss = async || process_memory::read().rss_bytes;
            let (p, k, b) = rounds(cache, increments, keys, tasks, rss).await?;
            (p, k, b, "process RSS")
        }
        #[cfg(feature = "redis")]
        OpenedCache::Redis(cache) => {
            let used = async || crate::redis_raw::used_memory(url).await.unwrap_or(0);
            let (p, k, b) = rounds(cache.clone(), increments, keys, tasks, used).await?;
            use counters::testing::CacheFaults;
            let _ = cache.lose_everything().await;
            (p, k, b, "Redis used_memory")
        }
        #[cfg(feature = "memcache")]
        OpenedCache::Memcache(cache) => {
            let (p, k, b) = rounds(cache, increments, keys, tasks, async || 0).await?;
            (p, k, b, "not measured")
        }
    };
    let ratio = median(&keyed) / median(&plain);
    Ok(IdempotencyReport {
        cache: url.to_string(),
        increments,
        keys,
        tasks,
        plain,
        keyed,
        ratio,
        bytes_per_key,
        memory_source,
    })
}

impl IdempotencyReport {
    /// The report as text.
    pub fn table(&self) -> String {
        let rates = |r: &[f64]| r.iter().map(|v| format!("{:.0}", v)).collect::<Vec<_>>().join(", ");
        format!(
            "idempotency keys on {} ({} increments per round over {} counters, {} tasks):\n  \
             without keys: {}/s (median {:.0})\n  with a key each: {}/s (median {:.0})\n  \
             ratio keyed/plain: {:.2}x\n  bytes per remembered key: {:.1} ({})\n",
            self.cache,
            self.increments,
            self.keys,
            self.tasks,
            rates(&self.plain),
            median(&self.plain),
            rates(&self.keyed),
            median(&self.keyed),
            self.ratio,
            self.bytes_per_key,
            self.memory_source
        )
    }
}
