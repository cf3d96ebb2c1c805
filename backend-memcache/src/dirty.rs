//! The shared dirty index: how any process finds the cells with a pending
//! delta, although memcached cannot list its keys.
//!
//! Time is cut into windows (`dirty_window`, default 5 s). Before a process
//! first changes a cell in a window (or first changes it in a new lineage:
//! after the cell was lost and reloaded), it appends `<ms> <encoded id>` to
//! that window's list (one of `dirty_shards` lists per window), in the same
//! pipeline as the change and before it: memcached runs a connection's
//! commands in order, so a process that dies after sending the change has
//! sent the registration too. Nothing is removed on the hot path.
//!
//! Listing reads the lists from the head (the oldest window not compacted)
//! to now and the state of the cells they name, and keeps those with a
//! pending delta. A flusher's listing of the cells due by a cut-off reads
//! only the cells registered by then and those in windows it compacts;
//! the gauges answer from the last complete listing while it is fresh
//! (see [`crate::last_listing`]). Windows that closed more than
//! `clock_margin` ago are compacted: the cells still dirty are appended to
//! the current window (keeping their stamps), then the old lists are
//! deleted and the head moves on. A list is appended with an add then an append in one
//! pipeline, so the line lands whether or not the list existed (twice at
//! worst; reading deduplicates).
//!
//! memcached may drop the lists on their own (an eviction, `flush_all`),
//! and a process registers a cell only once per window and lineage, so each
//! process keeps track of the lines it put in the index (registrations,
//! carried and re-appended lines) for the windows not compacted yet, and
//! puts back those that vanished:
//!
//! - every listing (`dirty` on each pass of a flusher, `stats` when it
//!   lists) checks that every line this process had landed before it
//!   started is in the lists it read, and appends the missing ones whose
//!   cell is cached to the current window (they are listed by that same
//!   call already);
//! - a registration whose add created a list this process had appended to
//!   before in that window shows that the list vanished: its lines go back;
//! - a process that did not list in the last two windows checks, with its
//!   first registration of a window (in the same pipeline), that the lists
//!   of the recent windows it appended to still exist;
//! - a reload (a new lineage) registers the cell again, so after
//!   `flush_all` every counter incremented again is listed at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use counter_core::{CacheStats, Cell, DirtyCell, Error, ErrorKind, Result, now_ms};
use tracing::warn;

use crate::cache::{MemcacheCache, State};
use crate::client::{Pipeline, Reply, Status};
use crate::layout::{dirty_shard, parse_raw_id};
use crate::options::MemcacheCacheOptions;
use crate::values::{parse_dirty, parse_ids, parse_u64};

/// Most keys read in one pipeline while scanning.
const SCAN_CHUNK: usize = 512;

/// Most index lines a process keeps track of; beyond, the oldest windows
/// are forgotten (their lines are then no longer put back if they vanish).
const MAX_TRACKED: usize = 1_000_000;

/// A line this process put in the dirty index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// The cell's lineage then: a change in another lineage (the cell was
    /// lost and reloaded meanwhile) registers it again.
    lineage: u64,
    /// The line's stamp (the oldest, if it landed more than once).
    stamp: u64,
    /// When it (last) landed, in this process's order.
    seq: u64,
}

/// The lines of one window.
#[derive(Debug, Default)]
struct Window {
    cells: HashMap<Arc<str>, Entry>,
    /// Lines per shard.
    per_shard: HashMap<u16, usize>,
}

/// What this process put in the index, by window.
#[derive(Debug, Default)]
struct Tracked {
    /// The server restarts seen when these lines landed.
    restarts: u64,
    windows: BTreeMap<u64, Window>,
    len: usize,
    next_seq: u64,
    /// The last window in which this process listed the index.
    listed_window: u64,
    /// The last window whose first registration checked the recent lists.
    checked_window: u64,
}

impl Tracked {
    fn drop_below(&mut self, window: u64) {
        let keep = self.windows.split_off(&window);
        let dropped = std::mem::replace(&mut self.windows, keep);
        self.len -= dropped.values().map(|w| w.cells.len()).sum::<usize>();
    }

    fn insert(&mut self, window: u64, shard: u16, enc: &str, lineage: u64, stamp: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let track = self.windows.entry(window).or_default();
        match track.cells.get_mut(enc) {
            Some(entry) => *entry = Entry { lineage, stamp: entry.stamp.min(stamp), seq },
            None => {
                track.cells.insert(Arc::from(enc), Entry { lineage, stamp, seq });
                *track.per_shard.entry(shard).or_default() += 1;
                self.len += 1;
            }
        }
        while self.len > MAX_TRACKED && self.windows.len() > 1 {
            if let Some((_, oldest)) = self.windows.pop_first() {
                self.len -= oldest.cells.len();
            }
        }
    }
}

