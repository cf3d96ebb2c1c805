//! Convergence: the cache's idea of a counter drifts from the store when
//! someone else writes the store (another service sharing the table, a
//! second cache over the same store, the CLI beside a service) or when a
//! cache reload missed a batch that was in flight (its claim records were
//! lost with the cache). The store stays exact; the totals the library
//! returns would not.
//!
//! The correction: with no claim of a counter in flight, the cache's
//! flushed mark `F` must equal the durable value `D`. So the engine reads
//! `F` from the cache, then checks that no claim of the counter is in flight
//! (the cache's records and this engine's backlog), then reads `D`, and asks
//! the cache to shift `T` and `F` by `D - F` if `F` is still what it read
//! ([`CacheLayer::rebase`]). The pending delta `T - F` is untouched, so
//! nothing pending is lost or doubled. The order makes it safe: a claim made
//! after `F` was read moves `F` (the rebase then does nothing), and one made
//! before is either still recorded (the counter is skipped) or landed
//! before `D` was read. A write by someone else between the two reads is
//! corrected at the next pass.
//!
//! When: right after this engine landed batches of a counter, and
//! periodically for the counters it watches (those it loaded, read or
//! flushed, a bounded set), every `reconcile_every`, at most
//! `reconcile_limit` per pass.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;

use dashmap::DashMap;

use tracing::{debug, warn};

use crate::batch::now_ms;
use crate::cache::CacheLayer;
use crate::cell::Cell;
use crate::engine::Engine;
use crate::error::{ErrorKind, Result};
use crate::key::Key;
use crate::store::DurableStore;

/// Most counters watched for drift.
const MAX_WATCHED: usize = 1_000_000;

/// The counters an engine watches for drift (those it loaded, flushed or
/// read), in the order a sweep visits them. Checking that a counter is
/// watched is a lookup in a sharded map, so reads can afford it; only a
/// counter seen for the first time takes the lock of the order.
#[derive(Debug, Default)]
pub(crate) struct Watched {
    /// Hashed with foldhash: checked on every increment of a shared cache.
    known: DashMap<Key, (), foldhash::fast::RandomState>,
    order: Mutex<VecDeque<Key>>,
    /// Counters to reconcile at the next pass (batches of theirs landed).
    soon: Mutex<HashSet<Key>>,
}

impl Watched {
    pub(crate) fn watch(&self, key: &Key) {
        if self.known.contains_key(key) || self.known.insert(key.clone(), ()).is_some() {
            return;
        }
        let mut order = self.order.lock().expect("watched lock");
        order.push_back(key.clone());
        if order.len() > MAX_WATCHED {
            if let Some(old) = order.pop_front() {
                self.known.remove(&old);
            }
        }
    }

    pub(crate) fn contains(&self, key: &Key) -> bool {
        self.known.contains_key(key)
    }

    /// The next `n` counters of the round, moved to its end.
    fn next(&self, n: usize) -> Vec<Key> {
        let mut order = self.order.lock().expect("watched lock");
        let n = n.min(order.len());
        let keys: Vec<Key> = order.drain(..n).collect();
        order.extend(keys.iter().cloned());
        keys
    }

    fn forget(&self, keys: &[Key]) {
        let gone: HashSet<&Key> = keys.iter().filter(|k| self.known.remove(*k).is_some()).collect();
        if !gone.is_empty() {
            self.order.lock().expect("watched lock").retain(|k| !gone.contains(k));
        }
    }
}

impl<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> Engine<C, S> {
    /// Watches `keys` for drift (they were loaded, read, or flushed).
    pub(crate) fn watch(&self, keys: &[Key]) {
        for key in keys {
            self.watched.watch(key);
        }
    }

    /// Before this engine hands out the cached totals of `keys`: those it
    /// does not watch yet (cached by another process, or another handle)
    /// are reconciled with the store first, then watched. Best effort: if
    /// the store cannot be read, they are left for the next call.
    pub(crate) async fn ensure_watched(&self, keys: &[Key]) {
        let new: Vec<Key> = keys.iter().filter(|k| !self.watched.contains(k)).cloned().collect();
        if new.is_empty() {
            return;
        }
        match self.reconcile(&new).await {
            Ok(_) => self.watch(&new),
            Err(e) => debug!(error = %e, "could not reconcile counters read for the first time"),
        }
    }

    /// Counters of landed batches: reconciled at the next pass.
    pub(crate) fn reconcile_soon(&self, keys: impl IntoIterator<Item = Key>) {
        let mut soon = self.watched.soon.lock().expect("watched lock");
        for key in keys {
            self.watched.watch(&key);
            soon.insert(key);
        }
    }

