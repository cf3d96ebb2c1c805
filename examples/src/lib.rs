//! The examples' code, one module per usage pattern of the systems this
//! project grew from. Each `run` takes the backends, so the binaries in
//! `examples/` run them on the embedded default and the tests run them on a
//! temporary SQLite file.
#![deny(missing_docs)]

use std::sync::Arc;

use counters::{CacheLayer, DurableStore, Result};

pub mod distributed_counter;
pub mod fast_counters;
pub mod live_count;
pub mod time_series;

/// The embedded default: in-process cache and an SQLite file, named by
/// `COUNTERS_STORE` or `counters-example-NAME.sqlite` in the temp directory.
pub async fn embedded_default(example: &str) -> Result<(Arc<dyn CacheLayer>, Arc<dyn DurableStore>)> {
    let store_url = std::env::var(counters::STORE_ENV).unwrap_or_else(|_| {
        format!("sqlite://{}", std::env::temp_dir().join(format!("counters-example-{example}.sqlite")).display())
    });
    println!("store: {store_url}");
    Ok((counters::cache_from_url("memory://").await?, counters::store_from_url(&store_url).await?))
}
