//! Criterion benches of the hot paths: an increment of a cached counter
//! (the cache alone, and through the full `Counters` API), key validation,
//! and a claim of dirty counters.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use counters::{BatchId, CacheLayer, Cell, Counters, Key, MemoryCache, MemoryStore, Policy};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dashmap::DashMap;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
}

fn incr(c: &mut Criterion) {
    let rt = runtime();
    let key = Key::new("clicks", "ad42:us").unwrap();
    let mut group = c.benchmark_group("incr_existing_key");
    group.throughput(Throughput::Elements(1));

    let map: DashMap<String, AtomicI64> = DashMap::new();
    map.insert(key.to_string(), AtomicI64::new(0));
    let text = key.to_string();
    group.bench_function("baseline_dashmap_string_atomic", |b| {
        b.iter(|| map.get(black_box(text.as_str())).unwrap().fetch_add(1, Relaxed))
    });

    let cache = MemoryCache::new();
    rt.block_on(cache.load(&key, 0, 0)).unwrap();
    group.bench_function("memory_cache_incr_now", |b| b.iter(|| cache.incr_now(black_box(&key), 1)));

    let counters = rt.block_on(async {
        let policy = Policy::interval(Duration::from_secs(3600)).unwrap();
        Counters::builder(Arc::new(MemoryCache::new()), Arc::new(MemoryStore::new()))
            .policy(policy)
            .background(false)
            .build()
            .unwrap()
    });
    rt.block_on(counters.incr(&key, 0)).unwrap();
    group.bench_function("counters_incr_memory_cache", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    black_box(counters.incr(black_box(&key), 1).await.unwrap());
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

fn key_validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("key_validation");
    group.throughput(Throughput::Elements(1));
    group.bench_function("typical", |b| b.iter(|| Key::new(black_box("clicks"), black_box("ad42:us:desktop"))));
    let long = "x".repeat(counters::MAX_NAME_BYTES);
    group.bench_function("longest_name", |b| b.iter(|| Key::new(black_box("clicks"), black_box(long.as_str()))));
    group.bench_function("parse_display_form", |b| b.iter(|| Key::parse(black_box("clicks/ad42:us:desktop"))));
    group.bench_function("rejected_control_char", |b| {
        b.iter(|| Key::new(black_box("clicks"), black_box("ad42\r\nflush_all")).is_err())
    });
    group.finish();
}

fn claim(c: &mut Criterion) {
    let rt = runtime();
    const CELLS: usize = 1_000;
    let cache = MemoryCache::new();
    let cells: Vec<Cell> = (0..CELLS).map(|i| Cell::Counter(Key::named(format!("claim:{i:04}")).unwrap())).collect();
    for cell in &cells {
        rt.block_on(cache.load(cell.key(), 0, 0)).unwrap();
    }
    let mut group = c.benchmark_group("memory_cache_claim");
    group.throughput(Throughput::Elements(CELLS as u64));
    group.bench_function("claim_and_ack_1000_dirty", |b| {
        b.iter_batched(
            || {
                for cell in &cells {
                    cache.incr_now(cell.key(), 1).unwrap().unwrap();
                }
                BatchId::new()
            },
            |id| {
                rt.block_on(async {
                    let batch = cache.claim(id, &cells).await.unwrap();
                    assert_eq!(batch.entries.len(), CELLS);
                    cache.ack(id).await.unwrap();
                })
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("list_dirty_1000", |b| {
        for cell in &cells {
            cache.incr_now(cell.key(), 1).unwrap().unwrap();
        }
        b.iter(|| rt.block_on(cache.dirty(u64::MAX, CELLS)).unwrap().len())
    });
    group.finish();
}

/// The group lives in a private module: `criterion_group!` makes a public,
/// undocumented function.
mod group {
    use super::*;
    criterion_group!(benches, incr, key_validation, claim);
}
criterion_main!(group::benches);
