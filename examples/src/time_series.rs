//! "Redis in Action" style: time-sliced counters at several precisions, a
//! range query, and cleanup of old samples.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use counters::{CacheLayer, Counters, DurableStore, Family, Key, Result, TimeSlices};

/// Counts "site hits" at their own timestamps over the last ten minutes,
/// queries per-minute and per-5-second samples, and cleans old ones.
/// Returns the per-minute series.
pub async fn run(cache: Arc<dyn CacheLayer>, store: Arc<dyn DurableStore>) -> Result<Vec<(i64, i64)>> {
    let counters = Counters::builder(cache, store)
        .time_slices(TimeSlices::default()) // 1 s, 5 s, 1 min, 5 min, 1 h, 5 h, 1 day; 120 samples each
        .family("stats", "", Family::default().time_sliced())
        .build()?;
    let hits = Key::new("stats", "site hits")?;
    let now = SystemTime::now();
    for i in 0..600u64 {
        let at = now - Duration::from_secs(600 - i);
        counters.incr_with(&hits, 1, &counters::IncrOptions::new().time_sliced(Some(at))).await?;
    }
    counters.flush().await?;
    let per_minute = counters.series(&hits, 60, now - Duration::from_secs(3600), now).await?;
    for (start, count) in &per_minute {
        println!("minute starting {start}: {count} hits");
    }
    let per_5s = counters.series(&hits, 5, now - Duration::from_secs(60), now).await?;
    println!("last minute in 5 s samples: {per_5s:?}");
    let cleaned = counters.clean_time_slices().await?;
    println!("cleaner removed {} old samples, forgot {} series", cleaned.buckets_removed, cleaned.series_removed);
    counters.shutdown().await?;
    Ok(per_minute)
}
