//! Where the Redis cache keeps what.
//!
//! Counters are spread over `shards` hash tags, `{<prefix><n>}`. Everything
//! about one counter, and the bookkeeping of its shard, shares that tag, so
//! in a Cluster it lives in one hash slot and one script can change it
//! atomically:
//!
//! | key                         | type   | holds |
//! |-----------------------------|--------|-------|
//! | `{P<n>}v:<key>`             | string | a counter: four big-endian i64 (see below) |
//! | `{P<n>}s:<key>`             | hash   | per time slice `t:<precision>:<start>` and `f:<precision>:<start>` |
//! | `{P<n>}dirty`               | zset   | cells with a pending delta, scored by when they became dirty (ms) |
//! | `{P<n>}named`               | zset   | the counters of `dirty` as `<namespace>/<name>` (the default namespace's too), all scored 0: by name, for listings (`ZRANGEBYLEX`) |
//! | `{P<n>}live`                | zset   | counters some process may add to with a bare `BITFIELD`, scored by when that lease began (server ms) |
//! | `{P<n>}claims`              | zset   | batch ids with a claim part in this shard, scored by creation (ms) |
//! | `{P<n>}claim:<batch id>`    | hash   | the part: cell → old and new flushed mark (a counter: two big-endian i64, 16 bytes; a slice: `"<old> <new>"` in decimal); or `~void` (a tombstone) |
//!
//! A counter's string holds, as `BITFIELD` `i64` fields: `#0` its state
//! (1: loaded; 0, or no string: lost, and whatever `#1` holds was counted
//! since the loss), `#1` the total `T`, `#2` the flushed mark `F`, and `#3`
//! when it was last known clean (ms). An increment is one `BITFIELD` that
//! reads `#0`, adds to `#1` (`OVERFLOW FAIL`) and reads `#2`.
//!
//! `<key>` is the counter's display form (`ns/name`), which is injective;
//! cells appear in `dirty` and claim parts as `c:<key>` or
//! `s:<precision>:<start>:<key>`. A counter's shard is FNV-1a of
//! `namespace/name` (with the `/` also in the default namespace) modulo the
//! number of shards: the same in every process and version.

use counter_core::{Cell, Error, ErrorKind, Key, Precision, Result, SliceId};

/// The key layout of one cache: its prefix and shard tags.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    tags: Vec<String>,
    prefix: String,
}

impl Layout {
    /// A layout with `shards` tags under `prefix`, which may not contain
    /// braces (they would change the hash tag).
    pub(crate) fn new(prefix: &str, shards: u16) -> Result<Layout> {
        if prefix.contains(['{', '}']) {
            return Err(Error::new(
                ErrorKind::Config,
                format!("the Redis key prefix {prefix:?} may not contain braces"),
            ));
        }
        if shards == 0 {
            return Err(Error::new(ErrorKind::Config, "the Redis cache needs at least one shard"));
        }
        Ok(Layout { tags: (0..shards).map(|n| format!("{{{prefix}{n}}}")).collect(), prefix: prefix.to_string() })
    }

    /// Number of shards.
    pub(crate) fn shards(&self) -> usize {
        self.tags.len()
    }

