//! `counters-load list-scale`: a listing of one namespace (what the admin
//! page polls every second, through `/v1/inspect`) costs in proportion to
//! what that namespace holds, not to every dirty counter of the cache.
//!
//! For each noise size N: a fresh cache (its own prefix when shared) with N
//! dirty counters in a namespace `noise` and `shown` dirty counters in a
//! namespace `shown`. Then a few rounds of the listings the admin page
//! makes, timed: `list` top-`limit` by value and by name of `shown`, and
//! `dirty_since` of the counters shown (the age column). Beside them, in the
//! same run, the way listings worked before the index by name: one read of
//! every dirty cell (`dirty(u64::MAX, usize::MAX)`), filtered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use counters::{CacheLayer, Counters, Key, ListQuery, Policy};
use futures_util::stream::{self, TryStreamExt};
use serde::Serialize;

use crate::backends::{self, OpenedCache};

/// Timed rounds of each listing per size.
const ROUNDS: usize = 5;
/// Loads in flight while the counters are installed.
const FILL_CONCURRENCY: usize = 256;

/// One noise size's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListAtScale {
    /// The cache's URL (its run prefix left out).
    pub cache: String,
    /// Dirty counters in other namespaces.
    pub noise_dirty: u64,
    /// Dirty counters in the namespace listed.
    pub shown_dirty: u64,
    /// Most counters a listing returns.
    pub limit: u64,
    /// `list` top-`limit` by value plus `dirty_since` of those shown,
    /// median milliseconds: what `/v1/inspect` asks the library.
    pub inspect_ms: f64,
    /// `list` by name, first `limit`, median milliseconds.
    pub by_name_ms: f64,
    /// Reading every dirty cell and filtering, median milliseconds (how a
    /// listing found pending counters before the index by name).
    pub full_scan_ms: f64,
    /// Time to install the counters, seconds.
    pub fill_s: f64,
}

/// Measures listings of `shown` dirty counters beside each of `noise_sizes`
/// dirty counters elsewhere, on the cache `cache_url` with an SQLite store
/// in a temporary directory.
pub async fn measure(
    cache_url: &str,
    noise_sizes: &[usize],
    shown: usize,
    limit: usize,
) -> Result<Vec<ListAtScale>, String> {
    let mut out = Vec::new();
    for &noise in noise_sizes {
        let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let store = backends::open_store(&backends::sqlite_url_in(temp.path(), "list.sqlite")).await?;
        let prefix = format!("ls{}x", std::process::id());
        let url = backends::with_prefix(cache_url, &format!("{prefix}{noise}"));
        let sizes = Sizes { noise, shown, limit };
        let row = match backends::open_cache(&url).await? {
            OpenedCache::Memory(cache) => one_size(cache, store, sizes).await,
            #[cfg(feature = "redis")]
            OpenedCache::Redis(cache) => {
                let row = one_size(cache.clone(), store, sizes).await;
                use counters::testing::CacheFaults;
                let _ = cache.lose_everything().await;
                row
            }
            #[cfg(feature = "memcache")]
            OpenedCache::Memcache(cache) => one_size(cache, store, sizes).await,
        };
        out.push(ListAtScale { cache: cache_url.to_string(), ..row? });
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy)]
struct Sizes {
    noise: usize,
    shown: usize,
    limit: usize,
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

async fn timed<T, F: std::future::Future<Output = counters::Result<T>>>(
    rounds: usize,
    mut call: impl FnMut() -> F,
) -> Result<f64, String> {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        call().await.map_err(|e| e.to_string())?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(times))
}

async fn one_size<C: CacheLayer>(
    cache: Arc<C>,
    store: Arc<dyn counters::DurableStore>,
    sizes: Sizes,
) -> Result<ListAtScale, String> {
    let key = |ns: &str, i: usize| Key::new(ns, format!("k{i:07}")).map_err(|e| e.to_string());
    let mut keys: Vec<(Key, i64)> = Vec::with_capacity(sizes.noise + sizes.shown);
    for i in 0..sizes.noise {
        keys.push((key("noise", i)?, 1));
    }
    for i in 0..sizes.shown {
        keys.push((key("shown", i)?, 1 + (i as i64 * 7919) % 1000));
    }
    let filled = Instant::now();
    stream::iter(keys.iter().map(Ok::<_, String>))
        .try_for_each_concurrent(FILL_CONCURRENCY, |(k, pending)| {
            let cache = cache.clone();
            async move { cache.load(k, 0, *pending).await.map(|_| ()).map_err(|e| e.to_string()) }
        })
        .await?;
    let fill_s = filled.elapsed().as_secs_f64();
    let policy = Policy::interval(Duration::from_secs(3600)).map_err(|e| e.to_string())?;
    let counters = Counters::builder(cache.clone(), store).policy(policy).background(false).build();
    let counters = counters.map_err(|e| e.to_string())?;
    let top = ListQuery::new("shown", "").top(sizes.limit);
    let by_name = ListQuery::new("shown", "").limit(sizes.limit);
    let shown = counters.list(&top).await.map_err(|e| e.to_string())?;
    if shown.len() != sizes.limit.min(sizes.shown) {
        return Err(format!("the listing returned {} counters, not {}", shown.len(), sizes.limit.min(sizes.shown)));
    }
    let shown: Vec<Key> = shown.into_iter().map(|(k, _)| k).collect();
    let inspect_ms = timed(ROUNDS, || async {
        let listed = counters.list(&top).await?;
        let keys: Vec<Key> = listed.into_iter().map(|(k, _)| k).collect();
        cache.dirty_since(&keys).await
    })
    .await?;
    let by_name_ms = timed(ROUNDS, || counters.list(&by_name)).await?;
    let full_scan_ms = timed(ROUNDS, || async {
        let all = cache.dirty(u64::MAX, usize::MAX).await?;
        let wanted: std::collections::HashSet<&Key> = shown.iter().collect();
        Ok(all.into_iter().filter(|d| d.cell.key().namespace() == "shown" || wanted.contains(d.cell.key())).count())
    })
    .await?;
    // Nothing is flushed: the temporary store and the cache go with the run.
    drop(counters);
    Ok(ListAtScale {
        cache: String::new(),
        noise_dirty: sizes.noise as u64,
        shown_dirty: sizes.shown as u64,
        limit: sizes.limit as u64,
        inspect_ms,
        by_name_ms,
        full_scan_ms,
        fill_s,
    })
}

/// The figures as text, with the full scan's time over the listing's.
pub fn table(rows: &[ListAtScale]) -> String {
    let mut out = format!(
        "{:>12} {:>12} {:>6} {:>14} {:>14} {:>16} {:>16} {:>8}\n",
        "noise dirty", "shown dirty", "limit", "inspect ms", "by name ms", "full scan ms", "scan / inspect", "fill s"
    );
    for r in rows {
        out.push_str(&format!(
            "{:>12} {:>12} {:>6} {:>14.2} {:>14.2} {:>16.2} {:>15.1}x {:>8.1}\n",
            r.noise_dirty,
            r.shown_dirty,
            r.limit,
            r.inspect_ms,
            r.by_name_ms,
            r.full_scan_ms,
            r.full_scan_ms / r.inspect_ms.max(1e-9),
            r.fill_s
        ));
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        out.push_str(&format!(
            "inspect at {} noise / at {} noise: {:.2}x\n",
            last.noise_dirty,
            first.noise_dirty,
            last.inspect_ms / first.inspect_ms.max(1e-9)
        ));
    }
    out
}
