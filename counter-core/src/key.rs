//! Counter keys: a namespace plus a hierarchical name, validated once at
//! construction so that no backend ever sees an invalid one.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};

/// Longest name, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// Longest namespace, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 255;
/// Separator of the name hierarchy (`clicks:ad42:us`).
pub const HIERARCHY_SEPARATOR: char = ':';
/// Separator of namespace and name in the display form (`ns/name`).
pub const NAMESPACE_SEPARATOR: char = '/';

/// A validated counter key: a namespace (possibly empty, the default one) and
/// a name.
///
/// Names are UTF-8, 1 to [`MAX_NAME_BYTES`] bytes (bytes, not characters: a
/// name of 341 three-byte characters is 1023 bytes), without control
/// characters (general category Cc) and without Unicode format characters
/// (category Cf: bidirectional overrides and isolates U+202A-U+202E and
/// U+2066-U+2069, zero-width U+200B-U+200F, U+2060-U+2064, the byte order
/// mark U+FEFF, ...) or the line and paragraph separators U+2028/U+2029,
/// which would let one name pass for another in a listing. They form a
/// hierarchy by `:` (`clicks:ad42:us` rolls up into `clicks:ad42` and
/// `clicks`). Namespaces follow the same rules but may be empty, may be at
/// most [`MAX_NAMESPACE_BYTES`] bytes and may not contain `/`.
///
/// Keys are compared **as bytes**: no Unicode normalisation is applied, so
/// the NFC spelling `caf\u{e9}` and the NFD spelling `cafe\u{301}` are two
/// different counters. Normalise before counting if your input can come in
/// both forms.
///
/// Namespace and name share one immutable allocation, so a clone (the
/// flush path makes several per counter: the dirty index, the claim, the
/// batch) is a reference count, not a copy, and a key is one pointer and a
/// length (16 bytes), which keeps the in-process cache's map small. Keys
/// order by namespace, then name.
#[derive(Clone)]
pub struct Key {
    /// The namespace, a NUL, then the name. Neither may contain a NUL (a
    /// control character), so the first one splits them, and the text
    /// orders as (namespace, name) does: NUL sorts before every other byte.
    text: Arc<str>,
}

/// What separates the namespace from the name inside a key.
const SPLIT: char = '\0';

impl Key {
    /// A key in `namespace`.
    ///
    /// ```
    /// # use counter_core::Key;
    /// let key = Key::new("clicks", "ad42:us").unwrap();
    /// assert_eq!(key.to_string(), "clicks/ad42:us");
    /// assert!(Key::new("clicks", "").is_err());
    /// ```
    pub fn new(namespace: impl AsRef<str>, name: impl AsRef<str>) -> Result<Key> {
        let (namespace, name) = (namespace.as_ref(), name.as_ref());
        check_namespace(namespace).map_err(|e| e.with_key(display(namespace, name)))?;
        check_name(name).map_err(|e| e.with_key(display(namespace, name)))?;
        Ok(Key::joined(namespace, name))
    }

    /// A key read back from a backend (a store row, a cache entry, a spill
    /// journal): the rules of [`Key::new`] except the refusal of Unicode
    /// format characters and line/paragraph separators. Those were accepted
    /// by earlier versions, and a counter written then must stay readable,
    /// listable and flushable after an upgrade; new input is checked by
    /// [`Key::new`] and cannot create one.
    pub fn stored(namespace: impl AsRef<str>, name: impl AsRef<str>) -> Result<Key> {
        let (namespace, name) = (namespace.as_ref(), name.as_ref());
        check_namespace_with(namespace, Chars::Stored).map_err(|e| e.with_key(display(namespace, name)))?;
        check_name_with(name, Chars::Stored).map_err(|e| e.with_key(display(namespace, name)))?;
        Ok(Key::joined(namespace, name))
    }

