//! The in-process cache, built for the hot path.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::SeqCst};

use async_trait::async_trait;
use dashmap::DashMap;

use crate::batch::{Batch, BatchEntry, BatchId, now_ms};
use crate::cache::{CacheCapabilities, CacheIncr, CacheLayer, CacheStats, CachedValue, DirtyCell};
use crate::cell::{Cell, SliceId};
use crate::error::{Error, ErrorKind, Result};
use crate::idempotency::{CacheIncrOnce, Once};
use crate::key::Key;
#[cfg(any(test, feature = "testing"))]
use crate::testing::{CacheFaults, CachePart};

use super::dirty_index::DirtyIndex;

/// One cell: total `T`, flushed mark `F`, and when it became dirty (0: clean).
#[derive(Debug)]
struct Entry {
    total: AtomicI64,
    flushed: AtomicI64,
    dirty_since: AtomicU64,
}

impl Entry {
    fn new(total: i64, flushed: i64) -> Entry {
        Entry { total: AtomicI64::new(total), flushed: AtomicI64::new(flushed), dirty_since: AtomicU64::new(0) }
    }

    /// Adds `delta` to the total unless it would overflow. Returns (new
    /// total, pending).
    fn add(&self, delta: i64) -> Result<(i64, i128)> {
        let mut current = self.total.load(SeqCst);
        loop {
            let new = current.checked_add(delta).ok_or_else(overflow_total)?;
            match self.total.compare_exchange_weak(current, new, SeqCst, SeqCst) {
                Ok(_) => return Ok((new, i128::from(new) - i128::from(self.flushed.load(SeqCst)))),
                Err(actual) => current = actual,
            }
        }
    }

    /// Marks the entry dirty if it was clean; returns the stamp if it did.
    fn mark_dirty(&self) -> Option<u64> {
        if self.dirty_since.load(SeqCst) != 0 {
            return None;
        }
        let now = now_ms().max(1);
        self.dirty_since.compare_exchange(0, now, SeqCst, SeqCst).ok().map(|_| now)
    }

    /// Moves the pending delta out: `F := T`, or by at most an i64 when
    /// `T - F` is beyond it. Clears the dirty mark first, so an increment
    /// racing with the claim marks the entry dirty again. Returns (delta,
    /// the dirty stamp it had (0: clean), whether a remainder is still
    /// pending).
    fn claim(&self) -> (i64, u64, bool) {
        let stamp = self.dirty_since.swap(0, SeqCst);
        loop {
            let flushed = self.flushed.load(SeqCst);
            let total = self.total.load(SeqCst);
            let pending = i128::from(total) - i128::from(flushed);
            if pending == 0 {
                return (0, stamp, false);
            }
            let delta = pending.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
            // F + delta lies between F and T, so it is an i64.
            let new_flushed = flushed + delta;
            if self.flushed.compare_exchange(flushed, new_flushed, SeqCst, SeqCst).is_ok() {
                return (delta, stamp, new_flushed != total);
            }
        }
    }

    fn value(&self) -> CachedValue {
        let total = self.total.load(SeqCst);
        CachedValue { total, pending: i128::from(total) - i128::from(self.flushed.load(SeqCst)) }
    }

    fn is_clean(&self) -> bool {
        self.dirty_since.load(SeqCst) == 0 && self.total.load(SeqCst) == self.flushed.load(SeqCst)
    }
}

fn overflow_total() -> Error {
    Error::new(ErrorKind::Overflow, "the total would leave the signed 64-bit range")
}

