//! Cases about counters no cache holds yet: their first increments miss,
//! and the misses of one moment share store reads. Re-exported by
//! [`cases`](crate::cases), stamped for every combination.

use std::sync::Arc;
use std::time::Duration;

use counter_core::{CacheLayer, DurableStore, Key};

use crate::delivery::external_write;
use crate::harness::Backends;

/// Counters in the cold wave of [`cold_counters_load_in_few_reads`].
pub const COLD_COUNTERS: usize = 100;

/// Most store reads that wave may take (one per counter without
/// coalescing).
pub const COLD_READS_AT_MOST: u64 = 10;

/// A wave of increments on 100 counters no cache holds, half of them in the
/// store already, from 300 tasks at once against a store 50 ms away: the
/// misses share a few reads instead of one each, and every total is the
/// store's value plus what was counted.
pub async fn cold_counters_load_in_few_reads<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    let keys: Vec<Key> = (0..COLD_COUNTERS).map(|i| b.key(&format!("cold:{i}"))).collect();
    for k in keys.iter().step_by(2) {
        external_write(b, k, 1000).await;
    }
    b.store.set_read_delay(Duration::from_millis(50));
    let c = Arc::new(b.counters());
    let reads_before = b.store.read_calls();
    let tasks: Vec<_> = (0..3 * COLD_COUNTERS)
        .map(|i| {
            let (c, k) = (c.clone(), keys[i % COLD_COUNTERS].clone());
            tokio::spawn(async move { c.incr(&k, 1).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let reads = b.store.read_calls() - reads_before;
    b.store.set_read_delay(Duration::ZERO);
    assert!(reads <= COLD_READS_AT_MOST, "{reads} store reads for {COLD_COUNTERS} cold counters");
    for (i, k) in keys.iter().enumerate() {
        let expected = if i % 2 == 0 { 1003 } else { 3 };
        assert_eq!(c.get(k).await.unwrap(), expected, "{k}");
    }
    c.flush().await.unwrap();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(b.durable(k).await, Some(if i % 2 == 0 { 1003 } else { 3 }), "{k}");
    }
    c.shutdown().await.unwrap();
}

/// A cold wave while the store (50 ms away) is down: every increment fails as
/// unavailable and counts nothing (the group's read fails for all its
/// members at once, none of them retries alone); once the store is back,
/// the same increments count once each.
pub async fn cold_counters_refused_together_while_the_store_is_down<
    C: CacheLayer + ?Sized,
    S: DurableStore + ?Sized,
>(
    b: &Backends<C, S>,
) {
    let keys: Vec<Key> = (0..20).map(|i| b.key(&format!("down:{i}"))).collect();
    let c = Arc::new(b.counters());
    b.store.set_down(true);
    b.store.set_read_delay(Duration::from_millis(50));
    let reads_before = b.store.read_calls();
    let tasks: Vec<_> = keys
        .iter()
        .map(|k| {
            let (c, k) = (c.clone(), k.clone());
            tokio::spawn(async move { c.incr(&k, 1).await })
        })
        .collect();
    for task in tasks {
        let e = task.await.unwrap().expect_err("no store to load from");
        assert_eq!(e.kind(), counter_core::ErrorKind::Unavailable, "{e}");
    }
    let reads = b.store.read_calls() - reads_before;
    b.store.set_down(false);
    b.store.set_read_delay(Duration::ZERO);
    assert!(reads <= COLD_READS_AT_MOST, "{reads} reads: the members of a failed group do not each retry alone");
    for k in &keys {
        assert_eq!(c.incr(k, 1).await.unwrap(), 1, "{k}: the failed increment counted nothing");
    }
    c.flush().await.unwrap();
    for k in &keys {
        assert_eq!(b.durable(k).await, Some(1));
    }
    c.shutdown().await.unwrap();
}
