//! memcached restarted mid-run, on a server of the test's own: calls fail
//! with transient errors while it is down, the client reconnects by itself,
//! at most the pending deltas are lost and nothing durable goes backwards.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backend_memcache::MemcacheCache;
use common::{PrivateMemcached, cache_at, random_prefix};
use counter_core::{Counters, DurableStore, Key, MemoryStore, Policy};

const KEYS: [&str; 4] = ["a", "b", "c", "d"];

fn keys() -> Vec<Key> {
    KEYS.iter().map(|n| Key::new("restart", n).unwrap()).collect()
}

async fn counters_on(url: &str, store: Arc<MemoryStore>) -> Counters<MemcacheCache, MemoryStore> {
    let cache = cache_at(url, &random_prefix()).await;
    Counters::builder(Arc::new(cache), store)
        .policy(Policy::interval(Duration::from_millis(20)).unwrap())
        .tick(Duration::from_millis(10))
        .build()
        .unwrap()
}

async fn durable_sum(store: &MemoryStore) -> i64 {
    store.get_many(&keys()).await.unwrap().into_iter().map(|v| v.unwrap_or(0)).sum()
}

/// Samples the durable values until stopped and fails if any of them ever
/// decreases (every delta here is positive).
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_run_loses_at_most_the_pending_deltas() {
    let Some(mut server) = PrivateMemcached::start() else { return };
    let store = Arc::new(MemoryStore::new());
    let counters = counters_on(&server.url(), store.clone()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = spawn_monotonic_sampler(store.clone(), stop.clone());
    let keys = keys();
    let mut acked = 0i64;
    for i in 0..1000usize {
        counters.incr(&keys[i % keys.len()], 1).await.unwrap();
        acked += 1;
        if i % 200 == 0 {
            tokio::time::sleep(Duration::from_millis(25)).await; // let the flusher run mid-stream
        }
    }
    let durable_before = durable_sum(&store).await;
    let pending_at_kill = acked - durable_before;

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
    counters.shutdown().await.unwrap();
    stop.store(true, Ordering::SeqCst);
    assert!(sampler.await.unwrap() > 10, "the sampler ran");
    let durable = durable_sum(&store).await;
    assert!(errors > 0);
    assert!(durable >= durable_before + acked_after, "what was durable stays, what came after lands");
    assert!(
        durable <= acked + acked_after,
        "no increment counted twice: durable {durable}, acknowledged {}",
        acked + acked_after
    );
    assert!(
        acked + acked_after - durable <= pending_at_kill,
        "lost {} but only {pending_at_kill} were pending at the restart",
        acked + acked_after - durable
    );
    // The cache and the store agree again.
    let again = counters_on(&server.url(), store.clone()).await;
    let totals: i64 = again.get_many(&keys).await.unwrap().into_iter().sum();
    assert_eq!(totals, durable);
    again.shutdown().await.unwrap();
}
