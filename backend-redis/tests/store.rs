//! `RedisStore` against a real standalone Redis (`COUNTERS_TEST_REDIS_URL`,
//! started by `scripts/services/redis.sh`).
//!
//! Every test works under a random key prefix (or, for the literal "Redis in
//! Action" keys, under random counter names), so tests running in parallel
//! on one shared server never see each other's data. Nothing here flushes
//! the server.

use std::collections::BTreeMap;
use std::time::Duration;

use backend_redis::{RedisStore, RedisStoreOptions, RedisTarget};
use counter_core::{
    ApplyOutcome, Batch, BatchEntry, BatchId, Cell, CleanReport, DurableStore, ErrorKind, Key, ListQuery, Precision,
    SliceId,
};
use redis::aio::MultiplexedConnection;

const URL_ENV: &str = "COUNTERS_TEST_REDIS_URL";
const TWO_53: i64 = 1 << 53;

/// The test server's URL; `None` (with a loud message) when it is not
/// configured, a panic under `CI=true`.
fn url() -> Option<String> {
    conformance::service_url(URL_ENV)
}

fn random_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A store under a fresh random prefix, a raw connection to the same
/// server, and the prefix.
struct Fixture {
    store: RedisStore,
    raw: MultiplexedConnection,
    prefix: String,
    url: String,
}

async fn fixture() -> Option<Fixture> {
    let url = url()?;
    let prefix = format!("test:store:{}:", random_hex());
    Some(fixture_with(&url, RedisStoreOptions::default().prefix(prefix.clone())).await)
}

async fn fixture_with(url: &str, options: RedisStoreOptions) -> Fixture {
    let prefix = options.prefix.clone();
    let store = RedisStore::connect_with(RedisTarget::parse(url).unwrap(), options).await.expect("connect store");
    let raw = raw(url).await;
    Fixture { store, raw, prefix, url: url.to_string() }
}

async fn raw(url: &str) -> MultiplexedConnection {
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.expect("raw connection")
}

fn key(namespace: &str, name: &str) -> Key {
    Key::new(namespace, name).unwrap()
}

fn p(secs: u32) -> Precision {
    Precision::from_secs(secs).unwrap()
}

fn counter(key: &Key, delta: i64) -> BatchEntry {
    BatchEntry { cell: Cell::Counter(key.clone()), delta }
}

fn slice(key: &Key, secs: u32, start: i64, delta: i64) -> BatchEntry {
    BatchEntry { cell: Cell::Slice(SliceId { key: key.clone(), precision: p(secs), start }), delta }
}

fn batch(entries: Vec<BatchEntry>) -> Batch {
    Batch::claimed(BatchId::new(), entries)
}

async fn apply(store: &RedisStore, entries: Vec<BatchEntry>) {
    assert_eq!(store.apply(&batch(entries)).await.unwrap(), ApplyOutcome::Applied);
}

async fn query<T: redis::FromRedisValue>(raw: &MultiplexedConnection, command: &mut redis::Cmd) -> T {
    command.query_async(&mut raw.clone()).await.unwrap()
}

/// Every key under `prefix` with its type and content, in a comparable form.
async fn snapshot(raw: &MultiplexedConnection, prefix: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) =
            query(raw, redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(format!("{prefix}*")).arg("COUNT").arg(1000))
                .await;
        for k in keys {
            let kind: String = query(raw, redis::cmd("TYPE").arg(&k)).await;
            let content = match kind.as_str() {
                "hash" => {
                    let m: BTreeMap<String, String> = query(raw, redis::cmd("HGETALL").arg(&k)).await;
                    format!("{m:?}")
                }
                "zset" => {
                    let v: Vec<(String, String)> =
                        query(raw, redis::cmd("ZRANGE").arg(&k).arg(0).arg(-1).arg("WITHSCORES")).await;
                    format!("{v:?}")
                }
                "set" => {
                    let mut v: Vec<String> = query(raw, redis::cmd("SMEMBERS").arg(&k)).await;
                    v.sort();
                    format!("{v:?}")
                }
                "string" => {
                    let v: String = query(raw, redis::cmd("GET").arg(&k)).await;
                    v
                }
                other => other.to_string(),
            };
            out.insert(k, format!("{kind} {content}"));
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    out
}

fn without_batch_markers(mut snap: BTreeMap<String, String>, prefix: &str) -> BTreeMap<String, String> {
    snap.retain(|k, _| !k.starts_with(&format!("{prefix}batch:")));
    snap
}

async fn get(store: &RedisStore, key: &Key) -> Option<i64> {
    store.get_many(std::slice::from_ref(key)).await.unwrap()[0]
}

#[tokio::test]
async fn capabilities_and_options() {
    // No server needed.
    let options = RedisStoreOptions::default();
    assert_eq!(options.prefix, "");
    assert_eq!(options.batch_retention, Duration::from_secs(7 * 24 * 3600));
    let Some(f) = fixture().await else { return };
    let caps = f.store.capabilities();
    assert_eq!(caps.name, "redis");
    assert!(caps.durable && caps.shared);
    assert!(caps.max_batch >= 100, "{caps:?}");
    assert_eq!(f.store.options().prefix, f.prefix);
    let debug = format!("{:?}", f.store);
    assert!(debug.contains("RedisStore"), "{debug}");
}

#[tokio::test]
async fn a_cluster_target_is_a_config_error() {
    // Refused before connecting: no server needed.
    for url in ["redis+cluster://127.0.0.1:7391,127.0.0.1:7392", "redis+cluster://127.0.0.1:1"] {
        let e = RedisStore::connect(url).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert!(e.to_string().contains("Cluster") && e.to_string().contains("script"), "{e}");
    }
    let e = RedisStore::connect_with(RedisTarget::parse("redis+cluster://h:1").unwrap(), RedisStoreOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    for url in ["http://127.0.0.1:6391", "redis://h:1?color=red", "redis://h:1?ca=/etc/ca.pem"] {
        assert_eq!(RedisStore::from_url(url).await.unwrap_err().kind(), ErrorKind::Config, "{url}");
    }
}

#[tokio::test]
async fn an_unreachable_server_is_transient() {
    // Port 1 on loopback: nothing listens there.
    let e = RedisStore::connect("redis://127.0.0.1:1").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_transient());
}

