//! Applying a flush batch in one transaction, exactly once by its identity,
//! and forgetting old identities.

use std::time::Duration;

use counter_core::{ApplyOutcome, Batch, BatchEntry, BatchId, Cell, Error, ErrorKind, Key, Result, now_ms};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::errors::{Context, from_sqlite};

const SEEN: &str = "SELECT EXISTS (SELECT 1 FROM applied_batches WHERE id = ?1)";
const REMEMBER: &str = "INSERT INTO applied_batches (id, applied_ms) VALUES (?1, ?2)";
/// A split marker: the right half of a batch records the marker its left
/// half recorded already, so a marker may be there.
const REMEMBER_SPLIT: &str = "INSERT INTO applied_batches (id, applied_ms) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING";
const COUNTER_VALUE: &str = "SELECT value FROM counters WHERE namespace = ?1 AND name = ?2";
const COUNTER_SET: &str = "INSERT INTO counters (namespace, name, value) VALUES (?1, ?2, ?3) \
     ON CONFLICT (namespace, name) DO UPDATE SET value = excluded.value";
const SLICE_VALUE: &str = "SELECT count FROM slices \
     WHERE namespace = ?1 AND name = ?2 AND precision = ?3 AND start = ?4";
const SLICE_SET: &str = "INSERT INTO slices (namespace, name, precision, start, count) \
     VALUES (?1, ?2, ?3, ?4, ?5) \
     ON CONFLICT (namespace, name, precision, start) DO UPDATE SET count = excluded.count";
const FORGET: &str = "DELETE FROM applied_batches WHERE applied_ms < ?1";

/// The 16 bytes a batch identity is kept as: big-endian, so that the blob
/// order is the identities' (time) order.
pub(crate) fn id_bytes(id: BatchId) -> [u8; 16] {
    id.as_u128().to_be_bytes()
}

/// Whether `id` is in `applied_batches`.
fn recorded(tx: &Transaction<'_>, id: BatchId, what: &str) -> Result<bool> {
    let id = id_bytes(id);
    tx.prepare_cached(SEEN).and_then(|mut s| s.query_row([&id[..]], |r| r.get(0))).context(what)
}

/// Applies `batch` in one `BEGIN IMMEDIATE` transaction, following the
/// contract of [`DurableStore::apply`](counter_core::DurableStore::apply):
/// nothing if its identity or one of its lineage is recorded
/// (`AlreadyApplied`), nothing if its split marker is (`Split`), otherwise
/// every delta plus its identity and the split marker of every batch of its
/// lineage.
///
/// Each new value is computed in Rust with `checked_add` from the value read
/// under the write lock, so an overflow fails the whole batch (the
/// transaction is rolled back) instead of SQLite turning the sum into a REAL.
/// Any error rolls the transaction back: nothing is half-applied.
pub(crate) fn apply(conn: &mut Connection, batch: &Batch) -> Result<ApplyOutcome> {
    let what = |doing: &str| format!("{doing} batch {}", batch.id);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .context(&what("locking the SQLite store to apply"))?;
    // Dropping the transaction rolls it back; it wrote nothing anyway.
    for guard in std::iter::once(batch.id).chain(batch.lineage.iter().copied()) {
        if recorded(&tx, guard, &what("looking up"))? {
            return Ok(ApplyOutcome::AlreadyApplied);
        }
    }
    if recorded(&tx, batch.id.split_marker(), &what("looking up the split marker of"))? {
        return Ok(ApplyOutcome::Split);
    }
    // In key order, the tables' order: the cursor walks the B-tree forward,
    // and consecutive entries find their pages at hand.
    let mut entries: Vec<&BatchEntry> = batch.entries.iter().collect();
    entries.sort_unstable_by(|a, b| a.cell.cmp(&b.cell));
    for entry in entries {
        let key = entry.cell.key();
        let failed = |e| from_sqlite(&what("applying"), e).with_key(key);
        match &entry.cell {
            Cell::Counter(_) => {
                let old: Option<i64> = tx
                    .prepare_cached(COUNTER_VALUE)
                    .and_then(|mut s| s.query_row(params![key.namespace(), key.name()], |r| r.get(0)).optional())
                    .map_err(failed)?;
                let new = add(old, entry.delta, &entry.cell, key)?;
                tx.prepare_cached(COUNTER_SET)
                    .and_then(|mut s| s.execute(params![key.namespace(), key.name(), new]))
                    .map_err(failed)?;
            }
            Cell::Slice(slice) => {
                let precision = i64::from(slice.precision.secs());
                let old: Option<i64> = tx
                    .prepare_cached(SLICE_VALUE)
                    .and_then(|mut s| {
                        s.query_row(params![key.namespace(), key.name(), precision, slice.start], |r| r.get(0))
                            .optional()
                    })
                    .map_err(failed)?;
                let new = add(old, entry.delta, &entry.cell, key)?;
                tx.prepare_cached(SLICE_SET)
                    .and_then(|mut s| s.execute(params![key.namespace(), key.name(), precision, slice.start, new]))
                    .map_err(failed)?;
            }
        }
    }
    let now = now_ms() as i64;
    tx.prepare_cached(REMEMBER)
        .and_then(|mut s| s.execute(params![&id_bytes(batch.id)[..], now]))
        .context(&what("recording"))?;
    for ancestor in &batch.lineage {
        tx.prepare_cached(REMEMBER_SPLIT)
            .and_then(|mut s| s.execute(params![&id_bytes(ancestor.split_marker())[..], now]))
            .context(&what("recording the split markers of"))?;
    }
    tx.commit().context(&what("committing"))?;
    Ok(ApplyOutcome::Applied)
}

fn add(old: Option<i64>, delta: i64, cell: &Cell, key: &Key) -> Result<i64> {
    old.unwrap_or(0).checked_add(delta).ok_or_else(|| {
        Error::new(
            ErrorKind::Overflow,
            format!("applying the batch would take {cell} out of the i64 range; nothing was applied"),
        )
        .with_key(key)
    })
}

/// Forgets identities of batches applied more than `retention` ago.
/// Returns how many were forgotten.
pub(crate) fn forget_old_ids(conn: &Connection, retention: Duration) -> Result<usize> {
    let retention = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let cutoff = (now_ms() as i64).saturating_sub(retention);
    conn.prepare_cached(FORGET).and_then(|mut s| s.execute([cutoff])).context("forgetting old batch identities")
}
