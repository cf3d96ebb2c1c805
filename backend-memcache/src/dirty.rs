//! The shared dirty index: how any process finds the cells with a pending
//! delta, although memcached cannot list its keys.
//!
//! Time is cut into windows (`dirty_window`, default 5 s). Before a process
//! first changes a cell in a window, it appends `<ms> <encoded id>` to that
//! window's list (one of `dirty_shards` lists per window), in the same
//! pipeline as the change and before it: memcached runs a connection's
//! commands in order, so a process that dies after sending the change has
//! sent the registration too. Nothing is removed on the hot path.
//!
//! Listing reads the lists from the head (the oldest window not compacted)
//! to now and the state of every cell they name, and keeps those with a
//! pending delta. Windows that closed more than `clock_margin` ago are
//! compacted: the cells still dirty are appended to the current window
//! (keeping their stamps), then the old lists are deleted and the head
//! moves on. A list is appended with an add then an append in one
//! pipeline, so the line lands whether or not the list existed (twice at
//! worst; reading deduplicates).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use counter_core::{CacheStats, Cell, DirtyCell, Error, ErrorKind, Result, now_ms};

use crate::cache::MemcacheCache;
use crate::client::{Pipeline, Reply, Status};
use crate::layout::parse_raw_id;
use crate::options::MemcacheCacheOptions;
use crate::values::{parse_dirty, parse_ids, parse_u64};

/// Most keys read in one pipeline while scanning.
const SCAN_CHUNK: usize = 512;

/// Which cells this process registered in the current window.
#[derive(Debug)]
pub(crate) struct Registry {
    window_ms: u64,
    margin_windows: u64,
    lookback_windows: u64,
    /// The window, the server restarts seen, and the cells registered.
    seen: Mutex<(u64, u64, HashSet<String>)>,
}

/// Registrations to send: the window, its stamp, and the encoded ids.
#[derive(Debug, Default)]
pub(crate) struct Registrations {
    window: u64,
    restarts: u64,
    stamp: u64,
    pub(crate) encs: Vec<String>,
}

impl Registrations {
    /// Replies the registrations take in a pipeline.
    pub(crate) fn replies(&self) -> usize {
        self.encs.len() * 2
    }
}

impl Registry {
    pub(crate) fn new(options: &MemcacheCacheOptions) -> Registry {
        let window_ms = options.dirty_window.as_millis().max(1) as u64;
        Registry {
            window_ms,
            margin_windows: (options.clock_margin.as_millis() as u64).div_ceil(window_ms) + 1,
            lookback_windows: (options.lookback.as_millis() as u64).div_ceil(window_ms).max(1),
            seen: Mutex::new((0, 0, HashSet::new())),
        }
    }

    fn window_of(&self, ms: u64) -> u64 {
        ms / self.window_ms
    }

    /// The cells among `encs` this process has not registered in the
    /// current window (of the server instance it talks to now: a restarted
    /// server lost the lists).
    pub(crate) fn needed<'a>(&self, restarts: u64, encs: impl IntoIterator<Item = &'a str>) -> Registrations {
        let stamp = now_ms();
        let window = self.window_of(stamp);
        let mut seen = self.seen.lock().expect("registry lock");
        if seen.0 != window || seen.1 != restarts {
            *seen = (window, restarts, HashSet::new());
        }
        let mut out = Registrations { window, restarts, stamp, encs: Vec::new() };
        for enc in encs {
            if !seen.2.contains(enc) && !out.encs.iter().any(|e| e == enc) {
                out.encs.push(enc.to_string());
            }
        }
        out
    }

    /// Records registrations that reached the server.
    pub(crate) fn mark(&self, regs: &Registrations) {
        let mut seen = self.seen.lock().expect("registry lock");
        if seen.0 == regs.window && seen.1 == regs.restarts {
            seen.2.extend(regs.encs.iter().cloned());
        }
    }

    pub(crate) fn clear(&self) {
        *self.seen.lock().expect("registry lock") = (0, 0, HashSet::new());
    }
}

/// Whether a pipeline's registration replies show every line landed.
pub(crate) fn registrations_ok(replies: &[Reply]) -> Result<()> {
    for pair in replies.chunks(2) {
        for reply in pair {
            reply.check()?;
        }
        if !pair.iter().any(Reply::ok) {
            return Err(Error::new(ErrorKind::Unavailable, "a dirty list of memcached vanished while appending to it"));
        }
    }
    Ok(())
}