#[tokio::test]
async fn apply_is_idempotent_by_batch_identity() {
    let Some(f) = fixture().await else { return };
    let (a, b) = (key("", "a"), key("ns", "b"));
    let b1 = batch(vec![counter(&a, 5), counter(&b, -7), slice(&a, 60, 120, 5)]);
    assert_eq!(f.store.apply(&b1).await.unwrap(), ApplyOutcome::Applied);
    let before = snapshot(&f.raw, &f.prefix).await;
    assert_eq!(f.store.apply(&b1).await.unwrap(), ApplyOutcome::AlreadyApplied);
    // A clone of the batch, as a retry after a lost ack would send it.
    let retry = Batch::claimed(b1.id, b1.entries.clone());
    assert_eq!(f.store.apply(&retry).await.unwrap(), ApplyOutcome::AlreadyApplied);
    // Even with other content: the identity decides, nothing changes.
    let other = Batch::claimed(b1.id, vec![counter(&a, 1000)]);
    assert_eq!(f.store.apply(&other).await.unwrap(), ApplyOutcome::AlreadyApplied);
    assert_eq!(snapshot(&f.raw, &f.prefix).await, before);
    assert_eq!(f.store.get_many(&[a.clone(), b.clone(), key("", "none")]).await.unwrap(), [Some(5), Some(-7), None]);
    assert_eq!(f.store.series(&a, p(60), 0, 1000).await.unwrap(), [(120, 5)]);

    // The marker lives for the retention (7 days by default).
    let ttl: i64 = query(&f.raw, redis::cmd("TTL").arg(format!("{}batch:{}", f.prefix, b1.id))).await;
    let week = 7 * 24 * 3600;
    assert!((week - 60..=week).contains(&ttl), "TTL {ttl}");
    // An empty batch is remembered too.
    let empty = batch(vec![]);
    assert_eq!(f.store.apply(&empty).await.unwrap(), ApplyOutcome::Applied);
    assert_eq!(f.store.apply(&empty).await.unwrap(), ApplyOutcome::AlreadyApplied);
}

#[tokio::test]
async fn batch_retention_and_url_prefix_are_honoured() {
    let Some(url) = url() else { return };
    let prefix = format!("test:store:{}:", random_hex());
    let options = RedisStoreOptions::default().prefix("ignored:").batch_retention(Duration::from_millis(1500));
    let target = RedisTarget::parse(&format!("{url}?prefix={prefix}")).unwrap();
    let store = RedisStore::connect_with(target, options).await.unwrap();
    assert_eq!(store.options().prefix, prefix, "the URL's prefix wins");
    let raw = raw(&url).await;
    let b = batch(vec![counter(&key("", "x"), 1)]);
    store.apply(&b).await.unwrap();
    let ttl: i64 = query(&raw, redis::cmd("TTL").arg(format!("{prefix}batch:{}", b.id))).await;
    assert!((1..=2).contains(&ttl), "retention rounded up to whole seconds: TTL {ttl}");
    let value: Option<String> = query(&raw, redis::cmd("HGET").arg(format!("{prefix}values:")).arg("x")).await;
    assert_eq!(value.as_deref(), Some("1"));

    let zero = RedisStoreOptions::default().prefix(prefix.clone()).batch_retention(Duration::ZERO);
    let store = RedisStore::connect_with(RedisTarget::parse(&url).unwrap(), zero).await.unwrap();
    let b = batch(vec![counter(&key("", "x"), 1)]);
    store.apply(&b).await.unwrap();
    let ttl: i64 = query(&raw, redis::cmd("TTL").arg(format!("{prefix}batch:{}", b.id))).await;
    assert_eq!(ttl, 1, "a zero retention still remembers the batch for a second");
    assert_eq!(get(&store, &key("", "x")).await, Some(2));

    let forever = RedisStoreOptions::default().prefix(prefix.clone()).batch_retention(Duration::MAX);
    let store = RedisStore::connect_with(RedisTarget::parse(&url).unwrap(), forever).await.unwrap();
    let b = batch(vec![counter(&key("", "x"), 1)]);
    store.apply(&b).await.unwrap();
    let ttl: i64 = query(&raw, redis::cmd("TTL").arg(format!("{prefix}batch:{}", b.id))).await;
    assert!(ttl > 99 * 365 * 24 * 3600, "an endless retention is capped, not refused: TTL {ttl}");
}

