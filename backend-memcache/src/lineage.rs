//! Totals and flushed marks: increments, loads, sets, removal, and the
//! freeze that starts a reload.
//!
//! A cell's state lives in two entries: the total `T` under a key that
//! names its *lineage* (a random id made when the cell is loaded), and the
//! flushed mark `F`, whose value names the lineage. A cell is complete
//! when `F` is live and its lineage's `T` exists. Anything else counts as
//! lost, whatever survived (losing `T` but keeping `F`, or the reverse):
//! increments report [`CacheIncr::Missing`] and reads `None`, so the
//! engine reloads the counter from the store, and a total left behind by a
//! dead lineage is never read again (its key names the old lineage).
//!
//! A load adds the new lineage's `T` first and only then writes `F` (an
//! add, or a compare-and-swap on a frozen `F`), so a live `F` whose `T` is
//! missing always means `T` was lost, never that a load is half done.

use counter_core::{CacheIncr, Error, ErrorKind, Key, Result, SliceId};
use rand::Rng;
use tracing::warn;

use crate::cache::{CellRef, MemcacheCache, State, overflow};
use crate::client::{Pipeline, Reply, Status};
use crate::dirty::registrations_ok;
use crate::layout::{parse_raw_id, push_decimal};
use crate::values::{
    Flushed, Offset, corrupt, decode_total, encode_total, incr_amount, parse_u64, undo_amount, wrapped,
};

/// Deltas at least this large are added with compare-and-swap, so that an
/// overflow is refused before anything is written. Smaller ones use
/// memcached's `incr` and can only wrap a total beyond ±2^62.
const CAS_DELTA: u64 = 1 << 62;

/// Tries of an operation whose cell changed lineage under it.
const TRIES: usize = 4;

/// Tries of a compare-and-swap that lost to concurrent changes.
pub(crate) const CAS_TRIES: usize = 200;

/// After a lost compare-and-swap: yield, then back off a little (with
/// jitter) once contention persists.
pub(crate) async fn back_off(attempt: usize) {
    if attempt < 4 {
        tokio::task::yield_now().await;
    } else {
        let micros = rand::rng().random_range(0..=(100 * attempt.min(50) as u64));
        tokio::time::sleep(std::time::Duration::from_micros(micros)).await;
    }
}

fn new_lineage() -> u64 {
    rand::rng().random_range(1..=u64::MAX)
}

/// Whether memcached refused an `ma` because it found the value
/// non-numeric. memcached 1.6.18 sometimes does so for an item that holds
/// a number (`mg` reads it fine, a classic `incr` is refused too; it
/// depends on the memory the item was stored in, and happens under load).
/// A refused `ma` changes nothing, so the caller adds with
/// compare-and-swap instead (see [`MemcacheCache::cas_add`]), which also
/// stores a fresh copy of the item.
pub(crate) fn refused_as_non_numeric(reply: &Reply) -> bool {
    matches!(reply.status, Status::Refused(_)) && reply.text().is_some_and(|t| t.contains("non-numeric"))
}

/// A live lineage's flushed-mark entry as read right after a change of its
/// total: what reporting the total takes (the stored mark and the offset),
/// and what withdrawing a rebase proposal takes (the slot and the token).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    pub(crate) mark: i64,
    pub(crate) seq: u64,
    pub(crate) offset: Offset,
    pub(crate) f_cas: u64,
}

/// Where an increment of a total landed.
enum Landed {
    /// On the live lineage: the stored value replied, and the mark.
    Live(u64, Mark),
    /// On a dead lineage's total, or nowhere; the lineage to try next.
    Elsewhere(Option<u64>),
}

