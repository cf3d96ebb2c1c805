//! The behavioural cases. Each is a plain `pub async fn` over the backends
//! under test; [`conformance_suite!`](crate::conformance_suite) stamps every
//! one of them for a combination, through the concrete types and through
//! `dyn`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use counter_core::testing::CachePart;
use counter_core::{
    BackpressureMode, Batch, BatchId, CacheLayer, Cell, DurableStore, ErrorKind, Family, IncrOptions, Key, ListQuery,
    Policy, TimeSlices, epoch_secs,
};

use crate::harness::Backends;

pub use crate::cancelled::*;
pub use crate::cold::*;
pub use crate::convergence::*;
pub use crate::delivery::*;
pub use crate::hostile::*;
pub use crate::idempotency::*;
pub use crate::leases::*;
pub use crate::listing::*;
pub use crate::refusals::*;

/// Runs `call` until it succeeds or fails other than transiently, at most
/// ten times, 100 ms apart: with every fault healed, a slow answer of a
/// real server (past the short store timeout of a case's handle; moto
/// answers one request at a time and slows down on a busy machine) is not
/// a failure.
pub(crate) async fn settled<T, F, Fut>(mut call: F) -> counter_core::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = counter_core::Result<T>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(e) if e.is_transient() && attempt < 9 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// Polls `check` until it holds or `limit` passes.
pub(crate) async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `incr` and `decr` return the new total; `get` reads it; a flush makes it
/// durable.
pub async fn incr_returns_new_totals<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    let c = b.counters();
    let k = b.key("clicks:ad42");
    assert_eq!(c.incr(&k, 5).await.unwrap(), 5);
    assert_eq!(c.incr(&k, 1).await.unwrap(), 6);
    assert_eq!(c.decr(&k, 10).await.unwrap(), -4);
    assert_eq!(c.get(&k).await.unwrap(), -4);
    assert_eq!(b.durable(&k).await, None, "nothing is written before a flush under the default policy");
    let report = c.flush().await.unwrap();
    assert_eq!(report.counters, 1);
    assert_eq!(b.durable(&k).await, Some(-4));
    assert_eq!(c.get(&b.key("never-touched")).await.unwrap(), 0);
    c.shutdown().await.unwrap();
}

/// A default value starts a missing counter (the `distributed_counter`
/// semantics) and is ignored for one that exists, in cache or store.
pub async fn default_applies_only_to_missing_counters<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let c = b.counters();
    let (a, z, y) = (b.key("a"), b.key("zero"), b.key("y"));
    assert_eq!(c.incr_with(&z, 0, &IncrOptions::new().default_value(0)).await.unwrap(), 0);
    assert_eq!(c.incr_with(&a, 0, &IncrOptions::new().default_value(10)).await.unwrap(), 10);
    assert_eq!(c.incr_with(&y, 1, &IncrOptions::new().default_value(10)).await.unwrap(), 11);
    assert_eq!(c.incr_with(&y, 1, &IncrOptions::new().default_value(100)).await.unwrap(), 12);
    c.flush().await.unwrap();
    b.cache.remove(&y).await.unwrap();
    assert_eq!(c.incr_with(&y, 1, &IncrOptions::new().default_value(100)).await.unwrap(), 13, "stored counters exist");
    c.flush().await.unwrap();
    assert_eq!(b.durable(&a).await, Some(10));
    assert_eq!(b.durable(&y).await, Some(13));
    c.shutdown().await.unwrap();
}

/// `get_many` answers cached and uncached counters in order.
pub async fn get_many_mixes_cache_and_store<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    let c = b.counters();
    let keys: Vec<Key> = (0..5).map(|i| b.key(&format!("m{i}"))).collect();
    for (i, k) in keys.iter().enumerate() {
        c.incr(k, i as i64 * 10).await.unwrap();
    }
    c.flush().await.unwrap();
    // Evict two of them: their values now come from the store.
    b.cache.remove(&keys[1]).await.unwrap();
    b.cache.remove(&keys[3]).await.unwrap();
    c.incr(&keys[4], 1).await.unwrap();
    let mut asked = keys.clone();
    asked.push(b.key("missing"));
    assert_eq!(c.get_many(&asked).await.unwrap(), vec![0, 10, 20, 30, 41, 0]);
    c.shutdown().await.unwrap();
}

