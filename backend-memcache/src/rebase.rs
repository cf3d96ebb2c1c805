//! Rebasing a cached counter (shifting its total and flushed mark at once),
//! and what increments and sets do so that the shift stays atomic with
//! them.
//!
//! A counter's flushed-mark entry `F` holds an *offset* `O`: the counter
//! reports its total as the stored total plus `O` and its flushed mark as
//! the stored mark plus `O` (mod 2^64; both reported values are i64s).
//! Claims move the stored mark and take differences of stored values, so
//! the pending delta does not depend on `O`, and a rebase changes `O` alone:
//! a compare-and-swap of `F`, which no claim can cross (a claim that read
//! `F` before fails its check of `F`'s token, or finds its committed slot
//! already helped along with the new offset).
//!
//! What one compare-and-swap of `F` cannot do is keep the reported total in
//! range: increments add to the stored total (`ma`, a separate item) while
//! the rebase decides. So a rebase takes effect in two steps:
//!
//! 1. *propose*: compare-and-swap `F` to carry the proposed shift (and a
//!    nonce naming the proposal) next to the offset in effect, then, in the
//!    same pipeline, add 0 to the total: that reads it after the proposal
//!    and changes its token, so that an increment or set by
//!    compare-and-swap prepared before the proposal fails and reads again
//!    (and sees it). If the total plus the offset plus the shift leaves
//!    i64, withdraw the proposal: `Overflow`;
//! 2. *commit*: compare-and-swap `F` from the proposal to the new offset,
//!    if the stored mark is still the one proposed on.
//!
//! Every increment reads `F` right after adding (it always did, for the
//! mark): an increment that finds a proposal checks its new total both as
//! it is and as the proposal would make it. If only the latter leaves i64,
//! it withdraws the proposal (compare-and-swap of `F`; the rebase then
//! commits nothing) and is applied; if the proposal was committed in
//! between, it is undone and fails with `Overflow`, as any increment that
//! takes the reported total out of range. An increment or set by
//! compare-and-swap (large deltas) checks both before writing, from the `F`
//! it read with the total. Changes before the proposal are in the total the
//! rebase read after it. So when a rebase commits, every total it shifts
//! was checked against it, and an increment refused as an overflow is
//! refused in the terms of the offset it ends up under.
//!
//! What is left is memcached's `incr`: it adds before the check, so an
//! increment of a total beyond ±2^62 that overflows is visible until it is
//! undone (the crate's overflow window), also when the overflow is in the
//! terms of a rebase committed between its `incr` and its read of `F`.

use counter_core::{CacheIncr, Error, ErrorKind, Key, Result};
use rand::Rng;

use crate::cache::{CellRef, MemcacheCache, State, overflow};
use crate::client::{Pipeline, Reply, Status};
use crate::lineage::{CAS_TRIES, Mark, back_off, refused_as_non_numeric};
use crate::values::{Flushed, Offset, Proposal, corrupt, decode_total, parse_u64, wrapped};

/// Reads of a rebase: the first, and one more if the mark's entry changed
/// under it without moving the reported mark.
const READS: usize = 2;

/// How a rebase's commit ended.
enum Commit {
    Done,
    /// A claim moved the mark since the proposal (withdrawn).
    Moved,
    /// The proposal is gone: withdrawn by an increment, replaced by another
    /// rebase, or the lineage is.
    Lost,
}

impl MemcacheCache {
    /// The mark of `lineage` in a flushed-mark reply; `None` if the entry
    /// is gone, frozen or of another lineage.
    pub(crate) fn mark_from(&self, c: &CellRef, lineage: u64, reply: &Reply) -> Result<Option<Mark>> {
        let (f, f_cas, _) = self.flushed_from(reply, &c.enc, Some(&c.raw))?;
        Ok(match f {
            Some(Flushed::Live { mark, lineage: found, seq, offset }) if found == lineage => {
                Some(Mark { mark, seq, offset, f_cas })
            }
            _ => None,
        })
    }

    pub(crate) async fn read_mark(&self, c: &CellRef, lineage: u64) -> Result<Option<Mark>> {
        let mut p = Pipeline::new();
        p.get(&self.layout.flushed(&c.enc), "v c");
        let reply = self.client.run(&p).await?.remove(0);
        self.mark_from(c, lineage, &reply)
    }

    /// Withdraws the rebase proposed in `m` (compare-and-swap on its token);
    /// returns whether it did.
    pub(crate) async fn withdraw(&self, c: &CellRef, lineage: u64, m: &Mark) -> Result<bool> {
        let f = Flushed::Live { mark: m.mark, lineage, seq: m.seq, offset: m.offset.without_proposal() };
        let mut p = Pipeline::new();
        p.set(&self.layout.flushed(&c.enc), &f.to_value(&c.raw), &format!("C{}", m.f_cas));
        Ok(self.client.run(&p).await?[0].check()?.ok())
    }

