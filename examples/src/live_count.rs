//! Live-Count style: write-behind with a batch size per namespace,
//! hierarchical keys that roll up into their ancestors, and an admin-style
//! listing.

use std::sync::Arc;

use counters::{CacheLayer, Counters, DurableStore, Family, Key, ListQuery, Policy, Result};

/// Counts impressions and clicks of a few ads by country; clicks are written
/// back every 25, impressions every 100 (or every 10 s, whichever first).
/// Returns the top ads by clicks as `(name, clicks)`.
pub async fn run(cache: Arc<dyn CacheLayer>, store: Arc<dyn DurableStore>) -> Result<Vec<(String, i64)>> {
    let counters = Counters::builder(cache, store)
        .family("clicks", "", Family::new(Policy::threshold(25)?).rollup())
        .family("impressions", "", Family::new(Policy::threshold(100)?).rollup())
        .build()?;
    for i in 0..1_000u32 {
        let ad = format!("ad{}", i % 7);
        let country = ["us", "de", "jp"][(i % 3) as usize];
        counters.incr(&Key::new("impressions", format!("{ad}:{country}"))?, 1).await?;
        if i % 4 == 0 {
            counters.incr(&Key::new("clicks", format!("{ad}:{country}"))?, 1).await?;
        }
    }
    let report = counters.shutdown().await?;
    println!("last write-back: {} counters in {} batches", report.counters, report.batches);
    // A fresh handle reads what the store holds.
    let reader = Counters::builder(counters.cache().clone(), counters.store().clone()).background(false).build()?;
    let top: Vec<(String, i64)> = reader
        .list(&ListQuery::new("clicks", "ad").top(20))
        .await?
        .into_iter()
        .filter(|(k, _)| !k.name().contains(':'))
        .map(|(k, v)| (k.name().to_string(), v))
        .take(3)
        .collect();
    for (name, clicks) in &top {
        println!("{name}: {clicks} clicks");
    }
    reader.shutdown().await?;
    Ok(top)
}