/// `put` sets a value; increments after it add to it; it is written through.
pub async fn put_sets_and_writes_through<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    let c = b.counters();
    let k = b.key("p");
    c.incr(&k, 7).await.unwrap();
    c.put(&k, 100).await.unwrap();
    assert_eq!(b.durable(&k).await, Some(100), "put is written through");
    assert_eq!(c.incr(&k, 1).await.unwrap(), 101);
    c.put(&b.key("fresh"), -3).await.unwrap();
    c.flush().await.unwrap();
    assert_eq!(b.durable(&k).await, Some(101));
    assert_eq!(b.durable(&b.key("fresh")).await, Some(-3));
    c.shutdown().await.unwrap();
}

/// `delete` removes the counter from cache and store, pending delta and
/// time series included.
pub async fn delete_removes_counter_and_series<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    let c = b.counters();
    let k = b.key("d");
    let sliced = IncrOptions::new().time_sliced(None);
    c.incr_with(&k, 3, &sliced).await.unwrap();
    c.flush().await.unwrap();
    c.incr_with(&k, 2, &sliced).await.unwrap();
    assert!(c.delete(&k).await.unwrap());
    assert_eq!(c.get(&k).await.unwrap(), 0);
    c.flush().await.unwrap();
    assert_eq!(b.durable(&k).await, None);
    let now = SystemTime::now();
    assert!(c.series(&k, 1, now - Duration::from_secs(60), now + Duration::from_secs(5)).await.unwrap().is_empty());
    assert!(!c.delete(&b.key("never")).await.unwrap());
    assert_eq!(c.incr(&k, 1).await.unwrap(), 1, "a deleted counter starts again from zero");
    c.shutdown().await.unwrap();
}

/// Listing by namespace and prefix, by name and top-N, includes counters
/// not flushed yet and nothing of other namespaces.
pub async fn list_and_top_n<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    let c = b.counters();
    for (name, v) in [("ads:1", 5), ("ads:2", 50), ("ads:3", 20), ("clicks:1", 99)] {
        c.incr(&b.key(name), v).await.unwrap();
    }
    c.flush().await.unwrap();
    c.incr(&b.key("ads:4"), 30).await.unwrap(); // pending only
    c.incr(&b.key("ads:1"), 100).await.unwrap(); // durable 5 + pending 100
    let other = Key::new(format!("{}-other", b.namespace), "ads:9").unwrap();
    c.incr(&other, 1000).await.unwrap();

    let by_name = c.list(&ListQuery::new(&b.namespace, "ads:")).await.unwrap();
    let names: Vec<(&str, i64)> = by_name.iter().map(|(k, v)| (k.name(), *v)).collect();
    assert_eq!(names, [("ads:1", 105), ("ads:2", 50), ("ads:3", 20), ("ads:4", 30)]);
    let top = c.list(&ListQuery::new(&b.namespace, "ads:").top(2)).await.unwrap();
    let names: Vec<(&str, i64)> = top.iter().map(|(k, v)| (k.name(), *v)).collect();
    assert_eq!(names, [("ads:1", 105), ("ads:2", 50)]);
    let all = c.list(&ListQuery::new(&b.namespace, "")).await.unwrap();
    assert_eq!(all.len(), 5);
    let limited = c.list(&ListQuery::new(&b.namespace, "").limit(2)).await.unwrap();
    assert_eq!(limited.len(), 2);
    c.delete(&other).await.unwrap();
    c.shutdown().await.unwrap();
}

/// Many increments of one counter between two flushes are one store write;
/// many counters go in few batches.
pub async fn flush_coalesces_one_write_per_counter<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let c = b.counters();
    let keys: Vec<Key> = (0..20).map(|i| b.key(&format!("co{i}"))).collect();
    for round in 0..50 {
        for k in &keys {
            c.incr(k, round % 3).await.unwrap();
        }
    }
    let written_before = b.store.cells_written();
    let report = c.flush().await.unwrap();
    assert_eq!(report.counters, 20);
    assert_eq!(b.store.cells_written() - written_before, 20, "one write per dirty counter per flush");
    assert!(report.batches <= 2, "20 counters fit in one or two batches, got {}", report.batches);
    assert_eq!(c.flush().await.unwrap().counters, 0, "nothing left to write");
    for k in &keys {
        assert_eq!(b.durable(k).await, Some(49));
    }
    c.shutdown().await.unwrap();
}

