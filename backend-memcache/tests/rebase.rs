//! `CacheLayer::rebase` on memcached: its semantics on one handle, its
//! atomicity against increments and claims of other handles (standing for
//! other processes), near the i64 bounds too, and flushed marks written
//! before offsets existed.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use backend_memcache::{MemcacheCache, MemcacheTarget};
use common::{cache_at, random_prefix, service_url};
use counter_core::{BatchId, CacheIncr, CacheLayer, CachedValue, Cell, DurableStore, ErrorKind, Key, MemoryStore};

fn key(name: &str) -> Key {
    Key::new("rebase", name).unwrap()
}

async fn applied(cache: &MemcacheCache, k: &Key, delta: i64) -> (i64, i128) {
    match cache.incr(k, delta).await.unwrap() {
        CacheIncr::Applied { total, pending } => (total, pending),
        CacheIncr::Missing => panic!("{k} is missing"),
    }
}

async fn value_of(cache: &MemcacheCache, k: &Key) -> Option<(i64, i128)> {
    cache.get_many(&[Cell::Counter(k.clone())]).await.unwrap()[0].map(|CachedValue { total, pending }| (total, pending))
}

/// The flushed mark the cache reports (total minus pending).
async fn mark_of(cache: &MemcacheCache, k: &Key) -> i64 {
    let (total, pending) = value_of(cache, k).await.expect("cached");
    i64::try_from(i128::from(total) - pending).unwrap()
}

async fn claim_all(cache: &MemcacheCache, k: &Key) -> i64 {
    let batch = cache.claim(BatchId::new(), &[Cell::Counter(k.clone())]).await.unwrap();
    let delta = batch.entries.iter().map(|e| e.delta).sum();
    cache.ack(batch.id).await.unwrap();
    delta
}

