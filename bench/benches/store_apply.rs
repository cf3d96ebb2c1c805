//! Criterion benches of batch apply per store: rows per second a store
//! takes in one flush batch of its largest size. SQLite and the in-memory
//! store always; Redis and DynamoDB when the `redis` / `dynamo` features are
//! on and `COUNTERS_TEST_REDIS_URL` / `COUNTERS_TEST_DYNAMODB_URL` name a
//! server (`source scripts/services/redis.sh`, `.../dynamodb.sh`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use counters::{Batch, BatchEntry, BatchId, Cell, DurableStore, Key, MemoryStore};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

fn batch(keys: &[Key]) -> Batch {
    Batch::claimed(
        BatchId::new(),
        keys.iter().map(|k| BatchEntry { cell: Cell::Counter(k.clone()), delta: 1 }).collect(),
    )
}

fn keys(prefix: &str, n: usize) -> Vec<Key> {
    (0..n).map(|i| Key::named(format!("{prefix}:{i:05}")).unwrap()).collect()
}

/// Benches applying batches of `size` entries to `store`: updates of
/// existing counters, and (unless `updates_only`) inserts of new ones.
fn bench_store(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: Arc<dyn DurableStore>,
    size: usize,
    updates_only: bool,
) {
    let existing = keys(&format!("apply-{}", std::process::id()), size);
    rt.block_on(store.apply(&batch(&existing))).unwrap();
    let mut group = c.benchmark_group(format!("store_apply/{name}"));
    group.throughput(Throughput::Elements(size as u64));
    if size < 1_000 {
        group.sample_size(10).measurement_time(Duration::from_secs(10));
    }
    group.bench_function(format!("update_{size}_counters"), |b| {
        b.iter_custom(|iters| {
            let batches: Vec<Batch> = (0..iters).map(|_| batch(&existing)).collect();
            rt.block_on(async {
                let started = Instant::now();
                for b in &batches {
                    store.apply(b).await.unwrap();
                }
                started.elapsed()
            })
        })
    });
    if !updates_only {
        let mut round = 0u64;
        group.bench_function(format!("insert_{size}_counters"), |b| {
            b.iter_custom(|iters| {
                let batches: Vec<Batch> = (0..iters)
                    .map(|_| {
                        round += 1;
                        batch(&keys(&format!("new-{}-{round}", std::process::id()), size))
                    })
                    .collect();
                rt.block_on(async {
                    let started = Instant::now();
                    for b in &batches {
                        store.apply(b).await.unwrap();
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

fn stores(c: &mut Criterion) {
    let rt = runtime();
    bench_store(c, &rt, "memory", Arc::new(MemoryStore::new()), 1_000, false);

    let dir = tempfile::tempdir().unwrap();
    let sqlite = rt.block_on(counters::sqlite::SqliteStore::open(dir.path().join("bench.sqlite"))).unwrap();
    bench_store(c, &rt, "sqlite", Arc::new(sqlite), counters::sqlite::MAX_BATCH, false);

    #[cfg(feature = "redis")]
    if let Ok(url) = std::env::var("COUNTERS_TEST_REDIS_URL") {
        let url = format!("{url}?prefix=cbench-apply-{}:", std::process::id());
        let store = rt.block_on(counters::redis::RedisStore::connect(&url)).unwrap();
        bench_store(c, &rt, "redis", Arc::new(store), 1_000, true);
    }

    #[cfg(feature = "dynamo")]
    if let Ok(endpoint) = std::env::var("COUNTERS_TEST_DYNAMODB_URL") {
        let url = format!("dynamodb://cbench-apply?endpoint={endpoint}");
        let store = rt.block_on(counters::dynamo::DynamoStore::connect(&url)).unwrap();
        bench_store(c, &rt, "dynamodb", Arc::new(store), counters::dynamo::MAX_BATCH, true);
    }
}

/// The group lives in a private module: `criterion_group!` makes a public,
/// undocumented function.
mod group {
    use super::*;
    criterion_group!(benches, stores);
}
criterion_main!(group::benches);