/// The background flusher writes idle counters within their family's age
/// bound without more traffic; families keep their own bounds.
pub async fn interval_policy_flushes_idle_counters<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let fast = Family::new(Policy::interval(Duration::from_millis(50)).unwrap());
    let c = b.builder().background(true).family(&b.namespace, "fast:", fast).build().unwrap();
    let (quick, slow) = (b.key("fast:1"), b.key("slow:1"));
    c.incr(&slow, 2).await.unwrap();
    c.incr(&quick, 3).await.unwrap();
    let flushed = eventually(Duration::from_secs(5), || async { b.durable(&quick).await == Some(3) }).await;
    assert!(flushed, "an idle counter must be flushed within its interval");
    assert_eq!(b.durable(&slow).await, None, "the default family waits for its 10 s bound");
    // The metrics follow the store's answer by a moment.
    let counted = eventually(Duration::from_secs(5), || async {
        let m = c.metrics();
        m.batches_flushed >= 1 && m.cells_flushed >= 1
    })
    .await;
    assert!(counted, "{:?}", c.metrics());
    c.shutdown().await.unwrap();
    assert_eq!(b.durable(&slow).await, Some(2), "shutdown drains everything");
}

/// A batch-size threshold flushes as soon as the pending magnitude reaches
/// it, also when a delta steps over it (no modulo).
pub async fn threshold_policy_flushes_when_reached<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let policy = Policy::interval(Duration::from_secs(3600)).unwrap().with_threshold(10).unwrap();
    let c = b.builder().background(true).policy(policy).build().unwrap();
    let k = b.key("t");
    c.incr(&k, 7).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.durable(&k).await, None, "below the threshold nothing is written");
    c.incr(&k, 5).await.unwrap(); // 12: steps over 10
    assert!(eventually(Duration::from_secs(5), || async { b.durable(&k).await == Some(12) }).await);
    c.decr(&k, 30).await.unwrap(); // pending -30: magnitude counts
    assert!(eventually(Duration::from_secs(5), || async { b.durable(&k).await == Some(-18) }).await);
    c.shutdown().await.unwrap();
}

/// Immediate policy (per family or per call) writes the store before `incr`
/// returns.
pub async fn immediate_policy_writes_through<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    let c = b.builder().family(&b.namespace, "now:", Family::new(Policy::immediate())).build().unwrap();
    let (k, other) = (b.key("now:1"), b.key("later:1"));
    c.incr(&k, 4).await.unwrap();
    assert_eq!(b.durable(&k).await, Some(4));
    c.incr(&other, 1).await.unwrap();
    assert_eq!(b.durable(&other).await, None);
    c.incr_with(&other, 1, &IncrOptions::new().policy(Policy::immediate())).await.unwrap();
    assert_eq!(b.durable(&other).await, Some(2), "a per-call policy overrides the family");
    c.shutdown().await.unwrap();
}

/// Rollup counts into every ancestor of the name.
pub async fn rollup_counts_into_ancestors<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    let c = b.builder().family(&b.namespace, "r:", Family::default().rollup()).build().unwrap();
    c.incr(&b.key("r:ad42:us"), 2).await.unwrap();
    c.incr(&b.key("r:ad42:de"), 3).await.unwrap();
    c.incr_with(&b.key("x:y"), 1, &IncrOptions::new().rollup(true)).await.unwrap();
    c.flush().await.unwrap();
    let got = c.get_many(&[b.key("r:ad42:us"), b.key("r:ad42"), b.key("r"), b.key("x")]).await.unwrap();
    assert_eq!(got, vec![2, 5, 5, 1]);
    assert_eq!(b.durable(&b.key("r:ad42")).await, Some(5));
    c.shutdown().await.unwrap();
}