#[tokio::test]
async fn a_rebase_shifts_total_and_mark_and_leaves_pending_and_claims_alone() {
    let Some(url) = service_url() else { return };
    let prefix = random_prefix();
    let cache = cache_at(&url, &prefix).await;
    let k = key("one");
    cache.load(&k, 10, 0).await.unwrap();
    assert_eq!(applied(&cache, &k, 5).await, (15, 5));

    assert!(cache.rebase(&k, 10, 100).await.unwrap(), "the mark is still 10");
    assert_eq!(value_of(&cache, &k).await, Some((115, 5)), "total and mark shifted, pending unchanged");
    let other = cache_at(&url, &prefix).await;
    assert_eq!(value_of(&other, &k).await, Some((115, 5)), "another process sees the rebased counter");
    assert_eq!(applied(&other, &k, 1).await, (116, 6));
    assert_eq!(applied(&cache, &k, -1).await, (115, 5));

    let batch = cache.claim(BatchId::new(), &[Cell::Counter(k.clone())]).await.unwrap();
    assert_eq!(batch.entries.len(), 1);
    assert_eq!(batch.entries[0].delta, 5, "a claim takes the pending delta, not the shift");
    cache.ack(batch.id).await.unwrap();
    assert_eq!(value_of(&cache, &k).await, Some((115, 0)));

    // A stale mark (a claim since it was read), an absent counter: left alone.
    assert!(!cache.rebase(&k, 110, 100).await.unwrap(), "the mark moved to 115");
    assert!(!cache.rebase(&key("absent"), 0, 1).await.unwrap());
    assert_eq!(value_of(&cache, &key("absent")).await, None, "a rebase loads nothing");
    assert_eq!(value_of(&cache, &k).await, Some((115, 0)));
    assert!(cache.rebase(&k, 115, 0).await.unwrap(), "a shift of 0 is a rebase that changes nothing");

    // Overflow of the total, or of the mark: refused, nothing changed.
    assert_eq!(cache.rebase(&k, 115, i64::MAX).await.unwrap_err().kind(), ErrorKind::Overflow);
    assert_eq!(applied(&cache, &k, -200).await, (-85, -200));
    assert_eq!(cache.rebase(&k, 115, i64::MIN).await.unwrap_err().kind(), ErrorKind::Overflow);
    let e = cache.rebase(&k, 115, i64::MAX - 100).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overflow, "the mark would leave i64, the total would not");
    assert_eq!(value_of(&cache, &k).await, Some((-85, -200)));
    assert_eq!(applied(&cache, &k, 400).await, (315, 200));
    let e = cache.rebase(&k, 115, i64::MAX - 200).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overflow, "the total would leave i64, the mark would not");
    assert_eq!(value_of(&cache, &k).await, Some((315, 200)));
    assert_eq!(claim_all(&cache, &k).await, 200);

    // Near the bounds after a rebase, increments refuse overflow exactly.
    let hi = key("hi");
    cache.load(&hi, 0, 0).await.unwrap();
    assert!(cache.rebase(&hi, 0, i64::MAX - 10).await.unwrap());
    assert_eq!(applied(&cache, &hi, 10).await, (i64::MAX, 10));
    assert_eq!(cache.incr(&hi, 1).await.unwrap_err().kind(), ErrorKind::Overflow);
    assert_eq!(cache.incr(&hi, i64::MAX).await.unwrap_err().kind(), ErrorKind::Overflow, "large delta");
    assert_eq!(value_of(&cache, &hi).await, Some((i64::MAX, 10)), "a refused increment changed nothing");
    assert_eq!(applied(&cache, &hi, i64::MIN).await, (-1, i128::from(i64::MIN) + 10));

    let lo = key("lo");
    cache.load(&lo, 0, 0).await.unwrap();
    assert!(cache.rebase(&lo, 0, i64::MIN + 5).await.unwrap());
    assert_eq!(applied(&cache, &lo, -5).await, (i64::MIN, -5));
    assert_eq!(cache.incr(&lo, -1).await.unwrap_err().kind(), ErrorKind::Overflow);
    assert_eq!(cache.incr(&lo, i64::MIN).await.unwrap_err().kind(), ErrorKind::Overflow, "large delta");
    assert_eq!(value_of(&cache, &lo).await, Some((i64::MIN, -5)));
    assert_eq!(applied(&cache, &lo, i64::MAX).await, (-1, i128::from(i64::MAX) - 5));

    // Stored values far from the reported ones: the reported range is the
    // whole i64 range, whatever the stored total does.
    let far = key("far");
    cache.load(&far, i64::MIN + 10, 0).await.unwrap();
    assert!(cache.rebase(&far, i64::MIN + 10, i64::MAX).await.unwrap());
    assert_eq!(value_of(&cache, &far).await, Some((9, 0)));
    assert_eq!(applied(&cache, &far, -20).await, (-11, -20), "the stored total goes below i64::MIN");
    assert_eq!(applied(&cache, &far, i64::MAX).await, (i64::MAX - 11, i128::from(i64::MAX) - 20));
    assert_eq!(applied(&cache, &far, 11).await, (i64::MAX, i128::from(i64::MAX) - 9));
    assert_eq!(cache.incr(&far, 1).await.unwrap_err().kind(), ErrorKind::Overflow);
    assert_eq!(claim_all(&cache, &far).await, i64::MAX - 9);
    assert_eq!(value_of(&cache, &far).await, Some((i64::MAX, 0)));
    assert!(cache.rebase(&far, i64::MAX, i64::MIN).await.unwrap());
    assert_eq!(value_of(&cache, &far).await, Some((-1, 0)));
    assert_eq!(applied(&other, &far, i64::MIN + 1).await, (i64::MIN, i128::from(i64::MIN) + 1));
    assert_eq!(other.incr(&far, -1).await.unwrap_err().kind(), ErrorKind::Overflow);

    // A set takes a reported total.
    assert_eq!(cache.set(&hi, 42).await.unwrap(), Some(-1));
    assert_eq!(value_of(&cache, &hi).await, Some((42, 42 - (i64::MAX - 10) as i128)));
    // A reload of a lost counter starts a lineage without offset.
    cache.remove(&hi).await.unwrap();
    assert_eq!(cache.load(&hi, 7, 0).await.unwrap(), 7);
    assert_eq!(applied(&cache, &hi, 1).await, (8, 1));
}