/// The fast in-process cache.
///
/// Counters live in a sharded concurrent map (no global lock); an increment
/// of a cached counter is a shard read lock and a few atomic operations, with
/// no allocation and no future (it goes through
/// [`CacheLayer::incr_now`]). A counter that turns dirty enters an index
/// ordered by the time it did, once, and leaves it when claimed, so a flush
/// costs in proportion to the cells it takes, not to all the counters (nor
/// to all the dirty ones).
///
/// Not shared across processes: a crash of the process loses the pending
/// deltas, within the bound the write-behind policy allows. Claims live in
/// the same process; they are recovered by a new engine over the same cache
/// (a restarted `Counters` handle), not by another process.
#[derive(Debug, Default)]
pub struct MemoryCache {
    /// Hashed with foldhash (seeded per process): the lookup is most of an
    /// increment.
    counters: DashMap<Key, Entry, foldhash::fast::RandomState>,
    slices: DashMap<SliceId, Entry, foldhash::fast::RandomState>,
    /// Dirty cells by the stamp they got when they became dirty, and
    /// dirty counters by name. A claim takes its cells out; an item whose
    /// cell has another stamp since (claimed by a racing path, removed) is
    /// stale and dropped where met.
    dirty_index: Mutex<DirtyIndex>,
    dirty_cells: AtomicU64,
    claims: Mutex<HashMap<BatchId, Batch>>,
    /// Idempotency keys of increments, per counter, until they expire.
    remembered: DashMap<(Key, Box<str>), Remembered, foldhash::fast::RandomState>,
    remembered_inserts: AtomicU64,
}

/// Most idempotency keys a [`MemoryCache`] remembers at once; beyond,
/// keyed increments are refused with backpressure until some expire.
pub const MAX_REMEMBERED_KEYS: usize = 1_000_000;

/// How often (in recorded keys) expired ones are swept out.
const PURGE_EVERY: u64 = 65_536;

/// What a cache remembers of a keyed increment.
#[derive(Debug, Clone, Copy)]
struct Remembered {
    fingerprint: u64,
    total: i64,
    until: std::time::Instant,
}

impl MemoryCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of counters held (not counting time slices).
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    fn index_dirty(&self, cell: Cell, stamp: u64) {
        self.dirty_cells.fetch_add(1, SeqCst);
        self.dirty_index.lock().expect("dirty index lock").insert(stamp, cell);
    }

    /// Whether `cell` is dirty with `stamp` (an index item is live).
    fn is_dirty_with(&self, cell: &Cell, stamp: u64) -> bool {
        self.with_entry(cell, |e| e.dirty_since.load(SeqCst) == stamp) == Some(true)
    }

    /// Takes claimed cells out of the dirty index. An item stays if its
    /// cell became dirty again with the same stamp (same millisecond)
    /// meanwhile: it is that new mark's item.
    fn unindex(&self, claimed: &[(u64, Cell)]) {
        if claimed.is_empty() {
            return;
        }
        let mut index = self.dirty_index.lock().expect("dirty index lock");
        for (stamp, cell) in claimed {
            if !self.is_dirty_with(cell, *stamp) {
                index.remove(*stamp, cell);
            }
        }
    }

    fn with_entry<T>(&self, cell: &Cell, f: impl FnOnce(&Entry) -> T) -> Option<T> {
        match cell {
            Cell::Counter(key) => self.counters.get(key).map(|e| f(&e)),
            Cell::Slice(slice) => self.slices.get(slice).map(|e| f(&e)),
        }
    }

    fn incr_sync(&self, key: &Key, delta: i64) -> Result<CacheIncr> {
        let (total, pending, stamp) = {
            let Some(entry) = self.counters.get(key) else {
                return Ok(CacheIncr::Missing);
            };
            let (total, pending) = entry.add(delta)?;
            let stamp = if delta != 0 { entry.mark_dirty() } else { None };
            (total, pending, stamp)
        };
        // The shard lock is released before the index lock is taken: the
        // index lock is only ever taken first.
        if let Some(stamp) = stamp {
            self.index_dirty(Cell::Counter(key.clone()), stamp);
        }
        Ok(CacheIncr::Applied { total, pending })
    }

    /// Sweeps out expired idempotency keys now and then, and always when
    /// the map is full; refuses a new key if it is full of live ones.
    fn make_room_for_a_key(&self) -> Result<()> {
        let inserts = self.remembered_inserts.fetch_add(1, SeqCst);
        let full = self.remembered.len() >= MAX_REMEMBERED_KEYS;
        if full || inserts % PURGE_EVERY == PURGE_EVERY - 1 {
            let now = std::time::Instant::now();
            self.remembered.retain(|_, r| r.until > now);
        }
        if self.remembered.len() >= MAX_REMEMBERED_KEYS {
            return Err(Error::new(
                ErrorKind::Backpressure,
                format!("the cache remembers {MAX_REMEMBERED_KEYS} idempotency keys already; retry once some expire"),
            ));
        }
        Ok(())
    }

    fn forget_dirty(&self, entry: &Entry) {
        if entry.dirty_since.swap(0, SeqCst) != 0 {
            self.dirty_cells.fetch_sub(1, SeqCst);
        }
    }
}

