//! The no-loss cases: every acknowledged increment reaches the store exactly
//! once, or is still held and reported, whatever the store does (refuse a
//! cell, fail for good, hang, lack the protocol) and however the handle is
//! shut down. Re-exported by [`cases`](crate::cases), stamped for every
//! combination.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use counter_core::{
    Batch, BatchEntry, BatchId, CacheLayer, Cell, Counters, DurableStore, ErrorKind, FlushOptions, IncrOptions, Key,
    Policy,
};

use crate::cases::{eventually, settled};
use crate::harness::Backends;

/// Another writer of the store sets `key` to `value` (straight into the
/// inner store, as a delta from what is there).
pub async fn external_write<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
    key: &Key,
    value: i64,
) {
    let now = b.durable(key).await.unwrap_or(0);
    let delta = value.checked_sub(now).expect("test values stay in range");
    let batch = Batch::claimed(BatchId::new(), vec![BatchEntry { cell: Cell::Counter(key.clone()), delta }]);
    b.store.inner().apply(&batch).await.expect("external write");
}

/// Loads `keys` into the cache (an increment by 0 each) and flushes, before
/// a case's fault: a read past a short store timeout (moto answers one
/// request at a time, slowly on a busy machine) is tried again, which is
/// harmless as adding 0 twice counts nothing.
async fn warm<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(c: &Counters<C, S>, keys: &[Key]) {
    for k in keys {
        settled(|| c.incr(k, 0)).await.unwrap();
    }
    settled(|| c.flush()).await.unwrap();
}

/// Shutdown while eight tasks increment: every increment that returned
/// `Ok` is in the store after it, none twice; the others were refused with
/// `ShutDown`.
pub async fn shutdown_with_increments_in_flight_loses_nothing<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let c = Arc::new(b.flushing_every(5).build().unwrap());
    let k = b.key("inflight");
    c.incr(&k, 0).await.unwrap();
    let acknowledged = Arc::new(AtomicU64::new(0));
    let go = Arc::new(AtomicBool::new(true));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (c, k, acknowledged, go) = (c.clone(), k.clone(), acknowledged.clone(), go.clone());
            tokio::spawn(async move {
                // An in-process cache never makes `incr` wait: yield now
                // and then, like a service between requests.
                for i in 0u64.. {
                    if !go.load(SeqCst) {
                        return;
                    }
                    match c.incr(&k, 1).await {
                        Ok(_) => acknowledged.fetch_add(1, SeqCst),
                        Err(e) if e.kind() == ErrorKind::ShutDown => return,
                        Err(e) => panic!("incr failed: {e}"),
                    };
                    if i % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    assert!(eventually(Duration::from_secs(10), || async { acknowledged.load(SeqCst) >= 200 }).await);
    let report = c.shutdown().await.unwrap();
    go.store(false, SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(c.incr(&k, 1).await.unwrap_err().kind(), ErrorKind::ShutDown);
    let acked = acknowledged.load(SeqCst) as i64;
    assert_eq!(b.durable(&k).await, Some(acked), "every acknowledged increment, once ({report:?})");
}

/// A batch with a cell the store refuses for good (an overflow another
/// writer caused) is split: the other cells land, the refused one is held
/// with its error, kept out of the way of other counters, and lands once
/// the store takes it.
pub async fn refused_cell_is_isolated_and_held<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    let c = b.counters();
    let (ov, bystanders) = (b.key("ov"), (0..5).map(|i| b.key(&format!("by{i}"))).collect::<Vec<_>>());
    c.incr(&ov, 10).await.unwrap();
    for (i, k) in bystanders.iter().enumerate() {
        c.incr(k, 4 + i as i64).await.unwrap();
    }
    external_write(b, &ov, i64::MAX - 5).await;
    let e = c.flush().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overflow, "{e}");
    assert_eq!(e.key(), Some(ov.to_string().as_str()), "{e}");
    for (i, k) in bystanders.iter().enumerate() {
        assert_eq!(b.durable(k).await, Some(4 + i as i64), "a refused cell must not hold back {k}");
    }
    let held = c.held_cells();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!((held[0].cell.clone(), held[0].delta), (Cell::Counter(ov.clone()), 10));
    assert_eq!(held[0].error.kind(), ErrorKind::Overflow);
    assert_eq!(c.metrics().refused_cells, 1);
    // Other counters keep flushing while it is held.
    c.incr(&bystanders[0], 1).await.unwrap();
    c.incr(&ov, 6).await.unwrap();
    assert!(c.flush().await.is_err(), "the refused cell is still refused");
    assert_eq!(b.durable(&bystanders[0]).await, Some(5));
    assert_eq!(b.durable(&ov).await, Some(i64::MAX - 5));
    // The other writer brings it down: the held deltas land, once.
    external_write(b, &ov, 100).await;
    c.flush().await.unwrap();
    assert_eq!(b.durable(&ov).await, Some(116));
    assert!(c.held_cells().is_empty());
    c.shutdown().await.unwrap();
    assert_eq!(b.durable(&ov).await, Some(116), "nothing twice");
}

/// A refused cell at shutdown is not dropped: an in-process cache spills it
/// to the journal (the error says so), a shared cache keeps it; the next
/// handle lands it once the store takes it.
pub async fn refused_cell_survives_shutdown<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    let c = b.counters();
    let (ov, other) = (b.key("ov"), b.key("other"));
    c.incr(&ov, 10).await.unwrap();
    c.incr(&other, 4).await.unwrap();
    b.store.refuse_key(&ov, true);
    let e = c.shutdown().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Deferred, "{e}");
    if !b.cache.capabilities().shared {
        assert!(e.to_string().contains("spill journal"), "{e}");
    }
    assert_eq!(b.durable(&other).await, Some(4));
    assert_eq!(c.incr(&ov, 1).await.unwrap_err().kind(), ErrorKind::ShutDown, "closed after spilling");
    if !b.cache.capabilities().shared {
        // The process exits: its cache is gone, the journal is not.
        b.cache_faults.lose_everything().await.unwrap();
    }
    b.store.refuse_key(&ov, false);
    let next = b.counters();
    next.flush().await.unwrap();
    assert_eq!(b.durable(&ov).await, Some(10));
    assert_eq!(b.durable(&other).await, Some(4));
    next.shutdown().await.unwrap();
    let again = b.counters();
    again.flush().await.unwrap();
    assert_eq!(b.durable(&ov).await, Some(10), "a replayed journal lands once");
    again.shutdown().await.unwrap();
}