impl MemcacheCache {
    /// Interprets the replies to "add to `T` of `lineage`, then read `F`".
    fn landed(&self, c: &CellRef, lineage: u64, incr: &Reply, flushed: &Reply) -> Result<Landed> {
        let (f, f_cas, _) = self.flushed_from(flushed, &c.enc, Some(&c.raw))?;
        let total_key = self.layout.total(&c.enc, lineage);
        let applied = match incr.check()?.status {
            Status::Value => {
                let value = incr.value.as_deref().unwrap_or_default();
                Some(parse_u64(value).ok_or_else(|| corrupt(&total_key, value))?)
            }
            Status::NotFound => None,
            _ => return Err(corrupt(&total_key, incr.text().unwrap_or("").as_bytes())),
        };
        let live = match f {
            Some(Flushed::Live { lineage: found, mark, seq, offset }) => {
                (found == lineage).then_some(Mark { mark, seq, offset, f_cas }).ok_or(Some(found))
            }
            _ => Err(None),
        };
        match (applied, live) {
            (Some(stored), Ok(mark)) => Ok(Landed::Live(stored, mark)),
            (_, Ok(_)) => {
                // The total of the live lineage is lost.
                self.forget_lineage(&c.enc);
                Ok(Landed::Elsewhere(None))
            }
            (_, Err(next)) => {
                match next {
                    Some(found) => self.remember_lineage(&c.enc, found),
                    None => self.forget_lineage(&c.enc),
                }
                Ok(Landed::Elsewhere(next))
            }
        }
    }

    /// Deletes the total of a dead lineage (garbage; best effort).
    async fn drop_dead_total(&self, c: &CellRef, lineage: u64) {
        let mut p = Pipeline::new();
        p.delete(&self.layout.total(&c.enc, lineage), "");
        if let Err(e) = self.client.run(&p).await {
            warn!(error = %e, "could not delete the total of a dead lineage");
        }
    }

    /// Adds `amount` mod 2^64 to the stored value at `key` with
    /// compare-and-swap; returns the new stored value, or `None` if the
    /// item is missing.
    pub(crate) async fn cas_add(&self, key: &str, amount: u64) -> Result<Option<u64>> {
        for attempt in 0..CAS_TRIES {
            if attempt > 0 {
                back_off(attempt).await;
            }
            let mut p = Pipeline::new();
            p.get(key, "v c");
            let reply = self.client.run(&p).await?.remove(0);
            let reply = reply.check()?;
            let (Some(value), Some(cas)) = (reply.value.as_deref(), reply.cas) else { return Ok(None) };
            let stored = parse_u64(value).ok_or_else(|| corrupt(key, value))?.wrapping_add(amount);
            let mut p = Pipeline::new();
            p.set(key, stored.to_string().as_bytes(), &format!("C{cas}"));
            match self.client.run(&p).await?[0].check()?.status {
                Status::Done => return Ok(Some(stored)),
                Status::NotFound => return Ok(None),
                _ => {}
            }
        }
        Err(Error::new(ErrorKind::Unavailable, format!("{key} was too busy to change with compare-and-swap")))
    }

    /// Adds to a total of the live lineage again: the undo of a wrap.
    pub(crate) async fn undo(&self, c: &CellRef, lineage: u64, delta: i64) -> Result<()> {
        self.add_raw(c, lineage, undo_amount(delta)).await
    }

    /// Adds `amount` mod 2^64 to a stored total. Additions mod 2^64
    /// commute, so this undoes an earlier change exactly even when other
    /// increments came in between.
    async fn add_raw(&self, c: &CellRef, lineage: u64, amount: u64) -> Result<()> {
        let key = self.layout.total(&c.enc, lineage);
        let mut p = Pipeline::new();
        p.arith(&key, &format!("D{amount}"));
        let reply = self.client.run(&p).await?.remove(0);
        if refused_as_non_numeric(&reply) {
            self.cas_add(&key, amount).await?;
        } else {
            reply.check()?;
        }
        Ok(())
    }

    /// The lineage to add to: the remembered one, or the one `F` names.
    async fn lineage_for(&self, c: &CellRef) -> Result<Option<u64>> {
        if let Some(lineage) = self.lineage_of(&c.enc) {
            return Ok(Some(lineage));
        }
        Ok(match self.states_of(std::slice::from_ref(c)).await?[0] {
            State::Live { lineage, total: Some(_), .. } => Some(lineage),
            _ => None,
        })
    }

