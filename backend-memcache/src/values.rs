//! What the cache stores in values, and the arithmetic of signed totals on
//! memcached's unsigned counters.
//!
//! A total `T` (an i64) is stored as the u64 `T + 2^63` (mod 2^64: the
//! sign bit flipped), so i64 order is u64 order. Adding any delta `d` is
//! memcached's `incr` by `d as u64`, which wraps mod 2^64; the result is
//! `T + d + 2^63` exactly when `T + d` stays in the i64 range, and it
//! wrapped exactly when `T + d` left it, which the reply alone shows:
//! for `d >= 0` the reply is below `d`, for `d < 0` it is at least
//! `d as u64` (see [`wrapped`]). A wrapped increment is undone by an
//! `incr` of `d`'s negation mod 2^64. memcached's `decr` is never used: it
//! saturates at 0 and would lose information.

use counter_core::{BatchId, Error, ErrorKind};

const SIGN: u64 = 1 << 63;

/// The stored form of a total.
pub(crate) fn encode_total(total: i64) -> u64 {
    (total as u64) ^ SIGN
}

/// The total a stored value holds.
pub(crate) fn decode_total(stored: u64) -> i64 {
    (stored ^ SIGN) as i64
}

/// The `incr` amount that adds `delta`.
pub(crate) fn incr_amount(delta: i64) -> u64 {
    delta as u64
}

/// The `incr` amount that undoes adding `delta`.
pub(crate) fn undo_amount(delta: i64) -> u64 {
    (delta as u64).wrapping_neg()
}

/// Whether an `incr` by `incr_amount(delta)` that replied `reply` wrapped,
/// i.e. took the total out of the i64 range.
pub(crate) fn wrapped(reply: u64, delta: i64) -> bool {
    if delta >= 0 { reply < delta as u64 } else { reply >= delta as u64 }
}

/// Parses a counter value; memcached pads values shrunk in place by
/// `incr`/`decr` with trailing spaces.
pub(crate) fn parse_u64(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim_end_matches(' ').parse().ok()
}

pub(crate) fn corrupt(what: impl std::fmt::Display, value: &[u8]) -> Error {
    Error::new(
        ErrorKind::Permanent,
        format!("the memcached cache holds something it did not write: {what} = {:?}", String::from_utf8_lossy(value)),
    )
}

/// The flushed-mark entry of a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// A live lineage: mark `F`, lineage id, next claim slot.
    Live { mark: i64, lineage: u64, seq: u64 },
    /// Frozen by a process about to reload the counter: the lineage is
    /// dead and no claim of it can commit any more.
    Frozen,
}

impl Flushed {
    /// The stored text: a status line, then the raw id of the cell.
    pub(crate) fn to_value(&self, raw: &str) -> Vec<u8> {
        match self {
            Flushed::Live { mark, lineage, seq } => format!("L {mark} {lineage:x} {seq}\n{raw}").into_bytes(),
            Flushed::Frozen => format!("Z\n{raw}").into_bytes(),
        }
    }

    /// Parses a stored value; returns the state and the raw id it names.
    pub(crate) fn parse(value: &[u8]) -> Option<(Flushed, &str)> {
        let text = std::str::from_utf8(value).ok()?;
        let (head, raw) = text.split_once('\n')?;
        let mut fields = head.split(' ');
        let state = match fields.next()? {
            "L" => {
                let mark = fields.next()?.parse().ok()?;
                let lineage = u64::from_str_radix(fields.next()?, 16).ok()?;
                let seq = fields.next()?.parse().ok()?;
                Flushed::Live { mark, lineage, seq }
            }
            "Z" => Flushed::Frozen,
            _ => return None,
        };
        if fields.next().is_some() {
            return None;
        }
        Some((state, raw))
    }
}

/// A claim slot's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Reserved by a claimer that has not checked the flushed mark yet.
    Reserved(BatchId),
    /// Committed: the batch owns the move of the mark from `from` to `to`.
    Committed { batch: BatchId, from: i64, to: i64 },
    /// Aborted (or fenced before anyone reserved it): owns nothing.
    Aborted(BatchId),
}

impl Slot {
    pub(crate) fn to_value(&self) -> Vec<u8> {
        match self {
            Slot::Reserved(b) => format!("R {b}"),
            Slot::Committed { batch, from, to } => format!("C {batch} {from} {to}"),
            Slot::Aborted(b) => format!("A {b}"),
        }
        .into_bytes()
    }

