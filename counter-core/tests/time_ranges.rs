//! The library's own entry points refuse what the CLI and the HTTP service
//! refuse: event times outside years 1-9999 or older than every
//! precision's retention, series bounds outside years 1-9999 or spanning
//! more than `MAX_SERIES_BUCKETS` buckets, and listings by an invalid
//! namespace or prefix. Each refusal is typed and counts nothing.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use counter_core::{
    Counters, ErrorKind, IncrOptions, Key, ListQuery, MAX_EPOCH_SECS, MAX_SERIES_BUCKETS, MIN_EPOCH_SECS, MemoryCache,
    MemoryStore, epoch_time,
};

fn handle() -> Counters<MemoryCache, MemoryStore> {
    Counters::builder(Arc::new(MemoryCache::new()), Arc::new(MemoryStore::new())).background(false).build().unwrap()
}

/// What a refusal must leave as it was.
async fn state(c: &Counters<MemoryCache, MemoryStore>) -> (Vec<(Key, i64)>, Vec<(i64, i64)>) {
    let key = Key::new("ns", "sentinel").unwrap();
    let now = SystemTime::now();
    (
        c.list(&ListQuery::new("ns", "")).await.unwrap(),
        c.series(&key, 60, now - Duration::from_secs(3600), now).await.unwrap(),
    )
}

#[tokio::test]
async fn sliced_increments_out_of_range_or_past_every_retention_count_nothing() {
    let c = handle();
    let sentinel = Key::new("ns", "sentinel").unwrap();
    c.incr_with(&sentinel, 5, &IncrOptions::new().time_sliced(None)).await.unwrap();
    let before = state(&c).await;
    assert_eq!(before.0, [(sentinel.clone(), 5)]);
    assert_eq!(before.1.len(), 1);

    let far_future = UNIX_EPOCH + Duration::from_secs(i64::MAX as u64);
    let far_past = UNIX_EPOCH - Duration::from_secs(i64::MAX as u64);
    let past_9999 = UNIX_EPOCH + Duration::from_secs(MAX_EPOCH_SECS as u64 + 1);
    let before_1 = UNIX_EPOCH - Duration::from_secs(MIN_EPOCH_SECS.unsigned_abs() + 1);
    let old = SystemTime::now() - Duration::from_secs(121 * 86_400);
    let cases = [
        (far_future, "is out of range (years 1 to 9999"),
        (far_past, "is out of range (years 1 to 9999"),
        (past_9999, "time 253402300800 is out of range"),
        (before_1, "time -62135596801 is out of range"),
        (old, "older than the retention of every precision"),
        (UNIX_EPOCH, "older than the retention of every precision"),
    ];
    for (at, message) in cases {
        for key in [sentinel.clone(), Key::new("ns", "new:child").unwrap()] {
            let options = IncrOptions::new().time_sliced(Some(at)).rollup(true);
            let e = c.incr_with(&key, 7, &options).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{at:?}: {e}");
            assert!(e.message().contains(message), "{at:?}: {e}");
            assert_eq!(e.key(), Some(key.to_string().as_str()));
            assert_eq!(state(&c).await, before, "{at:?}: nothing counted, no counter created");
        }
    }
    // Within the longest retention only (1 day x 120) still counts.
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86_400);
    assert_eq!(c.incr_with(&sentinel, 1, &IncrOptions::new().time_sliced(Some(two_days_ago))).await.unwrap(), 6);
    // Unsliced increments take no event time and are not checked.
    assert_eq!(c.incr(&sentinel, 1).await.unwrap(), 7);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn series_bounds_are_checked_and_the_range_is_bounded() {
    let c = handle();
    let key = Key::named("k").unwrap();
    let t = |secs| epoch_time(secs).unwrap();
    let huge = UNIX_EPOCH + Duration::from_secs(i64::MAX as u64);
    let tiny = UNIX_EPOCH - Duration::from_secs(i64::MAX as u64);
    let now = SystemTime::now();
    let bound = MAX_SERIES_BUCKETS;
    let cases = [
        (1, now - Duration::from_secs(120), huge, "out of range (years 1 to 9999"),
        (86_400, t(MAX_EPOCH_SECS - 1000), huge, "out of range"),
        (60, tiny, now, "out of range"),
        (1, t(0), t(bound as i64), "spans 100001 buckets of 1s; a series query may span at most 100000 buckets"),
        (86_400, t(MIN_EPOCH_SECS), t(MAX_EPOCH_SECS), "a series query may span at most 100000 buckets"),
        (60, t(10), t(5), "the range starts after it ends"),
        (7, t(0), t(5), "unknown precision 7s"),
    ];
    for (precision, from, to, message) in cases {
        let e = c.series(&key, precision, from, to).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(e.message().contains(message), "{precision} {from:?} {to:?}: {e}");
    }
    assert_eq!(c.series(&key, 1, t(0), t(bound as i64 - 1)).await.unwrap(), []);
    // The edges of the range do not wrap.
    let last_day = c.series(&key, 86_400, t(MAX_EPOCH_SECS - 86_400 * 3), t(MAX_EPOCH_SECS)).await.unwrap();
    assert_eq!(last_day, []);
    let first_day = c.series(&key, 86_400, t(MIN_EPOCH_SECS), t(MIN_EPOCH_SECS + 86_400 * 3)).await.unwrap();
    assert_eq!(first_day, []);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn listings_by_an_invalid_namespace_or_prefix_are_invalid_keys() {
    let c = handle();
    c.incr(&Key::new("ns", "a").unwrap(), 1).await.unwrap();
    let long_ns = "n".repeat(256);
    let long_prefix = "p".repeat(1025);
    let cases = [
        (ListQuery::new("a/b", ""), "namespace contains '/'"),
        (ListQuery::new("a\u{1}", ""), "namespace contains control character U+0001"),
        (ListQuery::new(long_ns.as_str(), ""), "namespace is 256 bytes"),
        (ListQuery::new("ns", "a\u{1}"), "prefix contains control character U+0001"),
        (ListQuery::new("ns", "a\u{202e}").top(3), "prefix contains U+202E"),
        (ListQuery::new("ns", long_prefix.as_str()), "prefix is 1025 bytes"),
    ];
    for (query, message) in cases {
        let e = c.list(&query).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidKey, "{query:?}: {e}");
        assert!(e.message().contains(message), "{query:?}: {e}");
    }
    assert_eq!(c.list(&ListQuery::new("ns", "")).await.unwrap(), [(Key::new("ns", "a").unwrap(), 1)]);
    c.shutdown().await.unwrap();
}