    pub(crate) async fn add_to_total(&self, key: &Key, delta: i64) -> Result<CacheIncr> {
        let c = CellRef::counter(key);
        let Some(mut lineage) = self.lineage_for(&c).await? else { return Ok(CacheIncr::Missing) };
        if delta.unsigned_abs() >= CAS_DELTA {
            return self.add_with_cas(&c, lineage, delta).await;
        }
        for _ in 0..TRIES {
            let cell = [(c.enc.as_str(), lineage)];
            let regs = self.registry.needed(self.client.restarts(), cell.into_iter().filter(|_| delta != 0));
            let mut p = Pipeline::new();
            self.push_registrations(&mut p, &regs);
            let mut flags = String::with_capacity(24);
            flags.push('D');
            push_decimal(&mut flags, incr_amount(delta));
            flags.push_str(" v");
            p.arith(&self.layout.total(&c.enc, lineage), &flags);
            p.get(&self.layout.flushed(&c.enc), "v c");
            let replies = self.client.run(&p).await?;
            let (reg_replies, rest) = replies.split_at(regs.replies());
            if refused_as_non_numeric(&rest[0]) {
                // Nothing was added; add with compare-and-swap instead (the
                // registration landed all the same).
                self.note_registrations(&regs, reg_replies).await;
                return self.add_with_cas(&c, lineage, delta).await;
            }
            match self.landed(&c, lineage, &rest[0], &rest[1])? {
                Landed::Live(stored, mark) => {
                    if let Err(e) = regs.landed(reg_replies) {
                        self.undo(&c, lineage, delta).await?;
                        return Err(e);
                    }
                    // The reported total (stored total plus offset) must
                    // stay in range, also under a rebase proposed (see `rebase`).
                    let applied = self.settle(&c, lineage, delta, stored, mark).await?;
                    self.registered(&regs, reg_replies, cell).await?;
                    return Ok(applied);
                }
                Landed::Elsewhere(next) => {
                    self.note_registrations(&regs, reg_replies).await;
                    if rest[0].ok() {
                        self.drop_dead_total(&c, lineage).await;
                    }
                    match next {
                        Some(found) => lineage = found,
                        None => return Ok(CacheIncr::Missing),
                    }
                }
            }
        }
        Err(Error::new(ErrorKind::Unavailable, "the counter kept changing lineage while incrementing it"))
    }