/// A store that fails for good as a whole (a deleted table) stops the hot
/// retry loop and flushing, is reported, keeps every delta, and takes them
/// all once it is back.
pub async fn permanent_store_failure_stops_retrying_and_keeps_deltas<
    C: CacheLayer + ?Sized,
    S: DurableStore + ?Sized,
>(
    b: &Backends<C, S>,
) {
    let c = b.flushing_every(10).refused_retry(Duration::from_secs(3600)).build().unwrap();
    let (k, j) = (b.key("perm"), b.key("perm2"));
    c.incr(&k, 2).await.unwrap();
    b.store.set_permanent_failure(true);
    assert!(eventually(Duration::from_secs(5), || async { c.store_failure().is_some() }).await);
    let calls = b.store.apply_calls();
    for _ in 0..20 {
        c.incr(&j, 1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resent = b.store.apply_calls() - calls;
    assert!(resent <= 1, "a permanent failure is not retried every pass: {resent} more applies in 200 ms");
    assert!(c.metrics().store_failure.is_some());
    assert!(c.metrics().failures >= 1);
    assert!(c.metrics().last_error.is_some(), "the failure is the last error");
    b.store.set_permanent_failure(false);
    c.flush().await.unwrap();
    assert!(c.store_failure().is_none());
    // An alert on the last error must clear once the store takes batches.
    let after = c.metrics();
    assert_eq!(after.last_error, None, "the store took a batch since; failures stay counted");
    assert!(after.failures >= 1);
    assert_eq!(b.durable(&k).await, Some(2));
    assert_eq!(b.durable(&j).await, Some(20));
    c.shutdown().await.unwrap();
}

/// While the store hangs, everything not durable counts toward the pending
/// bound: increments get backpressure at the bound (not after overshooting
/// it), and when the store answers again every acknowledged one lands once.
pub async fn hung_store_gets_backpressure_at_the_bound<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let bound = 6;
    let c = b.flushing_every(5).max_pending(bound).store_timeout(Duration::from_secs(2)).build().unwrap();
    let keys: Vec<Key> = (0..30).map(|i| b.key(&format!("h{i}"))).collect();
    warm(&c, &keys).await;
    b.store.set_hanging(true);
    let mut acknowledged = vec![0i64; keys.len()];
    let mut refused = 0;
    for round in 0..3 {
        for (i, k) in keys.iter().enumerate() {
            match c.incr(k, 1).await {
                Ok(_) => acknowledged[i] += 1,
                Err(e) if e.kind() == ErrorKind::Backpressure => refused += 1,
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dirty = acknowledged.iter().filter(|n| **n > 0).count() as u64;
    assert!(refused > 0, "no backpressure while the store hangs");
    assert!(dirty <= bound, "{dirty} counters became pending with a bound of {bound}");
    b.store.set_hanging(false);
    c.shutdown().await.unwrap();
    for (k, n) in keys.iter().zip(&acknowledged) {
        assert_eq!(b.durable(k).await.unwrap_or(0), *n, "{k}");
    }
}

/// A store that works but cannot keep up (every apply takes far longer than
/// the policy's interval) is reported, not hidden: the engine counts the
/// cells it found pending past their age bound, and loses nothing.
pub async fn slow_store_is_reported_as_exceeding_the_age_bound<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    // A 20 ms bound, a pass every 10 ms.
    let c = b.flushing_every(20).build().unwrap();
    let keys: Vec<Key> = (0..8).map(|i| b.key(&format!("slow{i}"))).collect();
    warm(&c, &keys).await;
    assert_eq!(c.metrics().age_bound_exceeded, 0, "nothing was pending yet");
    b.store.set_apply_delay(Duration::from_millis(250));
    // While an apply takes 250 ms, the increments that keep coming dirty the
    // counters again: the next pass finds them far past 20 ms and a tick.
    let mut counted = vec![0i64; keys.len()];
    for round in 0..150 {
        for (i, k) in keys.iter().enumerate() {
            c.incr(k, 1).await.unwrap();
            counted[i] += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if round >= 10 && c.metrics().age_bound_exceeded > 0 {
            break;
        }
    }
    let late = c.metrics().age_bound_exceeded;
    assert!(late > 0, "a store 12x slower than the interval went unreported");
    b.store.set_apply_delay(Duration::ZERO);
    c.shutdown().await.unwrap();
    for (k, n) in keys.iter().zip(&counted) {
        assert_eq!(b.durable(k).await.unwrap_or(0), *n, "{k}: a slow store must not lose or double anything");
    }
}

/// A write-through (immediate policy, `put`) that does not complete is a
/// `Deferred` error: counted, with its total, and landing once later.
pub async fn write_through_failure_is_deferred_and_lands_once<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let c = b.counters();
    let (k, p) = (b.key("wt"), b.key("put"));
    let now = IncrOptions::new().policy(Policy::immediate());
    assert_eq!(c.incr_with(&k, 3, &now).await.unwrap(), 3);
    assert_eq!(b.durable(&k).await, Some(3), "written through");
    c.put(&p, 1).await.unwrap();
    b.store.set_down(true);
    let e = c.incr_with(&k, 2, &now).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Deferred, "{e}");
    assert!(!e.is_transient(), "a counted call must not be retried");
    assert_eq!(e.value(), Some(5));
    // A put needs to read the store (it sets the durable value): while the
    // store is down it fails transiently and changes nothing.
    let e = c.put(&p, 70).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(c.get(&p).await.unwrap(), 1);
    assert_eq!(c.get(&k).await.unwrap(), 5, "counted");
    // The store reads, but its batches fail: the put is set, deferred.
    b.store.set_down(false);
    b.store.fail_next(1_000);
    let e = c.put(&p, 70).await.unwrap_err();
    assert_eq!((e.kind(), e.value()), (ErrorKind::Deferred, Some(70)), "{e}");
    assert_eq!(c.get(&p).await.unwrap(), 70);
    b.store.fail_next(0);
    c.flush().await.unwrap();
    assert_eq!(b.durable(&k).await, Some(5));
    assert_eq!(b.durable(&p).await, Some(70));
    c.shutdown().await.unwrap();
    assert_eq!(b.durable(&k).await, Some(5), "once");
}

/// A store that cannot keep the protocol is refused before any write is
/// acknowledged: the write fails for good and counts nothing.
pub async fn store_without_the_protocol_is_refused_before_any_write<
    C: CacheLayer + ?Sized,
    S: DurableStore + ?Sized,
>(
    b: &Backends<C, S>,
) {
    b.store.set_no_transactions(true);
    let c = b.counters();
    let k = b.key("proto");
    let e = c.incr(&k, 5).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent, "{e}");
    assert_eq!(c.put(&k, 1).await.unwrap_err().kind(), ErrorKind::Permanent);
    assert_eq!(b.cache.get_many(&[Cell::Counter(k.clone())]).await.unwrap()[0].map(|v| v.total).unwrap_or(0), 0);
    b.store.set_no_transactions(false);
    drop(c);
    let c = b.counters();
    assert_eq!(c.incr(&k, 1).await.unwrap(), 1, "nothing of the refused write was counted");
    c.shutdown().await.unwrap();
    assert_eq!(b.durable(&k).await, Some(1));
}

/// `flush` reports claims another flusher left in the cache (count and
/// age), and can land them at once instead of after their lease.
pub async fn flush_reports_outstanding_claims_and_recovers_them<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let c = b.builder().claim_lease(Duration::from_secs(3600)).build().unwrap();
    let k = b.key("claimed");
    c.incr(&k, 6).await.unwrap();
    // A flusher claims it and dies.
    let dead = b.cache.claim(BatchId::new(), &[Cell::Counter(k.clone())]).await.unwrap();
    assert_eq!(dead.entries.len(), 1);
    let report = c.flush().await.unwrap();
    assert_eq!(report.outstanding_claims, 1, "{report:?}");
    assert!(report.oldest_claim_age.is_some());
    assert_eq!(b.durable(&k).await, None, "within its lease, another flusher's claim waits");
    let report = c.flush_with(&FlushOptions::new().recover_claims(true)).await.unwrap();
    assert_eq!((report.recovered, report.outstanding_claims), (1, 0), "{report:?}");
    assert_eq!(b.durable(&k).await, Some(6));
    c.shutdown().await.unwrap();
}