    /// [`Key::parse`] for a display form read back from a backend (see
    /// [`Key::stored`]).
    pub fn parse_stored(text: &str) -> Result<Key> {
        match text.split_once(NAMESPACE_SEPARATOR) {
            Some((namespace, name)) => Key::stored(namespace, name),
            None => Key::stored("", text),
        }
    }

    /// The key of a checked namespace and name.
    fn joined(namespace: &str, name: &str) -> Key {
        let mut text = String::with_capacity(namespace.len() + 1 + name.len());
        text.push_str(namespace);
        text.push(SPLIT);
        text.push_str(name);
        Key { text: text.into() }
    }

    /// Bytes of the namespace at the start of the text.
    fn split(&self) -> usize {
        self.text.find(SPLIT).expect("every key holds the split")
    }

    /// The smallest key of `namespace` whose name starts with `prefix` (the
    /// prefix itself, which need not be a valid name), for ranges over keys
    /// in order; `None` if no key can be in `namespace` (too long).
    pub(crate) fn lower_bound(namespace: &str, prefix: &str) -> Option<Key> {
        (namespace.len() <= MAX_NAMESPACE_BYTES).then(|| Key::joined(namespace, prefix))
    }

    /// A key in the default (empty) namespace.
    pub fn named(name: impl AsRef<str>) -> Result<Key> {
        Key::new("", name)
    }

    /// Parses the display form: `namespace/name`, or `name` for the default
    /// namespace. Only the first `/` separates; the name may contain more.
    pub fn parse(text: &str) -> Result<Key> {
        match text.split_once(NAMESPACE_SEPARATOR) {
            Some((namespace, name)) => Key::new(namespace, name),
            None => Key::named(text),
        }
    }

    /// Appends the display form (as [`Display`](fmt::Display) writes it)
    /// to `out`, without the formatting machinery: for backends that build
    /// a key name on every increment.
    ///
    /// ```
    /// # use counter_core::Key;
    /// let mut out = String::from("v:");
    /// Key::new("clicks", "ad42").unwrap().push_display(&mut out);
    /// Key::named("a/b").unwrap().push_display(&mut out);
    /// assert_eq!(out, "v:clicks/ad42/a/b");
    /// ```
    pub fn push_display(&self, out: &mut String) {
        let split = self.split();
        let (namespace, name) = (&self.text[..split], &self.text[split + 1..]);
        write_display(out, namespace, name).expect("a String takes any text");
    }

    /// The namespace (empty for the default namespace).
    pub fn namespace(&self) -> &str {
        &self.text[..self.split()]
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.text[self.split() + 1..]
    }

    /// The ancestors of this key in the name hierarchy, nearest first:
    /// `a:b:c` has `a:b` and `a`. Empty leading segments are skipped.
    pub fn ancestors(&self) -> impl Iterator<Item = Key> + '_ {
        let name = self.name();
        name.char_indices()
            .rev()
            .filter(|&(i, c)| c == HIERARCHY_SEPARATOR && i > 0)
            .map(|(i, _)| Key::joined(self.namespace(), &name[..i]))
    }

    /// Bytes of namespace and name together (for memory accounting).
    pub fn len_bytes(&self) -> usize {
        self.text.len() - SPLIT.len_utf8()
    }

    /// Checks `namespace` by the rules of a key's namespace (at most
    /// [`MAX_NAMESPACE_BYTES`] bytes, no `/`, no control or format
    /// characters; empty is the default namespace), with an
    /// [`ErrorKind::InvalidKey`] error naming the namespace otherwise.
    ///
    /// ```
    /// # use counter_core::Key;
    /// assert!(Key::validate_namespace("clicks").is_ok());
    /// assert!(Key::validate_namespace("").is_ok());
    /// assert!(Key::validate_namespace("a/b").is_err());
    /// assert!(Key::validate_namespace("a\u{202e}").is_err());
    /// ```
    pub fn validate_namespace(namespace: &str) -> Result<()> {
        check_namespace(namespace).map_err(|e| e.with_key(format!("{namespace}{NAMESPACE_SEPARATOR}")))
    }

    /// Checks a name prefix (as in a listing) by the rules of a name, except
    /// that it may be empty (every name): at most [`MAX_NAME_BYTES`] bytes,
    /// no control or format characters. A prefix that fails this matches no
    /// valid key, so a listing by it is refused rather than answered empty.
    ///
    /// ```
    /// # use counter_core::Key;
    /// assert!(Key::validate_prefix("clicks:").is_ok());
    /// assert!(Key::validate_prefix("").is_ok());
    /// assert!(Key::validate_prefix("a\u{1}").is_err());
    /// ```
    pub fn validate_prefix(prefix: &str) -> Result<()> {
        check_prefix(prefix).map_err(|e| e.with_key(prefix.to_string()))
    }

    /// Checks a name by the rules of [`Key::new`] without making a key.
    pub fn validate_name(name: &str) -> Result<()> {
        check_name(name).map_err(|e| e.with_key(name.to_string()))
    }
}

