//! Applying batches: exactly once by identity, all or nothing.

mod common;

use std::time::Duration;

use backend_sqlite::{SqliteOptions, SqliteStore};
use common::*;
use counter_core::{ApplyOutcome, DurableStore, ErrorKind};

#[tokio::test]
async fn a_batch_applied_twice_counts_once() {
    let (_dir, store) = temp_store().await;
    let (a, b) = (key("n", "a"), key("n", "b"));
    let first = batch(vec![counter(&a, 5), counter(&b, -3), slice(&a, 60, 120, 5)]);
    assert_eq!(store.apply(&first).await.unwrap(), ApplyOutcome::Applied);
    assert_eq!(store.apply(&first).await.unwrap(), ApplyOutcome::AlreadyApplied);
    assert_eq!(store.get_many(&[a.clone(), b.clone()]).await.unwrap(), [Some(5), Some(-3)]);
    assert_eq!(store.series(&a, precision(60), 0, 1_000).await.unwrap(), [(120, 5)]);

    // A different batch with the same deltas is a different write.
    let second = batch(vec![counter(&a, 5), slice(&a, 60, 120, 5)]);
    assert_eq!(store.apply(&second).await.unwrap(), ApplyOutcome::Applied);
    assert_eq!(store.get_many(std::slice::from_ref(&a)).await.unwrap(), [Some(10)]);
    assert_eq!(store.series(&a, precision(60), 0, 1_000).await.unwrap(), [(120, 10)]);
    assert_eq!(store.applied_batches().await.unwrap(), 2);

    // Identities survive a reopen.
    let path = store.path().to_path_buf();
    drop(store);
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.apply(&first).await.unwrap(), ApplyOutcome::AlreadyApplied);
    assert_eq!(store.get_many(&[a]).await.unwrap(), [Some(10)]);
}

#[tokio::test]
async fn an_empty_batch_is_remembered_too() {
    let (_dir, store) = temp_store().await;
    let empty = batch(vec![]);
    assert_eq!(store.apply(&empty).await.unwrap(), ApplyOutcome::Applied);
    assert_eq!(store.apply(&empty).await.unwrap(), ApplyOutcome::AlreadyApplied);
}

#[tokio::test]
async fn overflow_fails_the_whole_batch_and_changes_nothing() {
    let (_dir, store) = temp_store().await;
    let (a, big, low) = (key("n", "a"), key("n", "big"), key("n", "low"));
    store
        .apply(&batch(vec![counter(&big, i64::MAX - 1), counter(&low, i64::MIN + 1), slice(&big, 1, 10, i64::MAX)]))
        .await
        .unwrap();
    let before = store.applied_batches().await.unwrap();

    let cases = [
        // Positive overflow of a counter, after an entry that alone is fine.
        (vec![counter(&a, 1), counter(&big, 2)], "n/big"),
        // Negative overflow.
        (vec![counter(&a, 1), counter(&low, -2)], "n/low"),
        // A time bucket.
        (vec![counter(&a, 1), slice(&big, 1, 10, 1)], "n/big"),
    ];
    for (entries, culprit) in cases {
        let bad = batch(entries);
        let e = store.apply(&bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overflow, "{e}");
        assert_eq!(e.key(), Some(culprit), "{e}");
        assert!(!e.is_transient());
        assert!(!e.to_string().contains('\n'));
        // Nothing of it landed, not even the first entry or the identity.
        assert_eq!(
            store.get_many(&[a.clone(), big.clone(), low.clone()]).await.unwrap(),
            [None, Some(i64::MAX - 1), Some(i64::MIN + 1)]
        );
        assert_eq!(store.series(&big, precision(1), 0, 100).await.unwrap(), [(10, i64::MAX)]);
        assert_eq!(store.applied_batches().await.unwrap(), before);
    }

    // Right up to the edge is fine.
    store.apply(&batch(vec![counter(&big, 1), counter(&low, -1)])).await.unwrap();
    assert_eq!(store.get_many(&[big.clone(), low.clone()]).await.unwrap(), [Some(i64::MAX), Some(i64::MIN)]);

    // The extreme deltas themselves: onto a new counter, onto 0 and next
    // to the edges (i64::MIN is one more than i64::MAX is).
    let (zero, one, minus) = (key("n", "zero"), key("n", "one"), key("n", "minus"));
    store.apply(&batch(vec![counter(&zero, 0), counter(&one, 1), counter(&minus, -1)])).await.unwrap();
    let steps = [
        (&one, i64::MAX, true),
        (&minus, i64::MIN, true),
        (&big, 1, true),
        (&low, -1, true),
        (&big, i64::MIN, false),
        (&low, i64::MAX, false),
    ];
    for (cell, delta, refused) in steps {
        let outcome = store.apply(&batch(vec![counter(cell, delta)])).await;
        match outcome {
            Err(e) => assert!(refused && e.kind() == ErrorKind::Overflow, "{cell} + {delta}: {e}"),
            Ok(_) => assert!(!refused, "{cell} + {delta} was applied"),
        }
    }
    // big went MAX -> -1, low MIN -> -1; the refused ones did not move.
    assert_eq!(store.get_many(&[big, low, one, minus]).await.unwrap(), [Some(-1), Some(-1), Some(1), Some(-1)]);
    let fresh = [key("n", "fresh-max"), key("n", "fresh-min")];
    store.apply(&batch(vec![counter(&fresh[0], i64::MAX), counter(&fresh[1], i64::MIN)])).await.unwrap();
    assert_eq!(store.get_many(&fresh).await.unwrap(), [Some(i64::MAX), Some(i64::MIN)]);
}

