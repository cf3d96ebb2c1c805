//! Claims: moving pending deltas into batches exactly once, across
//! processes, with memcached's add and compare-and-swap only.
//!
//! A cell's flushed mark `F` names its lineage `g` and its next claim slot
//! `s`. Claiming the cell's pending delta `T - F` means owning slot
//! `(g, s)`, which exactly one batch can do:
//!
//! 1. read `F` (and its compare-and-swap token) and `T`;
//! 2. record the batch's *intent* (`g s raw-id` per cell) and index the
//!    batch, before anything else, so that any process can find it;
//! 3. *reserve* the slot: add `R <batch>` (an add: one winner);
//! 4. check that `F` still has the token of step 1 (no reload froze the
//!    lineage, no one moved it);
//! 5. *commit* the slot by compare-and-swap: `C <batch> <from> <to>`. The
//!    claim is decided here: a committed slot belongs to its batch for
//!    good, whatever happens to `F` afterwards;
//! 6. move `F` to `to` and slot `s + 1` (compare-and-swap; anyone who finds
//!    a committed or aborted slot under `F` helps it along).
//!
//! Anyone but the claimer who wants a batch (an orphan after the claim
//! lease, or a reload that must land the claims touching a counter)
//! *recovers* it: for each intent line it either fences the slot (adds
//! `A <batch>` where nothing was reserved yet) or aborts a reservation
//! (compare-and-swap `R` to `A`), and reads the committed ones. A claimer's
//! commit and a recoverer's abort are compare-and-swaps on the same item,
//! so exactly one wins, and the claimer and every recoverer return the same
//! entries under the same batch id; the store's idempotency does the rest.
//!
//! A reload freezes the lineage first (a compare-and-swap of `F` to `Z`),
//! so a claimer that read `F` before the reload fails step 4, and every
//! commit the reload could miss happened before it read the claims.

use std::collections::{BTreeSet, HashMap, HashSet};

use counter_core::{Batch, BatchEntry, BatchId, Cell, Error, ErrorKind, Key, Result, now_ms};

use crate::cache::{CellRef, MemcacheCache, State};
use crate::client::{Pipeline, Reply, Status};
use crate::dirty::registrations_ok;
use crate::layout::{encode, parse_raw_id};
use crate::values::{Flushed, IntentLine, Offset, Slot, corrupt, intent_value, parse_intent};

/// Rounds of compare-and-swap retries in recovery and acknowledgement.
const ROUNDS: usize = 6;

/// A cell a claim tries to take.
///
/// Marks and totals are the stored ones: a claim moves the stored mark by
/// the pending delta (or one i64-sized step of it), which the offset of the
/// reported values leaves alone, so a rebase never changes what a claim
/// takes.
struct Candidate {
    c: CellRef,
    lineage: u64,
    seq: u64,
    mark: i64,
    f_cas: u64,
    offset: Offset,
    total: i64,
    t_cas: u64,
    /// What the claim takes: the pending delta, or one i64-sized step of it.
    step: i64,
    /// The stored mark after the claim: the total, or `step` toward it.
    to: i64,
}

impl MemcacheCache {
    fn slot_key(&self, enc: &str, lineage: u64, seq: u64) -> String {
        self.layout.slot(enc, lineage, seq)
    }

    fn slot_from(&self, reply: &Reply, key: &str) -> Result<Option<Slot>> {
        let reply = reply.check()?;
        match reply.status {
            Status::Value => {
                let value = reply.value.as_deref().unwrap_or_default();
                Slot::parse(value).map(Some).ok_or_else(|| corrupt(key, value))
            }
            _ => Ok(None),
        }
    }

    fn remember_parts(&self, id: BatchId, shards: Vec<u16>) {
        self.parts.lock().expect("parts lock").insert(id, shards);
    }

