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
//! the last listing while it is younger than [`FRESH_FOR`], minus the cells
//! this process claimed since; older, it lists again.
//!
//! The gauges are then as of that listing: cells other processes dirtied
//! or flushed since are counted at the next one (within [`FRESH_FOR`]).
//! Nothing but the gauges reads this: flushing, listings and their repair
//! of a vanished index always read the index itself.

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
    last: Mutex<Option<Snapshot>>,
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
    /// Records what a listing that started at `at` found: the dirty cells'
    /// encoded ids and stamps.
    pub(crate) fn record<'a>(&self, at: Instant, restarts: u64, dirty: impl Iterator<Item = (&'a str, u64)>) {
        let dirty = dirty.map(|(enc, stamp)| (self.hasher.hash_one(enc), stamp)).collect();
        let mut last = self.last.lock().expect("last listing lock");
        if last.as_ref().is_none_or(|s| s.at <= at) {
            *last = Some(Snapshot { at, restarts, dirty });
        }
    }

    /// Takes cells this process claimed out of the last listing.
    pub(crate) fn claimed<'a>(&self, encs: impl Iterator<Item = &'a str>) {
        if let Some(snapshot) = self.last.lock().expect("last listing lock").as_mut() {
            for enc in encs {
                snapshot.dirty.remove(&self.hasher.hash_one(enc));
            }
        }
    }

    /// The gauges of the last listing if it is fresh and of this server
    /// instance.
    pub(crate) fn gauges(&self, restarts: u64) -> Option<DirtyGauges> {
        let last = self.last.lock().expect("last listing lock");
        let snapshot = last.as_ref().filter(|s| s.restarts == restarts && s.at.elapsed() < FRESH_FOR)?;
        Some((snapshot.dirty.len() as u64, snapshot.dirty.values().min().copied()))
    }

    /// Forgets the last listing (the next gauges list again).
    #[cfg(feature = "testing")]
    pub(crate) fn clear(&self) {
        *self.last.lock().expect("last listing lock") = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_come_from_a_fresh_listing_minus_the_cells_claimed_since() {
        let listing = LastListing::default();
        assert_eq!(listing.gauges(0), None, "nothing listed yet");
        let now = Instant::now();
        listing.record(now, 0, [("a", 30), ("b", 10), ("c", 20)].into_iter());
        assert_eq!(listing.gauges(0), Some((3, Some(10))));
        listing.claimed(["b", "unknown"].into_iter());
        assert_eq!(listing.gauges(0), Some((2, Some(20))));
        assert_eq!(listing.gauges(1), None, "another server instance");
        // An older listing finishing late does not replace a newer one.
        listing.record(now - Duration::from_millis(5), 0, std::iter::empty());
        assert_eq!(listing.gauges(0), Some((2, Some(20))));
        listing.record(now - FRESH_FOR, 0, std::iter::empty());
        assert_eq!(listing.gauges(0), Some((2, Some(20))));
        // A stale one is not answered from.
        let stale = LastListing::default();
        stale.record(now - FRESH_FOR, 0, [("a", 1)].into_iter());
        assert_eq!(stale.gauges(0), None);
    }
}