#[async_trait]
impl CacheLayer for MemoryCache {
    fn capabilities(&self) -> CacheCapabilities {
        let mut caps = CacheCapabilities::new("memory");
        caps.atomic_claim = true;
        caps.max_claim = 10_000;
        caps
    }

    fn incr_now(&self, key: &Key, delta: i64) -> Option<Result<CacheIncr>> {
        Some(self.incr_sync(key, delta))
    }

    async fn incr(&self, key: &Key, delta: i64) -> Result<CacheIncr> {
        self.incr_sync(key, delta)
    }

    async fn incr_once(&self, key: &Key, delta: i64, once: &Once) -> Result<CacheIncrOnce> {
        let id = (key.clone(), Box::<str>::from(once.key.as_str()));
        if !self.remembered.contains_key(&id) {
            self.make_room_for_a_key()?;
        }
        // The entry's lock is held across the add: a repeat racing with the
        // first call waits for it, then finds its record.
        let now = std::time::Instant::now();
        match self.remembered.entry(id) {
            dashmap::Entry::Occupied(seen) if seen.get().until > now => {
                Ok(CacheIncrOnce::Repeated { total: seen.get().total, fingerprint: seen.get().fingerprint })
            }
            entry => match self.incr_sync(key, delta)? {
                CacheIncr::Missing => Ok(CacheIncrOnce::Missing),
                CacheIncr::Applied { total, pending } => {
                    let until = now.checked_add(once.retention).unwrap_or(now + crate::MAX_IDEMPOTENCY_RETENTION);
                    let record = Remembered { fingerprint: once.fingerprint, total, until };
                    entry.insert(record);
                    Ok(CacheIncrOnce::Applied { total, pending })
                }
            },
        }
    }

    async fn forget_once(&self, key: &Key, idempotency_key: &str) -> Result<()> {
        self.remembered.remove(&(key.clone(), Box::from(idempotency_key)));
        Ok(())
    }

    async fn load(&self, key: &Key, durable: i64, extra: i64) -> Result<i64> {
        let total = durable.checked_add(extra).ok_or_else(overflow_total)?;
        let (total, stamp) = {
            let entry = self.counters.entry(key.clone()).or_insert_with(|| Entry::new(total, durable));
            let stamp = if extra != 0 { entry.mark_dirty() } else { None };
            (entry.total.load(SeqCst), stamp)
        };
        if let Some(stamp) = stamp {
            self.index_dirty(Cell::Counter(key.clone()), stamp);
        }
        Ok(total)
    }

    async fn incr_slices(&self, slices: &[SliceId], delta: i64) -> Result<()> {
        if delta == 0 {
            return Ok(());
        }
        for (done, slice) in slices.iter().enumerate() {
            let added = {
                let entry = self.slices.entry(slice.clone()).or_insert_with(|| Entry::new(0, 0));
                entry.add(delta).map(|_| entry.mark_dirty())
            };
            match added {
                Ok(Some(stamp)) => self.index_dirty(Cell::Slice(slice.clone()), stamp),
                Ok(None) => {}
                Err(e) => {
                    // Undo the slices already counted: all or nothing.
                    for undo in &slices[..done] {
                        if let Some(entry) = self.slices.get(undo) {
                            entry.total.fetch_sub(delta, SeqCst);
                        }
                    }
                    return Err(e.with_key(&slice.key));
                }
            }
        }
        Ok(())
    }

    async fn set(&self, key: &Key, total: i64) -> Result<Option<i64>> {
        let (old, stamp) = {
            let Some(entry) = self.counters.get(key) else {
                return Ok(None);
            };
            let old = entry.total.swap(total, SeqCst);
            let stamp = if old != total { entry.mark_dirty() } else { None };
            (old, stamp)
        };
        if let Some(stamp) = stamp {
            self.index_dirty(Cell::Counter(key.clone()), stamp);
        }
        Ok(Some(old))
    }

