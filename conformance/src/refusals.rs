//! Cases of refused calls: a refused call leaves no trace, in the cache,
//! in the store or in a listing.

use std::time::SystemTime;

use counter_core::{CacheLayer, Cell, Counters, DurableStore, ErrorKind, IncrOptions, Key, ListQuery, TimeSlices};

use crate::faults::FaultyStore;
use crate::harness::Backends;

/// What a refused call must leave as it found: the listing of the
/// namespace, the cached state of `cells`, and their durable values.
async fn snapshot<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
    c: &Counters<C, FaultyStore<S>>,
    cells: &[Cell],
) -> (Vec<(Key, i64)>, Vec<Option<(i64, i128)>>, Vec<Option<i64>>, Vec<Cell>) {
    let listed = c.list(&ListQuery::new(b.namespace.clone(), "")).await.unwrap();
    let cached = b.cache.get_many(cells).await.unwrap().into_iter().map(|v| v.map(|v| (v.total, v.pending))).collect();
    let mut durable = Vec::new();
    for cell in cells {
        if let Cell::Counter(key) = cell {
            durable.push(b.durable(key).await);
        }
    }
    let mut dirty: Vec<Cell> = b
        .cache
        .dirty(u64::MAX, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.cell)
        .filter(|cell| cell.key().namespace() == b.namespace)
        .collect();
    dirty.sort_by_key(|cell| format!("{cell:?}"));
    (listed, cached, durable, dirty)
}

/// An increment refused for an overflow of a rollup ancestor (cached, or
/// only in the store), or of a time slice, creates nothing: the
/// never-counted child is not cached, not dirty, not listed, before or
/// after a flush, and the handle keeps counting.
pub async fn refused_rollup_leaves_no_trace<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(b: &Backends<C, S>) {
    let slices = TimeSlices::new(&[60], 10).unwrap();
    let c = b.builder().time_slices(slices).build().unwrap();
    let (parent, top, stored_parent, sliced_parent, sentinel) =
        (b.key("p"), b.key("fresh"), b.key("sp"), b.key("tp"), b.key("sentinel"));
    let (child, middle, deep, stored_child, sliced_child) =
        (b.key("p:q"), b.key("fresh:p"), b.key("fresh:p:q"), b.key("sp:q"), b.key("tp:q"));
    c.put(&parent, i64::MAX).await.unwrap();
    c.put(&top, i64::MAX).await.unwrap();
    c.put(&stored_parent, i64::MIN).await.unwrap();
    c.incr(&sentinel, 3).await.unwrap();
    c.flush().await.unwrap();
    // `sp` is only in the store now: the increment must load it to refuse.
    b.cache.remove(&stored_parent).await.unwrap();
    // A pending time slice of `tp` at i64::MAX while `tp` itself has room.
    let now = SystemTime::now();
    c.incr_with(&sliced_parent, i64::MAX, &IncrOptions::new().time_sliced(Some(now))).await.unwrap();
    c.decr(&sliced_parent, 10).await.unwrap();

    let children = [&child, &middle, &deep, &stored_child, &sliced_child];
    let cells: Vec<Cell> = children
        .into_iter()
        .chain([&parent, &top, &stored_parent, &sliced_parent, &sentinel])
        .cloned()
        .map(Cell::Counter)
        .collect();
    let before = snapshot(b, &c, &cells).await;
    assert!(before.1[..children.len()].iter().all(Option::is_none), "the children are not cached to begin with");

    let rollup = IncrOptions::new().rollup(true);
    for (key, delta, options, blamed) in [
        (&child, 1, rollup.clone(), &parent),
        (&deep, 1, rollup.clone(), &top),
        (&stored_child, -1, rollup.clone(), &stored_parent),
        (&sliced_child, 1, rollup.clone().time_sliced(Some(now)), &sliced_parent),
    ] {
        let e = c.incr_with(key, delta, &options).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overflow, "{key}: {e}");
        assert_eq!(e.key(), Some(blamed.to_string().as_str()), "{key}: {e}");
        let after = snapshot(b, &c, &cells).await;
        assert_eq!(after, before, "the refused increment of {key} left a trace");
    }
    c.flush().await.unwrap();
    let listed = c.list(&ListQuery::new(b.namespace.clone(), "")).await.unwrap();
    let cached = b.cache.get_many(&cells[..children.len()]).await.unwrap();
    for (i, key) in children.into_iter().enumerate() {
        assert!(listed.iter().all(|(k, _)| k != key), "{key} is listed after a flush: {listed:?}");
        assert_eq!(cached[i], None, "{key} is cached after a flush");
        assert_eq!(b.durable(key).await, None, "{key} reached the store");
    }
    assert_eq!(b.durable(&sliced_parent).await, Some(i64::MAX - 10));
    // The handle still counts, and the children can be counted on their own.
    assert_eq!(c.incr(&child, 2).await.unwrap(), 2);
    assert_eq!(c.incr(&sentinel, 1).await.unwrap(), 4);
    c.flush().await.unwrap();
    assert_eq!(b.durable(&child).await, Some(2));
    assert_eq!(b.durable(&parent).await, Some(i64::MAX));
    c.shutdown().await.unwrap();
}
