//! Applying a flush batch in one transaction, exactly once by its identity,
//! and forgetting old identities.

use std::time::Duration;

use counter_core::{ApplyOutcome, Batch, BatchEntry, BatchId, Cell, Error, ErrorKind, Key, Result, now_ms};
use rusqlite::{Connection, Transaction, TransactionBehavior, params};

use crate::errors::{Context, from_sqlite};

const SEEN: &str = "SELECT EXISTS (SELECT 1 FROM applied_batches WHERE id = ?1)";
const REMEMBER: &str = "INSERT INTO applied_batches (id, applied_ms) VALUES (?1, ?2)";
/// A split marker: the right half of a batch records the marker its left
/// half recorded already, so a marker may be there.
const REMEMBER_SPLIT: &str = "INSERT INTO applied_batches (id, applied_ms) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING";
/// Adds a delta in one statement. SQLite turns an integer sum that
/// overflows into a REAL (which a STRICT column could even take back as a
/// wrong integer, `i64::MIN - 1` rounding to `i64::MIN`), so the sum is kept
/// only while it is still an integer: an overflow sets NULL, which the
/// column's NOT NULL refuses, and the batch rolls back.
const COUNTER_ADD: &str = "INSERT INTO counters (namespace, name, value) VALUES (?1, ?2, ?3) \
     ON CONFLICT (namespace, name) DO UPDATE SET value = \
     CASE WHEN typeof(value + excluded.value) = 'integer' THEN value + excluded.value END";
/// [`COUNTER_ADD`] for a time slice.
const SLICE_ADD: &str = "INSERT INTO slices (namespace, name, precision, start, count) \
     VALUES (?1, ?2, ?3, ?4, ?5) \
     ON CONFLICT (namespace, name, precision, start) DO UPDATE SET count = \
     CASE WHEN typeof(count + excluded.count) = 'integer' THEN count + excluded.count END";
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
/// Each delta is one upsert that adds in SQL and refuses a sum beyond i64
/// (see [`COUNTER_ADD`]), so an overflow fails the whole batch (the
/// transaction is rolled back) instead of SQLite turning the sum into a
/// REAL. Any error rolls the transaction back: nothing is half-applied.
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
        let failed = |e| added(&what("applying"), e, &entry.cell, key);
        match &entry.cell {
            Cell::Counter(_) => tx
                .prepare_cached(COUNTER_ADD)
                .and_then(|mut s| s.execute(params![key.namespace(), key.name(), entry.delta]))
                .map_err(failed)?,
            Cell::Slice(slice) => {
                let precision = i64::from(slice.precision.secs());
                tx.prepare_cached(SLICE_ADD)
                    .and_then(|mut s| {
                        s.execute(params![key.namespace(), key.name(), precision, slice.start, entry.delta])
                    })
                    .map_err(failed)?
            }
        };
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

/// The error of an upsert of `cell`'s delta: an overflow when the sum was
/// refused (NULL into a NOT NULL column, see [`COUNTER_ADD`]).
fn added(what: &str, e: rusqlite::Error, cell: &Cell, key: &Key) -> Error {
    let overflowed = matches!(&e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL);
    if !overflowed {
        return from_sqlite(what, e).with_key(key);
    }
    Error::new(
        ErrorKind::Overflow,
        format!("applying the batch would take {cell} out of the i64 range; nothing was applied"),
    )
    .with_key(key)
}

/// Forgets identities of batches applied more than `retention` ago.
/// Returns how many were forgotten.
pub(crate) fn forget_old_ids(conn: &Connection, retention: Duration) -> Result<usize> {
    let retention = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let cutoff = (now_ms() as i64).saturating_sub(retention);
    conn.prepare_cached(FORGET).and_then(|mut s| s.execute([cutoff])).context("forgetting old batch identities")
}
