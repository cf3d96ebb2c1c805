//! The Redis cache against real servers (standalone and Cluster): what the
//! conformance suite cannot see from outside the cache.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use backend_redis::{RedisCache, RedisCacheOptions, RedisTarget};
use common::{cache_at, random_prefix, service_url};
use counter_core::testing::{CacheFaults, CachePart};
use counter_core::{BatchId, CacheIncr, CacheLayer, Cell, ErrorKind, Key, Precision, SliceId};

const STANDALONE: &str = "COUNTERS_TEST_REDIS_URL";
const CLUSTER: &str = "COUNTERS_TEST_REDIS_CLUSTER_URL";

fn key(name: &str) -> Key {
    Key::new("ns", name).unwrap()
}

async fn applied(cache: &RedisCache, k: &Key, delta: i64) -> (i64, i128) {
    match cache.incr(k, delta).await.unwrap() {
        CacheIncr::Applied { total, pending } => (total, pending),
        CacheIncr::Missing => panic!("{k} is missing"),
    }
}

/// Two keys in different hash tags of a sharded cache.
fn keys_in_two_shards(cache: &RedisCache) -> (Key, Key) {
    let first = key("first");
    let other = (0..).map(|i| key(&format!("other{i}"))).find(|k| shard_of(cache, k) != shard_of(cache, &first));
    (first, other.expect("some key lands elsewhere"))
}

/// A key's shard, computed as the layout documents it: FNV-1a of
/// `namespace/name`, modulo the number of shards.
fn shard_of(cache: &RedisCache, k: &Key) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{}/{}", k.namespace(), k.name()).bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash % cache.shards() as u64
}

#[tokio::test]
async fn totals_stay_exact_beyond_2_pow_53_and_pending_beyond_i64_moves_in_parts() {
    let Some(url) = service_url(STANDALONE) else { return };
    let cache = cache_at(&url, &random_prefix(), None).await;
    let big = key("big");
    cache.load(&big, (1 << 53) + 1, 0).await.unwrap();
    assert_eq!(applied(&cache, &big, 2).await, ((1 << 53) + 3, 2), "no double rounding");

    let wide = key("wide");
    cache.load(&wide, i64::MIN, 0).await.unwrap();
    assert_eq!(cache.set(&wide, i64::MAX).await.unwrap(), Some(i64::MIN));
    let cell = Cell::Counter(wide.clone());
    let value = cache.get_many(std::slice::from_ref(&cell)).await.unwrap()[0].unwrap();
    assert_eq!(value.pending, u64::MAX as i128);
    let mut moved = Vec::new();
    for _ in 0..3 {
        let id = BatchId::new();
        let batch = cache.claim(id, std::slice::from_ref(&cell)).await.unwrap();
        moved.extend(batch.entries.iter().map(|e| e.delta));
        cache.ack(id).await.unwrap();
    }
    assert_eq!(moved, [i64::MAX, i64::MAX, 1], "every part once, the largest first");
    assert!(cache.dirty(u64::MAX, 10).await.unwrap().iter().all(|d| d.cell != cell), "fully claimed");

    let e = cache.incr(&wide, 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overflow);
    assert_eq!(cache.get_many(&[cell]).await.unwrap()[0].unwrap().total, i64::MAX, "overflow changes nothing");
}

#[tokio::test]
async fn odd_keys_are_distinct_counters() {
    let Some(url) = service_url(CLUSTER) else { return };
    let cache = cache_at(&url, &random_prefix(), None).await;
    let names = [
        "a b".to_string(),
        "{tag}x".to_string(),
        "{tag}y".to_string(),
        "ü:ñ:中".to_string(),
        "flush_all\tnot".replace('\t', " "),
        "x".repeat(1024),
    ];
    for (i, name) in names.iter().enumerate() {
        let k = key(name);
        cache.load(&k, 0, 0).await.unwrap();
        assert_eq!(applied(&cache, &k, i as i64 + 1).await.0, i as i64 + 1);
    }
    let other_ns = Key::new("ns2", "a b").unwrap();
    cache.load(&other_ns, 100, 0).await.unwrap();
    for (i, name) in names.iter().enumerate() {
        let cell = Cell::Counter(key(name));
        assert_eq!(cache.get_many(&[cell]).await.unwrap()[0].unwrap().total, i as i64 + 1, "{name}");
    }
    let dirty: HashSet<Cell> = cache.dirty(u64::MAX, 100).await.unwrap().into_iter().map(|d| d.cell).collect();
    assert_eq!(dirty.len(), names.len());
}