    pub(crate) fn parse(value: &[u8]) -> Option<Slot> {
        let text = std::str::from_utf8(value).ok()?;
        let mut fields = text.split(' ');
        let kind = fields.next()?;
        let batch: BatchId = fields.next()?.parse().ok()?;
        let slot = match kind {
            "R" => Slot::Reserved(batch),
            "A" => Slot::Aborted(batch),
            "C" => Slot::Committed { batch, from: fields.next()?.parse().ok()?, to: fields.next()?.parse().ok()? },
            _ => return None,
        };
        if fields.next().is_some() {
            return None;
        }
        Some(slot)
    }

    #[cfg(test)]
    pub(crate) fn batch(&self) -> BatchId {
        match self {
            Slot::Reserved(b) | Slot::Aborted(b) => *b,
            Slot::Committed { batch, .. } => *batch,
        }
    }
}

/// One line of a batch's intent: the slot a cell's claim takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IntentLine {
    pub(crate) lineage: u64,
    pub(crate) seq: u64,
    pub(crate) raw: String,
}

pub(crate) fn intent_value(lines: &[IntentLine]) -> Vec<u8> {
    let mut out = String::new();
    for line in lines {
        out.push_str(&format!("{:x} {} {}\n", line.lineage, line.seq, line.raw));
    }
    out.into_bytes()
}

pub(crate) fn parse_intent(value: &[u8]) -> Option<Vec<IntentLine>> {
    let text = std::str::from_utf8(value).ok()?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut fields = line.splitn(3, ' ');
            let lineage = u64::from_str_radix(fields.next()?, 16).ok()?;
            let seq = fields.next()?.parse().ok()?;
            Some(IntentLine { lineage, seq, raw: fields.next()?.to_string() })
        })
        .collect()
}

/// Batch ids listed in a claims-index shard (unparsable lines are skipped).
pub(crate) fn parse_ids(value: &[u8]) -> Vec<BatchId> {
    String::from_utf8_lossy(value).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Entries of a dirty list: `(stamp ms, encoded id)`.
pub(crate) fn parse_dirty(value: &[u8]) -> Vec<(u64, String)> {
    String::from_utf8_lossy(value)
        .lines()
        .filter_map(|l| {
            let (stamp, enc) = l.split_once(' ')?;
            Some((stamp.parse().ok()?, enc.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_encoding_keeps_order_and_round_trips() {
        for t in [i64::MIN, -1, 0, 1, i64::MAX] {
            assert_eq!(decode_total(encode_total(t)), t);
        }
        assert_eq!(encode_total(i64::MIN), 0);
        assert_eq!(encode_total(0), 1 << 63);
        assert_eq!(encode_total(i64::MAX), u64::MAX);
    }

    #[test]
    fn a_wrap_shows_in_the_reply_exactly_when_the_total_leaves_i64() {
        let totals = [i64::MIN, i64::MIN + 1, -5, 0, 5, i64::MAX - 1, i64::MAX];
        let deltas = [i64::MIN, i64::MIN + 1, -2, -1, 0, 1, 2, i64::MAX - 1, i64::MAX];
        for &t in &totals {
            for &d in &deltas {
                let reply = encode_total(t).wrapping_add(incr_amount(d));
                let fits = t.checked_add(d);
                assert_eq!(wrapped(reply, d), fits.is_none(), "{t} + {d}");
                if let Some(sum) = fits {
                    assert_eq!(decode_total(reply), sum);
                }
                assert_eq!(reply.wrapping_add(undo_amount(d)), encode_total(t), "undo {t} + {d}");
            }
        }
    }

    #[test]
    fn padded_values_parse() {
        assert_eq!(parse_u64(b"9   "), Some(9));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"x"), None);
    }

    #[test]
    fn stored_values_round_trip() {
        let raw = "c/ns/a b\nnot a line break in keys, but still";
        for f in [Flushed::Live { mark: i64::MIN, lineage: u64::MAX, seq: 7 }, Flushed::Frozen] {
            let v = f.to_value("c/ns/a b");
            assert_eq!(Flushed::parse(&v), Some((f, "c/ns/a b")));
        }
        assert!(Flushed::parse(raw.as_bytes()).is_none());
        let id = BatchId::new();
        for s in [Slot::Reserved(id), Slot::Aborted(id), Slot::Committed { batch: id, from: -3, to: i64::MAX }] {
            assert_eq!(Slot::parse(&s.to_value()), Some(s.clone()));
            assert_eq!(s.batch(), id);
        }
        let lines = vec![IntentLine { lineage: 10, seq: 2, raw: "c/n/a b c".into() }];
        assert_eq!(parse_intent(&intent_value(&lines)), Some(lines));
        assert_eq!(parse_ids(format!("{id}\njunk\n{id}\n").as_bytes()), vec![id, id]);
        assert_eq!(parse_dirty(b"12 a%20b\nbad\n"), vec![(12, "a%20b".to_string())]);
    }
}