/// Time-sliced counters count into every precision at the event's time,
/// answer range queries with pending deltas included, and go through the
/// same exactly-once flush; retention removes old buckets and forgets empty
/// series.
pub async fn time_slices_count_query_and_clean<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    let slices = TimeSlices::new(&[1, 60], 120).unwrap();
    let c = b.builder().time_slices(slices).build().unwrap();
    let k = b.key("ts");
    let now = SystemTime::now();
    let t = epoch_secs(now);
    let minute = t.div_euclid(60) * 60;
    let at = |secs_ago: u64| IncrOptions::new().time_sliced(Some(now - Duration::from_secs(secs_ago)));
    c.incr_with(&k, 1, &at(0)).await.unwrap();
    c.incr_with(&k, 2, &at(0)).await.unwrap();
    c.incr_with(&k, 5, &at(2)).await.unwrap();
    c.incr_with(&k, 7, &at(60 * 100)).await.unwrap(); // beyond the 1 s retention, within the 60 s one
    let range = (now - Duration::from_secs(3 * 3600), now + Duration::from_secs(1));
    let secs = c.series(&k, 1, range.0, range.1).await.unwrap();
    assert_eq!(secs, vec![(t - 2, 5), (t, 3)], "pending deltas are visible before a flush");
    c.flush().await.unwrap();
    let secs_durable =
        b.store.inner().series(&k, counter_core::Precision::from_secs(1).unwrap(), t - 10, t).await.unwrap();
    assert_eq!(secs_durable, vec![(t - 2, 5), (t, 3)]);
    let mins = c.series(&k, 60, range.0, range.1).await.unwrap();
    let old = (t - 6000).div_euclid(60) * 60;
    let mut expected = vec![(old, 7)];
    if (t - 2).div_euclid(60) * 60 == minute {
        expected.push((minute, 8));
    } else {
        expected.push(((t - 2).div_euclid(60) * 60, 5));
        expected.push((minute, 3));
    }
    assert_eq!(mins, expected);
    assert_eq!(c.get(&k).await.unwrap(), 15, "the total counts every event");
    assert_eq!(c.series(&k, 7, range.0, range.1).await.unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(c.series(&k, 60, range.1, range.0).await.unwrap_err().kind(), ErrorKind::InvalidInput);

    // Retention: cleaning at a cutoff past the old bucket removes it only.
    let p60 = counter_core::Precision::from_secs(60).unwrap();
    let only_old = b.key("ts-old");
    c.incr_with(&only_old, 1, &at(60 * 100)).await.unwrap();
    c.flush().await.unwrap();
    let report = b.store.inner().clean(p60, old + 60).await.unwrap();
    assert!(report.buckets_removed >= 2, "{report:?}");
    assert!(report.series_removed >= 1, "a series left without buckets is forgotten: {report:?}");
    let mins = c.series(&k, 60, range.0, range.1).await.unwrap();
    assert!(mins.iter().all(|(s, _)| *s > old), "{mins:?}");
    assert!(c.series(&only_old, 60, range.0, range.1).await.unwrap().is_empty());
    c.clean_time_slices().await.unwrap();
    c.shutdown().await.unwrap();
}

/// Bad input gets its typed error and changes nothing.
pub async fn bad_input_changes_nothing<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    for (ns, name) in [
        (b.namespace.clone(), String::new()),
        (b.namespace.clone(), "x".repeat(1025)),
        (b.namespace.clone(), "ctl\u{7}".into()),
        (b.namespace.clone(), "nl\n".into()),
        (format!("{}\u{0}", b.namespace), "ok".into()),
    ] {
        assert_eq!(Key::new(&ns, &name).unwrap_err().kind(), ErrorKind::InvalidKey, "{name:?}");
    }
    let c = b.counters();
    let (hi, lo, other) = (b.key("hi"), b.key("lo"), b.key("other"));
    c.put(&hi, i64::MAX - 1).await.unwrap();
    c.put(&lo, i64::MIN + 1).await.unwrap();
    c.incr(&other, 3).await.unwrap();
    let before = c.get_many(&[hi.clone(), lo.clone(), other.clone()]).await.unwrap();
    let e = c.incr(&hi, 2).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overflow);
    assert_eq!(e.key(), Some(hi.to_string().as_str()));
    assert_eq!(c.decr(&lo, 2).await.unwrap_err().kind(), ErrorKind::Overflow);
    assert_eq!(c.decr(&other, i64::MIN).await.unwrap_err().kind(), ErrorKind::Overflow);
    assert_eq!(c.incr(&lo, i64::MIN).await.unwrap_err().kind(), ErrorKind::Overflow);
    let fresh = b.key("fresh");
    let e = c.incr_with(&fresh, 1, &IncrOptions::new().default_value(i64::MAX)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overflow);
    // An overflow in a rollup ancestor undoes the whole increment.
    c.put(&b.key("roll"), i64::MAX).await.unwrap();
    let e = c.incr_with(&b.key("roll:leaf"), 1, &IncrOptions::new().rollup(true)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overflow);
    assert_eq!(c.get(&b.key("roll:leaf")).await.unwrap(), 0);
    assert_eq!(c.get_many(&[hi.clone(), lo.clone(), other.clone()]).await.unwrap(), before);
    assert_eq!(c.get(&fresh).await.unwrap(), 0);
    c.flush().await.unwrap();
    assert_eq!(b.durable(&hi).await, Some(i64::MAX - 1));
    assert_eq!(b.durable(&lo).await, Some(i64::MIN + 1));
    assert_eq!(b.durable(&other).await, Some(3));
    assert_eq!(b.durable(&b.key("roll:leaf")).await, None);
    assert_eq!(b.durable(&fresh).await, None);
    c.shutdown().await.unwrap();
}