#[tokio::test]
async fn a_half_lost_counter_is_missing_until_reloaded() {
    let Some(url) = service_url(STANDALONE) else { return };
    let cache = cache_at(&url, &random_prefix(), None).await;
    for part in [CachePart::Total, CachePart::FlushedMark] {
        let k = key(&format!("{part:?}"));
        cache.load(&k, 10, 0).await.unwrap();
        applied(&cache, &k, 5).await;
        cache.lose_part(&k, part).await.unwrap();
        assert_eq!(cache.incr(&k, 1).await.unwrap(), CacheIncr::Missing, "{part:?}");
        assert_eq!(cache.get_many(&[Cell::Counter(k.clone())]).await.unwrap()[0], None);
        assert_eq!(cache.load(&k, 15, 0).await.unwrap(), 15, "reload installs the store's value");
        assert_eq!(applied(&cache, &k, 1).await, (16, 1));
    }
}

/// A flusher recovering a claim freezes it: parts the maker had recorded
/// are taken, and the maker can add none afterwards, so both apply the
/// same batch and nothing is flushed twice or lost.
#[tokio::test]
async fn recovery_freezes_a_claim_its_maker_is_still_recording() {
    let Some(url) = service_url(CLUSTER) else { return };
    let prefix = random_prefix();
    let maker = cache_at(&url, &prefix, Some(8)).await;
    let recoverer = cache_at(&url, &prefix, Some(8)).await;
    let (first, second) = keys_in_two_shards(&maker);
    for k in [&first, &second] {
        maker.load(k, 0, 0).await.unwrap();
        applied(&maker, k, 7).await;
    }
    let id = BatchId::new();
    // The maker records its first part...
    let part = maker.claim(id, &[Cell::Counter(first.clone())]).await.unwrap();
    assert_eq!(part.entries.len(), 1);
    // ...another process recovers the claim meanwhile...
    let recovered = recoverer.claims(0).await.unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].id, id);
    assert_eq!(recovered[0].entries, part.entries);
    // ...and the maker's next part under the same identity is refused.
    let late = maker.claim(id, &[Cell::Counter(second.clone())]).await.unwrap();
    assert!(late.is_empty(), "a frozen claim takes no more parts");
    let pending = maker.get_many(&[Cell::Counter(second.clone())]).await.unwrap()[0].unwrap().pending;
    assert_eq!(pending, 7, "the refused cell stays pending for a later batch");
    recoverer.ack(id).await.unwrap();
    assert!(maker.claims(0).await.unwrap().is_empty());
    assert_eq!(maker.stats().await.unwrap().open_claims, 0);
}

#[tokio::test]
async fn claims_for_finds_only_claims_touching_the_keys() {
    let Some(url) = service_url(CLUSTER) else { return };
    let cache = cache_at(&url, &random_prefix(), Some(8)).await;
    let (a, b) = keys_in_two_shards(&cache);
    for k in [&a, &b] {
        cache.load(k, 0, 0).await.unwrap();
        applied(&cache, k, 3).await;
    }
    let id_a = BatchId::new();
    cache.claim(id_a, &[Cell::Counter(a.clone())]).await.unwrap();
    let id_b = BatchId::new();
    cache.claim(id_b, &[Cell::Counter(b.clone())]).await.unwrap();
    let found = cache.claims_for(std::slice::from_ref(&a)).await.unwrap();
    assert_eq!(found.iter().map(|c| c.id).collect::<Vec<_>>(), [id_a]);
    assert_eq!(cache.claims(0).await.unwrap().len(), 2);
    // A claim with parts under two tags is one open claim.
    for k in [&a, &b] {
        applied(&cache, k, 1).await;
    }
    let both = cache.claim(BatchId::new(), &[Cell::Counter(a.clone()), Cell::Counter(b.clone())]).await.unwrap();
    assert_eq!(both.entries.len(), 2);
    assert_eq!(cache.stats().await.unwrap().open_claims, 3);
}