#[tokio::test]
async fn identities_are_forgotten_after_the_retention() {
    let (_dir, path) = temp_db();
    let options = SqliteOptions::default().batch_retention(Duration::from_millis(50)).prune_every(1);
    let store = SqliteStore::open_with(&path, options).await.unwrap();
    let k = key("", "k");
    let old = batch(vec![counter(&k, 1)]);
    store.apply(&old).await.unwrap();
    assert_eq!(store.applied_batches().await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The next apply prunes (prune_every = 1): the old identity goes, the
    // new one stays.
    store.apply(&batch(vec![counter(&k, 1)])).await.unwrap();
    assert_eq!(store.applied_batches().await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.forget_old_batches().await.unwrap(), 1);
    assert_eq!(store.applied_batches().await.unwrap(), 0);

    // A forgotten identity is applied again: retention must outlast retries.
    // The default (7 days) keeps them.
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.apply(&old).await.unwrap(), ApplyOutcome::Applied);
    assert_eq!(store.forget_old_batches().await.unwrap(), 0);
    assert_eq!(store.apply(&old).await.unwrap(), ApplyOutcome::AlreadyApplied);
}

#[tokio::test]
async fn capabilities() {
    let (_dir, store) = temp_store().await;
    let caps = store.capabilities();
    assert_eq!(caps.name, "sqlite");
    assert!(caps.durable && caps.shared);
    assert_eq!(caps.max_batch, backend_sqlite::MAX_BATCH);
}

#[tokio::test]
async fn a_lock_held_too_long_is_transient_and_changes_nothing() {
    let (_dir, path) = temp_db();
    let options = SqliteOptions::default().busy_timeout(Duration::from_millis(100));
    let store = SqliteStore::open_with(&path, options).await.unwrap();
    let k = key("", "k");
    let pending = batch(vec![counter(&k, 1)]);

    // Another process holds the write lock past the busy timeout.
    let mut other = rusqlite::Connection::open(&path).unwrap();
    let lock = other.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
    let e = store.apply(&pending).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_transient());
    assert!(e.to_string().contains("busy timeout"), "{e}");
    let e = store.delete(&k).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    // Reads do not wait for writers (WAL).
    assert_eq!(store.get_many(std::slice::from_ref(&k)).await.unwrap(), [None]);
    lock.commit().unwrap();

    // The retry applies it, once.
    assert_eq!(store.apply(&pending).await.unwrap(), ApplyOutcome::Applied);
    assert_eq!(store.apply(&pending).await.unwrap(), ApplyOutcome::AlreadyApplied);
    assert_eq!(store.get_many(&[k]).await.unwrap(), [Some(1)]);
}

/// The split contract of `DurableStore::apply`: a batch and a part of it
/// never both land.
mod split {
    use super::*;
    use counter_core::{Batch, BatchId};

    fn four(names: [&str; 4]) -> (Vec<counter_core::Key>, Batch) {
        let keys: Vec<_> = names.iter().map(|n| key("s", n)).collect();
        let entries = keys.iter().zip([1, 2, 3, 4]).map(|(k, d)| counter(k, d)).collect();
        (keys, Batch::claimed(BatchId::new(), entries))
    }