/// What a scan of the dirty index found.
struct Scan {
    now_window: u64,
    first_window: u64,
    /// Lists read, by (window, shard), with the cells they name.
    lists: Vec<(u64, u16)>,
    /// Cells with a pending delta: encoded id -> (cell, pending, stamp).
    dirty: HashMap<String, (Cell, i128, u64)>,
}

impl MemcacheCache {
    /// Adds the registration lines to a pipeline (before the change they
    /// announce).
    pub(crate) fn push_registrations(&self, p: &mut Pipeline, regs: &Registrations) {
        for enc in &regs.encs {
            let key = self.layout.dirty_list(regs.window, self.layout.dirty_shard_of(enc));
            let line = format!("{} {enc}\n", regs.stamp);
            p.set(&key, line.as_bytes(), "ME").set(&key, line.as_bytes(), "MA");
        }
    }

    /// Registers `encs` again if the server restarted while `regs` was in
    /// flight: a change may have reached a fresh server whose lists do not
    /// name its cell. (Called after the change, so a process that dies just
    /// then leaves that one change unlisted until its cell changes again.)
    pub(crate) async fn reregister_if_restarted<'a>(
        &self,
        regs: &Registrations,
        encs: impl IntoIterator<Item = &'a str>,
    ) -> Result<()> {
        if self.client.restarts() == regs.restarts {
            return Ok(());
        }
        let again = self.registry.needed(self.client.restarts(), encs);
        let mut p = Pipeline::new();
        self.push_registrations(&mut p, &again);
        registrations_ok(&self.client.run(&p).await?)?;
        self.registry.mark(&again);
        Ok(())
    }

    /// Appends `(stamp, enc)` lines to the current window.
    async fn carry(&self, window: u64, lines: &BTreeMap<String, u64>) -> Result<()> {
        let mut p = Pipeline::new();
        for (enc, stamp) in lines {
            let key = self.layout.dirty_list(window, self.layout.dirty_shard_of(enc));
            let line = format!("{stamp} {enc}\n");
            p.set(&key, line.as_bytes(), "ME").set(&key, line.as_bytes(), "MA");
        }
        registrations_ok(&self.client.run(&p).await?)
    }

    async fn scan(&self) -> Result<Scan> {
        let registry = &self.registry;
        let now_window = registry.window_of(now_ms());
        let mut p = Pipeline::new();
        p.get(&self.layout.dirty_head(), "v");
        let head = self.client.run(&p).await?[0].check()?.value.as_deref().and_then(parse_u64);
        let first_window = head.unwrap_or(now_window.saturating_sub(registry.lookback_windows)).min(now_window);
        let keys: Vec<(u64, u16)> =
            (first_window..=now_window).flat_map(|w| (0..self.layout.dirty_shards()).map(move |s| (w, s))).collect();
        let mut stamps: HashMap<String, u64> = HashMap::new();
        let mut lists = Vec::new();
        for chunk in keys.chunks(SCAN_CHUNK) {
            let mut p = Pipeline::new();
            for (w, s) in chunk {
                p.get(&self.layout.dirty_list(*w, *s), "v");
            }
            for (&(w, s), reply) in chunk.iter().zip(self.client.run(&p).await?) {
                let reply = reply.check()?;
                if reply.status != Status::Value {
                    continue;
                }
                lists.push((w, s));
                for (stamp, enc) in parse_dirty(reply.value.as_deref().unwrap_or_default()) {
                    let at = stamps.entry(enc).or_insert(stamp);
                    *at = (*at).min(stamp);
                }
            }
        }
        let encs: Vec<(String, u64)> = stamps.into_iter().collect();
        let mut dirty = HashMap::new();
        for chunk in encs.chunks(SCAN_CHUNK) {
            let ids: Vec<(&str, Option<&str>)> = chunk.iter().map(|(enc, _)| (enc.as_str(), None)).collect();
            for ((enc, stamp), (state, raw)) in chunk.iter().zip(self.read_states(&ids).await?) {
                let (Some((_, pending)), Some(raw)) = (state.value(), raw) else { continue };
                if pending != 0 {
                    dirty.insert(enc.clone(), (parse_raw_id(&raw)?, pending, *stamp));
                }
            }
        }
        Ok(Scan { now_window, first_window, lists, dirty })
    }

    /// Carries the dirty cells of closed windows into the current one,
    /// deletes the closed lists and moves the head on.
    async fn compact(&self, scan: &Scan) -> Result<()> {
        let closed_before = scan.now_window.saturating_sub(self.registry.margin_windows);
        if scan.first_window >= closed_before {
            return Ok(());
        }
        let carried: BTreeMap<String, u64> =
            scan.dirty.iter().map(|(enc, (_, _, stamp))| (enc.clone(), *stamp)).collect();
        // Cells dirty in open windows only are carried too (harmless
        // duplicates): a cell's windows are not tracked one by one.
        if !carried.is_empty() {
            self.carry(scan.now_window, &carried).await?;
        }
        let mut p = Pipeline::new();
        for (w, s) in scan.lists.iter().filter(|(w, _)| *w < closed_before) {
            p.delete(&self.layout.dirty_list(*w, *s), "");
        }
        for reply in self.client.run(&p).await? {
            reply.check()?;
        }
        // Move the head forward, never back.
        for _ in 0..5 {
            let mut p = Pipeline::new();
            p.get(&self.layout.dirty_head(), "v c");
            let reply = self.client.run(&p).await?.remove(0);
            let reply = reply.check()?;
            let current = reply.value.as_deref().and_then(parse_u64);
            if current.is_some_and(|h| h >= closed_before) {
                return Ok(());
            }
            let flags = match (current, reply.cas) {
                (Some(_), Some(cas)) => format!("C{cas}"),
                _ => "ME".to_string(),
            };
            let mut p = Pipeline::new();
            p.set(&self.layout.dirty_head(), closed_before.to_string().as_bytes(), &flags);
            if self.client.run(&p).await?[0].check()?.ok() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Cells with a pending delta, oldest first.
    pub(crate) async fn list_dirty(&self, dirty_before_ms: u64, limit: usize) -> Result<Vec<DirtyCell>> {
        let scan = self.scan().await?;
        self.compact(&scan).await?;
        let mut out: Vec<DirtyCell> = scan
            .dirty
            .into_values()
            .filter(|(_, _, stamp)| *stamp <= dirty_before_ms)
            .map(|(cell, pending, stamp)| DirtyCell { cell, pending, dirty_since_ms: stamp })
            .collect();
        out.sort_by(|a, b| a.dirty_since_ms.cmp(&b.dirty_since_ms).then_with(|| a.cell.cmp(&b.cell)));
        out.truncate(limit);
        Ok(out)
    }

    /// Open batch ids in the claims index.
    pub(crate) async fn open_claim_ids(&self, shards: impl Iterator<Item = u16>) -> Result<Vec<counter_core::BatchId>> {
        let mut p = Pipeline::new();
        for shard in shards {
            p.get(&self.layout.index(shard), "v");
        }
        let mut ids = std::collections::BTreeSet::new();
        for reply in self.client.run(&p).await? {
            if let Some(value) = reply.check()?.value.as_deref() {
                ids.extend(parse_ids(value));
            }
        }
        Ok(ids.into_iter().collect())
    }

    pub(crate) async fn gauges(&self) -> Result<CacheStats> {
        let scan = self.scan().await?;
        let open = self.open_claim_ids(0..self.layout.index_shards()).await?;
        Ok(CacheStats {
            dirty_cells: scan.dirty.len() as u64,
            oldest_dirty_ms: scan.dirty.values().map(|(_, _, stamp)| *stamp).min(),
            open_claims: open.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_once_per_window() {
        let registry = Registry::new(&MemcacheCacheOptions::default());
        let regs = registry.needed(0, ["a", "b", "a"]);
        assert_eq!(regs.encs, ["a", "b"]);
        assert_eq!(regs.replies(), 4);
        registry.mark(&regs);
        let again = registry.needed(0, ["a", "c"]);
        if again.window == regs.window {
            assert_eq!(again.encs, ["c"]);
        }
        let restarted = registry.needed(1, ["a"]);
        assert_eq!(restarted.encs, ["a"], "a restarted server lost the lists");
    }
}