/// The display form: `namespace/name`; `name` alone in the default namespace,
/// or `/name` there when the name itself contains `/`, so that parsing it
/// back gives the same key.
fn display(namespace: &str, name: &str) -> String {
    let mut text = String::with_capacity(namespace.len() + 1 + name.len());
    write_display(&mut text, namespace, name).expect("a String takes any text");
    text
}

/// A key's display form, written without an intermediate string: `name`
/// alone in the default namespace (unless it holds the separator), else
/// `namespace/name`.
fn write_display(out: &mut impl fmt::Write, namespace: &str, name: &str) -> fmt::Result {
    if namespace.is_empty() && !name.contains(NAMESPACE_SEPARATOR) {
        out.write_str(name)
    } else {
        out.write_str(namespace)?;
        out.write_char(NAMESPACE_SEPARATOR)?;
        out.write_str(name)
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidKey, message)
}

/// Which characters a check refuses: new input refuses control and
/// invisible characters; keys read back from a backend only control ones
/// (see [`Key::stored`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Chars {
    Input,
    Stored,
}

fn check_name(name: &str) -> Result<()> {
    check_name_with(name, Chars::Input)
}

fn check_name_with(name: &str, chars: Chars) -> Result<()> {
    if name.is_empty() {
        return Err(invalid("name is empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(invalid(format!("name is {} bytes, the limit is {MAX_NAME_BYTES}", name.len())));
    }
    check_chars("name", name, chars)
}

fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.len() > MAX_NAME_BYTES {
        return Err(invalid(format!("prefix is {} bytes, the limit is {MAX_NAME_BYTES}", prefix.len())));
    }
    check_chars("prefix", prefix, Chars::Input)
}

fn check_namespace(namespace: &str) -> Result<()> {
    check_namespace_with(namespace, Chars::Input)
}

fn check_namespace_with(namespace: &str, chars: Chars) -> Result<()> {
    if namespace.len() > MAX_NAMESPACE_BYTES {
        return Err(invalid(format!("namespace is {} bytes, the limit is {MAX_NAMESPACE_BYTES}", namespace.len())));
    }
    if namespace.contains(NAMESPACE_SEPARATOR) {
        return Err(invalid("namespace contains '/'"));
    }
    check_chars("namespace", namespace, chars)
}

fn check_chars(what: &str, text: &str, chars: Chars) -> Result<()> {
    for (at, c) in text.char_indices() {
        if c.is_control() {
            return Err(invalid(format!("{what} contains control character U+{:04X} at byte {at}", c as u32)));
        }
        if chars == Chars::Stored {
            continue;
        }
        if let Some(class) = invisible_class(c) {
            return Err(invalid(format!("{what} contains U+{:04X} at byte {at}, a Unicode {class}", c as u32)));
        }
    }
    Ok(())
}

/// Unicode format characters (general category Cf, Unicode 16) as inclusive
/// ranges of code points. They render as nothing or reorder the text around
/// them, so a name carrying one can pass for another.
const FORMAT_CHARACTERS: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// What kind of invisible character `c` is, if it is one keys refuse:
/// a format character (Cf) or the line or paragraph separator (Zl, Zp).
fn invisible_class(c: char) -> Option<&'static str> {
    let cp = c as u32;
    if cp < FORMAT_CHARACTERS[0].0 {
        // Below U+00AD (all of ASCII): no range to search.
        return None;
    }
    if cp == 0x2028 {
        return Some("line separator");
    }
    if cp == 0x2029 {
        return Some("paragraph separator");
    }
    FORMAT_CHARACTERS.iter().any(|&(lo, hi)| (lo..=hi).contains(&cp)).then_some("format character")
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_display(f, self.namespace(), self.name())
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        Arc::ptr_eq(&self.text, &other.text) || self.text == other.text
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        // The text orders as (namespace, name): see `text`.
        self.text.cmp(&other.text)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", self.to_string())
    }
}