/// Without a spill journal, a shutdown an in-process cache could not drain
/// fails and can be called again; a shared cache keeps the deltas and the
/// handle closes.
pub async fn failed_shutdown_can_be_called_again<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    let c = counter_core::Counters::builder(b.cache.clone(), b.store.clone())
        .background(false)
        .claim_lease(Duration::ZERO)
        .store_timeout(Duration::from_secs(5))
        .retry(counter_core::RetryPolicy { attempts: 2, base: Duration::from_millis(1), max: Duration::from_millis(2) })
        .build()
        .unwrap();
    let k = b.key("again");
    c.incr(&k, 9).await.unwrap();
    b.store.set_down(true);
    let e = c.shutdown().await.unwrap_err();
    assert_eq!(c.incr(&k, 1).await.unwrap_err().kind(), ErrorKind::ShutDown, "no call is admitted any more");
    b.store.set_down(false);
    if b.cache.capabilities().shared {
        assert_eq!(e.kind(), ErrorKind::Deferred, "{e}");
        let next = b.counters();
        next.flush().await.unwrap();
        next.shutdown().await.unwrap();
    } else {
        assert!(e.is_transient(), "{e}");
        c.shutdown().await.unwrap();
        assert_eq!(c.shutdown().await.unwrap_err().kind(), ErrorKind::ShutDown);
    }
    assert_eq!(b.durable(&k).await, Some(9));
}
