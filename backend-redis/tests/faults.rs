//! Faults of the real server, on a redis-server of the test's own: a
//! `FLUSHALL` mid-run and a restart mid-run. Increments keep coming while a
//! sampler checks that no durable value ever goes backwards.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backend_redis::RedisCache;
use common::{PrivateRedis, cache_at, random_prefix};
use counter_core::{Counters, DurableStore, Key, MemoryStore, Policy};

const KEYS: [&str; 4] = ["a", "b", "c", "d"];

fn keys() -> Vec<Key> {
    KEYS.iter().map(|n| Key::new("faults", n).unwrap()).collect()
}

async fn counters_on(url: &str, store: Arc<MemoryStore>) -> Counters<RedisCache, MemoryStore> {
    let cache = cache_at(url, &random_prefix(), None).await;
    Counters::builder(Arc::new(cache), store)
        .policy(Policy::interval(Duration::from_millis(20)).unwrap())
        .tick(Duration::from_millis(10))
        .build()
        .unwrap()
}

async fn durable_sum(store: &MemoryStore) -> i64 {
    store.get_many(&keys()).await.unwrap().into_iter().map(|v| v.unwrap_or(0)).sum()
}

/// Samples the durable values every few milliseconds until stopped and
/// fails if any of them ever decreases (every delta here is positive).
fn spawn_monotonic_sampler(store: Arc<MemoryStore>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut last = vec![0i64; KEYS.len()];
        let mut samples = 0;
        while !stop.load(Ordering::SeqCst) {
            let now: Vec<i64> = store.get_many(&keys()).await.unwrap().into_iter().map(|v| v.unwrap_or(0)).collect();
            for (i, (before, after)) in last.iter().zip(&now).enumerate() {
                assert!(after >= before, "durable value of {} went backwards: {before} -> {after}", KEYS[i]);
            }
            last = now;
            samples += 1;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        samples
    })
}

/// A handle on a server, its store, and the sampler watching the store.
struct Run {
    store: Arc<MemoryStore>,
    counters: Counters<RedisCache, MemoryStore>,
    stop: Arc<AtomicBool>,
    sampler: tokio::task::JoinHandle<usize>,
}

impl Run {
    async fn start(url: &str) -> Run {
        let store = Arc::new(MemoryStore::new());
        let counters = counters_on(url, store.clone()).await;
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = spawn_monotonic_sampler(store.clone(), stop.clone());
        Run { store, counters, stop, sampler }
    }

    /// Drains the handle, stops the sampler; the number of samples taken.
    async fn finish(self) -> usize {
        self.counters.shutdown().await.unwrap();
        self.stop.store(true, Ordering::SeqCst);
        self.sampler.await.unwrap()
    }
}

fn flushall(port: u16) {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut conn = client.get_connection().unwrap();
    let _: () = redis::cmd("FLUSHALL").query(&mut conn).unwrap();
}

/// FLUSHALL loses at most what was pending when it ran; durable values never
/// go backwards and later increments build on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_mid_run_loses_at_most_the_pending_deltas() {
    let Some(server) = PrivateRedis::start() else { return };
    let run = Run::start(&server.url()).await;
    let (counters, store) = (&run.counters, run.store.clone());
    let keys = keys();
    let mut acked = 0i64;
    let mut durable_at_flushall = 0;
    let mut acked_at_flushall = 0;
    for i in 0..3000usize {
        if i == 1500 {
            durable_at_flushall = durable_sum(&store).await;
            acked_at_flushall = acked;
            flushall(server.port);
        }
        counters.incr(&keys[i % keys.len()], 1).await.expect("increments keep working");
        acked += 1;
        if i % 200 == 0 {
            tokio::time::sleep(Duration::from_millis(25)).await; // let the flusher run mid-stream
        }
    }
    assert!(run.finish().await > 10, "the sampler ran");
    let durable = durable_sum(&store).await;
    let lost = acked - durable;
    assert!(durable <= acked, "no increment counted twice: {durable} > {acked}");
    assert!(
        lost <= acked_at_flushall - durable_at_flushall,
        "lost {lost}, but only {} were pending at the FLUSHALL",
        acked_at_flushall - durable_at_flushall
    );
    // The cache and the store agree again.
    let again = counters_on(&server.url(), store.clone()).await;
    let totals: i64 = again.get_many(&keys).await.unwrap().into_iter().sum();
    assert_eq!(totals, durable);
    again.shutdown().await.unwrap();
}

/// A restart (without persistence) makes calls fail with transient errors,
/// never permanent ones; the client reconnects by itself, and what reached
/// the store stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_run_is_transient_and_the_client_reconnects() {
    let Some(mut server) = PrivateRedis::start() else { return };
    let run = Run::start(&server.url()).await;
    let (counters, store) = (&run.counters, run.store.clone());
    let keys = keys();
    let mut acked = 0i64;
    for i in 0..1000usize {
        counters.incr(&keys[i % keys.len()], 1).await.unwrap();
        acked += 1;
    }
    counters.flush().await.unwrap();
    let durable_before = durable_sum(&store).await;
    assert_eq!(durable_before, acked);

    server.kill();
    let mut errors = 0;
    let down_until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < down_until {
        let e = counters.incr(&keys[0], 1).await.expect_err("the server is down");
        assert!(e.is_transient(), "an outage is transient, got: {e}");
        errors += 1;
    }
    let e = counters.flush().await.expect_err("nothing can be claimed while the server is down");
    assert!(e.is_transient(), "{e}");
    server.restart();

    // The connection comes back by itself.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut acked_after = 0i64;
    let mut i = 0;
    while acked_after < 1000 {
        match counters.incr(&keys[i % keys.len()], 1).await {
            Ok(_) => acked_after += 1,
            Err(e) => {
                assert!(e.is_transient(), "while reconnecting: {e}");
                assert!(Instant::now() < deadline, "the client did not reconnect: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        i += 1;
    }
    run.finish().await;
    let durable = durable_sum(&store).await;
    assert!(errors > 0);
    assert_eq!(durable, durable_before + acked_after, "before the restart: all of it; after: all of it");
}

/// With the server gone, an increment without an idempotency key fails
/// transiently and says that it may have counted; one with a key, retried
/// once the server is back, counts once (the key's record lives with the
/// counter: a restart without persistence forgets both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_increment_says_it_may_have_counted_and_a_keyed_retry_counts_once() {
    let Some(mut server) = PrivateRedis::start_persistent() else { return };
    let store = Arc::new(MemoryStore::new());
    let counters = counters_on(&server.url(), store.clone()).await;
    let k = Key::new("faults", "unanswered").unwrap();
    let keyed = counter_core::IncrOptions::new().idempotency_key("pay-1");
    assert_eq!(counters.incr_with(&k, 2, &keyed).await.unwrap(), 2);
    server.kill();
    let e = counters.incr(&k, 1).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("may or may not have counted; retry with an idempotency key"), "{e}");
    server.restart();
    let mut answer = None;
    for _ in 0..50 {
        match counters.incr_with(&k, 2, &keyed).await {
            Ok(total) => {
                answer = Some(total);
                break;
            }
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(answer, Some(2), "the persistent server kept the record: the retry answers the first total");
    assert_eq!(counters.get(&k).await.unwrap(), 2);
    counters.shutdown().await.unwrap();
}
