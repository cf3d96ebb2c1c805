//! The convergence cases: when the cache's idea of a counter drifts from the
//! store (another writer of the store, a second cache over it, a reload
//! that missed a batch in flight), every total the library hands out is
//! durable value plus pending again within one reconciliation, nothing
//! pending is lost or doubled by the correction, and `put V` leaves the
//! store at V. Re-exported by [`cases`](crate::cases), stamped for every
//! combination.

use std::sync::Arc;
use std::time::Duration;

use counter_core::{CacheLayer, Counters, DurableStore, ListQuery, MemoryCache};

use crate::cases::eventually;
use crate::delivery::external_write;
use crate::harness::Backends;

/// Another writer adds to the store: the cached total (with a pending
/// delta, and without) converges, the pending delta is kept, `put` sets
/// exactly what it says.
pub async fn another_writer_of_the_store_converges<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let c = b.counters();
    let (idle, busy) = (b.key("idle"), b.key("busy"));
    c.incr(&idle, 5).await.unwrap();
    c.incr(&busy, 5).await.unwrap();
    c.flush().await.unwrap();
    external_write(b, &idle, 15).await;
    external_write(b, &busy, 15).await;
    c.incr(&busy, 3).await.unwrap(); // pending 3 on a drifted counter
    assert!(c.converge().await.unwrap() >= 2, "both drifted");
    assert_eq!(c.get(&idle).await.unwrap(), 15, "an idle counter converges");
    assert_eq!(c.get(&busy).await.unwrap(), 18, "the pending delta is kept");
    assert_eq!(c.incr(&idle, 1).await.unwrap(), 16, "incr returns the converged total");
    let listed = c.list(&ListQuery::new(&b.namespace, "")).await.unwrap();
    assert_eq!(listed.iter().map(|(k, v)| (k.name(), *v)).collect::<Vec<_>>(), [("busy", 18), ("idle", 16)]);
    c.flush().await.unwrap();
    assert_eq!((b.durable(&idle).await, b.durable(&busy).await), (Some(16), Some(18)), "nothing lost or doubled");
    // The cache believes 16; the store says 116: put sets 50, not 50 + 100.
    external_write(b, &idle, 116).await;
    c.put(&idle, 50).await.unwrap();
    assert_eq!(b.durable(&idle).await, Some(50), "put leaves the store at what it says");
    assert_eq!(c.get(&idle).await.unwrap(), 50);
    c.shutdown().await.unwrap();
}

/// Two caches over one store (a CLI beside a service): each converges on
/// the other's flushed deltas; a put through either sets the store.
pub async fn a_second_cache_over_the_store_converges<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let c = b.counters();
    let other = Counters::builder(Arc::new(MemoryCache::new()), b.store.clone()).background(false).build().unwrap();
    let k = b.key("shared");
    assert_eq!(c.incr(&k, 10).await.unwrap(), 10);
    c.flush().await.unwrap();
    assert_eq!(other.incr(&k, 1).await.unwrap(), 11, "the other cache loads the durable value");
    other.flush().await.unwrap();
    c.converge().await.unwrap();
    assert_eq!(c.incr(&k, 1).await.unwrap(), 12, "this cache sees the other's flushed delta");
    c.flush().await.unwrap();
    other.converge().await.unwrap();
    assert_eq!(other.get(&k).await.unwrap(), 12);
    other.put(&k, 1000).await.unwrap();
    assert_eq!(b.durable(&k).await, Some(1000));
    c.converge().await.unwrap();
    assert_eq!(c.get(&k).await.unwrap(), 1000);
    other.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(b.durable(&k).await, Some(1000));
}

/// A cache loss while a flusher's batch is in flight (its claim records
/// lost with the cache): a reload misses that batch, and when it lands the
/// cached total is corrected at once, by the flusher that landed it.
pub async fn a_reload_that_missed_a_batch_in_flight_converges<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let a = b.counters();
    let k = b.key("inflight");
    a.incr(&k, 100).await.unwrap();
    // A's flush claims the delta, but the store fails: the batch is held by A.
    b.store.fail_next(1_000);
    assert!(a.flush().await.is_err());
    b.cache_faults.lose_everything().await.unwrap();
    // Another process reloads the counter without that batch.
    let other = b.counters();
    assert_eq!(other.incr(&k, 1).await.unwrap(), 1, "the reload sees the durable value, without A's batch");
    b.store.fail_next(0);
    // A's flush lands its held batch (and the other's +1, pending in the
    // same cache).
    a.flush().await.unwrap();
    assert_eq!(b.durable(&k).await, Some(101));
    assert_eq!(other.get(&k).await.unwrap(), 101, "corrected when A's batch landed");
    other.flush().await.unwrap();
    assert_eq!(b.durable(&k).await, Some(101), "exact: nothing lost or doubled");
    assert_eq!(a.get(&k).await.unwrap(), 101);
    a.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
}

/// In the background, a drifted counter converges within the reconcile
/// interval, without any call of this process touching it.
pub async fn drift_converges_in_the_background<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    let c = b.flushing_every(50).build().unwrap();
    let k = b.key("bg");
    c.incr(&k, 7).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || async { b.durable(&k).await == Some(7) }).await);
    external_write(b, &k, 40).await;
    let cell = counter_core::Cell::Counter(k.clone());
    // The interval is 50 ms; the slack is for a loaded test server.
    let converged = eventually(Duration::from_secs(15), || async {
        b.cache.get_many(std::slice::from_ref(&cell)).await.unwrap()[0].map(|v| v.total) == Some(40)
    })
    .await;
    let cached = b.cache.get_many(std::slice::from_ref(&cell)).await.unwrap()[0];
    assert!(converged, "the cached total converges within the reconcile interval: {cached:?}, {:?}", c.metrics());
    assert!(c.metrics().rebased_counters >= 1);
    c.shutdown().await.unwrap();
    assert_eq!(b.durable(&k).await, Some(40));
}