    /// Adds a large delta with compare-and-swap: an overflow is refused
    /// before anything is written.
    async fn add_with_cas(&self, c: &CellRef, mut lineage: u64, delta: i64) -> Result<CacheIncr> {
        let key = c.cell.key();
        for attempt in 0..CAS_TRIES {
            if attempt > 0 {
                back_off(attempt).await;
            }
            let total_key = self.layout.total(&c.enc, lineage);
            let mut p = Pipeline::new();
            p.get(&total_key, "v c").get(&self.layout.flushed(&c.enc), "v c");
            let replies = self.client.run(&p).await?;
            let (f, f_cas, _) = self.flushed_from(&replies[1], &c.enc, Some(&c.raw))?;
            let (mark, seq, offset) = match f {
                Some(Flushed::Live { lineage: found, mark, seq, offset }) if found == lineage => (mark, seq, offset),
                Some(Flushed::Live { lineage: found, .. }) => {
                    self.remember_lineage(&c.enc, found);
                    lineage = found;
                    continue;
                }
                _ => {
                    self.forget_lineage(&c.enc);
                    return Ok(CacheIncr::Missing);
                }
            };
            let Some((old, cas)) = self.total_from(&replies[0], &total_key)? else {
                self.forget_lineage(&c.enc);
                return Ok(CacheIncr::Missing);
            };
            // The reported total must stay in range, and so must the total
            // a rebase proposed would make: checked before writing.
            let reported = offset.report(old).checked_add(delta).ok_or_else(|| overflow(key))?;
            if let Some(proposal) = offset.proposal {
                if offset.report(old).wrapping_add(proposal.shift).checked_add(delta).is_none() {
                    let m = Mark { mark, seq, offset, f_cas };
                    self.withdraw(c, lineage, &m).await?;
                    continue;
                }
            }
            let new = old.wrapping_add(delta);
            let cell = [(c.enc.as_str(), lineage)];
            let regs = self.registry.needed(self.client.restarts(), cell);
            let mut p = Pipeline::new();
            self.push_registrations(&mut p, &regs);
            p.set(&total_key, encode_total(new).to_string().as_bytes(), &format!("C{cas}"));
            p.get(&self.layout.flushed(&c.enc), "v c");
            let replies = self.client.run(&p).await?;
            let (reg_replies, rest) = replies.split_at(regs.replies());
            if rest[0].check()?.ok() {
                if let Err(e) = regs.landed(reg_replies) {
                    self.undo(c, lineage, delta).await?;
                    return Err(e);
                }
                // A rebase may have been proposed, or have taken effect,
                // since the read: settle with the mark read after the write.
                let applied = match self.mark_from(c, lineage, &rest[1])? {
                    Some(after) => self.settle(c, lineage, delta, encode_total(new), after).await?,
                    None => CacheIncr::Applied {
                        total: reported,
                        pending: i128::from(reported) - i128::from(offset.report(mark)),
                    },
                };
                self.registered(&regs, reg_replies, cell).await?;
                return Ok(applied);
            }
            self.note_registrations(&regs, reg_replies).await;
        }
        Err(Error::new(ErrorKind::Unavailable, "the counter was too busy to add a large delta with compare-and-swap"))
    }

    pub(crate) async fn install(&self, key: &Key, durable: i64, extra: i64) -> Result<i64> {
        let total = durable.checked_add(extra).ok_or_else(|| overflow(key))?;
        let c = CellRef::counter(key);
        for _ in 0..TRIES {
            let state = self.states_of(std::slice::from_ref(&c)).await?[0];
            let flags = match state {
                State::Live { offset, total: Some((t, _)), .. } => return Ok(offset.report(t)),
                // The total is lost but the lineage is not frozen: only a
                // reload that froze it first (the engine's `claims_for`)
                // may replace it, so that no claim commits unseen.
                State::Live { total: None, .. } => return Ok(total),
                State::Absent => "ME".to_string(),
                State::Frozen { f_cas } => format!("C{f_cas}"),
            };
            let lineage = new_lineage();
            // A new lineage: the next change registers the cell again (or
            // this load does, for a pending `extra`), whatever was
            // registered before the counter was lost.
            let cell = [(c.enc.as_str(), lineage)];
            let regs = self.registry.needed(self.client.restarts(), cell.into_iter().filter(|_| extra != 0));
            let mut p = Pipeline::new();
            self.push_registrations(&mut p, &regs);
            let total_key = self.layout.total(&c.enc, lineage);
            p.set(&total_key, encode_total(total).to_string().as_bytes(), "ME");
            // A new lineage has no offset: its stored values are the reported ones.
            p.set(&self.layout.flushed(&c.enc), &Flushed::new_lineage(durable, lineage).to_value(&c.raw), &flags);
            let replies = self.client.run(&p).await?;
            let (reg_replies, rest) = replies.split_at(regs.replies());
            regs.landed(reg_replies)?;
            rest[0].check()?;
            if rest[1].check()?.ok() {
                self.registered(&regs, reg_replies, cell.into_iter().filter(|_| extra != 0)).await?;
                self.remember_lineage(&c.enc, lineage);
                return Ok(total);
            }
            self.note_registrations(&regs, reg_replies).await;
            self.drop_dead_total(&c, lineage).await;
        }
        Err(Error::new(ErrorKind::Unavailable, "the counter kept changing while loading it"))
    }

