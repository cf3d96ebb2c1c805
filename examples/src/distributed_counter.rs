//! distributed_counter style: atomic increments that return the new total,
//! increments with a default, and "run something every 100 calls".

use std::sync::Arc;

use counters::{CacheLayer, Counters, DurableStore, IncrOptions, Key, Result};

/// Counts 1,000 API calls and runs a job on every 100th. Returns how many
/// times the job ran.
pub async fn run(cache: Arc<dyn CacheLayer>, store: Arc<dyn DurableStore>) -> Result<u32> {
    let counter = Counters::builder(cache, store).build()?;
    let key = Key::named("mykey")?;
    counter.put(&key, 0).await?;
    assert_eq!(counter.incr(&key, 10).await?, 10);
    assert_eq!(counter.incr(&key, 5).await?, 15);
    assert_eq!(counter.decr(&key, 14).await?, 1);
    // With a default: the same as a put, then an increment.
    let with_default = |v| IncrOptions::new().default_value(v);
    assert_eq!(counter.incr_with(&Key::named("nonexistantkey")?, 0, &with_default(0)).await?, 0);
    assert_eq!(counter.incr_with(&Key::named("someotherkey")?, 0, &with_default(10)).await?, 10);
    assert_eq!(counter.incr_with(&Key::named("yetanotherkey")?, 1, &with_default(10)).await?, 11);

    // Every total is returned exactly once (with a shared cache: across all
    // processes), so `== 0` is enough: no modulo corner case to work around.
    let calls = Key::named("api-calls")?;
    counter.put(&calls, 0).await?;
    let mut ran = 0;
    for _ in 0..1_000 {
        if counter.incr(&calls, 1).await? % 100 == 0 {
            ran += 1; // run_function()
        }
    }
    println!("1,000 calls ran the job {ran} times");
    counter.shutdown().await?;
    Ok(ran)
}
