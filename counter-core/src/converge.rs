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
//! periodically for the counters it watches (those it loaded or flushed,
//! a bounded set), every `reconcile_every`, at most `reconcile_limit` per
//! pass.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;

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

/// The counters an engine watches for drift, in the order a sweep visits
/// them.
#[derive(Debug, Default)]
pub(crate) struct Watched {
    order: VecDeque<Key>,
    known: HashSet<Key>,
    /// Counters to reconcile at the next pass (batches of theirs landed).
    soon: HashSet<Key>,
}

impl Watched {
    fn watch(&mut self, key: &Key) {
        if self.known.contains(key) {
            return;
        }
        if self.order.len() >= MAX_WATCHED {
            if let Some(old) = self.order.pop_front() {
                self.known.remove(&old);
            }
        }
        self.known.insert(key.clone());
        self.order.push_back(key.clone());
    }

    /// The next `n` counters of the round, moved to its end.
    fn next(&mut self, n: usize) -> Vec<Key> {
        let n = n.min(self.order.len());
        let keys: Vec<Key> = self.order.drain(..n).collect();
        self.order.extend(keys.iter().cloned());
        keys
    }

    fn forget(&mut self, key: &Key) {
        if self.known.remove(key) {
            self.order.retain(|k| k != key);
        }
    }
}

impl<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> Engine<C, S> {
    /// Watches `keys` for drift (they were loaded, or flushed).
    pub(crate) fn watch(&self, keys: &[Key]) {
        let mut watched = self.watched.lock().expect("watched lock");
        for key in keys {
            watched.watch(key);
        }
    }

    /// Counters of landed batches: reconciled at the next pass.
    pub(crate) fn reconcile_soon(&self, keys: impl IntoIterator<Item = Key>) {
        let mut watched = self.watched.lock().expect("watched lock");
        for key in keys {
            watched.watch(&key);
            watched.soon.insert(key);
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
        if !gone.is_empty() {
            let mut watched = self.watched.lock().expect("watched lock");
            gone.iter().for_each(|k| watched.forget(k));
        }
        if marks.is_empty() {
            return Ok(0);
        }
        // 2. No claim of theirs in flight, here or in the cache.
        let candidates: Vec<Key> = marks.iter().map(|(k, _)| k.clone()).collect();
        let mut busy: HashSet<Key> = HashSet::new();
        for claim in self.cache.claims_for(&candidates).await? {
            busy.extend(claim.entries.iter().map(|e| e.cell.key().clone()));
        }
        for piece in self.backlog().all() {
            busy.extend(piece.batch.entries.iter().map(|e| e.cell.key().clone()));
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
            let Ok(shift) = i64::try_from(drift) else { continue };
            match self.cache.rebase(&key, flushed, shift).await {
                Ok(true) => {
                    corrected += 1;
                    debug!(key = %key, shift, "cached total rebased on the store's value");
                }
                Ok(false) => {}
                Err(e) if e.kind() == ErrorKind::Overflow => {
                    warn!(key = %key, shift, "the store's value plus the pending delta leaves the i64 range; not rebased")
                }
                Err(e) => return Err(e),
            }
        }
        self.metrics.rebased.fetch_add(corrected, Relaxed);
        Ok(corrected)
    }

    /// One pass: the counters of landed batches, then, when the sweep is
    /// due (or `sweep`), the next counters of the watched round.
    pub(crate) async fn converge(&self, sweep: bool) -> Result<u64> {
        let now = now_ms();
        let every = self.config.reconcile_every().as_millis() as u64;
        let due = sweep || now.saturating_sub(self.last_sweep_ms.load(Relaxed)) >= every;
        let mut keys: Vec<Key> = {
            let mut watched = self.watched.lock().expect("watched lock");
            let mut keys: Vec<Key> = watched.soon.drain().collect();
            if due {
                let limit = if sweep { usize::MAX } else { self.config.reconcile_limit };
                keys.extend(watched.next(limit));
            }
            keys
        };
        if due {
            self.last_sweep_ms.store(now, Relaxed);
        }
        keys.sort();
        keys.dedup();
        let mut corrected = 0;
        for page in keys.chunks(1_000) {
            corrected += self.reconcile(page).await?;
        }
        Ok(corrected)
    }
}