/// Values at both ends of the i64 range go through cache and store exactly.
pub async fn full_i64_range_round_trips<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    let c = b.counters();
    let (max, min) = (b.key("max"), b.key("min"));
    assert_eq!(c.incr(&max, i64::MAX).await.unwrap(), i64::MAX);
    assert_eq!(c.incr(&min, i64::MIN).await.unwrap(), i64::MIN);
    c.flush().await.unwrap();
    assert_eq!(b.durable(&max).await, Some(i64::MAX));
    assert_eq!(b.durable(&min).await, Some(i64::MIN));
    assert_eq!(c.decr(&max, i64::MAX).await.unwrap(), 0);
    assert_eq!(c.incr(&min, i64::MAX).await.unwrap(), -1);
    c.flush().await.unwrap();
    b.cache.remove(&max).await.unwrap();
    assert_eq!(c.get_many(&[max.clone(), min.clone()]).await.unwrap(), vec![0, -1]);
    c.shutdown().await.unwrap();
}

/// A batch whose ack was lost is retried under the same identity and counted
/// once.
pub async fn retried_batch_applies_once<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    let c = b.counters();
    let k = b.key("retry");
    c.incr(&k, 10).await.unwrap();
    b.store.lose_next_acks(1);
    c.flush().await.unwrap();
    assert_eq!(b.durable(&k).await, Some(10), "a retried batch must not apply twice");
    assert!(c.metrics().retries >= 1);
    b.store.fail_next(2);
    c.incr(&k, 5).await.unwrap();
    c.flush().await.unwrap();
    assert_eq!(b.durable(&k).await, Some(15));
    c.shutdown().await.unwrap();
}

/// A flusher that died after claiming (and maybe applying) leaves a claim
/// that another flusher applies exactly once.
pub async fn orphaned_claims_are_recovered_once<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    let c = b.counters();
    let (landed, lost) = (b.key("landed"), b.key("lost"));
    c.incr(&landed, 4).await.unwrap();
    c.incr(&lost, 6).await.unwrap();
    // The dead flusher: claims both, applies the first claim only, acks nothing.
    let first = b.cache.claim(BatchId::new(), &[Cell::Counter(landed.clone())]).await.unwrap();
    let second = b.cache.claim(BatchId::new(), &[Cell::Counter(lost.clone())]).await.unwrap();
    assert_eq!((first.entries.len(), second.entries.len()), (1, 1));
    b.store.apply(&first).await.unwrap();
    drop(c);
    let c = b.counters();
    assert_eq!(c.get(&landed).await.unwrap(), 4);
    let report = c.flush().await.unwrap();
    assert_eq!(report.recovered, 2, "{report:?}");
    assert_eq!(b.durable(&landed).await, Some(4), "a claim that had landed is a no-op");
    assert_eq!(b.durable(&lost).await, Some(6), "a claim that had not landed lands once");
    assert!(b.cache.claims(0).await.unwrap().iter().all(|cl| cl.id != first.id && cl.id != second.id));
    c.shutdown().await.unwrap();
}

