//! What the last listing of the dirty index found, so that the gauges do
//! not read the state of every dirty cell each time they are asked.
//!
//! A listing of memcached's dirty index reads the state of every cell it
//! names: two gets per dirty cell. The engine asks for the gauges after
//! every flush pass, right after the pass listed the index, and a metrics
//! scrape or a sampler may ask many times a second; each of those reading
//! every cell again cost the server more than the increments did (about
//! six gets per increment with 10,000 counters dirty and the gauges read
//! ten times a second). So [`stats`](crate::MemcacheCache) answers from
//! the last listing while it is younger than [`FRESH_FOR`]; older, it
//! lists again.
//!
//! The engine's backpressure counts on the gauges being current for what
//! this process did: a cell this process makes dirty (an increment of a
//! clean cell, or one whose outcome is unknown, a load with a delta, a
//! set) or claims (a claim may leave a cell dirty with what was added
//! meanwhile) drops the last listing, so the next gauges list again; and
//! a listing that ran while either happened is not kept (it may predate
//! the change). So a flush pass that claimed costs one listing more; the
//! gauges asked between two passes cost none.
//! Cells other processes dirtied or flushed are counted at the next
//! listing (within [`FRESH_FOR`]). Nothing but the gauges reads this:
//! flushing, listings and their repair of a vanished index always read the
//! index itself.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the gauges of a listing are answered without listing again.
pub(crate) const FRESH_FOR: Duration = Duration::from_secs(1);

/// The dirty cells of the last listing, by a hash of their encoded id.
#[derive(Debug, Default)]
pub(crate) struct LastListing {
    hasher: RandomState,
    last: Mutex<Last>,
}

#[derive(Debug, Default)]
struct Last {
    snapshot: Option<Snapshot>,
    /// Counts the changes this process made to which cells are dirty.
    changes: u64,
}

#[derive(Debug)]
struct Snapshot {
    at: Instant,
    /// The server restarts seen by the listing: another count is another
    /// server instance, whose cells the snapshot does not describe.
    restarts: u64,
    /// Hash of the encoded id -> when the cell became dirty (ms).
    dirty: HashMap<u64, u64>,
}

/// The two gauges a listing gives: dirty cells and the oldest one's stamp.
pub(crate) type DirtyGauges = (u64, Option<u64>);

impl LastListing {
    /// Where a listing starting now stands: pass it to
    /// [`record`](Self::record).
    pub(crate) fn begin(&self) -> (Instant, u64) {
        (Instant::now(), self.last.lock().expect("last listing lock").changes)
    }

    /// Records what a listing found (the dirty cells' encoded ids and
    /// stamps), unless this process changed which cells are dirty since it
    /// began.
    pub(crate) fn record<'a>(
        &self,
        (at, changes): (Instant, u64),
        restarts: u64,
        dirty: impl Iterator<Item = (&'a str, u64)>,
    ) {
        let mut last = self.last.lock().expect("last listing lock");
        if last.changes != changes || last.snapshot.as_ref().is_some_and(|s| s.at > at) {
            return;
        }
        let dirty = dirty.map(|(enc, stamp)| (self.hasher.hash_one(enc), stamp)).collect();
        last.snapshot = Some(Snapshot { at, restarts, dirty });
    }

    /// This process made a cell dirty, or may have, or claimed cells: the
    /// next gauges list again.
    pub(crate) fn changed(&self) {
        let mut last = self.last.lock().expect("last listing lock");
        last.changes += 1;
        last.snapshot = None;
    }

    /// The gauges of the last listing if it is fresh and of this server
    /// instance.
    pub(crate) fn gauges(&self, restarts: u64) -> Option<DirtyGauges> {
        let last = self.last.lock().expect("last listing lock");
        let snapshot = last.snapshot.as_ref().filter(|s| s.restarts == restarts && s.at.elapsed() < FRESH_FOR)?;
        Some((snapshot.dirty.len() as u64, snapshot.dirty.values().min().copied()))
    }

    /// Forgets the last listing (the next gauges list again).
    #[cfg(feature = "testing")]
    pub(crate) fn clear(&self) {
        self.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_come_from_a_fresh_listing_until_this_process_changes_a_cell() {
        let listing = LastListing::default();
        assert_eq!(listing.gauges(0), None, "nothing listed yet");
        let (now, changes) = listing.begin();
        listing.record((now, changes), 0, [("a", 30), ("b", 10), ("c", 20)].into_iter());
        assert_eq!(listing.gauges(0), Some((3, Some(10))));
        assert_eq!(listing.gauges(1), None, "another server instance");
        // An older listing finishing late does not replace a newer one.
        listing.record((now - Duration::from_millis(5), changes), 0, std::iter::empty());
        assert_eq!(listing.gauges(0), Some((3, Some(10))));
        // A change (a cell dirtied, a claim) drops the listing, and one that
        // ran during the change is not kept.
        let during = listing.begin();
        listing.changed();
        assert_eq!(listing.gauges(0), None);
        listing.record(during, 0, [("b", 10)].into_iter());
        assert_eq!(listing.gauges(0), None, "a listing that ran during a change is not kept");
        let after = listing.begin();
        listing.record(after, 0, [("c", 20)].into_iter());
        assert_eq!(listing.gauges(0), Some((1, Some(20))));
        // A stale one is not answered from.
        let stale = LastListing::default();
        stale.record((now - FRESH_FOR, 0), 0, [("a", 1)].into_iter());
        assert_eq!(stale.gauges(0), None);
    }
}
