//! Where the memcached cache keeps what, and how any valid counter key
//! becomes a safe memcached key.
//!
//! Every cell has a *raw id*, an injective text form (`c/<namespace>/<name>`
//! for a counter, `s/<precision>/<start>/<namespace>/<name>` for a time
//! slice; namespaces hold no `/`), and an *encoded id* `E` made of
//! printable ASCII without spaces: the raw id percent-encoded (every byte
//! but `A-Z a-z 0-9 . _ - : /` becomes `%XX`), or, when that is longer than
//! [`MAX_DIRECT`] bytes, `#` and the 128-bit FNV-1a hash of the raw id in
//! hex. Percent-encoding is injective and never yields `#`, so only two
//! hashed ids can collide; the raw id is kept in the cell's flushed-mark
//! value and checked on every read, so a collision is detected and refused,
//! never merged.
//!
//! | key                      | holds |
//! |--------------------------|-------|
//! | `P t<g>:E`               | total `T` of lineage `g`: the u64 `T + 2^63` (memcached's counter) |
//! | `P f:E`                  | flushed mark `F`: `L <mark> <g> <seq> [<offset> [<shift> <nonce>]]` or `Z` (frozen), then a line with the raw id |
//! | `P k<g>.<seq>:E`         | claim slot `seq` of lineage `g`: `R`/`C`/`A <batch>` (see `claims`) |
//! | `P b:<batch>`            | a batch's intent: one line `<g> <seq> <raw id>` per cell |
//! | `P i<n>`                 | claims index shard `n`: open batch ids, one per line |
//! | `P d<window>.<n>`        | dirty index: `<ms> E` per cell registered in that window |
//! | `P dh`                   | the oldest dirty window not yet compacted |
//! | `P l:E`                  | the encoded ids of a counter's time slices |
//!
//! (`P` is the prefix; the spaces in the table are not in the keys.)

use std::sync::{Arc, RwLock};

use counter_core::{BatchId, Cell, Error, ErrorKind, Key, Precision, Result, SliceId};

/// Longest percent-encoded id used as it is; longer ones are hashed. With
/// a prefix of at most 48 bytes (and a generation tag of at most 12) the
/// longest key (a claim slot) stays within memcached's 250 bytes.
pub(crate) const MAX_DIRECT: usize = 150;

/// The raw id of a cell (see the module docs).
pub(crate) fn raw_id(cell: &Cell) -> String {
    match cell {
        Cell::Counter(key) => {
            let (namespace, name) = (key.namespace(), key.name());
            let mut raw = String::with_capacity(3 + namespace.len() + name.len());
            raw.push_str("c/");
            raw.push_str(namespace);
            raw.push('/');
            raw.push_str(name);
            raw
        }
        Cell::Slice(s) => format!("s/{}/{}/{}/{}", s.precision.secs(), s.start, s.key.namespace(), s.key.name()),
    }
}

/// Reads a cell back from its raw id.
pub(crate) fn parse_raw_id(raw: &str) -> Result<Cell> {
    let bad = || Error::new(ErrorKind::Permanent, format!("the memcached cache holds a cell it cannot read: {raw:?}"));
    let key_of = |rest: &str| {
        let (namespace, name) = rest.split_once('/').ok_or_else(bad)?;
        Key::stored(namespace, name).map_err(|_| bad())
    };
    if let Some(rest) = raw.strip_prefix("c/") {
        return key_of(rest).map(Cell::Counter);
    }
    let rest = raw.strip_prefix("s/").ok_or_else(bad)?;
    let mut parts = rest.splitn(3, '/');
    let (Some(precision), Some(start), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let precision = precision.parse().ok().and_then(Precision::from_secs).ok_or_else(bad)?;
    let start = start.parse().map_err(|_| bad())?;
    Ok(Cell::Slice(SliceId { key: key_of(rest)?, precision, start }))
}

/// The encoded id of a raw id (see the module docs).
pub(crate) fn encode(raw: &str) -> String {
    if raw.len() <= MAX_DIRECT && raw.bytes().all(is_direct) {
        // Most ids: nothing to escape.
        return raw.to_string();
    }
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if is_direct(b) {
            out.push(b as char);
        } else {
            const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0xf)]));
        }
        if out.len() > MAX_DIRECT {
            return format!("#{:032x}", fnv1a_128(raw.as_bytes()));
        }
    }
    out
}

