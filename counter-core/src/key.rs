//! Counter keys: a namespace plus a hierarchical name, validated once at
//! construction so that no backend ever sees an invalid one.

use std::fmt;
use std::str::FromStr;

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
/// Names are UTF-8, 1 to [`MAX_NAME_BYTES`] bytes, without control characters,
/// and form a hierarchy by `:` (`clicks:ad42:us` rolls up into `clicks:ad42`
/// and `clicks`). Namespaces follow the same rules but may be empty, may be at
/// most [`MAX_NAMESPACE_BYTES`] bytes and may not contain `/`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    namespace: Box<str>,
    name: Box<str>,
}

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
        Ok(Key { namespace: namespace.into(), name: name.into() })
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

    /// The namespace (empty for the default namespace).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ancestors of this key in the name hierarchy, nearest first:
    /// `a:b:c` has `a:b` and `a`. Empty leading segments are skipped.
    pub fn ancestors(&self) -> impl Iterator<Item = Key> + '_ {
        self.name
            .char_indices()
            .rev()
            .filter(|&(i, c)| c == HIERARCHY_SEPARATOR && i > 0)
            .map(|(i, _)| Key { namespace: self.namespace.clone(), name: self.name[..i].into() })
    }

    /// Bytes of namespace and name together (for memory accounting).
    pub fn len_bytes(&self) -> usize {
        self.namespace.len() + self.name.len()
    }
}

/// The display form: `namespace/name`; `name` alone in the default namespace,
/// or `/name` there when the name itself contains `/`, so that parsing it
/// back gives the same key.
fn display(namespace: &str, name: &str) -> String {
    if namespace.is_empty() && !name.contains(NAMESPACE_SEPARATOR) {
        name.to_string()
    } else {
        format!("{namespace}{NAMESPACE_SEPARATOR}{name}")
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidKey, message)
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(invalid("name is empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(invalid(format!("name is {} bytes, the limit is {MAX_NAME_BYTES}", name.len())));
    }
    check_chars("name", name)
}

fn check_namespace(namespace: &str) -> Result<()> {
    if namespace.len() > MAX_NAMESPACE_BYTES {
        return Err(invalid(format!("namespace is {} bytes, the limit is {MAX_NAMESPACE_BYTES}", namespace.len())));
    }
    if namespace.contains(NAMESPACE_SEPARATOR) {
        return Err(invalid("namespace contains '/'"));
    }
    check_chars("namespace", namespace)
}

fn check_chars(what: &str, text: &str) -> Result<()> {
    match text.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, c)) => Err(invalid(format!("{what} contains control character U+{:04X} at byte {at}", c as u32))),
        None => Ok(()),
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&display(&self.namespace, &self.name))
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
        fn valid_keys_round_trip_through_display(ns in "[^/\\p{Cc}]{0,20}", name in "[^\\p{Cc}]{1,40}") {
            let key = Key::new(&ns, &name).unwrap();
            prop_assert_eq!(Key::parse(&key.to_string()).unwrap(), key);
        }
    }
}