/// A line to put (back) in the index: encoded id, lineage, stamp.
pub(crate) type Line = (String, u64, u64);

/// Which cells this process registered, and in which windows.
#[derive(Debug)]
pub(crate) struct Registry {
    window_ms: u64,
    margin_windows: u64,
    lookback_windows: u64,
    shards: u16,
    tracked: Mutex<Tracked>,
}

/// One cell to register.
#[derive(Debug)]
pub(crate) struct Reg {
    pub(crate) enc: String,
    lineage: u64,
    shard: u16,
    /// Whether this process had landed lines in that list before.
    had: bool,
}

/// Registrations to send: the window, its stamp, the cells, and the lists
/// of recent windows to check.
#[derive(Debug, Default)]
pub(crate) struct Registrations {
    window: u64,
    restarts: u64,
    stamp: u64,
    /// This process's registration order when they were chosen.
    seq: u64,
    pub(crate) cells: Vec<Reg>,
    /// Lists of recent windows (window, shard) to check for existence.
    checks: Vec<(u64, u16)>,
}

impl Registrations {
    /// Replies the registrations take in a pipeline.
    pub(crate) fn replies(&self) -> usize {
        self.cells.len() * 2 + if self.checks.is_empty() { 0 } else { self.checks.len() + 1 }
    }

    /// Whether every registration line landed (the checks do not count).
    pub(crate) fn landed(&self, replies: &[Reply]) -> Result<()> {
        registrations_ok(&replies[..self.cells.len() * 2])
    }
}

impl Registry {
    pub(crate) fn new(options: &MemcacheCacheOptions) -> Registry {
        let window_ms = options.dirty_window.as_millis().max(1) as u64;
        Registry {
            window_ms,
            margin_windows: (options.clock_margin.as_millis() as u64).div_ceil(window_ms) + 1,
            lookback_windows: (options.lookback.as_millis() as u64).div_ceil(window_ms).max(1),
            shards: options.dirty_shards.max(1),
            tracked: Mutex::new(Tracked::default()),
        }
    }

    pub(crate) fn window_of(&self, ms: u64) -> u64 {
        ms / self.window_ms
    }