#[tokio::test]
async fn slices_are_all_or_nothing_across_shards() {
    let Some(url) = service_url(CLUSTER) else { return };
    let cache = cache_at(&url, &random_prefix(), Some(8)).await;
    let (a, b) = keys_in_two_shards(&cache);
    let p = Precision::from_secs(60).unwrap();
    let slice = |k: &Key| SliceId { key: k.clone(), precision: p, start: 600 };
    cache.incr_slices(&[slice(&b)], i64::MAX).await.unwrap();
    let e = cache.incr_slices(&[slice(&a), slice(&b)], 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overflow);
    let values = cache.get_many(&[Cell::Slice(slice(&a)), Cell::Slice(slice(&b))]).await.unwrap();
    assert_eq!(values[0].map(|v| v.pending).unwrap_or(0), 0, "the first shard's slice was undone");
    assert_eq!(values[1].unwrap().pending, i64::MAX as i128);
}

/// Handles sharing one cache see one total: every value 1..=N is returned
/// exactly once across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_handles_see_every_total_once() {
    let Some(url) = service_url(CLUSTER) else { return };
    let prefix = random_prefix();
    let k = key("shared");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let cache = Arc::new(cache_at(&url, &prefix, None).await);
        cache.load(&k, 0, 0).await.unwrap();
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..500 {
                seen.push(applied(&cache, &k, 1).await.0);
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=2000).collect::<Vec<i64>>());
}

#[tokio::test]
async fn remove_forgets_counter_slices_and_their_dirty_marks() {
    let Some(url) = service_url(STANDALONE) else { return };
    let cache = cache_at(&url, &random_prefix(), None).await;
    let k = key("gone");
    cache.load(&k, 1, 0).await.unwrap();
    applied(&cache, &k, 1).await;
    let p = Precision::from_secs(5).unwrap();
    cache.incr_slices(&[SliceId { key: k.clone(), precision: p, start: 10 }], 1).await.unwrap();
    assert_eq!(cache.stats().await.unwrap().dirty_cells, 2);
    cache.remove(&k).await.unwrap();
    assert_eq!(cache.stats().await.unwrap().dirty_cells, 0);
    assert_eq!(cache.incr(&k, 1).await.unwrap(), CacheIncr::Missing);
}

#[tokio::test]
async fn bad_urls_prefixes_and_leases_are_config_errors() {
    for url in ["redis://127.0.0.1:1?prefix={x}", "rediss://h:1?insecure=true", "memcache://h:1"] {
        let e = RedisCache::connect(url).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{url}: {e}");
    }
    let e = RedisCache::connect("redis://127.0.0.1:1").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "nothing listens on port 1: {e}");
    let options = RedisCacheOptions::default().lease(Duration::from_millis(99));
    let e = RedisCache::connect_with(RedisTarget::parse("redis://127.0.0.1:1").unwrap(), options).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "a lease too short for a round trip, refused before connecting: {e}");
}

