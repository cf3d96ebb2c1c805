//! The in-process cache's index of dirty cells: by the time they became
//! dirty (what a flush takes, oldest first) and, for counters, by name (what
//! a listing of a namespace reads), kept together under one lock.
//!
//! Items are `(stamp, cell)`: the stamp a cell got when it became dirty.
//! An item whose cell has another stamp since (claimed, removed, dirty
//! again) is stale; the cache drops stale items where it meets them, in
//! both orders at once.

use std::collections::BTreeSet;

use crate::cell::Cell;
use crate::key::Key;

/// Dirty cells in two orders.
#[derive(Debug, Default)]
pub(crate) struct DirtyIndex {
    by_time: BTreeSet<(u64, Cell)>,
    /// The counters of `by_time`, by name.
    by_name: BTreeSet<(Key, u64)>,
}

impl DirtyIndex {
    /// Indexes `cell`, dirty since `stamp`.
    pub(crate) fn insert(&mut self, stamp: u64, cell: Cell) {
        if let Cell::Counter(key) = &cell {
            self.by_name.insert((key.clone(), stamp));
        }
        self.by_time.insert((stamp, cell));
    }

    /// Drops the item of `cell` with `stamp`, in both orders.
    pub(crate) fn remove(&mut self, stamp: u64, cell: &Cell) {
        if let Cell::Counter(key) = cell {
            self.by_name.remove(&(key.clone(), stamp));
        }
        self.by_time.remove(&(stamp, cell.clone()));
    }

    /// Forgets everything (a test hook's data loss).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn clear(&mut self) {
        self.by_time.clear();
        self.by_name.clear();
    }

    /// Items oldest first.
    pub(crate) fn by_time(&self) -> impl Iterator<Item = &(u64, Cell)> {
        self.by_time.iter()
    }

    /// The oldest item.
    pub(crate) fn oldest(&self) -> Option<&(u64, Cell)> {
        self.by_time.first()
    }

    /// Counters of `namespace` whose names start with `prefix`, in name
    /// order (a counter may appear with several stamps, stale ones among
    /// them).
    pub(crate) fn by_name<'a>(&'a self, namespace: &'a str, prefix: &'a str) -> impl Iterator<Item = &'a (Key, u64)> {
        let from = Key::lower_bound(namespace, prefix);
        let possible = from.is_some();
        let range = match from {
            Some(from) => self.by_name.range((from, 0)..),
            None => self.by_name.range(..),
        };
        range.take_while(move |(key, _)| possible && key.namespace() == namespace && key.name().starts_with(prefix))
    }
}
