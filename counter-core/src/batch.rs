//! Flush batches: pending deltas claimed from the cache, applied by the store
//! exactly once by their identity.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cell::Cell;

/// The identity of a flush batch. Stores remember the identities they applied
/// and apply a batch with a known identity as a no-op.
///
/// Identities are UUIDv7: unique without coordination and ordered by creation
/// time, so stores can forget old ones by age.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId(u128);

impl BatchId {
    /// A fresh, unique identity.
    pub fn new() -> BatchId {
        BatchId(uuid::Uuid::now_v7().as_u128())
    }

    /// The identity as a number (for stores that keep it in a column).
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// Rebuilds an identity a store kept with [`as_u128`](Self::as_u128).
    pub fn from_u128(value: u128) -> BatchId {
        BatchId(value)
    }

    /// Milliseconds since the epoch at which this identity was made (for a
    /// derived identity: its root's).
    pub fn created_ms(self) -> u64 {
        (self.0 >> 80) as u64
    }

    /// The identity of half `index` (0 or 1) of this batch when it is split
    /// (see [`Batch::halves`]).
    pub fn child(self, index: u8) -> BatchId {
        self.derive(1 + u64::from(index))
    }

    /// The identity under which a store records that this batch was split:
    /// once it is recorded, the batch as a whole is never applied (see
    /// [`DurableStore::apply`](crate::DurableStore::apply)).
    pub fn split_marker(self) -> BatchId {
        self.derive(0)
    }

    /// Whether this identity was derived from another one ([`child`](Self::child),
    /// [`split_marker`](Self::split_marker)) rather than made by [`new`](Self::new).
    pub fn is_derived(self) -> bool {
        (self.0 >> 76) & 0xF == 8
    }

    /// A derived identity: a UUIDv8 (so it can never equal a UUIDv7 made by
    /// [`new`](Self::new)) keeping the 48-bit timestamp of `self` and 74
    /// bits of a hash of `self` and `tag`. Part of the persistent protocol:
    /// stores keep these identities, so the derivation never changes.
    fn derive(self, tag: u64) -> BatchId {
        let hi = mix((self.0 >> 64) as u64 ^ mix(tag.wrapping_add(0x5158_6e74_6572_2e31)));
        let lo = mix(self.0 as u64 ^ hi);
        let hash = (u128::from(hi) << 64) | u128::from(lo);
        let timestamp = self.0 & (0xFFFF_FFFF_FFFF_u128 << 80);
        // Layout of RFC 9562: 48 bits time, 4 bits version (8), 12 bits,
        // 2 bits variant (0b10), 62 bits.
        let version = 8_u128 << 76;
        let rand_a = (hash >> 64) & 0xFFF;
        let variant = 0b10_u128 << 62;
        let rand_b = hash & ((1_u128 << 62) - 1);
        BatchId(timestamp | version | (rand_a << 64) | variant | rand_b)
    }
}

/// SplitMix64's finaliser: a fixed, well-mixing 64-bit permutation.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Default for BatchId {
    fn default() -> Self {
        BatchId::new()
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", uuid::Uuid::from_u128(self.0).hyphenated())
    }
}

impl fmt::Debug for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BatchId({self})")
    }
}

impl std::str::FromStr for BatchId {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<BatchId> {
        uuid::Uuid::parse_str(s).map(|u| BatchId(u.as_u128())).map_err(|e| {
            crate::Error::new(crate::ErrorKind::InvalidInput, format!("bad batch id {s:?}")).with_source(e)
        })
    }
}

/// One cell's delta in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEntry {
    /// The cell.
    pub cell: Cell,
    /// The delta to add to its durable value.
    pub delta: i64,
}

/// A claimed set of pending deltas, at most one entry per cell.
///
/// A batch the store refuses for good (one of its cells would overflow,
/// say) is split into [`halves`](Self::halves), and those again, until the
/// refused cells stand alone and the others land. A half names the batches
/// it was split from in [`lineage`](Self::lineage), so that a store never
/// applies both a batch and a part of it (see
/// [`DurableStore::apply`](crate::DurableStore::apply)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The identity that makes applying it twice a no-op.
    pub id: BatchId,
    /// The deltas.
    pub entries: Vec<BatchEntry>,
    /// The batches this one was split from, the claimed one first; empty for
    /// a batch as claimed.
    pub lineage: Vec<BatchId>,
}

impl Batch {
    /// An empty batch with a fresh identity.
    pub fn new() -> Batch {
        Batch::claimed(BatchId::new(), Vec::new())
    }

    /// A batch as claimed from a cache: identity `id`, no lineage.
    pub fn claimed(id: BatchId, entries: Vec<BatchEntry>) -> Batch {
        Batch { id, entries, lineage: Vec::new() }
    }