    pub(crate) async fn claim_cells(&self, id: BatchId, cells: &[Cell]) -> Result<Batch> {
        // Each cell once (a set: a claim holds up to a thousand of them).
        let mut seen = HashSet::with_capacity(cells.len());
        let refs: Vec<CellRef> =
            cells.iter().filter(|cell| seen.insert(*cell)).map(|cell| CellRef::new(cell.clone())).collect();
        let states = self.states_of(&refs).await?;
        let mut cands = Vec::new();
        for (c, state) in refs.into_iter().zip(states) {
            let Some((_, pending)) = state.value() else { continue };
            let State::Live { mark, lineage, seq, f_cas, offset, total: Some((total, t_cas)) } = state else {
                continue;
            };
            if pending == 0 {
                continue;
            }
            // The pending delta is the difference of the reported total and
            // mark (both i64), and the same on the stored ones (mod 2^64).
            let step = pending.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
            let to = mark.wrapping_add(step);
            cands.push(Candidate { c, lineage, seq, mark, f_cas, offset, total, t_cas, step, to });
        }
        let mut batch = Batch::claimed(id, Vec::new());
        if cands.is_empty() {
            return Ok(batch);
        }

        // 2. Intent and index, before any slot is reserved.
        let shards: BTreeSet<u16> = cands.iter().map(|k| self.layout.index_shard_of(k.c.cell.key())).collect();
        let lines: Vec<IntentLine> =
            cands.iter().map(|k| IntentLine { lineage: k.lineage, seq: k.seq, raw: k.c.raw.clone() }).collect();
        let mut p = Pipeline::new();
        p.set(&self.layout.batch(id), &intent_value(&lines), "ME");
        let line = format!("{id}\n");
        for shard in &shards {
            let key = self.layout.index(*shard);
            p.set(&key, line.as_bytes(), "ME").set(&key, line.as_bytes(), "MA");
        }
        let replies = self.client.run(&p).await?;
        if !replies[0].check()?.ok() {
            return Err(Error::new(ErrorKind::Permanent, format!("the batch id {id} was used before")));
        }
        self.remember_parts(id, shards.iter().copied().collect());
        registrations_ok(&replies[1..])?;

        // 3. Reserve.
        let mut p = Pipeline::new();
        for k in &cands {
            p.set(&self.slot_key(&k.c.enc, k.lineage, k.seq), &Slot::Reserved(id).to_value(), "ME c");
        }
        let reserved: Vec<Option<u64>> = self
            .client
            .run(&p)
            .await?
            .iter()
            .map(|r| r.check().map(|r| if r.ok() { Some(r.cas.unwrap_or(0)) } else { None }))
            .collect::<Result<_>>()?;

        // 4. Check the marks of the reserved cells; read the slots taken by others.
        let mut p = Pipeline::new();
        for (k, slot) in cands.iter().zip(&reserved) {
            match slot {
                Some(_) => p.get(&self.layout.flushed(&k.c.enc), "c"),
                None => p.get(&self.slot_key(&k.c.enc, k.lineage, k.seq), "v"),
            };
        }
        let checks = self.client.run(&p).await?;

        // 5. Commit (or abort our reservation); help marks past others' slots.
        let mut p = Pipeline::new();
        let mut committing = Vec::new();
        for (i, (k, (slot, check))) in cands.iter().zip(reserved.iter().zip(&checks)).enumerate() {
            let slot_key = self.slot_key(&k.c.enc, k.lineage, k.seq);
            match slot {
                Some(slot_cas) => {
                    let check = check.check()?;
                    let valid = check.ok() && check.cas == Some(k.f_cas);
                    let value =
                        if valid { Slot::Committed { batch: id, from: k.mark, to: k.to } } else { Slot::Aborted(id) };
                    p.set(&slot_key, &value.to_value(), &format!("C{slot_cas}"));
                    if valid {
                        committing.push((i, p.len() - 1));
                    }
                }
                None => {
                    let next = match self.slot_from(check, &slot_key)? {
                        Some(Slot::Committed { to, .. }) => to,
                        Some(Slot::Aborted(_)) => k.mark,
                        _ => continue,
                    };
                    let moved = Flushed::Live { mark: next, lineage: k.lineage, seq: k.seq + 1, offset: k.offset };
                    p.set(&self.layout.flushed(&k.c.enc), &moved.to_value(&k.c.raw), &format!("C{}", k.f_cas));
                }
            }
        }
        let replies = self.client.run(&p).await?;
        for reply in &replies {
            reply.check()?;
        }
        let committed: Vec<&Candidate> =
            committing.iter().filter(|(_, at)| replies[*at].ok()).map(|(i, _)| &cands[*i]).collect();

        // 6. Move the marks (a failure means someone helped, or a reload froze the lineage).
        let mut p = Pipeline::new();
        for k in &committed {
            let moved = Flushed::Live { mark: k.to, lineage: k.lineage, seq: k.seq + 1, offset: k.offset };
            p.set(&self.layout.flushed(&k.c.enc), &moved.to_value(&k.c.raw), &format!("C{} c", k.f_cas));
        }
        let moves = self.client.run(&p).await?;
        if !committed.is_empty() {
            self.last_listing.changed();
        }
        let mut clean_slices = Vec::new();
        for (k, moved) in committed.iter().zip(&moves) {
            batch.entries.push(BatchEntry { cell: k.c.cell.clone(), delta: k.step });
            if matches!(k.c.cell, Cell::Slice(_)) && k.to == k.total && moved.check()?.ok() {
                clean_slices.push((*k, moved.cas.unwrap_or(0)));
            }
        }
        self.drop_clean_slices(&clean_slices).await?;
        if batch.is_empty() {
            self.forget_claim(id).await?;
        }
        Ok(batch)
    }