    async fn get_many(&self, cells: &[Cell]) -> Result<Vec<Option<CachedValue>>> {
        Ok(cells.iter().map(|cell| self.with_entry(cell, Entry::value)).collect())
    }

    async fn rebase(&self, key: &Key, flushed: i64, shift: i64) -> Result<bool> {
        // The shard's write lock keeps increments and claims of the counter
        // out while both parts move.
        let Some(entry) = self.counters.get_mut(key) else { return Ok(false) };
        if entry.flushed.load(SeqCst) != flushed {
            return Ok(false);
        }
        let total = entry.total.load(SeqCst);
        let (Some(new_total), Some(new_flushed)) = (total.checked_add(shift), flushed.checked_add(shift)) else {
            return Err(overflow_total());
        };
        entry.total.store(new_total, SeqCst);
        entry.flushed.store(new_flushed, SeqCst);
        Ok(true)
    }

    async fn remove(&self, key: &Key) -> Result<()> {
        if let Some((_, entry)) = self.counters.remove(key) {
            self.forget_dirty(&entry);
        }
        self.slices.retain(|slice, entry| {
            if &slice.key == key {
                self.forget_dirty(entry);
                false
            } else {
                true
            }
        });
        Ok(())
    }

    async fn dirty(&self, dirty_before_ms: u64, limit: usize) -> Result<Vec<DirtyCell>> {
        let mut index = self.dirty_index.lock().expect("dirty index lock");
        let mut out = Vec::new();
        let mut stale = Vec::new();
        for (stamp, cell) in index.by_time() {
            if out.len() >= limit || *stamp > dirty_before_ms {
                break;
            }
            match self.with_entry(cell, |e| (e.dirty_since.load(SeqCst) == *stamp).then(|| e.value())) {
                Some(Some(value)) => {
                    out.push(DirtyCell { cell: cell.clone(), pending: value.pending, dirty_since_ms: *stamp })
                }
                _ => stale.push((*stamp, cell.clone())),
            }
        }
        for (stamp, cell) in &stale {
            index.remove(*stamp, cell);
        }
        Ok(out)
    }

    async fn dirty_counters(&self, namespace: &str, prefix: &str, limit: usize) -> Result<Vec<DirtyCell>> {
        let mut index = self.dirty_index.lock().expect("dirty index lock");
        let mut out: Vec<DirtyCell> = Vec::new();
        let mut stale = Vec::new();
        for (key, stamp) in index.by_name(namespace, prefix) {
            if out.len() >= limit {
                break;
            }
            let live =
                self.counters.get(key).and_then(|e| (e.dirty_since.load(SeqCst) == *stamp).then(|| Entry::value(&e)));
            match live {
                Some(value) => out.push(DirtyCell {
                    cell: Cell::Counter(key.clone()),
                    pending: value.pending,
                    dirty_since_ms: *stamp,
                }),
                None => stale.push((*stamp, Cell::Counter(key.clone()))),
            }
        }
        for (stamp, cell) in &stale {
            index.remove(*stamp, cell);
        }
        Ok(out)
    }

    async fn dirty_since(&self, keys: &[Key]) -> Result<Vec<Option<u64>>> {
        Ok(keys
            .iter()
            .map(|key| self.counters.get(key).map(|e| e.dirty_since.load(SeqCst)).filter(|since| *since != 0))
            .collect())
    }

    async fn claim(&self, id: BatchId, cells: &[Cell]) -> Result<Batch> {
        // Held for the whole claim, so that whoever lists the claims (the
        // engine before it rebases a counter) sees this one once its deltas
        // left the cells.
        let mut claims = self.claims.lock().expect("claims lock");
        let mut batch = Batch::claimed(id, Vec::with_capacity(cells.len()));
        let mut seen = HashSet::new();
        let mut unmarked = Vec::with_capacity(cells.len());
        for cell in cells {
            if !seen.insert(cell) {
                continue;
            }
            // A remainder beyond i64 stays pending: the cell is marked dirty again.
            let Some((delta, old_stamp, stamp)) = self.with_entry(cell, |e| {
                let (delta, old_stamp, remainder) = e.claim();
                (delta, old_stamp, if remainder { e.mark_dirty() } else { None })
            }) else {
                continue;
            };
            if old_stamp != 0 {
                self.dirty_cells.fetch_sub(1, SeqCst);
                unmarked.push((old_stamp, cell.clone()));
            }
            if let Some(stamp) = stamp {
                self.index_dirty(cell.clone(), stamp);
            }
            if delta != 0 {
                batch.entries.push(BatchEntry { cell: cell.clone(), delta });
            }
            if let Cell::Slice(slice) = cell {
                // A clean slice holds nothing worth keeping: the store has it.
                self.slices.remove_if(slice, |_, e| e.is_clean());
            }
        }
        self.unindex(&unmarked);
        if !batch.is_empty() {
            claims.insert(id, batch.clone());
        }
        Ok(batch)
    }

