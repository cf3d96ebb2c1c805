//! Cells: the units the cache holds and the store receives deltas for. A
//! counter's total is one cell; each time bucket of a time-sliced counter is
//! another.

use std::fmt;

use crate::key::Key;

/// A time-slice precision: the width of a bucket, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Precision(u32);

impl Precision {
    /// A precision of `seconds` (at least 1).
    pub const fn from_secs(seconds: u32) -> Option<Precision> {
        if seconds == 0 { None } else { Some(Precision(seconds)) }
    }

    /// Width of a bucket in seconds.
    pub const fn secs(self) -> u32 {
        self.0
    }

    /// Start (epoch seconds) of the bucket holding `timestamp` (epoch seconds).
    pub fn bucket_start(self, timestamp: i64) -> i64 {
        timestamp.div_euclid(i64::from(self.0)) * i64::from(self.0)
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0)
    }
}

/// One bucket of a time-sliced counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SliceId {
    /// The counter.
    pub key: Key,
    /// Bucket width.
    pub precision: Precision,
    /// Bucket start, epoch seconds (a multiple of the precision).
    pub start: i64,
}

/// Anything the cache holds a pending delta for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cell {
    /// A counter's total.
    Counter(Key),
    /// One time bucket of a counter.
    Slice(SliceId),
}

impl Cell {
    /// The counter this cell belongs to.
    pub fn key(&self) -> &Key {
        match self {
            Cell::Counter(key) => key,
            Cell::Slice(slice) => &slice.key,
        }
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::Counter(key) => write!(f, "{key}"),
            Cell::Slice(s) => write!(f, "{}@{}:{}", s.key, s.precision, s.start),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_start_floors_also_before_the_epoch() {
        let p = Precision::from_secs(60).unwrap();
        assert_eq!(p.bucket_start(0), 0);
        assert_eq!(p.bucket_start(59), 0);
        assert_eq!(p.bucket_start(60), 60);
        assert_eq!(p.bucket_start(-1), -60);
        assert!(Precision::from_secs(0).is_none());
    }
}