    /// The two halves of this batch, for a store that refused it: its
    /// entries in cell order, split in the middle, under the identities
    /// [`BatchId::child`] derives, with this batch appended to their
    /// lineage. Deterministic: whoever splits a batch (its claimer, or a
    /// process recovering the claim) gets the same halves under the same
    /// identities. `None` for a batch of fewer than two entries.
    pub fn halves(&self) -> Option<(Batch, Batch)> {
        if self.entries.len() < 2 {
            return None;
        }
        let mut entries = self.entries.clone();
        entries.sort_by(|a, b| a.cell.cmp(&b.cell));
        let right = entries.split_off(entries.len() / 2);
        let mut lineage = self.lineage.clone();
        lineage.push(self.id);
        Some((
            Batch { id: self.id.child(0), entries, lineage: lineage.clone() },
            Batch { id: self.id.child(1), entries: right, lineage },
        ))
    }

    /// The identity of the batch as claimed: the first of the lineage, or
    /// this batch's own.
    pub fn root(&self) -> BatchId {
        self.lineage.first().copied().unwrap_or(self.id)
    }

    /// Whether the batch holds no delta.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether one of its entries is for a cell of `key`.
    pub fn touches(&self, key: &crate::Key) -> bool {
        self.entries.iter().any(|e| e.cell.key() == key)
    }

    /// Whether a cell of this batch belongs to one of `keys` (a set, so
    /// that a batch of thousands of cells is checked against thousands of
    /// keys in linear time).
    pub fn touches_any(&self, keys: &std::collections::HashSet<&crate::Key>) -> bool {
        self.entries.iter().any(|e| keys.contains(e.cell.key()))
    }
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

/// What a store did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApplyOutcome {
    /// The deltas were added now.
    Applied,
    /// The batch, or one it was split from, was applied before; nothing
    /// changed.
    AlreadyApplied,
    /// The batch was split before (a part of it was applied): nothing
    /// changed, and it must never be applied as a whole. The caller lands
    /// its [`halves`](Batch::halves) instead.
    Split,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_ordered_and_parse_back() {
        let a = BatchId::new();
        let b = BatchId::new();
        assert_ne!(a, b);
        assert!(a < b);
        assert_eq!(a.to_string().parse::<BatchId>().unwrap(), a);
        let age = now_ms().abs_diff(a.created_ms());
        assert!(age < 60_000, "created_ms is off by {age} ms");
        assert!("nope".parse::<BatchId>().is_err());
    }

    fn entry(name: &str, delta: i64) -> BatchEntry {
        BatchEntry { cell: Cell::Counter(crate::Key::named(name).unwrap()), delta }
    }

    #[test]
    fn derived_ids_are_stable_distinct_uuid_v8_with_the_root_time() {
        let root = BatchId::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        let (a, b, m) = (root.child(0), root.child(1), root.split_marker());
        assert!(a != b && a != m && b != m && a != root);
        assert_eq!((a, b, m), (root.child(0), root.child(1), root.split_marker()), "deterministic");
        for id in [a, b, m, a.child(0), a.split_marker()] {
            assert!(id.is_derived(), "{id}");
            assert_eq!(id.created_ms(), root.created_ms());
            let uuid = uuid::Uuid::from_u128(id.as_u128());
            assert_eq!(uuid.get_version_num(), 8, "{id}");
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
        }
        assert!(!root.is_derived() && !BatchId::new().is_derived());
        // The derivation is part of the persistent protocol: pinned.
        assert_eq!(a.to_string(), "01900000-0000-86a7-9f6e-8416017e3ff2");
        assert_eq!(b.to_string(), "01900000-0000-8fc4-b392-c0eae3e95789");
        assert_eq!(m.to_string(), "01900000-0000-8cb2-8ca3-35626f958778");
        assert_ne!(BatchId::from_u128(root.as_u128() + 1).child(0), a);
    }

    #[test]
    fn halves_are_canonical_whatever_the_entry_order() {
        let id = BatchId::new();
        let one = Batch::claimed(id, vec![entry("c", 3), entry("a", 1), entry("b", 2)]);
        let two = Batch::claimed(id, vec![entry("b", 2), entry("c", 3), entry("a", 1)]);
        let (l, r) = one.halves().unwrap();
        assert_eq!(two.halves().unwrap(), (l.clone(), r.clone()));
        assert_eq!(l.entries, vec![entry("a", 1)]);
        assert_eq!(r.entries, vec![entry("b", 2), entry("c", 3)]);
        assert_eq!((l.id, r.id), (id.child(0), id.child(1)));
        assert_eq!(r.lineage, vec![id]);
        let (rl, rr) = r.halves().unwrap();
        assert_eq!(rr.lineage, vec![id, r.id]);
        assert_eq!((rl.root(), rr.root(), one.root()), (id, id, id));
        assert!(rr.halves().is_none(), "a single entry stands alone");
    }
}
