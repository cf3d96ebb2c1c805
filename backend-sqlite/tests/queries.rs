//! Reads, listings, deletes, time series and their cleaning.

mod common;

use common::*;
use counter_core::{CleanReport, DurableStore, Key, ListQuery};

fn names(entries: &[(Key, i64)]) -> Vec<&str> {
    entries.iter().map(|(k, _)| k.name()).collect()
}

#[tokio::test]
async fn get_many_keeps_order_and_reports_missing() {
    let (_dir, store) = temp_store().await;
    let (a, b, c) = (key("", "a"), key("x", "a"), key("", "c"));
    store.apply(&batch(vec![counter(&a, 1), counter(&b, 2)])).await.unwrap();
    assert_eq!(
        store.get_many(&[c.clone(), b.clone(), a.clone(), b.clone()]).await.unwrap(),
        [None, Some(2), Some(1), Some(2)]
    );
    assert!(store.get_many(&[]).await.unwrap().is_empty());
    // Many keys at once.
    let keys: Vec<Key> = (0..2_000).map(|i| key("many", &format!("k{i}"))).collect();
    store.apply(&batch(keys.iter().map(|k| counter(k, 3)).collect())).await.unwrap();
    let values = store.get_many(&keys).await.unwrap();
    assert!(values.iter().all(|v| *v == Some(3)));
}

#[tokio::test]
async fn list_by_prefix_with_edge_cases() {
    let (_dir, store) = temp_store().await;
    let all = [
        "a",
        "a:b",
        "a:b:c",
        "a;",
        "a\u{10FFFF}",
        "a\u{10FFFF}x",
        "ab",
        "b",
        "\u{10FFFF}",
        "\u{10FFFF}\u{10FFFF}z",
        "%",
        "_x",
        "é",
        "éa",
        "\u{D7FF}",
        "\u{E000}",
    ];
    let entries = all.iter().enumerate().map(|(i, n)| counter(&key("ns", n), i as i64)).collect();
    store.apply(&batch(entries)).await.unwrap();
    // Same names in other namespaces must never show up.
    store
        .apply(&batch(vec![counter(&key("", "a"), 1), counter(&key("ns2", "a:b"), 1), counter(&key("n", "a"), 1)]))
        .await
        .unwrap();

    let list = |prefix: &str| {
        let store = store.clone();
        let query = ListQuery::new("ns", prefix);
        async move { store.list(&query).await.unwrap() }
    };
    let expected = |prefix: &str| {
        let mut v: Vec<&str> = all.iter().copied().filter(|n| n.starts_with(prefix)).collect();
        v.sort();
        v
    };
    for prefix in
        ["", "a", "a:", "a:b", "a\u{10FFFF}", "\u{10FFFF}", "\u{10FFFF}\u{10FFFF}", "%", "_", "é", "\u{D7FF}", "zzz"]
    {
        let got = list(prefix).await;
        assert_eq!(names(&got), expected(prefix), "prefix {prefix:?}");
        assert!(got.iter().all(|(k, _)| k.namespace() == "ns"));
    }
    // Values come along.
    let got = list("a:b").await;
    assert_eq!(got[0].1, 1);
    assert_eq!(got[1].1, 2);
    // Limits.
    let limited = store.list(&ListQuery::new("ns", "a").limit(2)).await.unwrap();
    assert_eq!(names(&limited), ["a", "a:b"]);
    assert!(store.list(&ListQuery::new("ns", "").limit(0)).await.unwrap().is_empty());
    assert!(store.list(&ListQuery::new("nope", "")).await.unwrap().is_empty());
    // The default namespace.
    assert_eq!(names(&store.list(&ListQuery::new("", "")).await.unwrap()), ["a"]);
}

#[tokio::test]
async fn top_n_by_value_ties_by_name() {
    let (_dir, store) = temp_store().await;
    let values = [("p:a", 5), ("p:b", 9), ("p:c", 5), ("p:d", -1), ("p:e", i64::MAX), ("p:f", i64::MIN), ("q:z", 100)];
    store.apply(&batch(values.iter().map(|(n, v)| counter(&key("t", n), *v)).collect())).await.unwrap();
    store.apply(&batch(vec![counter(&key("other", "p:x"), 1_000)])).await.unwrap();
    let top = store.list(&ListQuery::new("t", "p:").top(4)).await.unwrap();
    assert_eq!(
        top.iter().map(|(k, v)| (k.name(), *v)).collect::<Vec<_>>(),
        [("p:e", i64::MAX), ("p:b", 9), ("p:a", 5), ("p:c", 5)]
    );
    let all = store.list(&ListQuery::new("t", "").top(100)).await.unwrap();
    assert_eq!(names(&all), ["p:e", "q:z", "p:b", "p:a", "p:c", "p:d", "p:f"]);
    // Matches the reference ordering.
    let mut reference = all.clone();
    ListQuery::new("t", "").top(100).finish(&mut reference);
    assert_eq!(reference, all);
    assert!(store.list(&ListQuery::new("t", "").top(0)).await.unwrap().is_empty());
}