/// Two handles on one server and prefix (two processes): increments through
/// both, a claimer that lands what it claims in a store, and the engine's
/// reconcile step, all at once. Every acknowledged increment is claimed
/// exactly once, and the total is the increments plus the rebases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebases_are_atomic_with_increments_and_claims_of_other_processes() {
    let Some(url) = service_url() else { return };
    let prefix = random_prefix();
    let a = Arc::new(cache_at(&url, &prefix).await);
    let b = Arc::new(cache_at(&url, &prefix).await);
    let store = Arc::new(MemoryStore::new());
    let k = key("shared");
    a.load(&k, 0, 0).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicI64::new(0));

    let mut incrementers = Vec::new();
    for i in 0..4u64 {
        let (cache, k, acked) = (if i % 2 == 0 { a.clone() } else { b.clone() }, k.clone(), acked.clone());
        incrementers.push(tokio::spawn(async move {
            for n in 0..300u64 {
                let delta = 1 + ((i + n) % 3) as i64;
                match cache.incr(&k, delta).await.unwrap() {
                    CacheIncr::Applied { .. } => acked.fetch_add(delta, SeqCst),
                    CacheIncr::Missing => panic!("the counter went missing"),
                };
            }
        }));
    }
    let claimer = {
        let (a, b, k, store, stop) = (a.clone(), b.clone(), k.clone(), store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut claimed = 0i64;
            let mut n = 0u64;
            while !stop.load(SeqCst) {
                let cache = if n % 2 == 0 { &a } else { &b };
                n += 1;
                let batch = cache.claim(BatchId::new(), &[Cell::Counter(k.clone())]).await.unwrap();
                if !batch.is_empty() {
                    store.apply(&batch).await.unwrap();
                    claimed += batch.entries.iter().map(|e| e.delta).sum::<i64>();
                }
                cache.ack(batch.id).await.unwrap();
            }
            claimed
        })
    };
    let rebased = Arc::new(AtomicU64::new(0));
    let reconciler = {
        let (a, b, k, stop, rebased) = (a.clone(), b.clone(), k.clone(), stop.clone(), rebased.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(SeqCst) {
                let cache = if n % 2 == 0 { &b } else { &a };
                n += 1;
                let flushed = mark_of(cache, &k).await;
                if !cache.claims_for(std::slice::from_ref(&k)).await.unwrap().is_empty() {
                    continue;
                }
                if cache.rebase(&k, flushed, 1000).await.unwrap() {
                    rebased.fetch_add(1, SeqCst);
                }
            }
        })
    };
    for task in incrementers {
        task.await.unwrap();
    }
    stop.store(true, SeqCst);
    reconciler.await.unwrap();
    let mut claimed = claimer.await.unwrap();
    let batch = a.claim(BatchId::new(), &[Cell::Counter(k.clone())]).await.unwrap();
    if !batch.is_empty() {
        store.apply(&batch).await.unwrap();
        claimed += batch.entries.iter().map(|e| e.delta).sum::<i64>();
    }
    a.ack(batch.id).await.unwrap();

    let (acked, rebased) = (acked.load(SeqCst), rebased.load(SeqCst) as i64);
    assert!(rebased > 0, "some rebases succeeded");
    assert_eq!(claimed, acked, "every acknowledged increment claimed exactly once");
    assert_eq!(store.get_many(std::slice::from_ref(&k)).await.unwrap()[0], Some(acked));
    for cache in [&a, &b] {
        assert_eq!(value_of(cache, &k).await, Some((acked + 1000 * rebased, 0)), "increments plus rebases");
    }
    assert!(a.claims(0).await.unwrap().is_empty(), "no claim left open");
}

