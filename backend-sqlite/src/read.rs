//! Reads: values, listings by prefix or by value, time series.

use counter_core::{Error, ErrorKind, Key, ListOrder, ListQuery, Precision, Result};
use rusqlite::{Connection, OptionalExtension, params};

use crate::errors::{Context, from_sqlite};

const VALUE: &str = "SELECT value FROM counters WHERE namespace = ?1 AND name = ?2";

// Listings read the primary key (by name) or `counters_by_value` (top-N),
// restricted to the prefix by a range on `name`: never LIKE, whose wildcards
// and case folding would need escaping.
const BY_NAME_BOUNDED: &str = "SELECT name, value FROM counters \
     WHERE namespace = ?1 AND name >= ?2 AND name < ?3 ORDER BY name LIMIT ?4";
const BY_NAME_OPEN: &str = "SELECT name, value FROM counters \
     WHERE namespace = ?1 AND name >= ?2 ORDER BY name LIMIT ?3";
const BY_VALUE_BOUNDED: &str = "SELECT name, value FROM counters \
     WHERE namespace = ?1 AND name >= ?2 AND name < ?3 ORDER BY value DESC, name LIMIT ?4";
const BY_VALUE_OPEN: &str = "SELECT name, value FROM counters \
     WHERE namespace = ?1 AND name >= ?2 ORDER BY value DESC, name LIMIT ?3";

const SERIES: &str = "SELECT start, count FROM slices \
     WHERE namespace = ?1 AND name = ?2 AND precision = ?3 AND start >= ?4 AND start <= ?5 \
     ORDER BY start";

/// The durable value of each key, all read from one snapshot.
pub(crate) fn get_many(conn: &mut Connection, keys: &[Key]) -> Result<Vec<Option<i64>>> {
    let tx = conn.transaction().context("starting a read")?;
    let mut out = Vec::with_capacity(keys.len());
    {
        let mut statement = tx.prepare_cached(VALUE).context("reading counters")?;
        for key in keys {
            let value = statement
                .query_row(params![key.namespace(), key.name()], |r| r.get(0))
                .optional()
                .map_err(|e| from_sqlite("reading a counter", e).with_key(key))?;
            out.push(value);
        }
    }
    tx.finish().context("ending a read")?;
    Ok(out)
}

/// Counters of a namespace whose names start with the prefix, by name or
/// largest value first.
pub(crate) fn list(conn: &Connection, query: &ListQuery) -> Result<Vec<(Key, i64)>> {
    if query.limit == 0 {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let upper = prefix_upper_bound(&query.prefix);
    let (namespace, prefix) = (query.namespace.as_str(), query.prefix.as_str());
    let by_value = query.order == ListOrder::ByValueDesc;
    let sql = match (by_value, upper.is_some()) {
        (false, true) => BY_NAME_BOUNDED,
        (false, false) => BY_NAME_OPEN,
        (true, true) => BY_VALUE_BOUNDED,
        (true, false) => BY_VALUE_OPEN,
    };
    let mut statement = conn.prepare_cached(sql).context("listing counters")?;
    let rows = match &upper {
        Some(upper) => statement.query(params![namespace, prefix, upper, limit]),
        None => statement.query(params![namespace, prefix, limit]),
    };
    let mut rows = rows.context("listing counters")?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().context("listing counters")? {
        let name: String = row.get(0).context("listing counters")?;
        let value: i64 = row.get(1).context("listing counters")?;
        let key = Key::stored(namespace, &name).map_err(|e| {
            Error::new(ErrorKind::Permanent, format!("the SQLite store holds an invalid key: {}", e.message()))
                .with_key(format!("{namespace}/{name}"))
        })?;
        out.push((key, value));
    }
    Ok(out)
}

/// `(bucket start, count)` of one series for starts in `from..=to`.
pub(crate) fn series(
    conn: &Connection,
    key: &Key,
    precision: Precision,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, i64)>> {
    let failed = |e| from_sqlite("reading a time series", e).with_key(key);
    let mut statement = conn.prepare_cached(SERIES).map_err(failed)?;
    let rows = statement
        .query_map(params![key.namespace(), key.name(), i64::from(precision.secs()), from, to], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(failed)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(failed)
}

/// The least string greater than every string that starts with `prefix`,
/// or `None` when no such string exists (an empty prefix, or one made only
/// of U+10FFFF): then every name `>= prefix` starts with it.
///
/// SQLite compares TEXT by its UTF-8 bytes, which orders like code points,
/// so bumping the last character that can be bumped gives the bound.
pub(crate) fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(c as u32 + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_bounds() {
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("a").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("clicks:").as_deref(), Some("clicks;"));
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("\u{10FFFF}\u{10FFFF}"), None);
        assert_eq!(prefix_upper_bound("x\u{D7FF}").as_deref(), Some("x\u{E000}"));
        assert_eq!(prefix_upper_bound("\u{7F}").as_deref(), Some("\u{80}"));
    }

    #[test]
    fn bound_is_above_every_extension_and_below_everything_else() {
        for prefix in ["a", "ab\u{10FFFF}", "é", "\u{FFFF}", "z\u{D7FF}"] {
            let upper = prefix_upper_bound(prefix).unwrap();
            for suffix in ["", "\u{10FFFF}\u{10FFFF}", "zzz", "\u{0}"] {
                let name = format!("{prefix}{suffix}");
                assert!(name.as_bytes() < upper.as_bytes(), "{name:?} < {upper:?}");
            }
            assert!(prefix.as_bytes() < upper.as_bytes());
        }
    }
}
