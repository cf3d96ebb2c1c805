//! `counters-load memory`: bytes per counter in the in-process cache,
//! from the process's resident memory before and after filling it.
//!
//! Method: in a fresh process, read `VmRSS`, install N counters in an empty
//! `MemoryCache` (each key built, handed to the cache, and dropped, so only
//! the cache's copy stays), read `VmRSS` again; the difference over N is the
//! cost of a counter, and that minus the key's own bytes (namespace plus
//! name) is the overhead the target bounds. Then every counter is
//! incremented once, which makes it dirty (queued for the flusher), and
//! read again. RSS counts pages touched, so it includes allocator slack and
//! tables kept at a power-of-two size: a fair "what the process pays".

use counters::{CacheLayer, Cell, Key, MemoryCache};
use serde::Serialize;

use crate::process_memory;

/// Memory of N counters in a `MemoryCache`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MemoryReport {
    /// Counters installed.
    pub counters: u64,
    /// Average key size (namespace + name bytes).
    pub key_bytes: f64,
    /// RSS before, bytes.
    pub rss_empty: u64,
    /// Clean counters (cached, nothing pending).
    pub clean: PerCounter,
    /// The same counters after one increment each (all dirty, queued for the flusher).
    pub dirty: PerCounter,
    /// `size_of::<Key>()`: what a key takes inline (its text is on the heap).
    pub key_struct_bytes: usize,
    /// `size_of::<(Cell, u64)>()`: one item of the cache's dirty queue.
    pub dirty_item_bytes: usize,
}

/// What each counter costs in one state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PerCounter {
    /// RSS growth from the empty cache, bytes.
    pub rss_growth: u64,
    /// RSS growth per counter, bytes.
    pub bytes_per_counter: f64,
    /// The same minus the key's own bytes.
    pub beyond_key: f64,
    /// Time to get there, seconds.
    pub seconds: f64,
}

/// Installs `count` counters named `name_prefix:NNNNNNN` and measures.
pub async fn measure(count: usize) -> Result<MemoryReport, String> {
    let cache = MemoryCache::new();
    let width = count.saturating_sub(1).max(1).to_string().len();
    let name = |i: usize| format!("m:{i:0width$}");
    let key_bytes = name(0).len() as f64;
    let empty = process_memory::read().rss_bytes;
    let per = |rss: u64, seconds: f64| {
        let growth = rss.saturating_sub(empty);
        let per = growth as f64 / count.max(1) as f64;
        PerCounter { rss_growth: growth, bytes_per_counter: per, beyond_key: per - key_bytes, seconds }
    };

    let started = std::time::Instant::now();
    for i in 0..count {
        let key = Key::named(name(i)).map_err(|e| e.to_string())?;
        cache.load(&key, 0, 0).await.map_err(|e| e.to_string())?;
    }
    let clean = per(process_memory::read().rss_bytes, started.elapsed().as_secs_f64());

    let started = std::time::Instant::now();
    for i in 0..count {
        let key = Key::named(name(i)).map_err(|e| e.to_string())?;
        cache.incr(&key, 1).await.map_err(|e| e.to_string())?;
    }
    let dirty = per(process_memory::read().rss_bytes, started.elapsed().as_secs_f64());
    if cache.len() != count {
        return Err(format!("the cache holds {} counters, not {count}", cache.len()));
    }
    Ok(MemoryReport {
        counters: count as u64,
        key_bytes,
        rss_empty: empty,
        clean,
        dirty,
        key_struct_bytes: std::mem::size_of::<Key>(),
        dirty_item_bytes: std::mem::size_of::<(Cell, u64)>(),
    })
}

impl MemoryReport {
    /// The report as text.
    pub fn table(&self) -> String {
        let line = |state: &str, p: &PerCounter| {
            format!(
                "  {state:<8} {:>9.1} bytes/counter, {:>9.1} beyond the key's {} bytes   (RSS +{}, {:.2} s)\n",
                p.bytes_per_counter,
                p.beyond_key,
                self.key_bytes,
                crate::report::mib(p.rss_growth),
                p.seconds
            )
        };
        format!(
            "MemoryCache, {} counters (RSS before: {}):\n{}{}  (a Key is {} bytes inline, a dirty-queue item {})\n",
            self.counters,
            crate::report::mib(self.rss_empty),
            line("clean", &self.clean),
            line("dirty", &self.dirty),
            self.key_struct_bytes,
            self.dirty_item_bytes
        )
    }
}
