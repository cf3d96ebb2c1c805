//! gae-fastcounters style: `incr` with an update interval, and counters read
//! in bulk.

use std::sync::Arc;
use std::time::Duration;

use counters::{CacheLayer, Counters, DurableStore, IncrOptions, Key, Policy, Result};

/// Increments a hundred counters, one of them with a shorter update
/// interval, and reads them all with one bulk call. Returns the sum.
pub async fn run(cache: Arc<dyn CacheLayer>, store: Arc<dyn DurableStore>) -> Result<i64> {
    let counters = Counters::builder(cache, store).build()?; // every 10 s by default
    let keys: Vec<Key> = (0..100).map(|i| Key::named(format!("my_counter{i}"))).collect::<Result<_>>()?;
    counters.incr(&keys[0], 1).await?; // increment by one
    counters.incr(&keys[1], -1).await?; // decrement by one
    let often = IncrOptions::new().policy(Policy::interval(Duration::from_secs(5))?);
    counters.incr_with(&keys[2], 1, &often).await?; // persist this one more often
    for (i, key) in keys.iter().enumerate().skip(3) {
        counters.incr(key, i as i64).await?;
    }
    let values = counters.get_counts(&keys).await?;
    let sum: i64 = values.iter().sum();
    println!("100 counters read in bulk, sum {sum}; my_counter9 = {}", values[9]);
    println!("a counter never used is 0: {}", counters.get(&Key::named("my_counter_unused")?).await?);
    counters.shutdown().await?;
    Ok(sum)
}

/// The name the original library used for a bulk read.
trait GetCounts {
    async fn get_counts(&self, keys: &[Key]) -> Result<Vec<i64>>;
}

impl GetCounts for Counters {
    async fn get_counts(&self, keys: &[Key]) -> Result<Vec<i64>> {
        self.get_many(keys).await
    }
}