/// Whether the live set of a one-shard cache under `prefix` holds `key`.
async fn registered(url: &str, prefix: &str, key: &Key) -> bool {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(format!("{{{prefix}0}}live"))
        .arg(format!("c:{key}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    score.is_some()
}

/// Claims and acknowledges `cell`: the delta it moved.
async fn drain(cache: &RedisCache, cell: &Cell) -> i64 {
    let id = BatchId::new();
    let batch = cache.claim(id, std::slice::from_ref(cell)).await.unwrap();
    cache.ack(id).await.unwrap();
    batch.entries.iter().map(|e| e.delta).sum()
}

async fn is_dirty(cache: &RedisCache, cell: &Cell) -> bool {
    cache.dirty(u64::MAX, 100).await.unwrap().iter().any(|d| &d.cell == cell)
}

/// The fast path's state: the first increment registers a counter (live set
/// and dirty index); bare adds within half a lease reach the dirty index
/// only through a sweep (their own process's, or anyone's thorough one); a
/// thorough sweep a whole lease later forgets a clean counter's
/// registration, and the next increment registers it again.
#[tokio::test]
async fn leases_register_once_are_swept_and_expire() {
    let Some(url) = service_url(STANDALONE) else { return };
    let prefix = random_prefix();
    let lease = Duration::from_secs(2);
    let connect = || async {
        let options = RedisCacheOptions::with_prefix(&prefix).lease(lease);
        RedisCache::connect_with(RedisTarget::parse(&url).unwrap(), options).await.unwrap()
    };
    let (cache, peer) = (connect().await, connect().await);
    let k = key("leased");
    let cell = Cell::Counter(k.clone());
    cache.load(&k, 0, 0).await.unwrap();
    assert!(registered(&url, &prefix, &k).await, "a load registers");

    assert_eq!(applied(&cache, &k, 1).await, (1, 1));
    assert!(is_dirty(&cache, &cell).await, "a registering increment indexes the counter");
    assert_eq!(drain(&cache, &cell).await, 1);
    assert!(!is_dirty(&cache, &cell).await);

    assert_eq!(applied(&cache, &k, 2).await, (3, 2), "a bare add returns the exact total");
    assert!(!is_dirty(&cache, &cell).await, "a bare add is one BITFIELD: not indexed by itself");
    cache.sweep(false).await.unwrap();
    assert!(is_dirty(&cache, &cell).await, "its own sweep indexes what a process added");
    assert_eq!(drain(&cache, &cell).await, 2);

    // Another process's bare adds: its cheap sweep does not see them, a
    // thorough one does.
    peer.sweep(true).await.unwrap();
    assert_eq!(applied(&cache, &k, 3).await, (6, 3));
    peer.sweep(false).await.unwrap();
    assert!(!is_dirty(&peer, &cell).await, "a sweep of its own covers a process's own adds only");
    peer.sweep(true).await.unwrap();
    assert!(is_dirty(&peer, &cell).await, "a thorough sweep indexes every leased counter with a pending delta");
    assert_eq!(drain(&peer, &cell).await, 3);

    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    peer.sweep(true).await.unwrap();
    assert!(!registered(&url, &prefix, &k).await, "a clean counter's registration ends a lease after it began");
    assert!(!is_dirty(&cache, &cell).await);
    assert_eq!(applied(&cache, &k, 4).await, (10, 4));
    assert!(registered(&url, &prefix, &k).await, "after its lease the next increment registers again");
    assert!(is_dirty(&cache, &cell).await);
    assert_eq!(drain(&cache, &cell).await, 4);
}

/// The time a counter was last known clean, `#3` of its string, read raw
/// (a standalone cache of one shard).
async fn clean_time(url: &str, prefix: &str, key: &Key) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let bytes: Vec<u8> = redis::cmd("GETRANGE")
        .arg(format!("{{{prefix}0}}v:{key}"))
        .arg(24)
        .arg(31)
        .query_async(&mut conn)
        .await
        .unwrap();
    u64::from_be_bytes(bytes.try_into().expect("a loaded counter's string holds 32 bytes"))
}

/// A claim records its time in each counter it claims (`#3`), whether it
/// moved the whole pending delta or, beyond the i64 range, a part of it;
/// an add after a claim that left the counter clean dates its dirty mark
/// from that time, through a bare add and its process's sweep.
#[tokio::test]
async fn a_claim_records_its_time_and_a_counter_dirtied_after_it_is_dated_from_it() {
    let Some(url) = service_url(STANDALONE) else { return };
    let prefix = random_prefix();
    let cache = cache_at(&url, &prefix, None).await;

    let k = key("dated");
    let cell = Cell::Counter(k.clone());
    cache.load(&k, 0, 0).await.unwrap();
    applied(&cache, &k, 1).await;
    let before = counter_core::now_ms();
    assert_eq!(drain(&cache, &cell).await, 1);
    let after = counter_core::now_ms();
    let clean = clean_time(&url, &prefix, &k).await;
    assert!((before..=after).contains(&clean), "clean at {clean}, the claim ran in {before}..={after}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(applied(&cache, &k, 2).await, (3, 2), "a bare add");
    cache.sweep(false).await.unwrap();
    let listed = cache.dirty(u64::MAX, 100).await.unwrap();
    let since = listed.iter().find(|d| d.cell == cell).expect("indexed by the sweep").dirty_since_ms;
    assert_eq!(since, clean, "dirty since the claim left it clean");

    // Pending beyond i64: the first claim moves i64::MAX and leaves the
    // counter dirty; it records its time all the same.
    let wide = key("wide");
    let wide_cell = Cell::Counter(wide.clone());
    cache.load(&wide, i64::MIN, 0).await.unwrap();
    assert_eq!(cache.set(&wide, i64::MAX).await.unwrap(), Some(i64::MIN));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let id = BatchId::new();
    let before = counter_core::now_ms();
    let batch = cache.claim(id, std::slice::from_ref(&wide_cell)).await.unwrap();
    let after = counter_core::now_ms();
    assert_eq!(batch.entries.iter().map(|e| e.delta).collect::<Vec<_>>(), [i64::MAX], "a part");
    cache.ack(id).await.unwrap();
    assert!(is_dirty(&cache, &wide_cell).await, "the rest is pending");
    let clean = clean_time(&url, &prefix, &wide).await;
    assert!((before..=after).contains(&clean), "clean at {clean}, the claim ran in {before}..={after}");
}

/// A leased counter whose string is lost: the bare add finds no loaded
/// counter and takes its delta back, so the reload installs the store's
/// value and nothing counted into the lost string survives as a total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_adds_on_a_lost_counter_never_make_a_wrong_total() {
    let Some(url) = service_url(STANDALONE) else { return };
    let cache = Arc::new(cache_at(&url, &random_prefix(), None).await);
    let k = key("lost");
    cache.load(&k, 100, 0).await.unwrap();
    assert_eq!(applied(&cache, &k, 1).await, (101, 1), "registered");
    cache.lose_part(&k, CachePart::Total).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (cache, k) = (cache.clone(), k.clone());
            tokio::spawn(async move {
                let mut missing = 0;
                for _ in 0..50 {
                    if cache.incr(&k, 1).await.unwrap() == CacheIncr::Missing {
                        missing += 1;
                    }
                }
                missing
            })
        })
        .collect();
    let mut missing = 0;
    for task in tasks {
        missing += task.await.unwrap();
    }
    assert_eq!(missing, 400, "every increment of the lost counter reports it missing");
    assert_eq!(cache.get_many(&[Cell::Counter(k.clone())]).await.unwrap()[0], None);
    assert_eq!(cache.load(&k, 200, 0).await.unwrap(), 200, "the reload sees nothing the lost string took");
    assert_eq!(applied(&cache, &k, 1).await, (201, 1));
}