impl FromStr for Key {
    type Err = Error;
    fn from_str(s: &str) -> Result<Key> {
        Key::parse(s)
    }
}

impl TryFrom<&str> for Key {
    type Error = Error;
    fn try_from(s: &str) -> Result<Key> {
        Key::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bounds_and_characters() {
        assert!(Key::named("a").is_ok());
        assert!(Key::named("x".repeat(MAX_NAME_BYTES)).is_ok());
        let e = Key::named("x".repeat(MAX_NAME_BYTES + 1)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidKey);
        assert!(e.to_string().contains("1025 bytes"), "{e}");
        assert_eq!(Key::named("").unwrap_err().kind(), ErrorKind::InvalidKey);
        for bad in ["a\nb", "a\0", "\u{7f}", "tab\there", "c1\u{85}"] {
            assert_eq!(Key::named(bad).unwrap_err().kind(), ErrorKind::InvalidKey, "{bad:?}");
        }
        assert_eq!(Key::new("a/b", "x").unwrap_err().kind(), ErrorKind::InvalidKey);
        assert_eq!(Key::new("a\r", "x").unwrap_err().kind(), ErrorKind::InvalidKey);
        // Spaces, quotes, multibyte text are all fine.
        assert!(Key::named("\r\nflush_all\r\n".trim()).is_ok());
        assert!(Key::named("日本 語 'quoted' \"x\"").is_ok());
    }

    #[test]
    fn format_characters_and_separators_are_refused() {
        let spoofers = [
            '\u{202A}',
            '\u{202B}',
            '\u{202C}',
            '\u{202D}',
            '\u{202E}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{061C}',
            '\u{180E}',
            '\u{FFF9}',
            '\u{E0001}',
            '\u{E0041}',
            '\u{1D173}',
        ];
        for c in spoofers {
            let name = format!("admin{c}gnp.exe");
            let e = Key::named(&name).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidKey, "{c:?}");
            let text = e.to_string();
            assert!(text.contains(&format!("U+{:04X}", c as u32)), "{text}");
            assert!(text.contains("a Unicode format character"), "{text}");
            assert!(text.contains("at byte 5"), "{text}");
            assert_eq!(Key::new(format!("ns{c}"), "x").unwrap_err().kind(), ErrorKind::InvalidKey, "{c:?}");
            assert!(Key::validate_namespace(&format!("{c}")).is_err());
            assert!(Key::validate_prefix(&format!("a{c}")).is_err());
            assert!(Key::validate_name(&format!("a{c}")).is_err());
        }
        let e = Key::named("a\u{2028}b").unwrap_err();
        assert!(e.to_string().contains("U+2028 at byte 1, a Unicode line separator"), "{e}");
        let e = Key::named("a\u{2029}b").unwrap_err();
        assert!(e.to_string().contains("U+2029 at byte 1, a Unicode paragraph separator"), "{e}");
        // Neighbours of the refused ranges stay valid: visible punctuation,
        // combining marks (NFD spellings), emoji with a variation selector.
        for fine in ["a\u{2010}b", "a\u{2030}", "cafe\u{301}", "\u{2764}\u{FE0F}", "\u{202F}nbsp", "x\u{2065}"] {
            assert!(Key::named(fine).is_ok(), "{fine:?}");
        }
    }