    /// What this process tracks, reset for a new server instance (a
    /// restarted server lost the lists). Only [`Registry::needed`], which
    /// is given the client's current count of restarts, resets; the others
    /// ignore tracking of another instance.
    fn tracked(&self, restarts: u64) -> MutexGuard<'_, Tracked> {
        let mut tracked = self.tracked.lock().expect("registry lock");
        if tracked.restarts != restarts {
            *tracked = Tracked { restarts, next_seq: tracked.next_seq, ..Tracked::default() };
        }
        tracked
    }

    /// The cells among `cells` (encoded id, lineage) this process has not
    /// registered in the current window in that lineage, and, once per
    /// window for a process that does not list, the recent lists to check.
    pub(crate) fn needed<'a>(&self, restarts: u64, cells: impl IntoIterator<Item = (&'a str, u64)>) -> Registrations {
        let stamp = now_ms();
        let window = self.window_of(stamp);
        let mut tracked = self.tracked(restarts);
        let mut out = Registrations { window, restarts, stamp, seq: tracked.next_seq, ..Registrations::default() };
        let current = tracked.windows.get(&window);
        for (enc, lineage) in cells {
            if current.and_then(|w| w.cells.get(enc)).is_some_and(|e| e.lineage == lineage)
                || out.cells.iter().any(|r| r.enc == enc)
            {
                continue;
            }
            let shard = dirty_shard(enc, self.shards);
            let had = current.and_then(|w| w.per_shard.get(&shard)).is_some_and(|n| *n > 0);
            out.cells.push(Reg { enc: enc.to_string(), lineage, shard, had });
        }
        if !out.cells.is_empty() && window > tracked.checked_window && window > tracked.listed_window + 1 {
            tracked.checked_window = window;
            let from = window.saturating_sub(self.margin_windows + 1);
            for (w, track) in tracked.windows.range(from..window) {
                out.checks.extend(track.per_shard.iter().filter(|(_, n)| **n > 0).map(|(s, _)| (*w, *s)));
            }
        }
        out
    }

    /// Records registrations that reached the server.
    pub(crate) fn mark(&self, regs: &Registrations) {
        let mut tracked = self.tracked.lock().expect("registry lock");
        if tracked.restarts == regs.restarts {
            for r in &regs.cells {
                tracked.insert(regs.window, r.shard, &r.enc, r.lineage, regs.stamp);
            }
        }
    }

    /// Records lines (carried or put back) that reached `window`'s lists.
    pub(crate) fn mark_lines(&self, window: u64, restarts: u64, lines: &[Line]) {
        let mut tracked = self.tracked.lock().expect("registry lock");
        if tracked.restarts == restarts {
            for (enc, lineage, stamp) in lines {
                tracked.insert(window, dirty_shard(enc, self.shards), enc, *lineage, *stamp);
            }
        }
    }

    /// This process's registration order now (lines marked before it had
    /// landed before it).
    pub(crate) fn seq(&self) -> u64 {
        self.tracked.lock().expect("registry lock").next_seq
    }

    /// After a listing that read the lists from `first_window` to
    /// `now_window`: forgets the windows before (compacted, or out of
    /// reach), and returns the lines landed before `seq` that the listing
    /// did not find (`found`), one per cell, with the oldest stamp.
    pub(crate) fn unlisted(
        &self,
        restarts: u64,
        seq: u64,
        first_window: u64,
        now_window: u64,
        found: impl Fn(&str) -> bool,
    ) -> HashMap<String, (u64, u64)> {
        let mut tracked = self.tracked.lock().expect("registry lock");
        if tracked.restarts != restarts {
            return HashMap::new();
        }
        tracked.drop_below(first_window);
        tracked.listed_window = tracked.listed_window.max(now_window);
        let mut out: HashMap<String, (u64, u64)> = HashMap::new();
        for track in tracked.windows.values() {
            for (enc, entry) in &track.cells {
                if entry.seq < seq && !found(enc) {
                    let at = out.entry(enc.to_string()).or_insert((entry.lineage, entry.stamp));
                    at.1 = at.1.min(entry.stamp);
                }
            }
        }
        out
    }

    /// After a check of the head: forgets the windows before it (compacted)
    /// or, without a head, out of a listing's reach.
    fn note_head(&self, restarts: u64, head: Option<u64>, now_window: u64) {
        let first = head.unwrap_or(now_window.saturating_sub(self.lookback_windows)).min(now_window);
        let mut tracked = self.tracked.lock().expect("registry lock");
        if tracked.restarts == restarts {
            tracked.drop_below(first);
        }
    }

    /// The lines landed before `seq` in the lists `lists` (window, shard).
    fn lines_of(&self, restarts: u64, lists: &[(u64, u16)], seq: u64) -> Vec<Line> {
        let tracked = self.tracked.lock().expect("registry lock");
        let mut out: HashMap<&str, (u64, u64)> = HashMap::new();
        if tracked.restarts != restarts {
            return Vec::new();
        }
        for (w, s) in lists {
            let Some(track) = tracked.windows.get(w) else { continue };
            for (enc, entry) in &track.cells {
                if entry.seq < seq && dirty_shard(enc, self.shards) == *s {
                    let at = out.entry(enc).or_insert((entry.lineage, entry.stamp));
                    at.1 = at.1.min(entry.stamp);
                }
            }
        }
        out.into_iter().map(|(enc, (lineage, stamp))| (enc.to_string(), lineage, stamp)).collect()
    }

    /// Lets the next registration check the recent lists again (a check
    /// or its repair failed).
    fn recheck(&self) {
        self.tracked.lock().expect("registry lock").checked_window = 0;
    }

    #[cfg(feature = "testing")]
    pub(crate) fn clear(&self) {
        let mut tracked = self.tracked.lock().expect("registry lock");
        *tracked = Tracked { next_seq: tracked.next_seq, ..Tracked::default() };
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
    /// The server restarts seen when it started.
    restarts: u64,
    /// Lists read, by (window, shard), with the cells they name.
    lists: Vec<(u64, u16)>,
    /// Cells with a pending delta: encoded id -> (cell, pending, stamp, lineage).
    dirty: HashMap<String, (Cell, i128, u64, u64)>,
}