/// Whether a byte of a raw id stands for itself in the encoded id.
fn is_direct(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/')
}

/// 128-bit FNV-1a: stable across processes, platforms and versions.
pub(crate) fn fnv1a_128(bytes: &[u8]) -> u128 {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for &b in bytes {
        hash ^= u128::from(b);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

fn fnv1a_64(bytes: impl Iterator<Item = u8>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The dirty-list shard of an encoded id among `shards` lists per window.
pub(crate) fn dirty_shard(enc: &str, shards: u16) -> u16 {
    (fnv1a_64(enc.bytes()) % u64::from(shards.max(1))) as u16
}

/// Appends `n` as 16 lowercase hex digits (as `{:016x}` does).
fn push_hex16(out: &mut String, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 16];
    for (i, digit) in text.iter_mut().enumerate() {
        *digit = DIGITS[((n >> ((15 - i) * 4)) & 0xf) as usize];
    }
    out.push_str(std::str::from_utf8(&text).expect("ASCII digits"));
}

/// Appends `n` in decimal (as `{}` does).
pub(crate) fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
}

/// The key names of one cache.
#[derive(Debug)]
pub(crate) struct Layout {
    /// The configured prefix, then the key space in use: the prefix itself,
    /// or, after [`Layout::start_generation`], the prefix and `~<n>:`.
    prefix: String,
    space: RwLock<Arc<str>>,
    index_shards: u16,
    dirty_shards: u16,
}

impl Layout {
    pub(crate) fn new(prefix: &str, index_shards: u16, dirty_shards: u16) -> Layout {
        Layout {
            prefix: prefix.to_string(),
            space: RwLock::new(Arc::from(prefix)),
            index_shards: index_shards.max(1),
            dirty_shards: dirty_shards.max(1),
        }
    }

    /// The configured prefix.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// What every key starts with now.
    pub(crate) fn space(&self) -> Arc<str> {
        self.space.read().expect("layout lock").clone()
    }

    /// Moves this handle to a fresh, empty key space under the prefix.
    #[cfg(feature = "testing")]
    pub(crate) fn start_generation(&self, generation: u32) {
        *self.space.write().expect("layout lock") = Arc::from(format!("{}~{generation}:", self.prefix));
    }

    pub(crate) fn index_shards(&self) -> u16 {
        self.index_shards
    }

    // The keys of a cell are built on every increment: by hand, not with
    // `format!` (whose machinery cost more than the rest of the key).

    /// `<space>t<lineage, 16 hex digits>:<enc>`.
    pub(crate) fn total(&self, enc: &str, gen_id: u64) -> String {
        let space = self.space();
        let mut key = String::with_capacity(space.len() + 18 + enc.len());
        key.push_str(&space);
        key.push('t');
        push_hex16(&mut key, gen_id);
        key.push(':');
        key.push_str(enc);
        key
    }

    /// `<space>f:<enc>`.
    pub(crate) fn flushed(&self, enc: &str) -> String {
        let space = self.space();
        let mut key = String::with_capacity(space.len() + 2 + enc.len());
        key.push_str(&space);
        key.push_str("f:");
        key.push_str(enc);
        key
    }

    /// `<space>k<lineage, 16 hex digits>.<seq>:<enc>`.
    pub(crate) fn slot(&self, enc: &str, gen_id: u64, seq: u64) -> String {
        let space = self.space();
        let mut key = String::with_capacity(space.len() + 39 + enc.len());
        key.push_str(&space);
        key.push('k');
        push_hex16(&mut key, gen_id);
        key.push('.');
        push_decimal(&mut key, seq);
        key.push(':');
        key.push_str(enc);
        key
    }

    pub(crate) fn batch(&self, id: BatchId) -> String {
        format!("{}b:{id}", self.space())
    }

    pub(crate) fn index(&self, shard: u16) -> String {
        format!("{}i{shard}", self.space())
    }

    pub(crate) fn dirty_list(&self, window: u64, shard: u16) -> String {
        format!("{}d{window}.{shard}", self.space())
    }

    pub(crate) fn dirty_head(&self) -> String {
        format!("{}dh", self.space())
    }

    pub(crate) fn slice_list(&self, counter_enc: &str) -> String {
        format!("{}l:{counter_enc}", self.space())
    }

    /// The claims-index shard of a counter (its slices share it).
    pub(crate) fn index_shard_of(&self, key: &Key) -> u16 {
        let bytes = key.namespace().bytes().chain([b'/']).chain(key.name().bytes());
        (fnv1a_64(bytes) % u64::from(self.index_shards)) as u16
    }

    /// The dirty-list shard of an encoded id.
    pub(crate) fn dirty_shard_of(&self, enc: &str) -> u16 {
        dirty_shard(enc, self.dirty_shards)
    }

    pub(crate) fn dirty_shards(&self) -> u16 {
        self.dirty_shards
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::key_is_safe;

    #[test]
    fn hand_built_keys_read_as_formatted_ones() {
        let layout = Layout::new("p:", 1, 1);
        for (gen_id, seq) in [(0, 0), (1, 9), (0xdead_beef, 10), (u64::MAX, u64::MAX)] {
            assert_eq!(layout.total("E", gen_id), format!("p:t{gen_id:016x}:E"));
            assert_eq!(layout.slot("E", gen_id, seq), format!("p:k{gen_id:016x}.{seq}:E"));
        }
        assert_eq!(layout.flushed("E"), "p:f:E");
        assert_eq!(raw_id(&Cell::Counter(Key::new("ns", "a/b").unwrap())), "c/ns/a/b");
        assert_eq!(raw_id(&Cell::Counter(Key::named("x").unwrap())), "c//x");
        assert_eq!(encode("c/a b/\u{e9}%"), "c/a%20b/%C3%A9%25");
    }

    #[test]
    fn raw_ids_round_trip() {
        let key = Key::new("ns", "a b/c:d ü \"'%#").unwrap();
        let cells = [
            Cell::Counter(key.clone()),
            Cell::Counter(Key::named("/lead").unwrap()),
            Cell::Slice(SliceId { key, precision: Precision::from_secs(60).unwrap(), start: -120 }),
        ];
        for cell in cells {
            assert_eq!(parse_raw_id(&raw_id(&cell)).unwrap(), cell);
        }
        for bad in ["x/1", "c/noslash", "s/0/1/a/b", "s/1/x/a/b", "c/ns/"] {
            assert_eq!(parse_raw_id(bad).unwrap_err().kind(), ErrorKind::Permanent, "{bad}");
        }
    }

    #[test]
    fn encoded_ids_are_safe_injective_and_bounded() {
        let layout = Layout::new(&"p".repeat(48), 16, 8);
        layout.start_generation(u32::MAX);
        let names = ["a b", "a%20b", "a+b", "flush_all\\r\\n", "日本", "x:y/z", "#hash"];
        let mut seen = std::collections::HashSet::new();
        for name in names {
            let enc = encode(&raw_id(&Cell::Counter(Key::named(name).unwrap())));
            assert!(seen.insert(enc.clone()), "{name} shares {enc}");
            assert!(!enc.contains(' ') && !enc.starts_with('#'), "{enc}");
        }
        let long = Key::new("n".repeat(255), "é".repeat(512)).unwrap();
        let raw =
            raw_id(&Cell::Slice(SliceId { key: long, precision: Precision::from_secs(1).unwrap(), start: i64::MIN }));
        let enc = encode(&raw);
        assert!(enc.starts_with('#') && enc.len() == 33, "{enc}");
        for key in [layout.slot(&enc, u64::MAX, u64::MAX), layout.total(&enc, 1), layout.flushed(&enc)] {
            assert!(key_is_safe(&key), "{key}");
        }
        let direct = "a".repeat(MAX_DIRECT - 2);
        let enc = encode(&format!("c/{direct}"));
        assert_eq!(enc.len(), MAX_DIRECT);
        assert!(key_is_safe(&layout.slot(&enc, u64::MAX, u64::MAX)));
    }
}