/// While the store is down, increments of cached counters keep succeeding,
/// flushes fail transiently and keep every delta; past the pending bound,
/// increments get backpressure; when the store is back, everything lands once.
pub async fn store_outage_keeps_counts_then_backpressure<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let c = b.builder().max_pending(4).build().unwrap();
    let keys: Vec<Key> = (0..4).map(|i| b.key(&format!("o{i}"))).collect();
    for k in &keys {
        c.incr(k, 1).await.unwrap();
    }
    c.flush().await.unwrap();
    b.store.set_down(true);
    for round in 0..3 {
        for k in keys.iter().take(3) {
            assert_eq!(c.incr(k, 1).await.unwrap(), 2 + round);
        }
    }
    let e = c.flush().await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    let e = c.incr(&b.key("cold"), 1).await.unwrap_err();
    assert!(e.is_transient(), "a counter that must be loaded from a down store: {e}");
    c.incr(&keys[3], 1).await.unwrap(); // the 4th pending cell
    assert!(c.flush().await.is_err());
    let m = c.metrics();
    assert!(m.failures >= 2 && m.pending_cells >= 4 && m.oldest_pending_age.is_some(), "{m:?}");
    let e = c.incr(&keys[0], 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backpressure);
    assert!(e.is_transient());
    assert_eq!(c.metrics().backpressure_rejections, 1);
    b.store.set_down(false);
    c.flush().await.unwrap();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(b.durable(k).await, Some(if i < 3 { 4 } else { 2 }));
    }
    c.incr(&keys[0], 1).await.unwrap();
    c.shutdown().await.unwrap();
}

/// With `BackpressureMode::Wait`, an increment over the bound waits for the
/// flusher and succeeds once the store is back.
pub async fn backpressure_can_wait<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    let c = Arc::new(
        b.builder()
            .max_pending(1)
            .background(true)
            .tick(Duration::from_millis(10))
            .policy(Policy::interval(Duration::from_millis(10)).unwrap())
            .backpressure(BackpressureMode::Wait(Duration::from_secs(10)))
            .build()
            .unwrap(),
    );
    let k = b.key("w");
    c.incr(&k, 1).await.unwrap();
    c.flush().await.unwrap();
    b.store.set_down(true);
    c.incr(&k, 1).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || async { c.metrics().pending_cells >= 1 }).await);
    let waiter = tokio::spawn({
        let (c, k) = (c.clone(), k.clone());
        async move { c.incr(&k, 1).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "the increment waits while the store is down");
    b.store.set_down(false);
    assert_eq!(waiter.await.unwrap().unwrap(), 3);
    c.shutdown().await.unwrap();
    assert_eq!(b.durable(&k).await, Some(3));
}

/// Permanent store errors surface at once, without retries, and the deltas
/// are kept.
pub async fn permanent_errors_are_not_retried<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    let c = b.counters();
    let k = b.key("perm");
    c.incr(&k, 2).await.unwrap();
    b.store.set_permanent_failure(true);
    let e = c.flush().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent);
    assert!(!e.is_transient());
    assert_eq!(c.metrics().retries, 0, "permanent errors are not retried");
    b.store.set_permanent_failure(false);
    c.flush().await.unwrap();
    assert_eq!(b.durable(&k).await, Some(2));
    c.shutdown().await.unwrap();
}

/// Losing the cache loses at most the pending deltas, and a durable value
/// never goes backwards or is overwritten by a stale total.
pub async fn cache_loss_never_moves_durable_backwards<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let c = b.counters();
    let k = b.key("loss");
    c.incr(&k, 10).await.unwrap();
    c.flush().await.unwrap();
    c.incr(&k, 5).await.unwrap();
    b.cache_faults.lose_everything().await.unwrap();
    assert_eq!(c.incr(&k, 1).await.unwrap(), 11, "reloaded from the durable 10; the pending 5 is the allowed loss");
    c.flush().await.unwrap();
    assert_eq!(b.durable(&k).await, Some(11));
    for part in [CachePart::Total, CachePart::FlushedMark] {
        c.incr(&k, 3).await.unwrap();
        c.flush().await.unwrap();
        c.incr(&k, 100).await.unwrap();
        b.cache_faults.lose_part(&k, part).await.unwrap();
        let after = c.get(&k).await.unwrap();
        let durable = b.durable(&k).await.unwrap();
        assert!(after == durable || after == durable + 100, "{part:?}: read {after}, durable {durable}");
        c.flush().await.unwrap();
        let now = b.durable(&k).await.unwrap();
        assert!(now >= durable && now <= durable + 100, "{part:?}: durable went from {durable} to {now}");
        assert_eq!(c.get(&k).await.unwrap(), now);
    }
    c.shutdown().await.unwrap();
}