    #[tokio::test]
    async fn a_batch_applied_whole_refuses_its_parts() {
        let (_dir, store) = temp_store().await;
        let (keys, whole) = four(["a", "b", "c", "d"]);
        assert_eq!(store.apply(&whole).await.unwrap(), ApplyOutcome::Applied);
        let (left, right) = whole.halves().unwrap();
        let (grandchild, _) = right.halves().unwrap();
        for part in [&left, &right, &grandchild] {
            assert_eq!(store.apply(part).await.unwrap(), ApplyOutcome::AlreadyApplied, "{:?}", part.id);
        }
        assert_eq!(store.get_many(&keys).await.unwrap(), [Some(1), Some(2), Some(3), Some(4)]);
        assert_eq!(store.applied_batches().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn after_a_half_landed_the_whole_is_split_and_each_half_lands_once() {
        let (_dir, store) = temp_store().await;
        let (keys, whole) = four(["a", "b", "c", "d"]);
        let (left, right) = whole.halves().unwrap();
        assert_eq!(left.entries.len(), 2);
        assert_eq!(store.apply(&left).await.unwrap(), ApplyOutcome::Applied);
        assert_eq!(store.apply(&whole).await.unwrap(), ApplyOutcome::Split);
        assert_eq!(store.get_many(&keys).await.unwrap(), [Some(1), Some(2), None, None]);
        assert_eq!(store.apply(&right).await.unwrap(), ApplyOutcome::Applied);
        for again in [&left, &right] {
            assert_eq!(store.apply(again).await.unwrap(), ApplyOutcome::AlreadyApplied);
        }
        // A part of a landed half: already in.
        let (grandchild, other) = left.halves().unwrap();
        assert_eq!(store.apply(&grandchild).await.unwrap(), ApplyOutcome::AlreadyApplied);
        assert_eq!(store.apply(&other).await.unwrap(), ApplyOutcome::AlreadyApplied);
        assert_eq!(store.apply(&whole).await.unwrap(), ApplyOutcome::Split);
        assert_eq!(store.get_many(&keys).await.unwrap(), [Some(1), Some(2), Some(3), Some(4)]);
        // The halves and the whole's split marker, which the right half
        // recorded again without harm.
        assert_eq!(store.applied_batches().await.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_grandchild_landing_splits_its_parent_and_the_root() {
        let (_dir, store) = temp_store().await;
        let (keys, whole) = four(["a", "b", "c", "d"]);
        let (left, right) = whole.halves().unwrap();
        let (right_left, right_right) = right.halves().unwrap();
        assert_eq!(right_left.lineage, vec![whole.id, right.id]);
        assert_eq!(store.apply(&right_left).await.unwrap(), ApplyOutcome::Applied);
        assert_eq!(store.apply(&whole).await.unwrap(), ApplyOutcome::Split);
        assert_eq!(store.apply(&right).await.unwrap(), ApplyOutcome::Split);
        assert_eq!(store.apply(&left).await.unwrap(), ApplyOutcome::Applied);
        assert_eq!(store.apply(&right_right).await.unwrap(), ApplyOutcome::Applied);
        assert_eq!(store.apply(&right_left).await.unwrap(), ApplyOutcome::AlreadyApplied);
        assert_eq!(store.get_many(&keys).await.unwrap(), [Some(1), Some(2), Some(3), Some(4)]);
    }

    #[tokio::test]
    async fn an_overflow_in_a_half_changes_nothing_and_records_no_marker() {
        let (_dir, store) = temp_store().await;
        let (keys, whole) = four(["a", "b", "c", "d"]);
        // "d" is one short of the top: the right half (c, d) overflows.
        store.apply(&batch(vec![counter(&keys[3], i64::MAX - 1)])).await.unwrap();
        let before = store.applied_batches().await.unwrap();
        let (left, right) = whole.halves().unwrap();
        let e = store.apply(&right).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overflow, "{e}");
        assert_eq!(e.key(), Some("s/d"), "{e}");
        assert_eq!(store.get_many(&keys).await.unwrap(), [None, None, None, Some(i64::MAX - 1)]);
        assert_eq!(store.applied_batches().await.unwrap(), before);
        // No split marker: the whole is tried (and refused) rather than
        // answered Split.
        let e = store.apply(&whole).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overflow, "{e}");
        // The other half still lands, and then the whole is split.
        assert_eq!(store.apply(&left).await.unwrap(), ApplyOutcome::Applied);
        assert_eq!(store.apply(&whole).await.unwrap(), ApplyOutcome::Split);
        assert_eq!(store.get_many(&keys).await.unwrap(), [Some(1), Some(2), None, Some(i64::MAX - 1)]);
    }
}
