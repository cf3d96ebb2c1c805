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

/// The offset between a counter's stored values and the values it reports,
/// kept in its flushed-mark entry: the reported total is the stored total
/// plus `value` and the reported flushed mark is the stored mark plus
/// `value` (mod 2^64, see [`Offset::report`]), so the pending delta does not
/// depend on it and a rebase is one compare-and-swap of the flushed mark.
/// Flushed marks written before offsets existed have none: 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Offset {
    /// The offset, mod 2^64.
    pub(crate) value: i64,
    /// A rebase under way: proposed, not in effect yet (see `rebase`).
    pub(crate) proposal: Option<Proposal>,
}

/// A rebase proposed and not yet in effect: the shift, and a nonce naming
/// this proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Proposal {
    pub(crate) shift: i64,
    pub(crate) nonce: u64,
}

impl Offset {
    /// The offset in effect, without any proposal.
    pub(crate) fn settled(value: i64) -> Offset {
        Offset { value, proposal: None }
    }

    /// The reported value of a stored one.
    pub(crate) fn report(&self, stored: i64) -> i64 {
        stored.wrapping_add(self.value)
    }

    /// The stored form of a reported total (an encoded u64, see
    /// [`encode_total`]) from the stored one.
    pub(crate) fn report_encoded(&self, stored: u64) -> u64 {
        stored.wrapping_add(self.value as u64)
    }

    /// This offset without its proposal.
    pub(crate) fn without_proposal(&self) -> Offset {
        Offset::settled(self.value)
    }
}

/// The flushed-mark entry of a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// A live lineage: the stored mark `F`, lineage id, next claim slot,
    /// and the offset of its reported values.
    Live { mark: i64, lineage: u64, seq: u64, offset: Offset },
    /// Frozen by a process about to reload the counter: the lineage is
    /// dead and no claim of it can commit any more.
    Frozen,
}

impl Flushed {
    /// A live entry of a new lineage (no offset).
    pub(crate) fn new_lineage(mark: i64, lineage: u64) -> Flushed {
        Flushed::Live { mark, lineage, seq: 0, offset: Offset::default() }
    }

    /// The stored text: a status line, then the raw id of the cell. The
    /// status line is `L <mark> <lineage> <seq>`, then `<offset>` if there
    /// is one, then `<shift> <nonce>` while a rebase is proposed. Without
    /// an offset it is the line of earlier versions, which they can read.
    pub(crate) fn to_value(&self, raw: &str) -> Vec<u8> {
        match self {
            Flushed::Live { mark, lineage, seq, offset } => match offset {
                Offset { value: 0, proposal: None } => format!("L {mark} {lineage:x} {seq}\n{raw}"),
                Offset { value, proposal: None } => format!("L {mark} {lineage:x} {seq} {value}\n{raw}"),
                Offset { value, proposal: Some(Proposal { shift, nonce }) } => {
                    format!("L {mark} {lineage:x} {seq} {value} {shift} {nonce:x}\n{raw}")
                }
            }
            .into_bytes(),
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
                let mut offset = Offset::default();
                if let Some(value) = fields.next() {
                    offset.value = value.parse().ok()?;
                    if let Some(shift) = fields.next() {
                        let shift = shift.parse().ok()?;
                        let nonce = u64::from_str_radix(fields.next()?, 16).ok()?;
                        offset.proposal = Some(Proposal { shift, nonce });
                    }
                }
                Flushed::Live { mark, lineage, seq, offset }
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
    fn offsets_report_totals_and_marks_and_leave_pending_alone() {
        for offset in [0, 1, -1, i64::MAX, i64::MIN] {
            let o = Offset::settled(offset);
            for stored in [i64::MIN, -7, 0, 7, i64::MAX] {
                let reported = o.report(stored);
                assert_eq!(decode_total(o.report_encoded(encode_total(stored))), reported);
                assert_eq!(reported.wrapping_sub(offset), stored);
            }
        }
        // A pending delta is the same on stored and on reported values
        // (both in range): T - F is unchanged by an offset.
        let o = Offset::settled(100);
        let (t, f) = (15i64, 10i64);
        assert_eq!(i128::from(o.report(t)) - i128::from(o.report(f)), i128::from(t - f));
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
        let offsets = [
            Offset::default(),
            Offset::settled(i64::MIN),
            Offset { value: -3, proposal: Some(Proposal { shift: i64::MAX, nonce: u64::MAX }) },
        ];
        for offset in offsets {
            for f in [Flushed::Live { mark: i64::MIN, lineage: u64::MAX, seq: 7, offset }, Flushed::Frozen] {
                let v = f.to_value("c/ns/a b");
                assert_eq!(Flushed::parse(&v), Some((f, "c/ns/a b")));
            }
        }
        // The line of earlier versions (no offset) reads as offset 0, and is
        // what an entry without offset is still written as.
        let old = Flushed::Live { mark: -4, lineage: 0xab, seq: 2, offset: Offset::default() };
        assert_eq!(Flushed::parse(b"L -4 ab 2\nc/n/x"), Some((old.clone(), "c/n/x")));
        assert_eq!(old.to_value("c/n/x"), b"L -4 ab 2\nc/n/x");
        for bad in ["L 1 ab 2 x\nc/n/x", "L 1 ab 2 0 5\nc/n/x", "L 1 ab 2 0 5 zz\nc/n/x", "L 1 ab 2 0 5 1 9\nc/n/x"] {
            assert!(Flushed::parse(bad.as_bytes()).is_none(), "{bad}");
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