    /// Deletes time slices a claim left clean (a clean slice holds nothing
    /// the store does not have), only if no increment came since: the
    /// total first, by its token, then the mark, by its token.
    async fn drop_clean_slices(&self, slices: &[(&Candidate, u64)]) -> Result<()> {
        if slices.is_empty() {
            return Ok(());
        }
        let mut p = Pipeline::new();
        for (k, _) in slices {
            p.delete(&self.layout.total(&k.c.enc, k.lineage), &format!("C{}", k.t_cas));
        }
        let replies = self.client.run(&p).await?;
        let mut p = Pipeline::new();
        let mut keys = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for ((k, f_cas), reply) in slices.iter().zip(&replies) {
            if reply.check()?.ok() {
                p.delete(&self.layout.flushed(&k.c.enc), &format!("C{f_cas}"));
                self.forget_lineage(&k.c.enc);
                if seen.insert(k.c.cell.key()) {
                    keys.push(k.c.cell.key());
                }
            }
        }
        for reply in self.client.run(&p).await? {
            reply.check()?;
        }
        self.prune_slice_lists(&keys).await
    }

    /// Rewrites the slice lists of `keys` without the slices that are gone.
    async fn prune_slice_lists(&self, keys: &[&Key]) -> Result<()> {
        for key in keys {
            let list = self.layout.slice_list(&CellRef::counter(key).enc);
            let mut p = Pipeline::new();
            p.get(&list, "v c");
            let reply = self.client.run(&p).await?.remove(0);
            let (Some(text), Some(cas)) = (reply.check()?.text().map(str::to_string), reply.cas) else { continue };
            let mut encs: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
            encs.sort_unstable();
            encs.dedup();
            let mut p = Pipeline::new();
            for enc in &encs {
                p.get(&self.layout.flushed(enc), "");
            }
            let found = self.client.run(&p).await?;
            let mut keep = String::new();
            for (enc, reply) in encs.iter().zip(&found) {
                if reply.check()?.ok() {
                    keep.push_str(enc);
                    keep.push('\n');
                }
            }
            // An emptied list stays (empty), so that a concurrent add-then-append lands.
            let mut p = Pipeline::new();
            p.set(&list, keep.as_bytes(), &format!("C{cas}"));
            // Losing the race to a concurrent append is fine: the next prune catches up.
            self.client.run(&p).await?[0].check()?;
        }
        Ok(())
    }