    /// Reports an increment of `delta` whose total of `lineage` now holds
    /// `stored` (encoded), given the mark read after it: its reported total
    /// must stay in range, and so must the total a proposed rebase would
    /// make (or the proposal is withdrawn). An increment refused here is
    /// undone.
    pub(crate) async fn settle(
        &self,
        c: &CellRef,
        lineage: u64,
        delta: i64,
        stored: u64,
        mut m: Mark,
    ) -> Result<CacheIncr> {
        for attempt in 0..CAS_TRIES {
            if attempt > 0 {
                back_off(attempt).await;
            }
            let reported = m.offset.report_encoded(stored);
            if wrapped(reported, delta) {
                self.undo(c, lineage, delta).await?;
                return Err(overflow(c.cell.key()));
            }
            let total = decode_total(reported);
            let applied =
                CacheIncr::Applied { total, pending: i128::from(total) - i128::from(m.offset.report(m.mark)) };
            let Some(proposal) = m.offset.proposal else { return Ok(applied) };
            if !wrapped(reported.wrapping_add(proposal.shift as u64), delta) {
                return Ok(applied);
            }
            // The rebase proposed would take this total out of range.
            if self.withdraw(c, lineage, &m).await? {
                return Ok(applied);
            }
            // The entry changed: a claim moved the mark (the proposal
            // stays), or the proposal was withdrawn, replaced or committed.
            match self.read_mark(c, lineage).await? {
                Some(next) => m = next,
                // The lineage is gone, and its proposal with it.
                None => return Ok(applied),
            }
        }
        self.undo(c, lineage, delta).await?;
        Err(Error::new(ErrorKind::Unavailable, "the counter's flushed mark kept changing while incrementing it"))
    }

    /// [`CacheLayer::rebase`](counter_core::CacheLayer::rebase): see the
    /// module documentation.
    pub(crate) async fn shift_counter(&self, key: &Key, flushed: i64, shift: i64) -> Result<bool> {
        let c = CellRef::counter(key);
        for _ in 0..READS {
            let State::Live { mark, lineage, seq, f_cas, offset, total: Some((total, _)) } =
                self.states_of(std::slice::from_ref(&c)).await?[0]
            else {
                return Ok(false);
            };
            if offset.report(mark) != flushed {
                return Ok(false);
            }
            if flushed.checked_add(shift).is_none() || offset.report(total).checked_add(shift).is_none() {
                return Err(overflow(key));
            }
            if shift == 0 {
                return Ok(true);
            }
            // 1. Propose, then add 0 to the total: that reads it after the
            // proposal and changes its token, so that a compare-and-swap
            // prepared before the proposal fails (and reads it).
            let nonce: u64 = rand::rng().random();
            let proposed = Offset { value: offset.value, proposal: Some(Proposal { shift, nonce }) };
            let f = Flushed::Live { mark, lineage, seq, offset: proposed };
            let total_key = self.layout.total(&c.enc, lineage);
            let mut p = Pipeline::new();
            p.set(&self.layout.flushed(&c.enc), &f.to_value(&c.raw), &format!("C{f_cas} c"));
            p.arith(&total_key, "D0 v");
            let replies = self.client.run(&p).await?;
            if !replies[0].check()?.ok() {
                // The entry changed since the read: read again.
                continue;
            }
            let m = Mark { mark, seq, offset: proposed, f_cas: replies[0].cas.unwrap_or(0) };
            let now = if refused_as_non_numeric(&replies[1]) {
                self.cas_add(&total_key, 0).await?
            } else {
                let reply = replies[1].check()?;
                match reply.status {
                    Status::Value => {
                        let value = reply.value.as_deref().unwrap_or_default();
                        Some(parse_u64(value).ok_or_else(|| corrupt(&total_key, value))?)
                    }
                    _ => None,
                }
            };
            match now.map(decode_total) {
                Some(now) if offset.report(now).checked_add(shift).is_some() => {}
                found => {
                    self.withdraw_own(&c, lineage, m, nonce).await?;
                    return match found {
                        Some(_) => Err(overflow(key)),
                        // The total is lost: the counter is not cached.
                        None => Ok(false),
                    };
                }
            }
            // 2. Commit.
            match self.commit(&c, lineage, m, nonce, shift).await? {
                Commit::Done => return Ok(true),
                Commit::Moved => return Ok(false),
                Commit::Lost => continue,
            }
        }
        Ok(false)
    }

    /// Makes the proposal `nonce` (in `m`) the offset in effect, while the
    /// stored mark is the one it was proposed on.
    async fn commit(&self, c: &CellRef, lineage: u64, mut m: Mark, nonce: u64, shift: i64) -> Result<Commit> {
        for attempt in 0..CAS_TRIES {
            if attempt > 0 {
                back_off(attempt).await;
            }
            let offset = Offset::settled(m.offset.value.wrapping_add(shift));
            let f = Flushed::Live { mark: m.mark, lineage, seq: m.seq, offset };
            let mut p = Pipeline::new();
            p.set(&self.layout.flushed(&c.enc), &f.to_value(&c.raw), &format!("C{}", m.f_cas));
            if self.client.run(&p).await?[0].check()?.ok() {
                return Ok(Commit::Done);
            }
            let next = self.read_mark(c, lineage).await?;
            match next {
                Some(next) if next.offset.proposal.is_some_and(|p| p.nonce == nonce) => {
                    if next.mark != m.mark {
                        self.withdraw_own(c, lineage, next, nonce).await?;
                        return Ok(Commit::Moved);
                    }
                    // The slot moved on past an aborted claim: same mark.
                    m = next;
                }
                _ => return Ok(Commit::Lost),
            }
        }
        self.withdraw_own(c, lineage, m, nonce).await?;
        Err(Error::new(ErrorKind::Unavailable, "the counter's flushed mark kept changing while rebasing it"))
    }

    /// Withdraws the proposal `nonce`, if it is still there.
    async fn withdraw_own(&self, c: &CellRef, lineage: u64, mut m: Mark, nonce: u64) -> Result<()> {
        for attempt in 0..CAS_TRIES {
            if attempt > 0 {
                back_off(attempt).await;
            }
            if self.withdraw(c, lineage, &m).await? {
                return Ok(());
            }
            match self.read_mark(c, lineage).await? {
                Some(next) if next.offset.proposal.is_some_and(|p| p.nonce == nonce) => m = next,
                _ => return Ok(()),
            }
        }
        Err(Error::new(ErrorKind::Unavailable, "the counter's flushed mark kept changing while withdrawing a rebase"))
    }
}
