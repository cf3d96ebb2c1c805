//! Every example runs to completion on a fresh SQLite file and produces the
//! figures its pattern promises.

use std::sync::Arc;

use counters::{CacheLayer, DurableStore, MemoryCache};

async fn fresh(dir: &tempfile::TempDir, name: &str) -> (Arc<dyn CacheLayer>, Arc<dyn DurableStore>) {
    let url = format!("sqlite://{}", dir.path().join(format!("{name}.sqlite")).display());
    (Arc::new(MemoryCache::new()), counters::store_from_url(&url).await.unwrap())
}

#[tokio::test]
async fn live_count_ranks_ads_by_clicks() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, store) = fresh(&dir, "live").await;
    let top = examples::live_count::run(cache, store).await.unwrap();
    // 250 clicks over 7 ads: ad0 gets i = 0, 28, 56, ...: 36 clicks; the rest 36 or 35.
    assert_eq!(top.len(), 3);
    assert!(top.iter().all(|(_, v)| *v == 36 || *v == 35), "{top:?}");
    assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
}

#[tokio::test]
async fn fast_counters_sums_in_bulk() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, store) = fresh(&dir, "fast").await;
    // my_counter0 +1, my_counter1 -1, my_counter2 +1, then counter i gets i.
    let expected: i64 = [1, -1, 1].iter().sum::<i64>() + (3..100).sum::<i64>();
    assert_eq!(examples::fast_counters::run(cache, store).await.unwrap(), expected);
}

#[tokio::test]
async fn time_series_counts_every_hit_once() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, store) = fresh(&dir, "ts").await;
    let per_minute = examples::time_series::run(cache, store).await.unwrap();
    assert_eq!(per_minute.iter().map(|(_, c)| c).sum::<i64>(), 600);
}

#[tokio::test]
async fn distributed_counter_runs_the_job_every_100_calls() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, store) = fresh(&dir, "dist").await;
    assert_eq!(examples::distributed_counter::run(cache, store).await.unwrap(), 10);
}