impl MemcacheCache {
    /// Adds the registration lines to a pipeline (before the change they
    /// announce), then the checks of recent lists if any.
    pub(crate) fn push_registrations(&self, p: &mut Pipeline, regs: &Registrations) {
        for r in &regs.cells {
            let key = self.layout.dirty_list(regs.window, r.shard);
            let line = format!("{} {}\n", regs.stamp, r.enc);
            p.set(&key, line.as_bytes(), "ME").set(&key, line.as_bytes(), "MA");
        }
        if !regs.checks.is_empty() {
            p.get(&self.layout.dirty_head(), "v");
            for (w, s) in &regs.checks {
                p.get(&self.layout.dirty_list(*w, *s), "");
            }
        }
    }

    /// After the change that `regs` announced landed (and `regs.landed`
    /// held): records the registrations (see [`Self::note_registrations`])
    /// and registers `cells` again if the server restarted meanwhile (the
    /// only part that can fail).
    pub(crate) async fn registered<'a>(
        &self,
        regs: &Registrations,
        replies: &[Reply],
        cells: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> Result<()> {
        self.note_registrations(regs, replies).await;
        self.reregister_if_restarted(regs, cells).await
    }

    /// Records registrations whose lines landed (whether or not the change
    /// they announced did), and puts back the lines of the lists the
    /// replies show vanished. Putting lines back is retried by the next
    /// check or listing if it fails.
    pub(crate) async fn note_registrations(&self, regs: &Registrations, replies: &[Reply]) {
        if regs.landed(replies).is_err() {
            if !regs.checks.is_empty() {
                self.registry.recheck();
            }
            return;
        }
        self.registry.mark(regs);
        let mut vanished: Vec<(u64, u16)> = Vec::new();
        // An add that created a list this process had appended to: it vanished.
        for (r, pair) in regs.cells.iter().zip(replies.chunks(2)) {
            if r.had && pair[0].ok() && !vanished.contains(&(regs.window, r.shard)) {
                vanished.push((regs.window, r.shard));
            }
        }
        if !regs.checks.is_empty() {
            match self.checked(regs, &replies[regs.cells.len() * 2..regs.replies()]) {
                Ok(gone) => vanished.extend(gone),
                Err(e) => {
                    warn!(error = %e, "could not check the dirty lists of memcached; checking again later");
                    self.registry.recheck();
                }
            }
        }
        if !vanished.is_empty() {
            let lines = self.registry.lines_of(regs.restarts, &vanished, regs.seq);
            if let Err(e) = self.put_back(regs.restarts, &lines).await {
                warn!(error = %e, "could not put back lines of vanished dirty lists of memcached; trying again later");
                self.registry.recheck();
            }
        }
    }

    /// The lists among `regs.checks` that vanished, from the replies to the
    /// head and the checks.
    fn checked(&self, regs: &Registrations, replies: &[Reply]) -> Result<Vec<(u64, u16)>> {
        let head = replies[0].check()?.value.as_deref().and_then(parse_u64);
        self.registry.note_head(regs.restarts, head, regs.window);
        let mut gone = Vec::new();
        for (&(w, s), reply) in regs.checks.iter().zip(&replies[1..]) {
            if reply.check()?.status == Status::Miss && head.is_none_or(|h| w >= h) {
                gone.push((w, s));
            }
        }
        Ok(gone)
    }

    /// Appends `lines` to the current window and tracks them there.
    async fn put_back(&self, restarts: u64, lines: &[Line]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let window = self.registry.window_of(now_ms());
        let stamps: BTreeMap<String, u64> = lines.iter().map(|(enc, _, stamp)| (enc.clone(), *stamp)).collect();
        self.carry(window, &stamps).await?;
        self.registry.mark_lines(window, restarts, lines);
        Ok(())
    }