#[tokio::test]
async fn keys_are_data_never_sql() {
    let (_dir, store) = temp_store().await;
    let nasty = key("x'; DROP TABLE counters; --", "a' OR '1'='1");
    store.apply(&batch(vec![counter(&nasty, 1)])).await.unwrap();
    let listed = store.list(&ListQuery::new(nasty.namespace(), "a'")).await.unwrap();
    assert_eq!(listed, [(nasty.clone(), 1)]);
    assert_eq!(store.get_many(&[nasty]).await.unwrap(), [Some(1)]);
}

#[tokio::test]
async fn delete_removes_the_counter_and_its_series_only() {
    let (_dir, store) = temp_store().await;
    let (a, ab, other) = (key("n", "a"), key("n", "a:b"), key("m", "a"));
    store
        .apply(&batch(vec![
            counter(&a, 1),
            counter(&ab, 2),
            counter(&other, 3),
            slice(&a, 60, 0, 1),
            slice(&a, 3600, 0, 1),
            slice(&ab, 60, 0, 2),
            slice(&other, 60, 0, 3),
        ]))
        .await
        .unwrap();
    assert!(store.delete(&a).await.unwrap());
    assert!(!store.delete(&a).await.unwrap());
    assert!(!store.delete(&key("n", "never")).await.unwrap());
    assert_eq!(store.get_many(&[a.clone(), ab.clone(), other.clone()]).await.unwrap(), [None, Some(2), Some(3)]);
    assert!(store.series(&a, precision(60), 0, 10).await.unwrap().is_empty());
    assert!(store.series(&a, precision(3600), 0, 10).await.unwrap().is_empty());
    assert_eq!(store.series(&ab, precision(60), 0, 10).await.unwrap(), [(0, 2)]);
    assert_eq!(store.series(&other, precision(60), 0, 10).await.unwrap(), [(0, 3)]);
}

#[tokio::test]
async fn series_ranges_and_clean() {
    let (_dir, store) = temp_store().await;
    let (a, b, c) = (key("", "a"), key("", "b"), key("", "c"));
    let mut entries = Vec::new();
    for start in [-120, -60, 0, 60, 120, 180] {
        entries.push(slice(&a, 60, start, start + 1_000));
    }
    entries.push(slice(&a, 3600, 0, 7));
    entries.push(slice(&b, 60, -60, 1));
    entries.push(slice(&b, 60, 0, 1));
    entries.push(slice(&c, 60, 240, 1));
    store.apply(&batch(entries)).await.unwrap();

    let m = precision(60);
    assert_eq!(store.series(&a, m, -60, 120).await.unwrap(), [(-60, 940), (0, 1_000), (60, 1_060), (120, 1_120)]);
    assert_eq!(store.series(&a, m, 1, 59).await.unwrap(), []);
    assert_eq!(store.series(&a, m, 120, 0).await.unwrap(), []);
    assert_eq!(store.series(&a, precision(3600), i64::MIN, i64::MAX).await.unwrap(), [(0, 7)]);
    assert_eq!(store.series(&key("", "none"), m, 0, 100).await.unwrap(), []);

    // Before 60: a loses -120, -60, 0 (keeps 60..), b loses both (series
    // gone), c is untouched; the hour precision is not touched.
    let report = store.clean(m, 60).await.unwrap();
    assert_eq!(report, CleanReport { buckets_removed: 5, series_removed: 1 });
    assert_eq!(store.series(&a, m, i64::MIN, i64::MAX).await.unwrap(), [(60, 1_060), (120, 1_120), (180, 1_180)]);
    assert_eq!(store.series(&b, m, i64::MIN, i64::MAX).await.unwrap(), []);
    assert_eq!(store.series(&a, precision(3600), i64::MIN, i64::MAX).await.unwrap(), [(0, 7)]);
    // Nothing left to clean at that cutoff.
    assert_eq!(store.clean(m, 60).await.unwrap(), CleanReport::default());
    // Everything.
    assert_eq!(store.clean(m, i64::MAX).await.unwrap(), CleanReport { buckets_removed: 4, series_removed: 2 });
    // Counters are not touched by cleaning.
    store.apply(&batch(vec![counter(&a, 1)])).await.unwrap();
    store.clean(precision(3600), i64::MAX).await.unwrap();
    assert_eq!(store.get_many(&[a]).await.unwrap(), [Some(1)]);
}

#[tokio::test]
async fn a_key_an_earlier_version_accepted_still_lists() {
    // Earlier versions accepted Unicode format characters in names; today's
    // input refuses them, but a file holding one must still list (a listing
    // that failed on it would hide every other counter of the namespace).
    let (dir, store) = temp_store().await;
    let legacy = Key::stored("ns", "admin\u{202e}txt.exe").unwrap();
    store.apply(&batch(vec![counter(&legacy, 7), counter(&key("ns", "plain"), 1)])).await.unwrap();
    drop(store);
    let store = backend_sqlite::SqliteStore::open(dir.path().join("counters.db")).await.unwrap();
    let listed = store.list(&ListQuery::new("ns", "")).await.unwrap();
    assert_eq!(listed, [(legacy.clone(), 7), (key("ns", "plain"), 1)]);
    assert_eq!(store.get_many(std::slice::from_ref(&legacy)).await.unwrap(), [Some(7)]);
}