    /// Sets the reported total: stores `total` minus the offset. The total
    /// is read before the mark, so that a rebase proposed after the read of
    /// the total (which changes its token) fails the write, and one proposed
    /// before is seen; one that took effect between the read and the write
    /// is caught by the read of the mark after it (the set is done again in
    /// its terms), and one proposed that `total` would take out of range is
    /// withdrawn.
    pub(crate) async fn set_total(&self, key: &Key, total: i64) -> Result<Option<i64>> {
        let c = CellRef::counter(key);
        let mut previous = None;
        let Some(mut lineage) = self.lineage_for(&c).await? else { return Ok(None) };
        'set: for attempt in 0..CAS_TRIES {
            if attempt > 0 {
                back_off(attempt).await;
            }
            let total_key = self.layout.total(&c.enc, lineage);
            let mut p = Pipeline::new();
            p.get(&total_key, "v c").get(&self.layout.flushed(&c.enc), "v c");
            let replies = self.client.run(&p).await?;
            let (Some(m), Some((old, cas))) =
                (self.mark_from(&c, lineage, &replies[1])?, self.total_from(&replies[0], &total_key)?)
            else {
                // Another lineage, or none: look again.
                self.forget_lineage(&c.enc);
                match self.lineage_for(&c).await? {
                    Some(found) if found != lineage => {
                        lineage = found;
                        continue;
                    }
                    _ => return Ok(previous),
                }
            };
            let offset = m.offset;
            let before = *previous.get_or_insert(offset.report(old));
            if offset.report(old) == total {
                return Ok(Some(before));
            }
            if let Some(proposal) = offset.proposal {
                if total.checked_add(proposal.shift).is_none() {
                    self.withdraw(&c, lineage, &m).await?;
                    continue;
                }
            }
            let new = total.wrapping_sub(offset.value);
            let cell = [(c.enc.as_str(), lineage)];
            let regs = self.registry.needed(self.client.restarts(), cell);
            let mut p = Pipeline::new();
            self.push_registrations(&mut p, &regs);
            p.set(&total_key, encode_total(new).to_string().as_bytes(), &format!("C{cas}"));
            p.get(&self.layout.flushed(&c.enc), "v c");
            let replies = self.client.run(&p).await?;
            let (reg_replies, rest) = replies.split_at(regs.replies());
            if !rest[0].check()?.ok() {
                self.note_registrations(&regs, reg_replies).await;
                continue;
            }
            if let Err(e) = regs.landed(reg_replies) {
                self.add_raw(&c, lineage, (old as u64).wrapping_sub(new as u64)).await?;
                return Err(e);
            }
            self.registered(&regs, reg_replies, cell).await?;
            let mut after = self.mark_from(&c, lineage, &rest[1])?;
            for _ in 0..CAS_TRIES {
                let Some(m) = after else { return Ok(Some(before)) };
                if m.offset.value != offset.value {
                    continue 'set;
                }
                match m.offset.proposal {
                    Some(p) if total.checked_add(p.shift).is_none() => {
                        if self.withdraw(&c, lineage, &m).await? {
                            return Ok(Some(before));
                        }
                        after = self.read_mark(&c, lineage).await?;
                    }
                    _ => return Ok(Some(before)),
                }
            }
            break;
        }
        Err(Error::new(ErrorKind::Unavailable, "the counter was too busy to set it with compare-and-swap"))
    }

    /// Makes a lineage for each slice that has none (or lost its total),
    /// at zero, and remembers it.
    async fn create_slices(&self, slices: &[&CellRef]) -> Result<()> {
        let states = self.states_of(&slices.iter().map(|c| (*c).clone()).collect::<Vec<_>>()).await?;
        let mut p = Pipeline::new();
        let mut made = Vec::new();
        for (c, state) in slices.iter().zip(states) {
            let flags = match state {
                State::Live { total: Some(_), .. } => continue,
                State::Live { f_cas, .. } | State::Frozen { f_cas } => format!("C{f_cas}"),
                State::Absent => "ME".to_string(),
            };
            let lineage = new_lineage();
            // Write-ahead: the counter's slice list names it before it exists.
            let list = self.layout.slice_list(&CellRef::counter(c.cell.key()).enc);
            let line = format!("{}\n", c.enc);
            p.set(&list, line.as_bytes(), "ME").set(&list, line.as_bytes(), "MA");
            p.set(&self.layout.total(&c.enc, lineage), encode_total(0).to_string().as_bytes(), "ME");
            // Time slices are never rebased: no offset, ever.
            p.set(&self.layout.flushed(&c.enc), &Flushed::new_lineage(0, lineage).to_value(&c.raw), &flags);
            made.push((*c, lineage));
        }
        let replies = self.client.run(&p).await?;
        for ((c, lineage), replies) in made.iter().zip(replies.chunks(4)) {
            registrations_ok(&replies[..2])?;
            replies[2].check()?;
            if replies[3].check()?.ok() {
                self.remember_lineage(&c.enc, *lineage);
            } else {
                self.drop_dead_total(c, *lineage).await;
            }
        }
        Ok(())
    }

    pub(crate) async fn add_to_slices(&self, slices: &[SliceId], delta: i64) -> Result<()> {
        if delta == 0 || slices.is_empty() {
            return Ok(());
        }
        let mut cells: Vec<CellRef> = Vec::new();
        for slice in slices {
            let c = CellRef::slice(slice);
            if !cells.iter().any(|known| known.enc == c.enc) {
                cells.push(c);
            }
        }
        let mut applied: Vec<(usize, u64)> = Vec::new();
        let mut remaining: Vec<usize> = (0..cells.len()).collect();
        let outcome = async {
            for _ in 0..TRIES {
                let unknown: Vec<&CellRef> =
                    remaining.iter().map(|&i| &cells[i]).filter(|c| self.lineage_of(&c.enc).is_none()).collect();
                if !unknown.is_empty() {
                    self.create_slices(&unknown).await?;
                }
                let targets: Vec<(usize, u64)> =
                    remaining.iter().filter_map(|&i| self.lineage_of(&cells[i].enc).map(|l| (i, l))).collect();
                let named = || targets.iter().map(|(i, lineage)| (cells[*i].enc.as_str(), *lineage));
                let regs = self.registry.needed(self.client.restarts(), named());
                let mut p = Pipeline::new();
                self.push_registrations(&mut p, &regs);
                for (i, lineage) in &targets {
                    p.arith(&self.layout.total(&cells[*i].enc, *lineage), &format!("D{} v", incr_amount(delta)));
                    p.get(&self.layout.flushed(&cells[*i].enc), "v c");
                }
                let replies = self.client.run(&p).await?;
                let (reg_replies, rest) = replies.split_at(regs.replies());
                let mut failed = regs.landed(reg_replies).err();
                let mut next = Vec::new();
                for ((i, lineage), pair) in targets.iter().zip(rest.chunks(2)) {
                    let added;
                    let incr = if refused_as_non_numeric(&pair[0]) {
                        // Nothing was added; add with compare-and-swap instead.
                        let key = self.layout.total(&cells[*i].enc, *lineage);
                        added = match self.cas_add(&key, incr_amount(delta)).await? {
                            Some(stored) => Reply::value(stored.to_string().into_bytes()),
                            None => Reply::status(Status::NotFound),
                        };
                        &added
                    } else {
                        &pair[0]
                    };
                    match self.landed(&cells[*i], *lineage, incr, &pair[1])? {
                        Landed::Live(stored, mark) => {
                            applied.push((*i, *lineage));
                            let reported = mark.offset.report_encoded(stored);
                            if wrapped(reported, delta) && failed.is_none() {
                                failed = Some(overflow(cells[*i].cell.key()));
                            }
                            let pending =
                                i128::from(decode_total(reported)) - i128::from(mark.offset.report(mark.mark));
                            if pending == i128::from(delta) {
                                // It was clean: the gauges must list again.
                                self.last_listing.changed();
                            }
                        }
                        Landed::Elsewhere(_) => {
                            if incr.ok() {
                                self.drop_dead_total(&cells[*i], *lineage).await;
                            }
                            next.push(*i);
                        }
                    }
                }
                if let Some(e) = failed {
                    self.note_registrations(&regs, reg_replies).await;
                    return Err(e);
                }
                self.registered(&regs, reg_replies, named()).await?;
                remaining = next;
                if remaining.is_empty() {
                    return Ok(());
                }
            }
            Err(Error::new(ErrorKind::Unavailable, "time slices kept disappearing while counting into them"))
        }
        .await;
        if outcome.is_err() {
            // All or nothing: take back what was added.
            for (i, lineage) in &applied {
                if let Err(e) = self.undo(&cells[*i], *lineage, delta).await {
                    warn!(error = %e, cell = %cells[*i].cell, "could not undo a partly counted time slice");
                }
            }
        }
        outcome
    }

    /// Deletes a counter and the time slices its slice list names: totals
    /// first, then flushed marks, so that a crash in between leaves lost
    /// cells, never a total without its history.
    pub(crate) async fn forget(&self, key: &Key) -> Result<()> {
        let counter = CellRef::counter(key);
        let list = self.layout.slice_list(&counter.enc);
        let mut p = Pipeline::new();
        p.get(&list, "v");
        let reply = self.client.run(&p).await?.remove(0);
        let mut encs: Vec<String> = reply
            .check()?
            .text()
            .map(|t| t.lines().filter(|l| !l.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        encs.sort();
        encs.dedup();
        let mut ids: Vec<(&str, Option<&str>)> = vec![(counter.enc.as_str(), Some(counter.raw.as_str()))];
        ids.extend(encs.iter().map(|e| (e.as_str(), None)));
        let states = self.read_states(&ids).await?;
        let mut totals = Pipeline::new();
        let mut marks = Pipeline::new();
        for ((enc, _), (state, raw)) in ids.iter().zip(&states) {
            // A slice entry must belong to this counter (its raw id says so).
            let ours = match raw {
                Some(raw) => parse_raw_id(raw).map(|cell| cell.key() == key).unwrap_or(false),
                None => false,
            };
            if !ours {
                continue;
            }
            if let State::Live { lineage, .. } = state {
                totals.delete(&self.layout.total(enc, *lineage), "");
            }
            marks.delete(&self.layout.flushed(enc), "");
            self.forget_lineage(enc);
        }
        marks.delete(&list, "");
        for reply in self.client.run(&totals).await? {
            reply.check()?;
        }
        for reply in self.client.run(&marks).await? {
            reply.check()?;
        }
        Ok(())
    }

    /// Freezes the lineage of every counter among `cells` whose total is
    /// lost, so that no claim of it can commit after the caller has read
    /// the claims in flight (see `claims`).
    pub(crate) async fn freeze_lost(&self, cells: &[CellRef]) -> Result<()> {
        let mut todo: Vec<&CellRef> = cells.iter().collect();
        for _ in 0..TRIES {
            let states = self.states_of(&todo.iter().map(|c| (*c).clone()).collect::<Vec<_>>()).await?;
            let mut p = Pipeline::new();
            let mut frozen = Vec::new();
            for (c, state) in todo.iter().zip(states) {
                if let State::Live { total: None, f_cas, .. } = state {
                    p.set(&self.layout.flushed(&c.enc), &Flushed::Frozen.to_value(&c.raw), &format!("C{f_cas}"));
                    frozen.push(*c);
                }
            }
            if frozen.is_empty() {
                return Ok(());
            }
            let replies = self.client.run(&p).await?;
            todo = Vec::new();
            for (c, reply) in frozen.into_iter().zip(replies) {
                self.forget_lineage(&c.enc);
                if !reply.check()?.ok() {
                    todo.push(c);
                }
            }
            if todo.is_empty() {
                return Ok(());
            }
        }
        Err(Error::new(ErrorKind::Unavailable, "could not freeze a counter whose total was lost"))
    }
}