    /// Brings the cached totals of `keys` back to durable value plus
    /// pending where they drifted (see the module documentation). Returns
    /// how many it corrected.
    pub(crate) async fn reconcile(&self, keys: &[Key]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let cells: Vec<Cell> = keys.iter().cloned().map(Cell::Counter).collect();
        // 1. The flushed marks.
        let cached = self.cache.get_many(&cells).await?;
        let mut marks: Vec<(Key, i64)> = Vec::new();
        let mut gone = Vec::new();
        for (key, value) in keys.iter().zip(cached) {
            match value {
                Some(v) => match i64::try_from(i128::from(v.total) - v.pending) {
                    Ok(flushed) => marks.push((key.clone(), flushed)),
                    Err(_) => continue,
                },
                None => gone.push(key.clone()),
            }
        }
        self.watched.forget(&gone);
        if marks.is_empty() {
            return Ok(0);
        }
        // 2. No claim of theirs in flight, here or in the cache.
        let candidates: Vec<Key> = marks.iter().map(|(k, _)| k.clone()).collect();
        // Of the batches this engine holds, what has not landed is in their
        // pieces; of the others (other processes'), the whole claim counts.
        let claims = self.cache.claimed_keys(&candidates).await?;
        let mut busy: HashSet<Key> = HashSet::new();
        {
            let backlog = self.backlog();
            for (_, touched) in claims.into_iter().filter(|(id, _)| !backlog.contains(*id)) {
                busy.extend(touched);
            }
            for piece in backlog.all() {
                busy.extend(piece.batch.entries.iter().map(|e| e.cell.key().clone()));
            }
        }
        marks.retain(|(k, _)| !busy.contains(k));
        if marks.is_empty() {
            return Ok(0);
        }
        // 3. The durable values, then 4. the shift where they differ.
        let keys: Vec<Key> = marks.iter().map(|(k, _)| k.clone()).collect();
        let durable = self.store_call("a read", self.store.get_many(&keys)).await?;
        let mut corrected = 0;
        for ((key, flushed), durable) in marks.into_iter().zip(durable) {
            let drift = i128::from(durable.unwrap_or(0)) - i128::from(flushed);
            if drift == 0 {
                continue;
            }
            // A drift beyond i64 (the store at 0, the cache at i64::MIN) is
            // shifted in steps that fit, each from where the last left F.
            let mut from = flushed;
            let mut remaining = drift;
            while remaining != 0 {
                let shift = remaining.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
                match self.cache.rebase(&key, from, shift).await {
                    Ok(true) => {
                        debug!(key = %key, shift, "cached total rebased on the store's value");
                        from += shift;
                        remaining -= i128::from(shift);
                    }
                    Ok(false) => break,
                    Err(e) if e.kind() == ErrorKind::Overflow => {
                        warn!(key = %key, shift, "the store's value plus the pending delta leaves the i64 range; not rebased");
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if from != flushed {
                corrected += 1;
            }
        }
        self.metrics.rebased.fetch_add(corrected, Relaxed);
        Ok(corrected)
    }

    /// One pass: the counters of landed batches, then, when the sweep is
    /// due (or `sweep`), the next counters of the watched round. With
    /// `bounded` (the background flusher's passes), at most
    /// `reconcile_limit` counters of landed batches per pass, the rest at
    /// the next ones, so that reading back what was flushed never costs the
    /// store more than a bounded share of its time.
    pub(crate) async fn converge(&self, sweep: bool, bounded: bool) -> Result<u64> {
        let now = now_ms();
        let every = self.config.reconcile_every().as_millis() as u64;
        let due = sweep || now.saturating_sub(self.last_sweep_ms.load(Relaxed)) >= every;
        let mut keys: Vec<Key> = {
            let mut soon = self.watched.soon.lock().expect("watched lock");
            if bounded && soon.len() > self.config.reconcile_limit {
                let taken: Vec<Key> = soon.iter().take(self.config.reconcile_limit).cloned().collect();
                taken.iter().for_each(|k| {
                    soon.remove(k);
                });
                taken
            } else {
                soon.drain().collect()
            }
        };
        if due {
            let limit = if sweep { usize::MAX } else { self.config.reconcile_limit };
            let from_soon: HashSet<Key> = keys.iter().cloned().collect();
            keys.extend(self.watched.next(limit).into_iter().filter(|k| !from_soon.contains(k)));
            self.last_sweep_ms.store(now, Relaxed);
        }
        let mut corrected = 0;
        for page in keys.chunks(1_000) {
            corrected += self.reconcile(page).await?;
        }
        Ok(corrected)
    }
}
