//! Removals: deleting a counter, cleaning old time buckets.

use counter_core::{CleanReport, Key, Precision, Result};
use rusqlite::{Connection, TransactionBehavior, params};

use crate::errors::{Context, from_sqlite};

const DELETE_SLICES: &str = "DELETE FROM slices WHERE namespace = ?1 AND name = ?2";
const DELETE_COUNTER: &str = "DELETE FROM counters WHERE namespace = ?1 AND name = ?2";

/// Series of `precision` that have a bucket before the cutoff and none
/// from it on: the ones a clean forgets.
const SERIES_EMPTIED: &str = "SELECT count(*) FROM ( \
         SELECT DISTINCT namespace, name FROM slices WHERE precision = ?1 AND start < ?2 \
     ) AS old \
     WHERE NOT EXISTS ( \
         SELECT 1 FROM slices AS s \
         WHERE s.namespace = old.namespace AND s.name = old.name \
           AND s.precision = ?1 AND s.start >= ?2 \
     )";
const DELETE_OLD_BUCKETS: &str = "DELETE FROM slices WHERE precision = ?1 AND start < ?2";

/// Deletes a counter and every bucket of its time series in one
/// transaction. Returns whether there was anything to delete.
pub(crate) fn delete(conn: &mut Connection, key: &Key) -> Result<bool> {
    let failed = |e| from_sqlite("deleting a counter", e).with_key(key);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(failed)?;
    let slices = tx
        .prepare_cached(DELETE_SLICES)
        .and_then(|mut s| s.execute(params![key.namespace(), key.name()]))
        .map_err(failed)?;
    let counters = tx
        .prepare_cached(DELETE_COUNTER)
        .and_then(|mut s| s.execute(params![key.namespace(), key.name()]))
        .map_err(failed)?;
    tx.commit().map_err(failed)?;
    Ok(counters + slices > 0)
}

/// Deletes the buckets of `precision` starting before `cutoff`, counting
/// them and the series left without a bucket, in one transaction.
pub(crate) fn clean(conn: &mut Connection, precision: Precision, cutoff: i64) -> Result<CleanReport> {
    let what = "cleaning old time buckets";
    let precision = i64::from(precision.secs());
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(what)?;
    let series_removed: i64 = tx
        .prepare_cached(SERIES_EMPTIED)
        .and_then(|mut s| s.query_row(params![precision, cutoff], |r| r.get(0)))
        .context(what)?;
    let buckets_removed =
        tx.prepare_cached(DELETE_OLD_BUCKETS).and_then(|mut s| s.execute(params![precision, cutoff])).context(what)?;
    tx.commit().context(what)?;
    Ok(CleanReport { buckets_removed: buckets_removed as u64, series_removed: series_removed as u64 })
}
