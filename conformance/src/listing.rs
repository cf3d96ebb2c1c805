//! Cases about listings: the cache answers "which counters of this
//! namespace, with this prefix, are pending" by name, without the dirty
//! cells of other namespaces, time slices or counters already flushed.
//! Re-exported by [`cases`](crate::cases), stamped for every combination.

use counter_core::{CacheLayer, Cell, DurableStore, IncrOptions, Key, ListQuery, now_ms};

use crate::harness::Backends;

/// Names of `cells`, in order.
fn names(cells: &[counter_core::DirtyCell]) -> Vec<String> {
    cells.iter().map(|d| d.cell.key().to_string()).collect()
}

/// `dirty_counters` lists one namespace's pending counters by name, limited
/// and filtered by prefix: not another namespace's (one whose name starts
/// with this one's included), not time slices, not clean counters, and in
/// the default namespace names with a slash too; `dirty_since` dates each
/// one (and not a flushed one). A flush empties it, and `Counters::list` gets the same answers.
pub async fn dirty_counters_list_one_namespace_by_name<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let c = b.counters();
    let ns = &b.namespace;
    let neighbour = format!("{ns}x");
    let (a1, a2, b2, cc, clean) = (b.key("a1"), b.key("a2"), b.key("b2"), b.key("c"), b.key("a3"));
    let other = Key::new(&neighbour, "a1").unwrap();
    // The default namespace, shared by every run: names unique to this one.
    let (plain, slashed) = (Key::named(format!("{ns}-d")).unwrap(), Key::named(format!("{ns}/d")).unwrap());
    c.incr(&clean, 1).await.unwrap();
    c.flush().await.unwrap();
    let before = now_ms();
    for (k, d) in [(&b2, 5), (&a1, 1), (&a2, -2), (&cc, 7), (&other, 9), (&plain, 3), (&slashed, 4)] {
        c.incr(k, d).await.unwrap();
    }
    c.incr_with(&a1, 10, &IncrOptions::new().time_sliced(None)).await.unwrap();
    b.cache.sweep(false).await.unwrap();

    let all = b.cache.dirty_counters(ns, "", 100).await.unwrap();
    assert_eq!(names(&all), [&a1, &a2, &b2, &cc].map(Key::to_string), "by name, this namespace only");
    let pending: Vec<i128> = all.iter().map(|d| d.pending).collect();
    assert_eq!(pending, [11, -2, 5, 7]);
    assert!(all.iter().all(|d| matches!(d.cell, Cell::Counter(_))), "no time slice");
    assert!(all.iter().all(|d| d.dirty_since_ms >= before.saturating_sub(1_000) && d.dirty_since_ms <= now_ms()));
    assert_eq!(names(&b.cache.dirty_counters(ns, "a", 100).await.unwrap()), [&a1, &a2].map(Key::to_string));
    assert_eq!(names(&b.cache.dirty_counters(ns, "", 2).await.unwrap()), [&a1, &a2].map(Key::to_string));
    assert!(b.cache.dirty_counters(ns, "z", 100).await.unwrap().is_empty());
    assert_eq!(names(&b.cache.dirty_counters(&neighbour, "", 100).await.unwrap()), [other.to_string()]);
    assert_eq!(
        names(&b.cache.dirty_counters("", ns, 100).await.unwrap()),
        [&plain, &slashed].map(Key::to_string),
        "the default namespace, a name with a slash included"
    );
    let since = b.cache.dirty_since(&[a1.clone(), clean.clone(), other.clone()]).await.unwrap();
    assert!(since[0].is_some() && since[1].is_none() && since[2].is_some(), "{since:?}");

    let by_name = c.list(&ListQuery::new(ns.clone(), "").limit(3)).await.unwrap();
    assert_eq!(by_name, vec![(a1.clone(), 11), (a2.clone(), -2), (clean.clone(), 1)], "the store's and the cache's");
    let top = c.list(&ListQuery::new(ns.clone(), "").top(1)).await.unwrap();
    assert_eq!(top, vec![(a1.clone(), 11)]);

    c.flush().await.unwrap();
    assert!(b.cache.dirty_counters(ns, "", 100).await.unwrap().is_empty(), "a flush leaves nothing pending");
    assert!(b.cache.dirty_counters("", ns, 100).await.unwrap().is_empty());
    assert_eq!(b.cache.dirty_since(std::slice::from_ref(&a1)).await.unwrap(), vec![None]);
    let listed = c.list(&ListQuery::new(ns.clone(), "")).await.unwrap();
    assert_eq!(listed, vec![(a1, 11), (a2, -2), (clean, 1), (b2, 5), (cc, 7)]);
    for k in [&other, &plain, &slashed] {
        c.delete(k).await.unwrap();
    }
    c.shutdown().await.unwrap();
}