/// Rebases racing increments that the shifted total could not hold: a
/// reconciler keeps moving the counter next to one bound or the other while
/// increments of ±2^62 (added with compare-and-swap, so refused before they
/// are written, never wrapped) come from two handles, and it claims what is
/// pending. No total ever leaves i64: each increment is refused exactly
/// when the total it lands on (shifted or not) would, or the rebase is, and
/// the accounts stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebases_next_to_the_bounds_never_let_a_total_leave_i64() {
    let Some(url) = service_url() else { return };
    let prefix = random_prefix();
    let a = Arc::new(cache_at(&url, &prefix).await);
    let b = Arc::new(cache_at(&url, &prefix).await);
    let k = key("edge");
    a.load(&k, 0, 0).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(0i128));
    let refused = Arc::new(AtomicU64::new(0));
    const STEP: i64 = 1 << 62;

    let mut incrementers = Vec::new();
    for i in 0..4u64 {
        let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (k, acked, refused, stop) = (k.clone(), acked.clone(), refused.clone(), stop.clone());
        incrementers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(SeqCst) {
                n += 1;
                let delta = if (n + i) % 2 == 0 { STEP } else { -STEP };
                match cache.incr(&k, delta).await {
                    Ok(CacheIncr::Applied { .. }) => *acked.lock().unwrap() += i128::from(delta),
                    Ok(CacheIncr::Missing) => panic!("the counter went missing"),
                    Err(e) if e.kind() == ErrorKind::Overflow => {
                        refused.fetch_add(1, SeqCst);
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    let reconciler = {
        let (a, b, k, stop) = (a.clone(), b.clone(), k.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut done, mut shifted, mut claimed) = (0u64, 0i128, 0i128);
            for n in 1..=300u64 {
                let cache = if n % 2 == 0 { &b } else { &a };
                claimed += i128::from(claim_all(cache, &k).await);
                let (total, pending) = value_of(cache, &k).await.unwrap();
                let flushed = i64::try_from(i128::from(total) - pending).unwrap();
                // Just within one step of a bound: the next step that way
                // overflows.
                let target = if n % 2 == 1 { i64::MAX - STEP + 5 } else { i64::MIN + STEP - 5 };
                let Ok(shift) = i64::try_from(i128::from(target) - i128::from(total)) else { continue };
                match cache.rebase(&k, flushed, shift).await {
                    Ok(true) => {
                        shifted += i128::from(shift);
                        done += 1;
                    }
                    Ok(false) => {}
                    Err(e) if e.kind() == ErrorKind::Overflow => {}
                    Err(e) => panic!("{e}"),
                }
            }
            stop.store(true, SeqCst);
            (done, shifted, claimed)
        })
    };
    let (done, shifted, mut claimed) = reconciler.await.unwrap();
    for task in incrementers {
        task.await.unwrap();
    }
    loop {
        let delta = claim_all(&a, &k).await;
        if delta == 0 {
            break;
        }
        claimed += i128::from(delta);
    }
    let acked = *acked.lock().unwrap();
    assert!(done > 0, "the counter was moved next to the bounds");
    assert!(refused.load(SeqCst) > 0, "increments were refused next to the bounds");
    assert_eq!(claimed, acked, "every acknowledged increment claimed once");
    let (total, pending) = value_of(&b, &k).await.unwrap();
    assert_eq!(pending, 0);
    assert_eq!(i128::from(total), acked + shifted, "the total is the increments plus the rebases");
}

/// Sends raw protocol lines and reads `replies` reply lines (values inline).
fn raw(url: &str, request: &str, replies: usize) -> Vec<String> {
    let target = MemcacheTarget::parse(url).unwrap();
    let mut conn = std::net::TcpStream::connect(target.addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while text.matches("\r\n").count() < replies {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "server closed");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text.split("\r\n").filter(|l| !l.is_empty()).map(str::to_string).collect()
}

fn raw_set(url: &str, key: &str, value: &str) {
    let reply = raw(url, &format!("ms {key} {}\r\n{value}\r\n", value.len()), 1);
    assert_eq!(reply, ["HD"], "{key}");
}

fn raw_get(url: &str, key: &str) -> String {
    let reply = raw(url, &format!("mg {key} v\r\n"), 2);
    assert!(reply[0].starts_with("VA "), "{key}: {reply:?}");
    reply[1..].join("\n")
}

/// Counters as the previous version wrote them (a flushed mark without
/// offset) read, increment, claim and rebase; an entry that was never
/// rebased is still written in the previous version's format.
#[tokio::test]
async fn flushed_marks_without_offset_still_work_and_can_be_rebased() {
    let Some(url) = service_url() else { return };
    let prefix = random_prefix();
    let cache = cache_at(&url, &prefix).await;
    let k = key("old");
    let lineage: u64 = 0x5eed_0000_0000_0001;
    // T = 15 (stored as T + 2^63) and F = 10: pending 5.
    raw_set(&url, &format!("{prefix}t{lineage:016x}:c/rebase/old"), &((15u64) ^ (1 << 63)).to_string());
    raw_set(&url, &format!("{prefix}f:c/rebase/old"), &format!("L 10 {lineage:x} 0\nc/rebase/old"));

    assert_eq!(value_of(&cache, &k).await, Some((15, 5)));
    assert_eq!(applied(&cache, &k, 2).await, (17, 7));
    assert_eq!(claim_all(&cache, &k).await, 7);
    let f = raw_get(&url, &format!("{prefix}f:c/rebase/old"));
    assert_eq!(f, format!("L 17 {lineage:x} 1\nc/rebase/old"), "no offset: the previous version's format");

    assert_eq!(applied(&cache, &k, 3).await, (20, 3));
    assert!(cache.rebase(&k, 17, -1000).await.unwrap());
    assert_eq!(value_of(&cache, &k).await, Some((-980, 3)));
    let fresh = cache_at(&url, &prefix).await;
    assert_eq!(applied(&fresh, &k, 1).await, (-979, 4));
    assert_eq!(claim_all(&fresh, &k).await, 4);
    assert_eq!(value_of(&cache, &k).await, Some((-979, 0)));
    let f = raw_get(&url, &format!("{prefix}f:c/rebase/old"));
    assert_eq!(f, format!("L 21 {lineage:x} 2 -1000\nc/rebase/old"), "stored mark 21, offset -1000");
}