    async fn ack(&self, id: BatchId) -> Result<()> {
        self.claims.lock().expect("claims lock").remove(&id);
        Ok(())
    }

    async fn claims(&self, older_than_ms: u64) -> Result<Vec<Batch>> {
        let now = now_ms();
        let claims = self.claims.lock().expect("claims lock");
        let mut out: Vec<Batch> =
            claims.values().filter(|b| now.saturating_sub(b.id.created_ms()) >= older_than_ms).cloned().collect();
        out.sort_by_key(|b| b.id);
        Ok(out)
    }

    async fn stats(&self) -> Result<CacheStats> {
        let oldest_dirty_ms = {
            let mut index = self.dirty_index.lock().expect("dirty index lock");
            loop {
                let Some((stamp, cell)) = index.oldest().cloned() else { break None };
                if self.is_dirty_with(&cell, stamp) {
                    break Some(stamp);
                }
                index.remove(stamp, &cell);
            }
        };
        Ok(CacheStats {
            dirty_cells: self.dirty_cells.load(SeqCst),
            oldest_dirty_ms,
            open_claims: self.claims.lock().expect("claims lock").len() as u64,
        })
    }
}

/// Test hooks (cargo feature `testing`).
#[cfg(any(test, feature = "testing"))]
#[async_trait]
impl CacheFaults for MemoryCache {
    async fn lose_everything(&self) -> Result<()> {
        // Before the other locks: a keyed increment takes its key's lock first.
        self.remembered.clear();
        // Claims first: a claim takes the claims lock, then the index's.
        let mut claims = self.claims.lock().expect("claims lock");
        let mut index = self.dirty_index.lock().expect("dirty index lock");
        self.counters.clear();
        self.slices.clear();
        claims.clear();
        index.clear();
        self.dirty_cells.store(0, SeqCst);
        Ok(())
    }

