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

    /// Milliseconds since the epoch at which this identity was made.
    pub fn created_ms(self) -> u64 {
        (self.0 >> 80) as u64
    }
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The identity that makes applying it twice a no-op.
    pub id: BatchId,
    /// The deltas.
    pub entries: Vec<BatchEntry>,
}

impl Batch {
    /// An empty batch with a fresh identity.
    pub fn new() -> Batch {
        Batch { id: BatchId::new(), entries: Vec::new() }
    }

    /// Whether the batch holds no delta.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether one of its entries is for a cell of `key`.
    pub fn touches(&self, key: &crate::Key) -> bool {
        self.entries.iter().any(|e| e.cell.key() == key)
    }
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

/// What a store did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The deltas were added now.
    Applied,
    /// The batch identity was applied before; nothing changed.
    AlreadyApplied,
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
}