    /// Removes `id` from the claims index shards.
    async fn unindex(&self, id: BatchId, shards: &[u16]) -> Result<()> {
        let mut todo: Vec<u16> = shards.to_vec();
        let text = id.to_string();
        for _ in 0..ROUNDS {
            if todo.is_empty() {
                return Ok(());
            }
            let mut p = Pipeline::new();
            for shard in &todo {
                p.get(&self.layout.index(*shard), "v c");
            }
            let replies = self.client.run(&p).await?;
            let mut p = Pipeline::new();
            let mut written = Vec::new();
            for (shard, reply) in todo.iter().zip(&replies) {
                let (Some(value), Some(cas)) = (reply.check()?.text(), reply.cas) else { continue };
                if !value.lines().any(|l| l == text) {
                    continue;
                }
                // An emptied shard stays (empty), so that a concurrent claim's
                // add-then-append always lands its line.
                let rest: String =
                    value.lines().filter(|l| *l != text && !l.is_empty()).map(|l| format!("{l}\n")).collect();
                p.set(&self.layout.index(*shard), rest.as_bytes(), &format!("C{cas}"));
                written.push(*shard);
            }
            let replies = self.client.run(&p).await?;
            todo = Vec::new();
            for (shard, reply) in written.into_iter().zip(&replies) {
                if !reply.check()?.ok() {
                    todo.push(shard);
                }
            }
        }
        Err(Error::new(ErrorKind::Unavailable, format!("the claims index was too busy to forget the batch {id}")))
    }

    async fn read_intent(&self, ids: &[BatchId]) -> Result<Vec<Option<Vec<IntentLine>>>> {
        let mut p = Pipeline::new();
        for id in ids {
            p.get(&self.layout.batch(*id), "v");
        }
        let replies = self.client.run(&p).await?;
        ids.iter()
            .zip(&replies)
            .map(|(id, reply)| match reply.check()?.value.as_deref() {
                Some(value) => parse_intent(value).map(Some).ok_or_else(|| corrupt(self.layout.batch(*id), value)),
                None => Ok(None),
            })
            .collect()
    }

    fn shards_of(&self, lines: &[IntentLine]) -> Vec<u16> {
        let shards: BTreeSet<u16> = lines
            .iter()
            .filter_map(|l| parse_raw_id(&l.raw).ok())
            .map(|cell| self.layout.index_shard_of(cell.key()))
            .collect();
        shards.into_iter().collect()
    }