    #[test]
    fn names_compare_as_bytes_not_normalised() {
        let nfc = Key::named("caf\u{e9}").unwrap();
        let nfd = Key::named("cafe\u{301}").unwrap();
        assert_ne!(nfc, nfd);
        assert_eq!(nfc.name().len(), 5);
        assert_eq!(nfd.name().len(), 6);
    }

    #[test]
    fn limits_count_bytes_of_multibyte_text() {
        // 341 three-byte characters + 1 byte = 1024 bytes: the limit exactly.
        let at_limit = format!("{}x", "\u{65e5}".repeat(341));
        assert_eq!(at_limit.len(), MAX_NAME_BYTES);
        assert!(Key::named(&at_limit).is_ok());
        let over = format!("{}xy", "\u{65e5}".repeat(341));
        let e = Key::named(&over).unwrap_err();
        assert!(e.to_string().contains("1025 bytes"), "{e}");
        // 64 four-byte characters = 256 bytes: one over the namespace limit.
        let ns = "\u{1F600}".repeat(64);
        let e = Key::new(&ns, "x").unwrap_err();
        assert!(e.to_string().contains("256 bytes"), "{e}");
        assert!(Key::new("\u{1F600}".repeat(63) + "abc", "x").is_ok());
    }

    #[test]
    fn stored_keys_written_by_earlier_versions_stay_readable() {
        // Earlier versions accepted format characters: a key read back from
        // a backend keeps them (so it lists and flushes), new input cannot.
        let legacy = "admin\u{202e}txt.exe";
        assert_eq!(Key::named(legacy).unwrap_err().kind(), ErrorKind::InvalidKey);
        let key = Key::stored("ns", legacy).unwrap();
        assert_eq!(key.name(), legacy);
        assert_eq!(Key::parse_stored(&format!("ns/{legacy}")).unwrap(), key);
        assert_eq!(Key::parse_stored(legacy).unwrap().namespace(), "");
        // The structural rules still hold for stored keys.
        for (ns, name) in [("ns", ""), ("a/b", "x"), ("ns", "a\u{1}"), ("\u{7f}", "x")] {
            assert_eq!(Key::stored(ns, name).unwrap_err().kind(), ErrorKind::InvalidKey, "{ns:?} {name:?}");
        }
        assert!(Key::stored("ns", "n".repeat(MAX_NAME_BYTES + 1)).is_err());
    }

    #[test]
    fn validators_match_key_rules() {
        assert!(Key::validate_namespace("").is_ok());
        assert!(Key::validate_namespace(&"n".repeat(MAX_NAMESPACE_BYTES)).is_ok());
        let e = Key::validate_namespace(&"n".repeat(MAX_NAMESPACE_BYTES + 1)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidKey);
        assert!(e.to_string().contains("256 bytes"), "{e}");
        let e = Key::validate_namespace("a/b").unwrap_err();
        assert!(e.to_string().contains("namespace contains '/'"), "{e}");
        let e = Key::validate_namespace("a\u{1}").unwrap_err();
        assert!(e.to_string().contains("namespace contains control character U+0001"), "{e}");
        assert!(Key::validate_prefix("").is_ok());
        assert!(Key::validate_prefix("a/b:").is_ok(), "names may contain '/'");
        assert!(Key::validate_prefix(&"p".repeat(MAX_NAME_BYTES)).is_ok());
        let e = Key::validate_prefix(&"p".repeat(MAX_NAME_BYTES + 1)).unwrap_err();
        assert!(e.to_string().contains("prefix is 1025 bytes"), "{e}");
        let e = Key::validate_prefix("a\n").unwrap_err();
        assert!(e.to_string().contains("prefix contains control character U+000A"), "{e}");
        assert!(Key::validate_name("").is_err());
        assert!(Key::validate_name("ok:name").is_ok());
    }

