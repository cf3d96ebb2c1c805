//! Hostile names: the characters each backend escapes or treats specially
//! (Redis hash tags `{}` and separators `:`/`/`, memcached spaces and its
//! 250-byte key limit, SQLite's LIKE wildcards `%` `_` `\`, DynamoDB's key
//! attribute, the largest code point, keys at exactly the byte limits with
//! multibyte characters) stay distinct counters, read back exactly through
//! the cache and through the store alone, and list literally by prefix.

use counter_core::{CacheLayer, DurableStore, Key, ListQuery, MAX_NAME_BYTES, MAX_NAMESPACE_BYTES};

use crate::harness::Backends;

/// Names that an escaping, a wildcard or a length limit could merge.
fn hostile_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "a_b",
        "aXb",
        "a%b",
        "a%",
        "a%%",
        "abc",
        "a\\b",
        "a\\",
        "a*b",
        "a?b",
        "a[b]",
        "a[",
        "a{b}",
        "{a}",
        "{a}b",
        "a}{",
        "a b",
        "a  b",
        "a+b",
        "a%20b",
        "a.b",
        "a'b",
        "a\"b",
        "a;b",
        "a--b",
        "a/b",
        "a//b",
        "/a",
        "a:b",
        "a::b",
        ":a",
        "a:",
        "caf\u{e9}",
        "cafe\u{301}",
        "\u{10FFFF}",
        "a\u{10FFFF}",
        "a\u{FFFD}",
        "\u{65e5}\u{672c}",
        "\u{1F600}",
        "*",
        "%",
        "_",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    // Exactly MAX_NAME_BYTES bytes: 341 three-byte characters and one byte,
    // and 256 four-byte characters; and the same but for the last byte.
    names.push(format!("{}x", "\u{65e5}".repeat(341)));
    names.push(format!("{}y", "\u{65e5}".repeat(341)));
    names.push("\u{1F600}".repeat(MAX_NAME_BYTES / 4));
    names
}

/// Hostile names (and the same names in namespaces of exactly
/// [`MAX_NAMESPACE_BYTES`] bytes and with `:`) are distinct counters: each
/// reads back its own value from the cache, from the store alone after the
/// cache forgets them, and lists exactly, by every prefix, with wildcards
/// taken literally.
pub async fn hostile_names_stay_distinct_and_list_literally<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let c = b.counters();
    let long_ns = format!("{}{}", b.namespace, "\u{fc}".repeat((MAX_NAMESPACE_BYTES - b.namespace.len()) / 2));
    let long_ns = if long_ns.len() < MAX_NAMESPACE_BYTES { format!("{long_ns}z") } else { long_ns };
    assert_eq!(long_ns.len(), MAX_NAMESPACE_BYTES);
    let namespaces = [b.namespace.clone(), format!("{}:a", b.namespace), format!("{}a", b.namespace), long_ns];
    let names = hostile_names();
    let mut keys: Vec<(Key, i64)> = Vec::new();
    for (n, namespace) in namespaces.iter().enumerate() {
        for (i, name) in names.iter().enumerate() {
            let key = Key::new(namespace, name).unwrap_or_else(|e| panic!("{namespace:?}/{name:?}: {e}"));
            keys.push((key, (n * 1000 + i + 1) as i64));
        }
    }
    for (key, value) in &keys {
        assert_eq!(c.incr(key, *value).await.unwrap(), *value, "{key:?}");
    }
    let check = |stage: &'static str| {
        let (c, keys, names, namespaces) = (&c, &keys, &names, &namespaces);
        async move {
            let wanted: Vec<Key> = keys.iter().map(|(k, _)| k.clone()).collect();
            let got = c.get_many(&wanted).await.unwrap();
            for ((key, value), got) in keys.iter().zip(got) {
                assert_eq!(got, *value, "{stage}: {key:?} reads another counter's value");
            }
            let mut prefixes: Vec<String> = vec![String::new()];
            for name in names.iter() {
                let chars: Vec<char> = name.chars().collect();
                for len in [1, 2] {
                    if chars.len() > len {
                        prefixes.push(chars[..len].iter().collect());
                    }
                }
            }
            prefixes.extend(["a%", "a_", "a\\", "a[", "{", "a{", "%", "_", "*", "a ", "\u{10FFFF}"].map(String::from));
            prefixes.sort();
            prefixes.dedup();
            for namespace in namespaces.iter() {
                for prefix in &prefixes {
                    let listed = c.list(&ListQuery::new(namespace.clone(), prefix.clone())).await.unwrap();
                    let mut expected: Vec<(Key, i64)> = keys
                        .iter()
                        .filter(|(k, _)| k.namespace() == namespace && k.name().starts_with(prefix.as_str()))
                        .cloned()
                        .collect();
                    expected.sort();
                    assert_eq!(listed, expected, "{stage}: listing {namespace:?} by prefix {prefix:?}");
                }
            }
        }
    };
    check("cached").await;
    c.flush().await.unwrap();
    for (key, value) in &keys {
        assert_eq!(b.durable(key).await, Some(*value), "{key:?} in the store");
    }
    for (key, _) in &keys {
        b.cache.remove(key).await.unwrap();
    }
    check("from the store").await;
    c.shutdown().await.unwrap();
}