    /// Acknowledges a claim: moves each mark past the batch's slots (helping
    /// a claimer that died before step 6), deletes the slots, the intent
    /// and the index entries.
    pub(crate) async fn forget_claim(&self, id: BatchId) -> Result<()> {
        let known = self.parts.lock().expect("parts lock").remove(&id);
        let lines = self.read_intent(&[id]).await?.remove(0).unwrap_or_default();
        let cells: Vec<(String, &IntentLine)> = lines.iter().map(|l| (encode(&l.raw), l)).collect();
        let mut todo: Vec<usize> = (0..cells.len()).collect();
        for _ in 0..ROUNDS {
            if todo.is_empty() {
                break;
            }
            let mut p = Pipeline::new();
            for &i in &todo {
                let (enc, line) = &cells[i];
                p.get(&self.slot_key(enc, line.lineage, line.seq), "v").get(&self.layout.flushed(enc), "v c");
            }
            let replies = self.client.run(&p).await?;
            let mut p = Pipeline::new();
            let mut moving = Vec::new();
            for (&i, pair) in todo.iter().zip(replies.chunks(2)) {
                let (enc, line) = &cells[i];
                let slot_key = self.slot_key(enc, line.lineage, line.seq);
                let next = match self.slot_from(&pair[0], &slot_key)? {
                    Some(Slot::Committed { batch, to, .. }) if batch == id => Some(to),
                    Some(Slot::Aborted(batch)) if batch == id => None,
                    // Not ours, gone, or still reserved (a recoverer aborts that one).
                    _ => continue,
                };
                let (flushed, f_cas, _) = self.flushed_from(&pair[1], enc, Some(&line.raw))?;
                match flushed {
                    Some(Flushed::Live { mark, lineage, seq, offset })
                        if lineage == line.lineage && seq == line.seq =>
                    {
                        let moved = Flushed::Live { mark: next.unwrap_or(mark), lineage, seq: seq + 1, offset };
                        p.set(&self.layout.flushed(enc), &moved.to_value(&line.raw), &format!("C{f_cas}"));
                        moving.push(i);
                    }
                    // The mark is past this slot (or the lineage is gone): the slot is garbage.
                    _ => {
                        p.delete(&slot_key, "");
                    }
                }
            }
            let replies = self.client.run(&p).await?;
            for reply in &replies {
                reply.check()?;
            }
            // Moved marks: their slots go in the next round.
            todo = moving;
        }
        let shards = match known {
            Some(shards) => shards,
            None if !lines.is_empty() => self.shards_of(&lines),
            None => (0..self.layout.index_shards()).collect(),
        };
        let mut p = Pipeline::new();
        p.delete(&self.layout.batch(id), "");
        self.client.run(&p).await?[0].check()?;
        self.unindex(id, &shards).await
    }