    /// A counter's total and flushed mark live in one entry here, so losing
    /// either part loses the whole entry (its time slices stay).
    async fn lose_part(&self, key: &Key, _part: CachePart) -> Result<()> {
        if let Some((_, entry)) = self.counters.remove(key) {
            self.forget_dirty(&entry);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        Key::named(name).unwrap()
    }

    #[tokio::test]
    async fn increments_after_load_and_claims_move_pending_once() {
        let cache = MemoryCache::new();
        let k = key("a");
        assert_eq!(cache.incr(&k, 1).await.unwrap(), CacheIncr::Missing);
        assert_eq!(cache.load(&k, 10, 0).await.unwrap(), 10);
        assert_eq!(cache.load(&k, 99, 0).await.unwrap(), 10, "load only installs an absent counter");
        assert_eq!(cache.incr(&k, 5).await.unwrap(), CacheIncr::Applied { total: 15, pending: 5 });
        assert_eq!(cache.stats().await.unwrap().dirty_cells, 1);
        let dirty = cache.dirty(u64::MAX, 10).await.unwrap();
        assert_eq!(dirty.len(), 1);
        assert_eq!(dirty[0].pending, 5);
        let id = BatchId::new();
        let batch = cache.claim(id, &[Cell::Counter(k.clone())]).await.unwrap();
        assert_eq!(batch.entries, vec![BatchEntry { cell: Cell::Counter(k.clone()), delta: 5 }]);
        let again = cache.claim(BatchId::new(), &[Cell::Counter(k.clone())]).await.unwrap();
        assert!(again.is_empty(), "a delta is claimed once");
        assert_eq!(cache.claims(0).await.unwrap(), vec![batch]);
        cache.ack(id).await.unwrap();
        assert!(cache.claims(0).await.unwrap().is_empty());
        assert_eq!(cache.stats().await.unwrap().dirty_cells, 0);
        assert!(cache.dirty(u64::MAX, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn overflow_changes_nothing() {
        let cache = MemoryCache::new();
        let k = key("max");
        cache.load(&k, i64::MAX - 1, 0).await.unwrap();
        let e = cache.incr(&k, 2).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Overflow);
        let v = cache.get_many(&[Cell::Counter(k.clone())]).await.unwrap();
        assert_eq!(v[0], Some(CachedValue { total: i64::MAX - 1, pending: 0 }));
    }

    #[tokio::test]
    async fn a_pending_delta_beyond_i64_is_claimed_in_parts() {
        let cache = MemoryCache::new();
        let k = key("wide");
        cache.load(&k, i64::MIN, 0).await.unwrap();
        cache.set(&k, i64::MAX).await.unwrap();
        let cell = Cell::Counter(k.clone());
        assert_eq!(cache.get_many(std::slice::from_ref(&cell)).await.unwrap()[0].unwrap().pending, u64::MAX as i128);
        let mut moved: i128 = 0;
        for _ in 0..3 {
            let batch = cache.claim(BatchId::new(), std::slice::from_ref(&cell)).await.unwrap();
            moved += batch.entries.iter().map(|e| i128::from(e.delta)).sum::<i128>();
        }
        assert_eq!(moved, u64::MAX as i128, "every part moves, none twice");
        assert!(cache.dirty(u64::MAX, 10).await.unwrap().is_empty());
    }

    /// Claims found through the dirty index while increments race with
    /// them (often in the same millisecond as the claim): every delta is
    /// found, none twice. A dirty cell missing from the index would never
    /// be flushed.
    #[tokio::test]
    async fn the_dirty_index_finds_every_delta_under_racing_claims() {
        let cache = std::sync::Arc::new(MemoryCache::new());
        let keys: Vec<Key> = (0..8).map(|i| key(&format!("k{i}"))).collect();
        for k in &keys {
            cache.load(k, 0, 0).await.unwrap();
        }
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let (cache, keys) = (cache.clone(), keys.clone());
                std::thread::spawn(move || {
                    for i in 0..40_000 {
                        cache.incr_now(&keys[(i + t) % keys.len()], 1).unwrap().unwrap();
                    }
                })
            })
            .collect();
        let mut claimed = 0i64;
        let drain = || async {
            let cells: Vec<Cell> = cache.dirty(u64::MAX, 4).await.unwrap().into_iter().map(|d| d.cell).collect();
            let batch = cache.claim(BatchId::new(), &cells).await.unwrap();
            batch.entries.iter().map(|e| e.delta).sum::<i64>()
        };
        while threads.iter().any(|t| !t.is_finished()) {
            claimed += drain().await;
        }
        for t in threads {
            t.join().unwrap();
        }
        for _ in 0..100 {
            claimed += drain().await;
        }
        assert_eq!(claimed, 80_000, "every delta found through the index, once");
        assert_eq!(cache.stats().await.unwrap().dirty_cells, 0);
        assert!(cache.stats().await.unwrap().oldest_dirty_ms.is_none());
    }

    #[tokio::test]
    async fn concurrent_increments_and_claims_lose_and_double_nothing() {
        let cache = std::sync::Arc::new(MemoryCache::new());
        let k = key("hot");
        cache.load(&k, 0, 0).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let (cache, k) = (cache.clone(), k.clone());
            tasks.push(std::thread::spawn(move || {
                for _ in 0..50_000 {
                    cache.incr_now(&k, 1).unwrap().unwrap();
                }
            }));
        }
        let mut claimed = 0;
        while tasks.iter().any(|t| !t.is_finished()) {
            let b = cache.claim(BatchId::new(), &[Cell::Counter(k.clone())]).await.unwrap();
            claimed += b.entries.iter().map(|e| e.delta).sum::<i64>();
        }
        for t in tasks {
            t.join().unwrap();
        }
        let b = cache.claim(BatchId::new(), &[Cell::Counter(k.clone())]).await.unwrap();
        claimed += b.entries.iter().map(|e| e.delta).sum::<i64>();
        assert_eq!(claimed, 100_000);
    }
}