#[tokio::test]
async fn overflow_fails_the_whole_batch_and_changes_nothing() {
    let Some(f) = fixture().await else { return };
    let (hi, lo, mid) = (key("", "hi"), key("ns", "lo"), key("ns", "mid"));
    let sliced = key("", "sliced");
    apply(
        &f.store,
        vec![
            counter(&hi, i64::MAX - 1),
            counter(&lo, i64::MIN),
            counter(&mid, 5),
            slice(&sliced, 60, 600, i64::MAX),
            slice(&hi, 1, 10, 3),
        ],
    )
    .await;
    let before = without_batch_markers(snapshot(&f.raw, &f.prefix).await, &f.prefix);
    let fresh = key("other", "fresh");

    // The failing entry comes last, after changes to existing and new
    // counters, new and existing buckets, a new series and a new namespace.
    let cases: Vec<(Vec<BatchEntry>, &Key)> = vec![
        (
            vec![
                counter(&mid, 10),
                counter(&lo, 1),
                counter(&fresh, 1),
                slice(&fresh, 5, 100, 1),
                slice(&hi, 1, 10, 4),
                slice(&hi, 1, 11, 4),
                counter(&hi, 2),
            ],
            &hi,
        ),
        (vec![counter(&mid, 1), counter(&lo, -1)], &lo),
        (vec![counter(&lo, i64::MAX), slice(&fresh, 60, 0, 9), counter(&mid, i64::MAX)], &mid),
        (vec![counter(&fresh, 3), slice(&sliced, 60, 660, 1), slice(&sliced, 60, 600, 1)], &sliced),
        (vec![counter(&hi, i64::MIN), counter(&lo, i64::MIN)], &lo),
    ];
    for (entries, culprit) in cases {
        let b = batch(entries);
        let e = f.store.apply(&b).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overflow, "{e}");
        assert_eq!(e.key(), Some(culprit.to_string().as_str()), "{e}");
        assert!(!e.is_transient());
        let after = without_batch_markers(snapshot(&f.raw, &f.prefix).await, &f.prefix);
        assert_eq!(after, before, "an overflowing batch changes nothing");
        let marker: i64 = query(&f.raw, redis::cmd("EXISTS").arg(format!("{}batch:{}", f.prefix, b.id))).await;
        assert_eq!(marker, 0, "not even its marker");
        // Not remembered: a retry fails the same way (instead of passing as
        // already applied).
        assert_eq!(f.store.apply(&b).await.unwrap_err().kind(), ErrorKind::Overflow);
    }
    assert_eq!(
        f.store.get_many(&[hi.clone(), lo.clone(), mid.clone(), fresh.clone()]).await.unwrap(),
        [Some(i64::MAX - 1), Some(i64::MIN), Some(5), None]
    );
    assert!(f.store.series(&fresh, p(5), i64::MIN, i64::MAX).await.unwrap().is_empty());
    let known: Vec<String> =
        query(&f.raw, redis::cmd("ZRANGE").arg(format!("{}known:", f.prefix)).arg(0).arg(-1)).await;
    assert_eq!(known, ["1:hi", "60:sliced"]);
    // A batch that fits goes through afterwards.
    apply(&f.store, vec![counter(&hi, 1), counter(&lo, i64::MAX)]).await;
    assert_eq!(f.store.get_many(&[hi, lo]).await.unwrap(), [Some(i64::MAX), Some(-1)]);
}

#[tokio::test]
async fn extremes_round_trip_exactly() {
    let Some(f) = fixture().await else { return };
    let (max, min) = (key("", "max"), key("", "min"));
    let near = [key("", "near1"), key("", "near2"), key("", "near3")];
    apply(
        &f.store,
        vec![
            counter(&max, i64::MAX),
            counter(&min, i64::MIN),
            counter(&near[0], TWO_53 + 1),
            counter(&near[1], -(TWO_53 + 1)),
            counter(&near[2], TWO_53),
            slice(&max, 1, 0, i64::MAX),
            slice(&max, 1, -1, i64::MIN),
        ],
    )
    .await;
    apply(&f.store, vec![counter(&near[2], 1), counter(&near[0], 2)]).await;
    assert_eq!(
        f.store.get_many(&[max.clone(), min.clone(), near[0].clone(), near[1].clone(), near[2].clone()]).await.unwrap(),
        [Some(i64::MAX), Some(i64::MIN), Some(TWO_53 + 3), Some(-(TWO_53 + 1)), Some(TWO_53 + 1)]
    );
    let raw_values: BTreeMap<String, String> =
        query(&f.raw, redis::cmd("HGETALL").arg(format!("{}values:", f.prefix))).await;
    assert_eq!(raw_values["max"], "9223372036854775807");
    assert_eq!(raw_values["min"], "-9223372036854775808");
    assert_eq!(raw_values["near1"], "9007199254740995");
    assert_eq!(f.store.series(&max, p(1), i64::MIN, i64::MAX).await.unwrap(), [(-1, i64::MIN), (0, i64::MAX)]);
    let all = f.store.list(&ListQuery::new("", "")).await.unwrap();
    let all: Vec<(&str, i64)> = all.iter().map(|(k, v)| (k.name(), *v)).collect();
    assert_eq!(
        all,
        [("max", i64::MAX), ("min", i64::MIN), ("near1", TWO_53 + 3), ("near2", -(TWO_53 + 1)), ("near3", TWO_53 + 1)]
    );
    // Back down to zero, exactly.
    apply(&f.store, vec![counter(&max, -i64::MAX), counter(&min, i64::MAX), counter(&min, 1)]).await;
    assert_eq!(f.store.get_many(&[max, min]).await.unwrap(), [Some(0), Some(0)]);
}

