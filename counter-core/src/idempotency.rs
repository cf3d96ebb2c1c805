//! Idempotent increments: an increment that carries an idempotency key
//! counts once per counter and key within the retention window. A repeat
//! (a retry after a lost reply, from this process or another sharing the
//! cache) counts nothing and answers the first call's total.
//!
//! The in-process and Redis caches record the key in the same atomic step
//! as the counter's add, in the counter's own shard or hash slot, so there
//! is no window in which the add happened and the record did not (or the
//! other way round), and a repeat that arrives while the first call's add
//! is in flight waits for it (the memory cache's lock, Redis's
//! single-threaded script) instead of counting again. memcached, which
//! cannot change two items at once, takes the key with a "pending" record
//! first and answers it after the add (see its crate).
//!
//! With rollup or time slices, the ancestors and slices are counted after
//! the counter's add: a repeat racing the first call may answer before
//! they are, and if they then fail, the first call is undone (and its key
//! forgotten, when the undo succeeded), so that racing repeat's answer
//! named an increment that did not stay.

use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

/// How long a cache remembers an idempotency key by default: 24 hours.
pub const DEFAULT_IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The longest retention: 30 days (memcached takes a longer time to live
/// for a date).
pub const MAX_IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Checks an idempotency key: 1 to [`MAX_IDEMPOTENCY_KEY_BYTES`] bytes of
/// visible ASCII (`!` to `~`), as HTTP header values and log lines carry
/// them unchanged. Anything else is [`InvalidInput`](ErrorKind::InvalidInput).
pub fn check_idempotency_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("an idempotency key has 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes, not {}", key.len()),
        ));
    }
    if let Some(bad) = key.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("an idempotency key holds only visible ASCII characters (! to ~), not {bad:?}"),
        ));
    }
    Ok(())
}

/// One keyed increment as the cache records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Once {
    /// The idempotency key (checked by [`check_idempotency_key`]).
    pub key: String,
    /// A fingerprint of what the increment asked for (delta, default,
    /// rollup, time slices, event time), so that a repeat of the key with
    /// another request is told apart from a retry. The same in every
    /// process (not a per-process seeded hash).
    pub fingerprint: u64,
    /// How long the cache remembers it.
    pub retention: Duration,
}

/// Outcome of [`CacheLayer::incr_once`](crate::CacheLayer::incr_once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheIncrOnce {
    /// Added, and the key recorded: the new total and the pending delta.
    Applied {
        /// The counter's new total.
        total: i64,
        /// Its pending delta after the increment.
        pending: i128,
    },
    /// The key was recorded already: nothing was added. The total the
    /// first call answered and the fingerprint it recorded.
    Repeated {
        /// The first call's total.
        total: i64,
        /// The first call's fingerprint.
        fingerprint: u64,
    },
    /// The counter is not cached (and the key not recorded); nothing
    /// changed. The engine loads it and tries again.
    Missing,
}

/// FNV-1a over `parts`: stable across processes and builds.
pub(crate) fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The record a cache keeps for a key: `<fingerprint> <total>`.
pub fn encode_record(fingerprint: u64, total: i64) -> String {
    format!("{fingerprint} {total}")
}

/// Parses [`encode_record`]'s text: `(fingerprint, total)`.
pub fn decode_record(text: &str) -> Option<(u64, i64)> {
    let (fingerprint, total) = text.split_once(' ')?;
    Some((fingerprint.parse().ok()?, total.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_visible_ascii() {
        check_idempotency_key("order-42/retry:1").unwrap();
        check_idempotency_key(&"k".repeat(MAX_IDEMPOTENCY_KEY_BYTES)).unwrap();
        for bad in ["", "a b", "tab\there", "é", "nul\0"] {
            let e = check_idempotency_key(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
        assert!(check_idempotency_key(&"k".repeat(MAX_IDEMPOTENCY_KEY_BYTES + 1)).is_err());
    }

    #[test]
    fn fingerprints_are_stable_and_separate_their_parts() {
        assert_eq!(fingerprint(&[b"1", b"x"]), fingerprint(&[b"1", b"x"]));
        assert_ne!(fingerprint(&[b"1", b"x"]), fingerprint(&[b"1x", b""]));
        // Pinned: the same in every process and build.
        assert_eq!(fingerprint(&[]), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn records_round_trip() {
        assert_eq!(decode_record(&encode_record(u64::MAX, i64::MIN)), Some((u64::MAX, i64::MIN)));
        assert_eq!(decode_record("x 1"), None);
        assert_eq!(decode_record("1"), None);
    }
}