    /// Recovers a batch someone else claimed: fences or aborts the slots
    /// not committed, reads the committed ones. `None` if nothing of it is
    /// left (it is then forgotten).
    async fn recover(&self, id: BatchId, lines: Option<Vec<IntentLine>>) -> Result<Option<Batch>> {
        let Some(lines) = lines else {
            let shards = self.parts.lock().expect("parts lock").remove(&id);
            let shards = shards.unwrap_or_else(|| (0..self.layout.index_shards()).collect());
            self.unindex(id, &shards).await?;
            return Ok(None);
        };
        let cells: Vec<(String, Cell)> =
            lines.iter().map(|l| Ok((encode(&l.raw), parse_raw_id(&l.raw)?))).collect::<Result<_>>()?;
        let mut entries: HashMap<usize, i64> = HashMap::new();
        let mut todo: Vec<usize> = (0..lines.len()).collect();
        for _ in 0..ROUNDS {
            if todo.is_empty() {
                break;
            }
            // Fence the slots nobody reserved.
            let mut p = Pipeline::new();
            for &i in &todo {
                p.set(&self.slot_key(&cells[i].0, lines[i].lineage, lines[i].seq), &Slot::Aborted(id).to_value(), "ME");
            }
            let replies = self.client.run(&p).await?;
            let mut taken = Vec::new();
            for (&i, reply) in todo.iter().zip(&replies) {
                if !reply.check()?.ok() {
                    taken.push(i);
                }
            }
            // Read the others; abort reservations of this batch.
            let mut p = Pipeline::new();
            for &i in &taken {
                p.get(&self.slot_key(&cells[i].0, lines[i].lineage, lines[i].seq), "v c");
            }
            let replies = self.client.run(&p).await?;
            let mut p = Pipeline::new();
            let mut aborting = Vec::new();
            todo = Vec::new();
            for (&i, reply) in taken.iter().zip(&replies) {
                let slot_key = self.slot_key(&cells[i].0, lines[i].lineage, lines[i].seq);
                match self.slot_from(reply, &slot_key)? {
                    Some(Slot::Committed { batch, from, to }) if batch == id => {
                        // Stored marks, mod 2^64: a step is an i64, so this is exact.
                        entries.insert(i, to.wrapping_sub(from));
                    }
                    Some(Slot::Reserved(batch)) if batch == id => {
                        p.set(&slot_key, &Slot::Aborted(id).to_value(), &format!("C{}", reply.cas.unwrap_or(0)));
                        aborting.push(i);
                    }
                    // Gone meanwhile (acknowledged): look again.
                    None => todo.push(i),
                    _ => {}
                }
            }
            let replies = self.client.run(&p).await?;
            for (i, reply) in aborting.into_iter().zip(&replies) {
                if !reply.check()?.ok() {
                    todo.push(i);
                }
            }
        }
        if !todo.is_empty() {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("could not settle the claim {id}: its slots kept changing"),
            ));
        }
        let mut batch = Batch::claimed(id, Vec::new());
        let mut order: Vec<usize> = entries.keys().copied().collect();
        order.sort_unstable();
        for i in order {
            batch.entries.push(BatchEntry { cell: cells[i].1.clone(), delta: entries[&i] });
        }
        if batch.is_empty() {
            self.forget_claim(id).await?;
            return Ok(None);
        }
        self.remember_parts(id, self.shards_of(&lines));
        Ok(Some(batch))
    }

    pub(crate) async fn recover_older_than(&self, older_than_ms: u64) -> Result<Vec<Batch>> {
        let cutoff = now_ms().saturating_sub(older_than_ms);
        let ids: Vec<BatchId> = self
            .open_claim_ids(0..self.layout.index_shards())
            .await?
            .into_iter()
            .filter(|id| id.created_ms() <= cutoff)
            .collect();
        let mut out = Vec::new();
        for chunk in ids.chunks(64) {
            for (id, lines) in chunk.iter().zip(self.read_intent(chunk).await?) {
                out.extend(self.recover(*id, lines).await?);
            }
        }
        Ok(out)
    }

    pub(crate) async fn recover_touching(&self, keys: &[Key]) -> Result<Vec<Batch>> {
        let counters: Vec<CellRef> = keys.iter().map(CellRef::counter).collect();
        self.freeze_lost(&counters).await?;
        let shards: BTreeSet<u16> = keys.iter().map(|k| self.layout.index_shard_of(k)).collect();
        let ids = self.open_claim_ids(shards.into_iter()).await?;
        let wanted: std::collections::HashSet<&Key> = keys.iter().collect();
        let mut out = Vec::new();
        for chunk in ids.chunks(64) {
            for (id, lines) in chunk.iter().zip(self.read_intent(chunk).await?) {
                let touches = lines.as_ref().is_some_and(|lines| {
                    lines.iter().any(|l| parse_raw_id(&l.raw).is_ok_and(|cell| wanted.contains(cell.key())))
                });
                if touches {
                    out.extend(self.recover(*id, lines).await?);
                }
            }
        }
        Ok(out)
    }

    /// The open claims with a cell of one of `keys`, read from the claims
    /// index and their intents only: nothing is fenced, aborted or frozen,
    /// so claims being made go on undisturbed. An intent is written (and
    /// indexed) before its claim moves any flushed mark, and stays until
    /// the claim is forgotten.
    pub(crate) async fn intents_touching(&self, keys: &[Key]) -> Result<Vec<(BatchId, Vec<Key>)>> {
        let shards: BTreeSet<u16> = keys.iter().map(|k| self.layout.index_shard_of(k)).collect();
        let ids = self.open_claim_ids(shards.into_iter()).await?;
        let wanted: std::collections::HashSet<&Key> = keys.iter().collect();
        let mut out = Vec::new();
        for chunk in ids.chunks(64) {
            for (id, lines) in chunk.iter().zip(self.read_intent(chunk).await?) {
                let mut touched: Vec<Key> = lines
                    .iter()
                    .flatten()
                    .filter_map(|l| parse_raw_id(&l.raw).ok().map(|cell| cell.key().clone()))
                    .filter(|k| wanted.contains(k))
                    .collect();
                touched.dedup();
                if !touched.is_empty() {
                    out.push((*id, touched));
                }
            }
        }
        Ok(out)
    }
}