#[tokio::test]
async fn top_n_is_exact_beyond_two_to_the_53() {
    let Some(f) = fixture().await else { return };
    // 2^60 + 1, + 2, + 3 all have the same double (the spacing there is 256).
    let base: i64 = 1 << 60;
    let ns = "top";
    let entries = vec![
        counter(&key(ns, "b"), base + 1),
        counter(&key(ns, "a"), base + 2),
        counter(&key(ns, "c"), base + 3),
        counter(&key(ns, "d"), base + 2),
        counter(&key(ns, "z"), 7),
        counter(&key(ns, "y"), 0),
        counter(&key(ns, "x"), 0),
        counter(&key(ns, "neg"), -(base + 3)),
        counter(&key(ns, "neg2"), -(base + 1)),
        counter(&key(ns, "w"), 0),
        counter(&key(ns, "big"), TWO_53 + 2),
        counter(&key(ns, "big2"), TWO_53 + 1),
        counter(&key(ns, "big3"), TWO_53),
    ];
    apply(&f.store, entries).await;
    let top = |n: usize| {
        let store = f.store.clone();
        async move {
            let out = store.list(&ListQuery::new(ns, "").top(n)).await.unwrap();
            out.into_iter().map(|(k, v)| (k.name().to_string(), v)).collect::<Vec<_>>()
        }
    };
    let expected: Vec<(String, i64)> = [
        ("c", base + 3),
        ("a", base + 2),
        ("d", base + 2),
        ("b", base + 1),
        ("big", TWO_53 + 2),
        ("big2", TWO_53 + 1),
        ("big3", TWO_53),
        ("z", 7),
        ("w", 0),
        ("x", 0),
        ("y", 0),
        ("neg2", -(base + 1)),
        ("neg", -(base + 3)),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect();
    for n in 0..=expected.len() + 2 {
        assert_eq!(top(n).await, expected[..n.min(expected.len())], "top {n}");
    }
    // With a prefix (few matches: read by name, then sorted).
    let top_b = f.store.list(&ListQuery::new(ns, "b").top(2)).await.unwrap();
    let top_b: Vec<(&str, i64)> = top_b.iter().map(|(k, v)| (k.name(), *v)).collect();
    assert_eq!(top_b, [("b", base + 1), ("big", TWO_53 + 2)]);
}

#[tokio::test]
async fn top_n_with_a_prefix_matching_many_walks_the_scores_exactly() {
    let Some(f) = fixture().await else { return };
    // More than 10,000 matches: the walk over the `top:` set is used.
    let ns = "many";
    let base: i64 = 1 << 60;
    let mut entries: Vec<BatchEntry> = (0..10_100).map(|i| counter(&key(ns, &format!("p:{i:05}")), i % 3)).collect();
    entries.push(counter(&key(ns, "p:big1"), base + 1));
    entries.push(counter(&key(ns, "p:big3"), base + 3));
    entries.push(counter(&key(ns, "p:big2"), base + 2));
    entries.push(counter(&key(ns, "q:bigger"), base + 100));
    entries.push(counter(&key(ns, "o:bigger"), base + 100));
    for chunk in entries.chunks(500) {
        apply(&f.store, chunk.to_vec()).await;
    }
    let top = f.store.list(&ListQuery::new(ns, "p:").top(6)).await.unwrap();
    let top: Vec<(&str, i64)> = top.iter().map(|(k, v)| (k.name(), *v)).collect();
    assert_eq!(
        top,
        [
            ("p:big3", base + 3),
            ("p:big2", base + 2),
            ("p:big1", base + 1),
            ("p:00002", 2),
            ("p:00005", 2),
            ("p:00008", 2)
        ]
    );
    let everything = f.store.list(&ListQuery::new(ns, "").top(3)).await.unwrap();
    let everything: Vec<(&str, i64)> = everything.iter().map(|(k, v)| (k.name(), *v)).collect();
    assert_eq!(everything, [("o:bigger", base + 100), ("q:bigger", base + 100), ("p:big3", base + 3)]);
    let by_name = f.store.list(&ListQuery::new(ns, "p:").limit(3)).await.unwrap();
    let by_name: Vec<(&str, i64)> = by_name.iter().map(|(k, v)| (k.name(), *v)).collect();
    assert_eq!(by_name, [("p:00000", 0), ("p:00001", 1), ("p:00002", 2)]);
    let all = f.store.list(&ListQuery::new(ns, "p:").limit(usize::MAX)).await.unwrap();
    assert_eq!(all.len(), 10_103);
}

#[tokio::test]
async fn list_by_name_respects_namespace_prefix_and_limit() {
    let Some(f) = fixture().await else { return };
    let names = ["ads", "ads:1", "ads:2", "ads:10", "ads;", "ads:é", "adt", "b", "ad"];
    let mut entries: Vec<BatchEntry> = names.iter().enumerate().map(|(i, n)| counter(&key("n", n), i as i64)).collect();
    entries.push(counter(&key("n2", "ads:9"), 1));
    entries.push(counter(&key("", "ads:8"), 1));
    entries.push(counter(&key("n:x", "ads:7"), 1));
    apply(&f.store, entries).await;
    let list = |q: ListQuery| {
        let store = f.store.clone();
        async move { store.list(&q).await.unwrap().into_iter().map(|(k, _)| k.name().to_string()).collect::<Vec<_>>() }
    };
    assert_eq!(list(ListQuery::new("n", "ads:")).await, ["ads:1", "ads:10", "ads:2", "ads:é"]);
    assert_eq!(list(ListQuery::new("n", "ads")).await, ["ads", "ads:1", "ads:10", "ads:2", "ads:é", "ads;"]);
    assert_eq!(
        list(ListQuery::new("n", "")).await,
        ["ad", "ads", "ads:1", "ads:10", "ads:2", "ads:é", "ads;", "adt", "b"]
    );
    assert_eq!(list(ListQuery::new("n", "").limit(2)).await, ["ad", "ads"]);
    assert!(list(ListQuery::new("n", "").limit(0)).await.is_empty());
    assert!(list(ListQuery::new("n", "zzz")).await.is_empty());
    assert_eq!(list(ListQuery::new("", "")).await, ["ads:8"]);
    assert_eq!(list(ListQuery::new("n:x", "")).await, ["ads:7"]);
    assert!(list(ListQuery::new("none", "")).await.is_empty());
    let with_values = f.store.list(&ListQuery::new("n", "ads:1")).await.unwrap();
    assert_eq!(with_values, [(key("n", "ads:1"), 1), (key("n", "ads:10"), 3)]);
    // get_many across namespaces in one call.
    let got = f.store.get_many(&[key("n2", "ads:9"), key("n", "b"), key("", "ads:8"), key("n", "nope")]).await.unwrap();
    assert_eq!(got, [Some(1), Some(7), Some(1), None]);
}

#[tokio::test]
async fn delete_removes_the_counter_and_its_series() {
    let Some(f) = fixture().await else { return };
    let (k, other) = (key("ns", "gone:x"), key("ns", "stays"));
    apply(&f.store, vec![counter(&k, 3), slice(&k, 1, 100, 3), slice(&k, 60, 60, 3), counter(&other, 1)]).await;
    apply(&f.store, vec![slice(&other, 60, 60, 1), slice(&k, 3600, 0, 3)]).await;
    assert!(f.store.delete(&k).await.unwrap());
    assert_eq!(f.store.get_many(&[k.clone(), other.clone()]).await.unwrap(), [None, Some(1)]);
    for secs in [1, 60, 3600] {
        assert!(f.store.series(&k, p(secs), i64::MIN, i64::MAX).await.unwrap().is_empty());
    }
    let snap = without_batch_markers(snapshot(&f.raw, &f.prefix).await, &f.prefix);
    let keys: Vec<&str> = snap.keys().map(|k| k.strip_prefix(&f.prefix).unwrap()).collect();
    assert_eq!(keys, ["count:60:ns/stays", "known:", "names:ns", "series:ns/stays", "top:ns", "values:ns"]);
    assert_eq!(snap[&format!("{}known:", f.prefix)], r#"zset [("60:ns/stays", "0")]"#);
    assert!(!f.store.delete(&k).await.unwrap());
    assert!(!f.store.delete(&key("ns", "never")).await.unwrap());
    // It starts again from zero.
    apply(&f.store, vec![counter(&k, 1)]).await;
    assert_eq!(get(&f.store, &k).await, Some(1));
    // Only a time series (no total) still counts as existing.
    let only_series = key("ns", "only-series");
    apply(&f.store, vec![slice(&only_series, 1, 5, 1)]).await;
    assert!(f.store.delete(&only_series).await.unwrap());
}

#[tokio::test]
async fn time_slices_are_written_in_the_redis_in_action_layout() {
    let Some(f) = fixture().await else { return };
    let (k, nk) = (key("", "clicks:ad42"), key("shop", "views"));
    apply(&f.store, vec![slice(&k, 60, 1_700_000_040, 2), slice(&k, 1, 1_700_000_059, 2), slice(&nk, 60, 120, 5)])
        .await;
    apply(&f.store, vec![slice(&k, 60, 1_700_000_040, 3), slice(&k, 60, 1_699_999_980, 1)]).await;
    let hash: BTreeMap<String, String> =
        query(&f.raw, redis::cmd("HGETALL").arg(format!("{}count:60:clicks:ad42", f.prefix))).await;
    let expected: BTreeMap<String, String> =
        [("1700000040", "5"), ("1699999980", "1")].into_iter().map(|(a, b)| (a.into(), b.into())).collect();
    assert_eq!(hash, expected);
    let hash: BTreeMap<String, String> =
        query(&f.raw, redis::cmd("HGETALL").arg(format!("{}count:60:shop/views", f.prefix))).await;
    assert_eq!(hash, [("120".to_string(), "5".to_string())].into_iter().collect());
    let known: Vec<(String, String)> =
        query(&f.raw, redis::cmd("ZRANGE").arg(format!("{}known:", f.prefix)).arg(0).arg(-1).arg("WITHSCORES")).await;
    let known: Vec<(&str, &str)> = known.iter().map(|(m, s)| (m.as_str(), s.as_str())).collect();
    assert_eq!(known, [("1:clicks:ad42", "0"), ("60:clicks:ad42", "0"), ("60:shop/views", "0")]);
    assert_eq!(
        f.store.series(&k, p(60), 1_699_999_980, 1_700_000_040).await.unwrap(),
        [(1_699_999_980, 1), (1_700_000_040, 5)]
    );
    assert_eq!(f.store.series(&k, p(60), 1_699_999_981, 1_700_000_039).await.unwrap(), []);
    assert_eq!(f.store.series(&k, p(60), 1_700_000_040, 1_699_999_980).await.unwrap(), [], "from > to");
}

#[tokio::test]
async fn the_literal_redis_in_action_keys_without_a_prefix() {
    let Some(url) = url() else { return };
    // The empty prefix writes to the server's literal `count:`/`known:`
    // keys: random names keep this test to its own, and it reads `known:`
    // only for its own members.
    let f = fixture_with(&url, RedisStoreOptions::default()).await;
    let name = format!("store-test-{}:clicks", random_hex());
    let k = key("", &name);
    apply(&f.store, vec![counter(&k, 2), slice(&k, 60, 600, 2), slice(&k, 3600, 0, 2)]).await;
    let hash: BTreeMap<String, String> = query(&f.raw, redis::cmd("HGETALL").arg(format!("count:60:{name}"))).await;
    assert_eq!(hash, [("600".to_string(), "2".to_string())].into_iter().collect());
    for secs in [60, 3600] {
        let score: Option<String> =
            query(&f.raw, redis::cmd("ZSCORE").arg("known:").arg(format!("{secs}:{name}"))).await;
        assert_eq!(score.as_deref(), Some("0"));
    }

    // Written raw by code of the book, read and cleaned by the store. An
    // unusual precision keeps the clean away from anybody else's series.
    let raw_name = format!("store-test-{}:raw", random_hex());
    let raw_key = key("", &raw_name);
    let precision = 7919;
    let hash = format!("count:{precision}:{raw_name}");
    for (bucket, n) in [(0, 4), (7919, 5), (15838, 6)] {
        let _: i64 = query(&f.raw, redis::cmd("HINCRBY").arg(&hash).arg(bucket).arg(n)).await;
    }
    let _: i64 = query(&f.raw, redis::cmd("ZADD").arg("known:").arg(0).arg(format!("{precision}:{raw_name}"))).await;
    assert_eq!(f.store.series(&raw_key, p(precision), 0, 100_000).await.unwrap(), [(0, 4), (7919, 5), (15838, 6)]);
    let report = f.store.clean(p(precision), 15838).await.unwrap();
    assert_eq!(report, CleanReport { buckets_removed: 2, series_removed: 0 });
    assert_eq!(f.store.series(&raw_key, p(precision), 0, 100_000).await.unwrap(), [(15838, 6)]);
    let report = f.store.clean(p(precision), 20_000).await.unwrap();
    assert_eq!(report, CleanReport { buckets_removed: 1, series_removed: 1 });
    let score: Option<String> =
        query(&f.raw, redis::cmd("ZSCORE").arg("known:").arg(format!("{precision}:{raw_name}"))).await;
    assert_eq!(score, None, "the emptied series is forgotten");
    let exists: i64 = query(&f.raw, redis::cmd("EXISTS").arg(&hash)).await;
    assert_eq!(exists, 0);

    assert!(f.store.delete(&k).await.unwrap());
    for secs in [60, 3600] {
        let score: Option<String> =
            query(&f.raw, redis::cmd("ZSCORE").arg("known:").arg(format!("{secs}:{name}"))).await;
        assert_eq!(score, None);
        let exists: i64 = query(&f.raw, redis::cmd("EXISTS").arg(format!("count:{secs}:{name}"))).await;
        assert_eq!(exists, 0);
    }
}

#[tokio::test]
async fn series_written_raw_in_the_book_layout_are_read_and_cleaned() {
    let Some(f) = fixture().await else { return };
    let k = key("", "page:home");
    let other = key("ns", "x");
    let hash = format!("{}count:60:page:home", f.prefix);
    // The book's update_counter: ZADD known: then HINCRBY, in MULTI.
    for (bucket, n) in [(-120_i64, 1_i64), (-60, 2), (0, 3), (60, 4), (1_700_000_040, 5)] {
        let _: () = redis::pipe()
            .atomic()
            .cmd("ZADD")
            .arg(format!("{}known:", f.prefix))
            .arg(0)
            .arg("60:page:home")
            .ignore()
            .cmd("HINCRBY")
            .arg(&hash)
            .arg(bucket)
            .arg(n)
            .ignore()
            .query_async(&mut f.raw.clone())
            .await
            .unwrap();
    }
    // A field that is not a bucket start is somebody else's: left alone.
    let _: i64 = query(&f.raw, redis::cmd("HSET").arg(&hash).arg("060").arg(9)).await;
    apply(&f.store, vec![slice(&other, 60, 0, 1), slice(&k, 1, 0, 1)]).await;
    assert_eq!(
        f.store.series(&k, p(60), i64::MIN, i64::MAX).await.unwrap(),
        [(-120, 1), (-60, 2), (0, 3), (60, 4), (1_700_000_040, 5)]
    );
    assert_eq!(f.store.series(&k, p(60), -60, 60).await.unwrap(), [(-60, 2), (0, 3), (60, 4)]);

    // Exact comparison of negative and large starts with the cutoff.
    let report = f.store.clean(p(60), 0).await.unwrap();
    assert_eq!(report, CleanReport { buckets_removed: 2, series_removed: 0 });
    assert_eq!(f.store.series(&k, p(60), i64::MIN, i64::MAX).await.unwrap(), [(0, 3), (60, 4), (1_700_000_040, 5)]);
    let report = f.store.clean(p(60), 1_700_000_040).await.unwrap();
    assert_eq!(report, CleanReport { buckets_removed: 3, series_removed: 1 }, "ns/x's bucket 0 goes too");
    let report = f.store.clean(p(60), i64::MAX).await.unwrap();
    assert_eq!(report, CleanReport { buckets_removed: 1, series_removed: 0 }, "the foreign field keeps the hash");
    let fields: BTreeMap<String, String> = query(&f.raw, redis::cmd("HGETALL").arg(&hash)).await;
    assert_eq!(fields, [("060".to_string(), "9".to_string())].into_iter().collect());
    let known: Vec<String> =
        query(&f.raw, redis::cmd("ZRANGE").arg(format!("{}known:", f.prefix)).arg(0).arg(-1)).await;
    assert_eq!(known, ["1:page:home", "60:page:home"], "other precisions are not touched");
    let _: i64 = query(&f.raw, redis::cmd("HDEL").arg(&hash).arg("060")).await;
    let report = f.store.clean(p(60), i64::MIN).await.unwrap();
    assert_eq!(report, CleanReport { buckets_removed: 0, series_removed: 1 }, "an empty series is forgotten");
    let known: Vec<String> =
        query(&f.raw, redis::cmd("ZRANGE").arg(format!("{}known:", f.prefix)).arg(0).arg(-1)).await;
    assert_eq!(known, ["1:page:home"]);
    let series_set: Vec<String> = query(&f.raw, redis::cmd("SMEMBERS").arg(format!("{}series:ns/x", f.prefix))).await;
    assert!(series_set.is_empty(), "{series_set:?}");
}

/// Whether `known:` lists `member` exactly when its `count:` hash has
/// buckets, and (for series written through the store) the series set lists
/// the precision exactly then too.
async fn assert_known_iff_buckets(f: &Fixture, name: &str, series_set: bool, context: &str) {
    let buckets: i64 = query(&f.raw, redis::cmd("HLEN").arg(format!("{}count:1:{name}", f.prefix))).await;
    let score: Option<String> =
        query(&f.raw, redis::cmd("ZSCORE").arg(format!("{}known:", f.prefix)).arg(format!("1:{name}"))).await;
    assert_eq!(score.is_some(), buckets > 0, "{name} {context}: known: must list the series iff it has buckets");
    if series_set {
        let set: Vec<String> = query(&f.raw, redis::cmd("SMEMBERS").arg(format!("{}series:{name}", f.prefix))).await;
        assert_eq!(set == ["1"], buckets > 0, "{name} {context}: the series set must list 1 iff it has buckets");
    }
}

/// A random pause of up to 0.4 ms (spinning: Tokio's timer is too coarse),
/// so that racing writes land before, during and after a clean.
async fn jitter() {
    let until = std::time::Instant::now() + Duration::from_micros(rand::random::<u64>() % 400);
    while std::time::Instant::now() < until {
        std::hint::spin_loop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn clean_is_safe_against_concurrent_writers() {
    let Some(f) = fixture().await else { return };
    let writer_store = RedisStore::connect_with(
        RedisTarget::parse(&f.url).unwrap(),
        RedisStoreOptions::default().prefix(f.prefix.clone()),
    )
    .await
    .unwrap();
    let writer_raw = raw(&f.url).await;
    let (ours, book) = (key("", "ours"), key("", "book"));
    let book_write = |bucket: i64| {
        let (raw, prefix) = (writer_raw.clone(), f.prefix.clone());
        async move {
            jitter().await;
            // The book's update_counter: ZADD known: and HINCRBY in MULTI.
            let _: () = redis::pipe()
                .atomic()
                .cmd("ZADD")
                .arg(format!("{prefix}known:"))
                .arg(0)
                .arg("1:book")
                .ignore()
                .cmd("HINCRBY")
                .arg(format!("{prefix}count:1:book"))
                .arg(bucket)
                .arg(1)
                .ignore()
                .query_async(&mut raw.clone())
                .await
                .unwrap();
        }
    };
    const ROUNDS: i64 = 300;
    let (mut emptied, mut kept) = (0, 0);
    for bucket in 0..ROUNDS {
        // Each round: both writers add a fresh bucket while a clean removes
        // every older one, racing to decide whether the series is empty.
        let (_, _, report) = tokio::join!(
            tokio::spawn({
                let (store, ours) = (writer_store.clone(), ours.clone());
                async move {
                    jitter().await;
                    apply(&store, vec![slice(&ours, 1, bucket, 1)]).await
                }
            }),
            tokio::spawn(book_write(bucket)),
            f.store.clean(p(1), bucket),
        );
        let report = report.unwrap();
        emptied += report.series_removed;
        kept += 2 - report.series_removed;
        let context = format!("after round {bucket} ({report:?})");
        assert_known_iff_buckets(&f, "ours", true, &context).await;
        assert_known_iff_buckets(&f, "book", false, &context).await;
        // The fresh buckets are never lost.
        for k in [&ours, &book] {
            assert_eq!(f.store.series(k, p(1), bucket, bucket).await.unwrap(), [(bucket, 1)], "{k} {context}");
        }
    }
    eprintln!("clean vs writers: {emptied} series emptied, {kept} kept in {ROUNDS} rounds");
    assert!(emptied > 0 && kept > 0, "the race went one way only ({emptied} emptied, {kept} kept): not exercised");
    let report = f.store.clean(p(1), ROUNDS).await.unwrap();
    assert_eq!(report, CleanReport { buckets_removed: 2, series_removed: 2 });
    let known: Vec<String> =
        query(&f.raw, redis::cmd("ZRANGE").arg(format!("{}known:", f.prefix)).arg(0).arg(-1)).await;
    assert!(known.is_empty(), "{known:?}");
}

#[tokio::test]
async fn a_value_that_is_not_an_integer_is_a_permanent_error_naming_the_key() {
    let Some(f) = fixture().await else { return };
    let (bad, good) = (key("ns", "bad"), key("ns", "good"));
    apply(&f.store, vec![counter(&bad, 1), counter(&good, 1), slice(&bad, 60, 0, 1)]).await;
    let _: i64 = query(&f.raw, redis::cmd("HSET").arg(format!("{}values:ns", f.prefix)).arg("bad").arg("abc")).await;
    let _: i64 = query(&f.raw, redis::cmd("HSET").arg(format!("{}count:60:ns/bad", f.prefix)).arg(0).arg("1.5")).await;
    let before = without_batch_markers(snapshot(&f.raw, &f.prefix).await, &f.prefix);

    let e = f.store.get_many(&[good.clone(), bad.clone()]).await.unwrap_err();
    assert_eq!((e.kind(), e.key()), (ErrorKind::Permanent, Some("ns/bad")), "{e}");
    assert!(e.to_string().contains("abc"), "{e}");
    assert_eq!(get(&f.store, &good).await, Some(1));
    let e = f.store.list(&ListQuery::new("ns", "")).await.unwrap_err();
    assert_eq!((e.kind(), e.key()), (ErrorKind::Permanent, Some("ns/bad")), "{e}");
    let e = f.store.list(&ListQuery::new("ns", "").top(5)).await.unwrap_err();
    assert_eq!((e.kind(), e.key()), (ErrorKind::Permanent, Some("ns/bad")), "{e}");
    let e = f.store.series(&bad, p(60), 0, 0).await.unwrap_err();
    assert_eq!((e.kind(), e.key()), (ErrorKind::Permanent, Some("ns/bad")), "{e}");

    // Applying to it fails the whole batch, changing nothing.
    for entries in [vec![counter(&good, 5), counter(&bad, 1)], vec![counter(&good, 5), slice(&bad, 60, 0, 1)]] {
        let e = f.store.apply(&batch(entries)).await.unwrap_err();
        assert_eq!((e.kind(), e.key()), (ErrorKind::Permanent, Some("ns/bad")), "{e}");
        assert!(!e.is_transient());
        assert_eq!(without_batch_markers(snapshot(&f.raw, &f.prefix).await, &f.prefix), before);
    }
}

#[tokio::test]
async fn a_key_of_another_type_is_a_permanent_error_and_changes_nothing() {
    let Some(f) = fixture().await else { return };
    let (k, good) = (key("str", "x"), key("", "good"));
    let _: () = query(&f.raw, redis::cmd("SET").arg(format!("{}values:str", f.prefix)).arg("not a hash")).await;
    let _: () = query(&f.raw, redis::cmd("SET").arg(format!("{}known:", f.prefix)).arg("not a zset")).await;
    let before = snapshot(&f.raw, &f.prefix).await;
    for entries in [vec![counter(&good, 1), counter(&k, 1)], vec![counter(&good, 1), slice(&good, 1, 0, 1)]] {
        let e = f.store.apply(&batch(entries)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Permanent, "{e}");
        assert!(e.key().is_some(), "{e}");
        assert_eq!(snapshot(&f.raw, &f.prefix).await, before);
    }
    let e = f.store.get_many(&[good.clone(), k.clone()]).await.unwrap_err();
    assert_eq!((e.kind(), e.key()), (ErrorKind::Permanent, Some("str/x")), "{e}");
    let e = f.store.delete(&k).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent, "{e}");
    assert_eq!(snapshot(&f.raw, &f.prefix).await, before);
}

/// The split contract of `DurableStore::apply`: a batch and a part of it
/// never both land. The batch has three counters and a time slice, so its
/// right half (and that half's halves) carries a slice behind the extra
/// marker keys.
mod split {
    use super::*;

    struct Split {
        keys: Vec<Key>,
        whole: Batch,
        left: Batch,
        right: Batch,
    }

    fn split_batch() -> Split {
        let keys: Vec<Key> = ["a", "b", "c", "d"].iter().map(|n| key("s", n)).collect();
        let entries =
            vec![counter(&keys[0], 1), counter(&keys[1], 2), counter(&keys[2], 3), slice(&keys[3], 60, 600, 4)];
        let whole = Batch::claimed(BatchId::new(), entries);
        let (left, right) = whole.halves().unwrap();
        assert_eq!(left.entries.len(), 2);
        Split { keys, whole, left, right }
    }

    async fn values(f: &Fixture, s: &Split) -> (Vec<Option<i64>>, Vec<(i64, i64)>) {
        (f.store.get_many(&s.keys[..3]).await.unwrap(), f.store.series(&s.keys[3], p(60), 0, 1_000).await.unwrap())
    }

    async fn marker_ttl(f: &Fixture, id: BatchId) -> i64 {
        query(&f.raw, redis::cmd("TTL").arg(format!("{}batch:{id}", f.prefix))).await
    }

    #[tokio::test]
    async fn a_batch_applied_whole_refuses_its_parts() {
        let Some(f) = fixture().await else { return };
        let s = split_batch();
        assert_eq!(f.store.apply(&s.whole).await.unwrap(), ApplyOutcome::Applied);
        let before = snapshot(&f.raw, &f.prefix).await;
        let (grandchild, _) = s.right.halves().unwrap();
        for part in [&s.left, &s.right, &grandchild] {
            assert_eq!(f.store.apply(part).await.unwrap(), ApplyOutcome::AlreadyApplied, "{:?}", part.id);
        }
        assert_eq!(snapshot(&f.raw, &f.prefix).await, before);
        assert_eq!(values(&f, &s).await, (vec![Some(1), Some(2), Some(3)], vec![(600, 4)]));
    }

    #[tokio::test]
    async fn after_a_half_landed_the_whole_is_split_and_each_half_lands_once() {
        let Some(f) = fixture().await else { return };
        let s = split_batch();
        assert_eq!(f.store.apply(&s.left).await.unwrap(), ApplyOutcome::Applied);
        let week = 7 * 24 * 3600;
        let ttl = marker_ttl(&f, s.whole.id.split_marker()).await;
        assert!((week - 60..=week).contains(&ttl), "the split marker expires like a batch marker: TTL {ttl}");
        assert_eq!(marker_ttl(&f, s.whole.id).await, -2, "the whole was not applied");
        let before = snapshot(&f.raw, &f.prefix).await;
        assert_eq!(f.store.apply(&s.whole).await.unwrap(), ApplyOutcome::Split);
        assert_eq!(snapshot(&f.raw, &f.prefix).await, before, "a Split answer changes nothing");
        assert_eq!(values(&f, &s).await, (vec![Some(1), Some(2), None], vec![]));
        assert_eq!(f.store.apply(&s.right).await.unwrap(), ApplyOutcome::Applied);
        for again in [&s.left, &s.right] {
            assert_eq!(f.store.apply(again).await.unwrap(), ApplyOutcome::AlreadyApplied);
        }
        let (left_left, left_right) = s.left.halves().unwrap();
        let (right_left, _) = s.right.halves().unwrap();
        for part in [&left_left, &left_right, &right_left] {
            assert_eq!(f.store.apply(part).await.unwrap(), ApplyOutcome::AlreadyApplied, "a part of a landed half");
        }
        assert_eq!(f.store.apply(&s.whole).await.unwrap(), ApplyOutcome::Split);
        assert_eq!(values(&f, &s).await, (vec![Some(1), Some(2), Some(3)], vec![(600, 4)]));
    }

    #[tokio::test]
    async fn a_grandchild_landing_splits_its_parent_and_the_root() {
        let Some(f) = fixture().await else { return };
        let s = split_batch();
        let (right_left, right_right) = s.right.halves().unwrap();
        assert_eq!(right_right.lineage, vec![s.whole.id, s.right.id]);
        assert!(matches!(right_right.entries[0].cell, Cell::Slice(_)));
        assert_eq!(f.store.apply(&right_right).await.unwrap(), ApplyOutcome::Applied);
        assert_eq!(f.store.apply(&s.whole).await.unwrap(), ApplyOutcome::Split);
        assert_eq!(f.store.apply(&s.right).await.unwrap(), ApplyOutcome::Split);
        assert_eq!(f.store.apply(&s.left).await.unwrap(), ApplyOutcome::Applied);
        assert_eq!(f.store.apply(&right_left).await.unwrap(), ApplyOutcome::Applied);
        assert_eq!(f.store.apply(&right_right).await.unwrap(), ApplyOutcome::AlreadyApplied);
        assert_eq!(values(&f, &s).await, (vec![Some(1), Some(2), Some(3)], vec![(600, 4)]));
    }

    #[tokio::test]
    async fn an_overflow_in_a_half_changes_nothing_and_records_no_marker() {
        let Some(f) = fixture().await else { return };
        let s = split_batch();
        // The slice of "d" is one short of the top: the right half overflows
        // on its second entry, after its first one was added.
        apply(&f.store, vec![slice(&s.keys[3], 60, 600, i64::MAX - 3)]).await;
        let before = snapshot(&f.raw, &f.prefix).await;
        let e = f.store.apply(&s.right).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overflow, "{e}");
        assert_eq!(e.key(), Some("s/d"), "{e}");
        assert_eq!(snapshot(&f.raw, &f.prefix).await, before, "no value and no marker");
        // No split marker: the whole is tried (and refused), not answered Split.
        assert_eq!(f.store.apply(&s.whole).await.unwrap_err().kind(), ErrorKind::Overflow);
        assert_eq!(snapshot(&f.raw, &f.prefix).await, before);
        assert_eq!(f.store.apply(&s.left).await.unwrap(), ApplyOutcome::Applied);
        assert_eq!(f.store.apply(&s.whole).await.unwrap(), ApplyOutcome::Split);
        assert_eq!(values(&f, &s).await, (vec![Some(1), Some(2), None], vec![(600, i64::MAX - 3)]));
    }

    #[tokio::test]
    async fn a_key_of_another_type_in_a_half_names_its_entry() {
        let Some(f) = fixture().await else { return };
        let s = split_batch();
        let (_, right_right) = s.right.halves().unwrap();
        let count = format!("{}count:60:s/d", f.prefix);
        let _: () = query(&f.raw, redis::cmd("SET").arg(&count).arg("x")).await;
        let e = f.store.apply(&right_right).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Permanent, "{e}");
        assert_eq!(e.key(), Some("s/d"), "{e}");
        assert!(e.to_string().contains(&count), "{e}");
    }
}
