//! Cases about idempotent increments: an increment that carries an
//! idempotency key counts once per counter and key, whatever the retries,
//! races and reloads. Re-exported by [`cases`](crate::cases), stamped for
//! every combination.

use std::sync::Arc;
use std::time::Duration;

use counter_core::{CacheLayer, DurableStore, ErrorKind, IncrOptions, Key};

use crate::harness::Backends;

fn keyed(id: &str) -> IncrOptions {
    IncrOptions::new().idempotency_key(id)
}

/// A retry with the same key and request answers the first total and
/// counts nothing, in the cache and in the store; another key counts; the
/// same key with another delta is a conflict; keys are per counter; a bad
/// key changes nothing; a retention shorter than the retry lets it count.
pub async fn a_retried_keyed_increment_counts_once<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let c = b.counters();
    let (k, other) = (b.key("paid"), b.key("other"));
    c.incr(&k, 10).await.unwrap();
    assert_eq!(c.incr_with(&k, 5, &keyed("order-1")).await.unwrap(), 15);
    // The reply was lost: the caller retries, once, twice.
    for _ in 0..2 {
        assert_eq!(c.incr_with(&k, 5, &keyed("order-1")).await.unwrap(), 15, "a retry answers the first total");
    }
    c.incr(&k, 1).await.unwrap();
    assert_eq!(c.incr_with(&k, 5, &keyed("order-1")).await.unwrap(), 15, "still the first call's answer");
    assert_eq!(c.incr_with(&k, 5, &keyed("order-2")).await.unwrap(), 21, "another key counts");
    let e = c.incr_with(&k, 6, &keyed("order-1")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    let e = c.incr_with(&k, 5, &keyed("order-1").rollup(true)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "other options are another request: {e}");
    assert_eq!(c.incr_with(&other, 5, &keyed("order-1")).await.unwrap(), 5, "keys are per counter");
    for bad in ["", "has space", &"k".repeat(129)] {
        let e = c.incr_with(&k, 5, &keyed(bad)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}: {e}");
    }
    assert_eq!(c.get(&k).await.unwrap(), 21, "conflicts and bad keys counted nothing");
    c.flush().await.unwrap();
    assert_eq!(b.durable(&k).await, Some(21));
    assert_eq!(c.incr_with(&k, 5, &keyed("order-2")).await.unwrap(), 21, "a flush does not forget a key");
    c.shutdown().await.unwrap();

    let short = b.builder().idempotency_retention(Duration::from_secs(1)).build().unwrap();
    assert_eq!(short.incr_with(&other, 1, &keyed("brief")).await.unwrap(), 6);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(short.incr_with(&other, 1, &keyed("brief")).await.unwrap(), 7, "past the retention, it counts again");
    short.shutdown().await.unwrap();
}

/// Many calls with one key at once (a client retrying while its first
/// request is still in flight): every one answers the same total, and the
/// counter moved once; a rollup increment moves its ancestors once too.
pub async fn a_keyed_increment_racing_its_retries_counts_once<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let c = Arc::new(b.counters());
    let k = b.key("race:leaf");
    c.incr(&k, 100).await.unwrap();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let (c, k) = (c.clone(), k.clone());
            tokio::spawn(async move { c.incr_with(&k, 7, &keyed("once").rollup(true)).await.unwrap() })
        })
        .collect();
    let mut totals = Vec::new();
    for call in calls {
        totals.push(call.await.unwrap());
    }
    assert_eq!(totals, vec![107; 8], "every call answers the one increment's total");
    assert_eq!(c.get(&k).await.unwrap(), 107);
    assert_eq!(c.get(&b.key("race")).await.unwrap(), 7, "the ancestor moved once");
    c.flush().await.unwrap();
    assert_eq!(b.durable(&k).await, Some(107));
    Arc::try_unwrap(c).unwrap().shutdown().await.unwrap();
}

/// After the cache lost its data, keyed increments reload the counter from
/// the store and count once again per key (a key the cache forgot with
/// its data is a new key: the window is only as durable as the cache).
pub async fn keyed_increments_count_once_after_a_cache_loss<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let c = b.counters();
    let k: Key = b.key("reloaded");
    assert_eq!(c.incr_with(&k, 3, &keyed("before")).await.unwrap(), 3);
    c.flush().await.unwrap();
    b.cache_faults.lose_everything().await.unwrap();
    assert_eq!(c.incr_with(&k, 4, &keyed("after")).await.unwrap(), 7, "reloaded from the store");
    assert_eq!(c.incr_with(&k, 4, &keyed("after")).await.unwrap(), 7, "and the new key is remembered");
    c.flush().await.unwrap();
    assert_eq!(b.durable(&k).await, Some(7));
    c.shutdown().await.unwrap();
}
