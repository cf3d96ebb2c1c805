//! Support for fault injection in tests: every cache backend implements
//! [`CacheFaults`] so the conformance suite can make it lose data the way
//! the real server would (eviction, `FLUSHALL`, a restart).

use async_trait::async_trait;

use crate::error::Result;
use crate::key::Key;

/// One part of a counter's cache state. Backends that keep a counter in
/// several entries (memcached, Redis) can lose one without the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePart {
    /// The entry holding the total `T`.
    Total,
    /// The entry holding the flushed mark `F`.
    FlushedMark,
}

/// Ways a cache loses data, for tests. Not for production use.
#[async_trait]
pub trait CacheFaults: Send + Sync {
    /// Loses everything, claims included (`FLUSHALL`, a restart without
    /// persistence).
    async fn lose_everything(&self) -> Result<()>;

    /// Loses one part of one counter's state (an eviction of one entry).
    async fn lose_part(&self, key: &Key, part: CachePart) -> Result<()>;

    /// Loses the index by which flushers find the cells with a pending
    /// delta, and nothing else (an eviction of just those entries: a
    /// memcached cache keeps its dirty index in items of their own).
    /// Nothing acknowledged may be lost by it. Returns whether this cache
    /// has such an index; the default has none and changes nothing.
    async fn lose_index(&self) -> Result<bool> {
        Ok(false)
    }
}