/// The members of a one-shard cache's named set, and the counters of its
/// dirty set in the named set's form (`<namespace>/<name>`).
async fn named_and_dirty_counters(url: &str, prefix: &str) -> (Vec<String>, Vec<String>) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let named: Vec<String> =
        redis::cmd("ZRANGE").arg(format!("{{{prefix}0}}named")).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    let dirty: Vec<String> =
        redis::cmd("ZRANGE").arg(format!("{{{prefix}0}}dirty")).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    let mut counters: Vec<String> = dirty
        .iter()
        .filter_map(|m| m.strip_prefix("c:"))
        .map(|k| if k.contains('/') { k.to_string() } else { format!("/{k}") })
        .collect();
    counters.sort();
    (named, counters)
}

#[tokio::test]
async fn the_named_set_holds_exactly_the_dirty_counters() {
    let Some(url) = service_url(STANDALONE) else { return };
    let prefix = random_prefix();
    let cache = cache_at(&url, &prefix, Some(1)).await;
    let agree = || async {
        let (named, dirty) = named_and_dirty_counters(&url, &prefix).await;
        assert_eq!(named, dirty, "the named set is the dirty set's counters");
        named.len()
    };
    let (a, b, wide, plain) = (key("a"), key("b"), key("wide"), Key::named("plain").unwrap());
    for k in [&a, &b, &plain] {
        cache.load(k, 0, 0).await.unwrap();
        applied(&cache, k, 1).await;
    }
    cache.load(&wide, i64::MIN, 0).await.unwrap();
    cache.set(&wide, i64::MAX).await.unwrap();
    let p = Precision::from_secs(5).unwrap();
    cache.incr_slices(&[SliceId { key: a.clone(), precision: p, start: 10 }], 1).await.unwrap();
    cache.sweep(true).await.unwrap();
    assert_eq!(agree().await, 4, "three counters and a wide one; no slice");
    let listed: Vec<Key> =
        cache.dirty_counters("", "", 10).await.unwrap().into_iter().map(|d| d.cell.key().clone()).collect();
    assert_eq!(listed, std::slice::from_ref(&plain), "the default namespace alone");

    // A claim of a pending delta beyond i64 leaves the rest dirty, named.
    let cells = [Cell::Counter(a.clone()), Cell::Counter(wide.clone())];
    let id = BatchId::new();
    cache.claim(id, &cells).await.unwrap();
    cache.ack(id).await.unwrap();
    assert_eq!(agree().await, 3, "a is clean; wide still has a part");
    cache.remove(&b).await.unwrap();
    assert_eq!(agree().await, 2);
    for _ in 0..2 {
        let id = BatchId::new();
        cache.claim(id, &[Cell::Counter(wide.clone()), Cell::Counter(plain.clone())]).await.unwrap();
        cache.ack(id).await.unwrap();
    }
    assert_eq!(agree().await, 0, "all claimed");
    applied(&cache, &a, 1).await;
    cache.sweep(false).await.unwrap();
    assert_eq!(agree().await, 1, "dirty again after its lease's bare add, once swept");
}