    /// The shard a counter lives in: FNV-1a of `namespace/name`.
    pub(crate) fn shard_of(&self, key: &Key) -> usize {
        if self.tags.len() == 1 {
            return 0;
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in key.namespace().bytes().chain([b'/']).chain(key.name().bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        (hash % self.tags.len() as u64) as usize
    }

    fn key_in(&self, shard: usize, kind: &str, rest: &str) -> String {
        format!("{}{kind}{rest}", self.tags[shard])
    }

    /// `key_in` for a key's display form, in one allocation (on every
    /// increment).
    fn key_of_counter(&self, shard: usize, kind: &str, key: &Key) -> String {
        let tag = &self.tags[shard];
        // The display form is the namespace, a separator and the name, or
        // the name alone (the default namespace): never longer than this.
        let mut text = String::with_capacity(tag.len() + kind.len() + key.namespace().len() + 1 + key.name().len());
        text.push_str(tag);
        text.push_str(kind);
        key.push_display(&mut text);
        text
    }

    /// The string holding a counter's state, total, flushed mark and
    /// clean time.
    pub(crate) fn counter_value(&self, key: &Key) -> String {
        self.key_of_counter(self.shard_of(key), "v:", key)
    }

    /// The record of an idempotency key of a counter's increments, under
    /// the counter's hash tag (so one script sees both).
    pub(crate) fn once_record(&self, key: &Key, idempotency_key: &str) -> String {
        let mut record = self.key_of_counter(self.shard_of(key), "o:", key);
        record.push('\0');
        record.push_str(idempotency_key);
        record
    }

    /// What a shard's counter strings start with (the key follows).
    pub(crate) fn value_prefix(&self, shard: usize) -> String {
        self.key_in(shard, "v:", "")
    }

    /// The hash holding a counter's time slices.
    pub(crate) fn slice_hash(&self, key: &Key) -> String {
        self.key_of_counter(self.shard_of(key), "s:", key)
    }

    /// The key a cell lives in: a counter's string or a slice's hash.
    pub(crate) fn key_of(&self, cell: &Cell) -> String {
        match cell {
            Cell::Counter(key) => self.counter_value(key),
            Cell::Slice(slice) => self.slice_hash(&slice.key),
        }
    }

    /// A shard's dirty set.
    pub(crate) fn dirty(&self, shard: usize) -> String {
        self.key_in(shard, "dirty", "")
    }

    /// A shard's dirty counters by name (the counters of its dirty set).
    pub(crate) fn named(&self, shard: usize) -> String {
        self.key_in(shard, "named", "")
    }

    /// A shard's set of leased counters.
    pub(crate) fn live(&self, shard: usize) -> String {
        self.key_in(shard, "live", "")
    }

    /// A shard's index of claim parts.
    pub(crate) fn claims(&self, shard: usize) -> String {
        self.key_in(shard, "claims", "")
    }

    /// A shard's part of one claim.
    pub(crate) fn claim(&self, shard: usize, id: &str) -> String {
        self.key_in(shard, "claim:", id)
    }

    /// A `SCAN MATCH` pattern for every key of one shard.
    #[cfg(feature = "testing")]
    pub(crate) fn shard_pattern(&self, shard: usize) -> String {
        let mut pattern = String::new();
        for c in self.tags[shard].chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        pattern
    }

    /// The prefix.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// The suffix of a cell's fields in its hash: `""` for a counter
/// (`t`, `f`), `":<precision>:<start>"` for a slice.
pub(crate) fn field_suffix(cell: &Cell) -> String {
    match cell {
        Cell::Counter(_) => String::new(),
        Cell::Slice(slice) => format!(":{}:{}", slice.precision.secs(), slice.start),
    }
}

/// How a cell is named in the dirty set and in claim parts.
pub(crate) fn member(cell: &Cell) -> String {
    match cell {
        Cell::Counter(key) => format!("c:{key}"),
        Cell::Slice(slice) => format!("s:{}:{}:{}", slice.precision.secs(), slice.start, slice.key),
    }
}

/// The bounds of a `ZRANGEBYLEX` over a named set for the counters of
/// `namespace` whose names start with `prefix` (UTF-8 never holds the byte
/// 0xff, so `(<ns>/<prefix>\xff` is past every such name), or `None` if
/// no key can be in `namespace`.
pub(crate) fn named_range(namespace: &str, prefix: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    if namespace.contains('/') {
        return None;
    }
    let bound = |open: u8| {
        let mut bound = Vec::with_capacity(namespace.len() + prefix.len() + 3);
        bound.push(open);
        bound.extend_from_slice(namespace.as_bytes());
        bound.push(b'/');
        bound.extend_from_slice(prefix.as_bytes());
        bound
    };
    let mut end = bound(b'(');
    end.push(0xff);
    Some((bound(b'['), end))
}

/// Reads a counter back from its member in a named set (`<ns>/<name>`).
pub(crate) fn parse_named(text: &str) -> Result<Key> {
    let bad = || Error::new(ErrorKind::Permanent, format!("the Redis cache holds a name it cannot read: {text:?}"));
    let (namespace, name) = text.split_once('/').ok_or_else(bad)?;
    Key::stored(namespace, name).map_err(|_| bad())
}

/// Reads a cell back from its [`member`] name.
pub(crate) fn parse_member(text: &str) -> Result<Cell> {
    let bad = || Error::new(ErrorKind::Permanent, format!("the Redis cache holds a cell it cannot read: {text:?}"));
    if let Some(key) = text.strip_prefix("c:") {
        return Key::parse_stored(key).map(Cell::Counter).map_err(|_| bad());
    }
    let rest = text.strip_prefix("s:").ok_or_else(bad)?;
    let mut parts = rest.splitn(3, ':');
    let (Some(precision), Some(start), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let precision = precision.parse().ok().and_then(Precision::from_secs).ok_or_else(bad)?;
    let start = start.parse().map_err(|_| bad())?;
    let key = Key::parse_stored(key).map_err(|_| bad())?;
    Ok(Cell::Slice(SliceId { key, precision, start }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip() {
        let key = Key::new("ns", "a b:{x}:ü/ok").unwrap();
        let cells = [
            Cell::Counter(key.clone()),
            Cell::Counter(Key::named("plain").unwrap()),
            Cell::Slice(SliceId { key, precision: Precision::from_secs(60).unwrap(), start: -120 }),
        ];
        for cell in cells {
            assert_eq!(parse_member(&member(&cell)).unwrap(), cell);
        }
        assert_eq!(parse_named("ns/a/b").unwrap(), Key::new("ns", "a/b").unwrap());
        assert_eq!(parse_named("/plain").unwrap(), Key::named("plain").unwrap());
        assert!(parse_named("plain").is_err());
        assert_eq!(named_range("ns", "p").unwrap(), (b"[ns/p".to_vec(), b"(ns/p\xff".to_vec()));
        assert!(named_range("a/b", "").is_none());
        assert_eq!(parse_member("x:1").unwrap_err().kind(), ErrorKind::Permanent);
        assert!(parse_member("s:0:1:k").is_err());
    }

    #[test]
    fn a_counter_keeps_one_tag_and_shards_spread() {
        let layout = Layout::new("p:", 16).unwrap();
        let key = Key::new("ns", "name").unwrap();
        let tag = format!("{{p:{}}}", layout.shard_of(&key));
        assert!(layout.counter_value(&key).starts_with(&tag));
        assert_eq!(layout.counter_value(&key), format!("{}ns/name", layout.value_prefix(layout.shard_of(&key))));
        assert!(layout.slice_hash(&key).starts_with(&tag));
        let used: std::collections::HashSet<usize> =
            (0..200).map(|i| layout.shard_of(&Key::named(format!("k{i}")).unwrap())).collect();
        assert_eq!(used.len(), 16);
        assert!(Layout::new("a{b", 1).is_err());
        assert!(Layout::new("a", 0).is_err());
        assert_eq!(Layout::new("a*", 1).unwrap().shard_pattern(0), "{a\\*0}*");
    }
}