    /// Registers `cells` again if the server restarted while `regs` was in
    /// flight: a change may have reached a fresh server whose lists do not
    /// name its cell. (Called after the change, so a process that dies just
    /// then leaves that one change unlisted until its cell changes again.)
    async fn reregister_if_restarted<'a>(
        &self,
        regs: &Registrations,
        cells: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> Result<()> {
        if self.client.restarts() == regs.restarts {
            return Ok(());
        }
        let again = self.registry.needed(self.client.restarts(), cells);
        let mut p = Pipeline::new();
        self.push_registrations(&mut p, &again);
        again.landed(&self.client.run(&p).await?)?;
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

    /// Reads the index from the head to now and the state of the cells it
    /// names that became dirty at or before `due_before_ms` (all of them
    /// with `u64::MAX`), or that sit in windows about to be compacted, and
    /// of every cell this process put in it before and the lists no longer
    /// name (those still cached go back in the index). A cell registered
    /// later cannot be due, and stays in its open window: its state is not
    /// read (a flusher's listing then costs the server in proportion to
    /// the cells it may flush, not to every dirty one).
    async fn scan(&self, due_before_ms: u64) -> Result<Scan> {
        let registry = &self.registry;
        let listing = self.last_listing.begin();
        let (restarts, seq) = (self.client.restarts(), registry.seq());
        let now_window = registry.window_of(now_ms());
        let mut p = Pipeline::new();
        p.get(&self.layout.dirty_head(), "v");
        let head = self.client.run(&p).await?[0].check()?.value.as_deref().and_then(parse_u64);
        let first_window = head.unwrap_or(now_window.saturating_sub(registry.lookback_windows)).min(now_window);
        let keys: Vec<(u64, u16)> =
            (first_window..=now_window).flat_map(|w| (0..self.layout.dirty_shards()).map(move |s| (w, s))).collect();
        let closed_before = now_window.saturating_sub(registry.margin_windows);
        let mut stamps: HashMap<String, u64> = HashMap::new();
        // Cells named in a window the compaction deletes: read, to be carried.
        let mut compacted: std::collections::HashSet<String> = std::collections::HashSet::new();
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
                    if w < closed_before && stamp > due_before_ms {
                        compacted.insert(enc.clone());
                    }
                    let at = stamps.entry(enc).or_insert(stamp);
                    *at = (*at).min(stamp);
                }
            }
        }
        // Lines this process landed before the scan started must be there.
        let unlisted = registry.unlisted(restarts, seq, first_window, now_window, |enc| stamps.contains_key(enc));
        for (enc, (_, stamp)) in &unlisted {
            stamps.insert(enc.clone(), *stamp);
        }
        let all = stamps.len();
        let encs: Vec<(String, u64)> = stamps
            .into_iter()
            .filter(|(enc, stamp)| *stamp <= due_before_ms || compacted.contains(enc) || unlisted.contains_key(enc))
            .collect();
        let mut dirty = HashMap::new();
        let mut put_back: Vec<Line> = Vec::new();
        for chunk in encs.chunks(SCAN_CHUNK) {
            let ids: Vec<(&str, Option<&str>)> = chunk.iter().map(|(enc, _)| (enc.as_str(), None)).collect();
            for ((enc, stamp), (state, raw)) in chunk.iter().zip(self.read_states(&ids).await?) {
                let (State::Live { lineage, .. }, Some((_, pending)), Some(raw)) = (state, state.value(), raw) else {
                    continue;
                };
                if unlisted.contains_key(enc) {
                    put_back.push((enc.clone(), lineage, *stamp));
                }
                if pending != 0 {
                    dirty.insert(enc.clone(), (parse_raw_id(&raw)?, pending, *stamp, lineage));
                }
            }
        }
        if let Err(e) = self.put_back(restarts, &put_back).await {
            // Listed by this call all the same; the next listing tries again.
            warn!(error = %e, cells = put_back.len(), "could not put cells back in the dirty index of memcached");
        }
        if encs.len() == all {
            // Every dirty cell: good for the gauges.
            self.last_listing.record(
                listing,
                restarts,
                dirty.iter().map(|(enc, (_, _, stamp, _))| (enc.as_str(), *stamp)),
            );
        }
        Ok(Scan { now_window, first_window, restarts, lists, dirty })
    }

    /// Carries the dirty cells of closed windows into the current one,
    /// deletes the closed lists and moves the head on.
    async fn compact(&self, scan: &Scan) -> Result<()> {
        let closed_before = scan.now_window.saturating_sub(self.registry.margin_windows);
        if scan.first_window >= closed_before {
            return Ok(());
        }
        let carried: BTreeMap<String, u64> =
            scan.dirty.iter().map(|(enc, (_, _, stamp, _))| (enc.clone(), *stamp)).collect();
        // Cells dirty in open windows only are carried too (harmless
        // duplicates): a cell's windows are not tracked one by one.
        if !carried.is_empty() {
            self.carry(scan.now_window, &carried).await?;
            // This process put them there: it puts them back if they vanish.
            let lines: Vec<Line> =
                scan.dirty.iter().map(|(enc, (_, _, stamp, lineage))| (enc.clone(), *lineage, *stamp)).collect();
            self.registry.mark_lines(scan.now_window, scan.restarts, &lines);
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
        let scan = self.scan(dirty_before_ms).await?;
        self.compact(&scan).await?;
        let mut out: Vec<DirtyCell> = scan
            .dirty
            .into_values()
            .filter(|(_, _, stamp, _)| *stamp <= dirty_before_ms)
            .map(|(cell, pending, stamp, _)| DirtyCell { cell, pending, dirty_since_ms: stamp })
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

    /// The gauges: from the last listing while it is fresh (see
    /// [`crate::last_listing`]), else from a listing now.
    pub(crate) async fn gauges(&self) -> Result<CacheStats> {
        let (dirty_cells, oldest_dirty_ms) = match self.last_listing.gauges(self.client.restarts()) {
            Some(gauges) => gauges,
            None => {
                let scan = self.scan(u64::MAX).await?;
                (scan.dirty.len() as u64, scan.dirty.values().map(|(_, _, stamp, _)| *stamp).min())
            }
        };
        let open = self.open_claim_ids(0..self.layout.index_shards()).await?;
        Ok(CacheStats { dirty_cells, oldest_dirty_ms, open_claims: open.len() as u64 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encs(regs: &Registrations) -> Vec<&str> {
        regs.cells.iter().map(|r| r.enc.as_str()).collect()
    }

    #[test]
    fn registrations_are_once_per_window_and_lineage() {
        let registry = Registry::new(&MemcacheCacheOptions::default());
        let regs = registry.needed(0, [("a", 1), ("b", 1), ("a", 1)]);
        assert_eq!(encs(&regs), ["a", "b"]);
        assert_eq!(regs.replies(), 4, "nothing tracked yet: no checks");
        assert!(regs.cells.iter().all(|r| !r.had));
        registry.mark(&regs);
        let again = registry.needed(0, [("a", 1), ("c", 1), ("b", 2)]);
        if again.window == regs.window {
            assert_eq!(encs(&again), ["c", "b"], "b was reloaded (a new lineage): registered again");
        }
        let restarted = registry.needed(1, [("a", 1)]);
        assert_eq!(encs(&restarted), ["a"], "a restarted server lost the lists");
    }

    #[test]
    fn a_listing_finds_the_lines_that_vanished_and_forgets_compacted_windows() {
        let registry = Registry::new(&MemcacheCacheOptions::default());
        registry.mark_lines(10, 0, &[("a".into(), 1, 100), ("b".into(), 1, 101)]);
        registry.mark_lines(12, 0, &[("a".into(), 1, 90), ("c".into(), 2, 120)]);
        let seq = registry.seq();
        registry.mark_lines(12, 0, &[("d".into(), 1, 130)]);
        let unlisted = registry.unlisted(0, seq, 10, 12, |enc| enc == "b");
        let mut found: Vec<_> = unlisted.iter().map(|(e, v)| (e.as_str(), *v)).collect();
        found.sort();
        assert_eq!(found, [("a", (1, 90)), ("c", (2, 120))], "d landed after the listing started");
        // The head moved past window 10: its lines were carried by the compactor.
        let unlisted = registry.unlisted(0, registry.seq(), 11, 12, |_| false);
        assert!(!unlisted.contains_key("b"));
        assert!(unlisted.contains_key("a") && unlisted.contains_key("d"));
        // Another server instance: nothing of the old one matters.
        assert!(registry.unlisted(1, registry.seq(), 0, 12, |_| false).is_empty());
    }

    #[test]
    fn an_unlisted_process_checks_recent_lists_once_per_window() {
        let registry = Registry::new(&MemcacheCacheOptions::default());
        let now = registry.window_of(now_ms());
        registry.mark_lines(now - 1, 0, &[("a".into(), 1, 1)]);
        registry.mark_lines(now - 30, 0, &[("old".into(), 1, 1)]);
        let regs = registry.needed(0, [("b", 1)]);
        if regs.window == now {
            assert_eq!(regs.checks, [(now - 1, dirty_shard("a", 8))], "recent windows only");
            assert_eq!(regs.replies(), 2 + 2, "the registration, the head and one list");
            let lines = registry.lines_of(0, &regs.checks, regs.seq);
            assert_eq!(lines, [("a".to_string(), 1, 1)]);
            assert!(registry.needed(0, [("c", 1)]).checks.is_empty(), "once per window");
        }
        // A process that lists is not checked on its hot path.
        let listing = Registry::new(&MemcacheCacheOptions::default());
        listing.mark_lines(now - 1, 0, &[("a".into(), 1, 1)]);
        listing.unlisted(0, 0, 0, now, |_| true);
        assert!(listing.needed(0, [("b", 1)]).checks.is_empty());
    }
}
