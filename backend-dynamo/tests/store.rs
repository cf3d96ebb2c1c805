//! The DynamoDB store against a local DynamoDB-compatible server (moto).

mod common;

use std::sync::Arc;

use backend_dynamo::{DynamoStore, MAX_BATCH};
use common::*;
use counter_core::{ApplyOutcome, Batch, BatchId, DurableStore, ErrorKind, Key, ListQuery, Precision};

#[tokio::test]
async fn a_batch_applies_once_however_often_it_is_sent() {
    let Some(endpoint) = endpoint() else { return };
    let store = fresh_store(&endpoint).await;
    let (a, b) = (key("a"), key("b"));
    let batch = counter_batch(&[(&a, 5), (&b, -3)]);
    assert_eq!(store.apply(&batch).await.unwrap(), ApplyOutcome::Applied);
    assert_eq!(store.apply(&batch).await.unwrap(), ApplyOutcome::AlreadyApplied);
    // The same identity with other contents is still the same batch.
    let mut again = batch.clone();
    again.entries[0].delta = 1000;
    assert_eq!(store.apply(&again).await.unwrap(), ApplyOutcome::AlreadyApplied);
    assert_eq!(store.get_many(&[a, b, key("none")]).await.unwrap(), [Some(5), Some(-3), None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_flushers_apply_a_batch_once() {
    let Some(endpoint) = endpoint() else { return };
    let store = Arc::new(fresh_store(&endpoint).await);
    let k = key("raced");
    let batch = Arc::new(counter_batch(&[(&k, 7)]));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (store, batch) = (store.clone(), batch.clone());
        tasks.push(tokio::spawn(async move {
            // A transaction conflict is transient: retry it, as the engine does.
            loop {
                match store.apply(&batch).await {
                    Ok(outcome) => return outcome,
                    Err(e) if e.is_transient() => tokio::task::yield_now().await,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    let mut applied = 0;
    for task in tasks {
        if task.await.unwrap() == ApplyOutcome::Applied {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
    assert_eq!(store.get_many(&[k]).await.unwrap(), [Some(7)]);
}

#[tokio::test]
async fn the_full_i64_range_is_exact_and_overflow_changes_nothing() {
    let Some(endpoint) = endpoint() else { return };
    let store = fresh_store(&endpoint).await;
    let (max, min, other) = (key("max"), key("min"), key("other"));
    store.apply(&counter_batch(&[(&max, i64::MAX), (&min, i64::MIN)])).await.unwrap();
    assert_eq!(store.get_many(&[max.clone(), min.clone()]).await.unwrap(), [Some(i64::MAX), Some(i64::MIN)]);
    store.apply(&counter_batch(&[(&other, 1)])).await.unwrap();
    let mut landed_slices = vec![];
    for (k, d) in [(&max, 1), (&min, -1)] {
        let mut batch = counter_batch(&[(&other, 100), (k, d)]);
        batch.entries.push(slice_entry(&other, 60, 600, 1));
        let e = store.apply(&batch).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overflow, "{e}");
        assert_eq!(e.key(), Some(k.to_string().as_str()));
        // Nothing of the batch landed, and its identity is not spent.
        assert_eq!(store.get_many(std::slice::from_ref(&other)).await.unwrap(), [Some(1)]);
        let series = store.series(&other, Precision::from_secs(60).unwrap(), 0, 10_000).await.unwrap();
        assert_eq!(series, landed_slices, "the refused batch's slice did not land");
        batch.entries.retain(|e| e.cell.key() != k);
        assert_eq!(store.apply(&batch).await.unwrap(), ApplyOutcome::Applied);
        landed_slices = vec![(600, landed_slices.first().map_or(0, |s: &(i64, i64)| s.1) + 1)];
        store.apply(&counter_batch(&[(&other, -100)])).await.unwrap();
    }
    let near = key("near");
    store.apply(&counter_batch(&[(&near, (1 << 53) + 1)])).await.unwrap();
    store.apply(&counter_batch(&[(&near, 2)])).await.unwrap();
    assert_eq!(store.get_many(&[near]).await.unwrap(), [Some((1 << 53) + 3)]);
}

#[tokio::test]
async fn batches_are_bounded_and_reads_are_chunked() {
    let Some(endpoint) = endpoint() else { return };
    let store = fresh_store(&endpoint).await;
    assert_eq!(store.capabilities().max_batch, MAX_BATCH);
    let keys: Vec<Key> = (0..250).map(|i| key(&format!("k{i}"))).collect();
    for chunk in keys.chunks(MAX_BATCH) {
        let entries: Vec<(&Key, i64)> = chunk.iter().map(|k| (k, 2)).collect();
        store.apply(&counter_batch(&entries)).await.unwrap();
    }
    let too_big: Vec<(&Key, i64)> = keys.iter().take(MAX_BATCH + 1).map(|k| (k, 1)).collect();
    let e = store.apply(&counter_batch(&too_big)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let mut asked = keys.clone();
    asked.push(keys[0].clone()); // duplicates are fine
    let values = store.get_many(&asked).await.unwrap();
    assert!(values.iter().all(|v| *v == Some(2)), "{values:?}");
    assert_eq!(store.list(&ListQuery::new("", "k1")).await.unwrap().len(), 1 + 10 + 100);
    let top = store.list(&ListQuery::new("", "k").top(3)).await.unwrap();
    assert_eq!(top.len(), 3);
}

#[tokio::test]
async fn series_clean_and_delete() {
    let Some(endpoint) = endpoint() else { return };
    let store = fresh_store(&endpoint).await;
    let (k, other) = (Key::new("ns", "ts").unwrap(), Key::new("ns", "ts2").unwrap());
    let mut batch = Batch::new();
    for start in [0, 60, 120, 180] {
        batch.entries.push(slice_entry(&k, 60, start, start + 1));
    }
    batch.entries.push(slice_entry(&k, 5, 5, 9));
    batch.entries.push(slice_entry(&other, 60, 0, 4));
    store.apply(&batch).await.unwrap();
    let m = Precision::from_secs(60).unwrap();
    assert_eq!(store.series(&k, m, 60, 180).await.unwrap(), [(60, 61), (120, 121), (180, 181)]);
    let report = store.clean(m, 120).await.unwrap();
    assert_eq!((report.buckets_removed, report.series_removed), (3, 1), "ts2 lost its only bucket");
    assert_eq!(store.series(&k, m, 0, 1000).await.unwrap(), [(120, 121), (180, 181)]);
    assert_eq!(store.series(&k, Precision::from_secs(5).unwrap(), 0, 10).await.unwrap(), [(5, 9)]);
    assert!(store.delete(&k).await.unwrap(), "a counter with only a series exists");
    assert!(store.series(&k, m, 0, 1000).await.unwrap().is_empty());
    assert!(!store.delete(&k).await.unwrap());
}

#[tokio::test]
async fn missing_tables_and_bad_urls() {
    let Some(endpoint) = endpoint() else { return };
    let url = format!("dynamodb://{}?endpoint={endpoint}&create=false", random_table());
    let e = DynamoStore::connect(&url).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent, "a missing table is permanent: {e}");
    assert!(e.to_string().contains("ResourceNotFound"), "{e}");
    let e = DynamoStore::connect("dynamodb://tab?endpoint=http://127.0.0.1:1").await.unwrap_err();
    assert!(e.is_transient(), "nothing listens on port 1: {e}");
    for bad in ["dynamodb://x", "dynamodb://table?endpoint=ftp://h"] {
        assert_eq!(DynamoStore::connect(bad).await.unwrap_err().kind(), ErrorKind::Config, "{bad}");
    }
}

/// The split contract of `DurableStore::apply`: a batch and a part of it
/// never both land.
mod split {
    use super::*;
    use counter_core::{BatchEntry, Cell};

    struct Split {
        keys: Vec<Key>,
        whole: Batch,
        left: Batch,
        right: Batch,
    }

    /// Three counters and a time slice (of "d"), split in two halves.
    fn split_batch() -> Split {
        let keys: Vec<Key> = ["a", "b", "c", "d"].iter().map(|n| key(n)).collect();
        let mut entries: Vec<BatchEntry> = keys[..3]
            .iter()
            .zip([1, 2, 3])
            .map(|(k, delta)| BatchEntry { cell: Cell::Counter(k.clone()), delta })
            .collect();
        entries.push(slice_entry(&keys[3], 60, 600, 4));
        let whole = Batch::claimed(BatchId::new(), entries);
        let (left, right) = whole.halves().unwrap();
        assert_eq!(left.entries.len(), 2);
        Split { keys, whole, left, right }
    }

    async fn values(store: &DynamoStore, s: &Split) -> (Vec<Option<i64>>, Vec<(i64, i64)>) {
        let minute = Precision::from_secs(60).unwrap();
        (store.get_many(&s.keys[..3]).await.unwrap(), store.series(&s.keys[3], minute, 0, 1_000).await.unwrap())
    }

    /// The identities in the batches table.
    async fn markers(endpoint: &str, store: &DynamoStore) -> Vec<String> {
        let raw = raw_client(endpoint).await;
        let found = raw.scan().table_name(format!("{}.batches", store.table())).send().await.unwrap();
        let mut ids: Vec<String> =
            found.items().iter().filter_map(|item| item.get("id").and_then(|v| v.as_s().ok()).cloned()).collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn a_batch_applied_whole_refuses_its_parts() {
        let Some(endpoint) = endpoint() else { return };
        let store = fresh_store(&endpoint).await;
        let s = split_batch();
        assert_eq!(store.apply(&s.whole).await.unwrap(), ApplyOutcome::Applied);
        let (grandchild, _) = s.right.halves().unwrap();
        for part in [&s.left, &s.right, &grandchild] {
            assert_eq!(store.apply(part).await.unwrap(), ApplyOutcome::AlreadyApplied, "{:?}", part.id);
        }
        assert_eq!(values(&store, &s).await, (vec![Some(1), Some(2), Some(3)], vec![(600, 4)]));
        assert_eq!(markers(&endpoint, &store).await, [s.whole.id.to_string()]);
    }

    #[tokio::test]
    async fn after_a_half_landed_the_whole_is_split_and_each_half_lands_once() {
        let Some(endpoint) = endpoint() else { return };
        let store = fresh_store(&endpoint).await;
        let s = split_batch();
        assert_eq!(store.apply(&s.left).await.unwrap(), ApplyOutcome::Applied);
        let mut expected = vec![s.left.id.to_string(), s.whole.id.split_marker().to_string()];
        expected.sort();
        assert_eq!(markers(&endpoint, &store).await, expected);
        assert_eq!(store.apply(&s.whole).await.unwrap(), ApplyOutcome::Split);
        assert_eq!(markers(&endpoint, &store).await, expected, "a Split answer writes nothing");
        assert_eq!(values(&store, &s).await, (vec![Some(1), Some(2), None], vec![]));
        assert_eq!(store.apply(&s.right).await.unwrap(), ApplyOutcome::Applied);
        for again in [&s.left, &s.right] {
            assert_eq!(store.apply(again).await.unwrap(), ApplyOutcome::AlreadyApplied);
        }
        let (left_left, left_right) = s.left.halves().unwrap();
        let (right_left, _) = s.right.halves().unwrap();
        for part in [&left_left, &left_right, &right_left] {
            assert_eq!(store.apply(part).await.unwrap(), ApplyOutcome::AlreadyApplied, "a part of a landed half");
        }
        assert_eq!(store.apply(&s.whole).await.unwrap(), ApplyOutcome::Split);
        assert_eq!(values(&store, &s).await, (vec![Some(1), Some(2), Some(3)], vec![(600, 4)]));
    }

    #[tokio::test]
    async fn a_grandchild_landing_splits_its_parent_and_the_root() {
        let Some(endpoint) = endpoint() else { return };
        let store = fresh_store(&endpoint).await;
        let s = split_batch();
        let (right_left, right_right) = s.right.halves().unwrap();
        assert_eq!(right_right.lineage, vec![s.whole.id, s.right.id]);
        assert_eq!(store.apply(&right_right).await.unwrap(), ApplyOutcome::Applied);
        assert_eq!(store.apply(&s.whole).await.unwrap(), ApplyOutcome::Split);
        assert_eq!(store.apply(&s.right).await.unwrap(), ApplyOutcome::Split);
        assert_eq!(store.apply(&s.left).await.unwrap(), ApplyOutcome::Applied);
        assert_eq!(store.apply(&right_left).await.unwrap(), ApplyOutcome::Applied);
        assert_eq!(store.apply(&right_right).await.unwrap(), ApplyOutcome::AlreadyApplied);
        assert_eq!(values(&store, &s).await, (vec![Some(1), Some(2), Some(3)], vec![(600, 4)]));
    }

    #[tokio::test]
    async fn an_overflow_in_a_half_changes_nothing_and_records_no_marker() {
        let Some(endpoint) = endpoint() else { return };
        let store = fresh_store(&endpoint).await;
        let s = split_batch();
        let mut top = Batch::new();
        top.entries.push(slice_entry(&s.keys[3], 60, 600, i64::MAX - 3));
        store.apply(&top).await.unwrap();
        let before = markers(&endpoint, &store).await;
        let e = store.apply(&s.right).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overflow, "{e}");
        assert_eq!(e.key(), Some("d"), "{e}");
        assert_eq!(values(&store, &s).await, (vec![None, None, None], vec![(600, i64::MAX - 3)]));
        assert_eq!(markers(&endpoint, &store).await, before, "no marker");
        // No split marker: the whole is tried (and refused), not answered Split.
        assert_eq!(store.apply(&s.whole).await.unwrap_err().kind(), ErrorKind::Overflow);
        assert_eq!(store.apply(&s.left).await.unwrap(), ApplyOutcome::Applied);
        assert_eq!(store.apply(&s.whole).await.unwrap(), ApplyOutcome::Split);
        assert_eq!(values(&store, &s).await, (vec![Some(1), Some(2), None], vec![(600, i64::MAX - 3)]));
    }

    #[tokio::test]
    async fn every_part_of_a_full_batch_fits_in_one_transaction() {
        let Some(endpoint) = endpoint() else { return };
        let store = fresh_store(&endpoint).await;
        let keys: Vec<Key> = (0..MAX_BATCH).map(|i| key(&format!("f{i:03}"))).collect();
        let whole = counter_batch(&keys.iter().map(|k| (k, 1)).collect::<Vec<_>>());
        // Down the right edge (the larger halves) to a single entry,
        // landing each left half on the way (2 + 2d marker items each), then
        // the last right half.
        let mut part = whole.clone();
        let mut depth = 0;
        while let Some((left, right)) = part.halves() {
            depth += 1;
            assert_eq!(left.lineage.len(), depth);
            assert!(2 + 2 * depth + right.entries.len() <= 100, "depth {depth}");
            assert_eq!(store.apply(&left).await.unwrap(), ApplyOutcome::Applied, "depth {depth}");
            part = right;
        }
        assert_eq!(depth, 7, "98 entries are down to one at depth 7");
        assert_eq!(store.apply(&part).await.unwrap(), ApplyOutcome::Applied);
        assert_eq!(store.apply(&whole).await.unwrap(), ApplyOutcome::Split);
        assert!(store.get_many(&keys).await.unwrap().iter().all(|v| *v == Some(1)));
        // A part whose markers and entries would not fit is refused before
        // it is sent.
        let mut deep = Batch::claimed(BatchId::new(), whole.entries[..90].to_vec());
        deep.lineage = (0..5).map(|_| BatchId::new()).collect();
        let e = store.apply(&deep).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    }
}