/// Shutdown drains every pending delta, reports it, and closes the handle.
pub async fn shutdown_drains_and_reports<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    let c = b.builder().background(true).build().unwrap();
    for i in 0..7 {
        c.incr_with(&b.key(&format!("s{i}")), 1, &IncrOptions::new().time_sliced(None)).await.unwrap();
    }
    let report = c.shutdown().await.unwrap();
    assert_eq!(report.counters, 7);
    assert!(report.slices >= 7, "{report:?}");
    for i in 0..7 {
        assert_eq!(b.durable(&b.key(&format!("s{i}"))).await, Some(1));
    }
    let e = c.incr(&b.key("s0"), 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ShutDown);
}

/// Concurrent increments from many tasks: every total is returned exactly
/// once, and the durable value is exact, while a fast background flusher
/// runs.
pub async fn concurrent_increments_see_every_total_once<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let c = Arc::new(b.flushing_every(5).build().unwrap());
    let k = b.key("hot");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (c, k) = (c.clone(), k.clone());
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(500);
                for _ in 0..500 {
                    seen.push(c.incr(&k, 1).await.unwrap());
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=4000).collect::<Vec<i64>>());
    c.shutdown().await.unwrap();
    assert_eq!(b.durable(&k).await, Some(4000));
}

/// Two engines flushing the same cache into the same store at once (two
/// flushers racing) never flush a delta twice. For caches that claim
/// `atomic_claim`; a cache that does not promises nothing here.
pub async fn racing_flushers_flush_each_delta_once<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    if !b.cache.capabilities().atomic_claim {
        eprintln!("{}: no atomic claims, so racing flushers are not checked", b.cache.capabilities().name);
        return;
    }
    let one = Arc::new(b.counters());
    let two = Arc::new(b.counters());
    let keys: Vec<Key> = (0..10).map(|i| b.key(&format!("race{i}"))).collect();
    for k in &keys {
        one.incr(k, 0).await.unwrap();
    }
    let writer = {
        let (one, keys) = (one.clone(), keys.clone());
        tokio::spawn(async move {
            for i in 0..2000 {
                one.incr(&keys[i % keys.len()], 1).await.unwrap();
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let flushers: Vec<_> = [one.clone(), two.clone()]
        .into_iter()
        .map(|c| {
            tokio::spawn(async move {
                for _ in 0..50 {
                    c.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    writer.await.unwrap();
    for f in flushers {
        f.await.unwrap();
    }
    one.flush().await.unwrap();
    two.flush().await.unwrap();
    for k in &keys {
        assert_eq!(b.durable(k).await, Some(200), "{k}");
    }
    let (one, two) = (Arc::try_unwrap(one).unwrap(), Arc::try_unwrap(two).unwrap());
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
}

/// The claim protocol at the trait level: a claimed delta is handed out
/// once, acknowledged claims are forgotten, empty claims record nothing.
pub async fn cache_claims_hand_out_each_delta_once<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let k = b.key("claim");
    b.cache.load(&k, 100, 0).await.unwrap();
    b.cache.incr(&k, 5).await.unwrap();
    let cell = Cell::Counter(k.clone());
    let id = BatchId::new();
    let batch: Batch = b.cache.claim(id, &[cell.clone(), cell.clone()]).await.unwrap();
    assert_eq!(batch.entries.len(), 1, "one entry per cell");
    assert_eq!(batch.entries[0].delta, 5);
    assert!(b.cache.claim(BatchId::new(), std::slice::from_ref(&cell)).await.unwrap().is_empty());
    assert!(b.cache.claims(0).await.unwrap().iter().any(|c| c.id == id));
    b.cache.ack(id).await.unwrap();
    assert!(!b.cache.claims(0).await.unwrap().iter().any(|c| c.id == id));
    let v = b.cache.get_many(&[cell]).await.unwrap()[0].unwrap();
    assert_eq!((v.total, v.pending), (105, 0));
    b.cache.remove(&k).await.unwrap();
}