    #[test]
    fn parse_and_display_round_trip() {
        let k = Key::parse("clicks/ad42:us").unwrap();
        assert_eq!((k.namespace(), k.name()), ("clicks", "ad42:us"));
        assert_eq!(k.to_string(), "clicks/ad42:us");
        let d = Key::parse("plain:name").unwrap();
        assert_eq!(d.namespace(), "");
        assert_eq!(d.to_string(), "plain:name");
        let deep = Key::parse("ns/a/b").unwrap();
        assert_eq!(deep.name(), "a/b");
    }

    /// Namespace and name share one string: where it is cut matters to
    /// equality, hashing and order, which are those of the pair.
    #[test]
    fn keys_compare_as_namespace_then_name() {
        use std::collections::HashSet;
        let (ab_c, a_bc) = (Key::new("ab", "c").unwrap(), Key::new("a", "bc").unwrap());
        assert_ne!(ab_c, a_bc, "same letters, cut elsewhere");
        assert_eq!(HashSet::from([ab_c.clone(), a_bc.clone()]).len(), 2);
        assert_eq!(ab_c, Key::parse("ab/c").unwrap());
        assert_eq!(HashSet::from([ab_c.clone(), Key::parse("ab/c").unwrap()]).len(), 1);
        // By namespace first: "a"/"zz" before "ab"/"a" although "azz" > "aba".
        let mut keys = [Key::new("ab", "a").unwrap(), Key::new("a", "zz").unwrap(), Key::named("z").unwrap()];
        keys.sort();
        let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.namespace(), k.name())).collect();
        assert_eq!(pairs, [("", "z"), ("a", "zz"), ("ab", "a")]);
        let clone = ab_c.clone();
        assert_eq!((clone.namespace(), clone.name(), clone.len_bytes()), ("ab", "c", 3));
    }

    #[test]
    fn ancestors_nearest_first() {
        let k = Key::new("n", "clicks:ad42:us").unwrap();
        let names: Vec<String> = k.ancestors().map(|a| a.name().to_string()).collect();
        assert_eq!(names, ["clicks:ad42", "clicks"]);
        assert!(k.ancestors().all(|a| a.namespace() == "n"));
        assert_eq!(Key::named(":x").unwrap().ancestors().count(), 0);
    }

    proptest! {
        #[test]
        fn every_format_character_is_refused(c in "[\\p{Cf}\\p{Zl}\\p{Zp}]") {
            let e = Key::named(format!("a{c}")).unwrap_err();
            prop_assert_eq!(e.kind(), ErrorKind::InvalidKey);
        }

        #[test]
        fn valid_keys_round_trip_through_display(ns in "[^/\\p{Cc}\\p{Cf}\\p{Zl}\\p{Zp}]{0,20}", name in "[^\\p{Cc}\\p{Cf}\\p{Zl}\\p{Zp}]{1,40}") {
            let key = Key::new(&ns, &name).unwrap();
            prop_assert_eq!(key.namespace(), ns.as_str());
            prop_assert_eq!(key.name(), name.as_str());
            prop_assert_eq!(key.len_bytes(), ns.len() + name.len());
            prop_assert_eq!(Key::parse(&key.to_string()).unwrap(), key);
        }

        #[test]
        fn keys_order_by_namespace_then_name(
            a in ("[!-.0-~]{0,4}", "[ -~]{1,4}"),
            b in ("[!-.0-~]{0,4}", "[ -~]{1,4}"),
        ) {
            let (ka, kb) = (Key::new(&a.0, &a.1).unwrap(), Key::new(&b.0, &b.1).unwrap());
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(ka == kb, a == b);
        }
    }

    #[test]
    fn a_key_is_a_pointer_and_a_length() {
        assert_eq!(std::mem::size_of::<Key>(), 16);
        // A namespace that sorts after another one's prefix: "a" < "a!".
        assert!(Key::new("a", "z").unwrap() < Key::new("a!", "a").unwrap());
        assert!(Key::named("z").unwrap() < Key::new("a", "a").unwrap());
    }
}
