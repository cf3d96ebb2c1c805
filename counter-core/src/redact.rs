//! Credentials out of everything the project prints: the one redaction of
//! backend URLs, used by every error message and log line that names a URL.
//!
//! - userinfo: `redis://user:hunter2@host` → `redis://user:***@host`;
//!   `redis://hunter2@host` (a lone token) → `redis://***@host`;
//! - query parameters whose name looks like a secret (`password`,
//!   `passwd`, `pwd`, `secret`, `token`, `key`, `access_key`, `auth`,
//!   `credential`, `signature`, `session`, in any case and as part of a
//!   longer name) → `name=***`; a parameter whose value is itself a URL
//!   (`endpoint=http://user:pw@host`) is redacted as a URL;
//! - a fragment → `#***`.
//!
//! Where a careless URL makes the split ambiguous (a raw `/`, `?` or `#`
//! in a password, a raw `,` in a Redis Cluster password), more is hidden,
//! never less.

/// Replaces the secret-looking parts of `url` (userinfo, secret query
/// parameters, the fragment) by `***`.
///
/// ```
/// # use counter_core::redact_url;
/// assert_eq!(redact_url("redis://user:hunter2@127.0.0.1:6379/0"), "redis://user:***@127.0.0.1:6379/0");
/// assert_eq!(redact_url("sqlite://c.db?token=abc&mode=rw"), "sqlite://c.db?token=***&mode=rw");
/// assert_eq!(redact_url("memory://"), "memory://");
/// ```
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    if !authority.contains('@') {
        if let Some(at) = tail.rfind('@') {
            let before = &rest[..authority_end + at];
            // A raw '/', '?' or '#' in a password: `redis://u:pa/ss@host`.
            let colon = before.find(':');
            let slash = before.find('/');
            if colon.is_some_and(|c| slash.is_none_or(|s| c < s)) && !before.contains('=') {
                return format!("{scheme}***@{}", redact_tail(&rest[authority_end + at + 1..]));
            }
        }
    }
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    out.push_str(&redact_authority(authority));
    out.push_str(&redact_tail(tail));
    out
}

/// Redacts every URL (`scheme://...`, up to a space, a quote, `<`, `>` or a
/// backslash) found in free text: a message or a cause from a driver.
///
/// ```
/// # use counter_core::redact_urls_in;
/// assert_eq!(
///     redact_urls_in("cannot reach \"redis://:pw@h:1\" (refused)"),
///     "cannot reach \"redis://:***@h:1\" (refused)"
/// );
/// ```
pub fn redact_urls_in(text: &str) -> String {
    if !text.contains("://") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let start = rest[..i]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
            .last()
            .map_or(i, |(j, _)| j);
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '\\' | '`'))
            .map_or(rest.len(), |e| i + e);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `user:pw@host:port` (comma-separated for a cluster) with each password
/// hidden.
fn redact_authority(authority: &str) -> String {
    if !authority.contains('@') {
        return authority.to_string();
    }
    authority
        .split(',')
        .map(|part| match part.rfind('@') {
            Some(at) => {
                let (info, host) = (&part[..at], &part[at..]);
                match info.split_once(':') {
                    Some((user, _)) => format!("{user}:***{host}"),
                    None => format!("***{host}"),
                }
            }
            // Beside a part with credentials, a part that is not a plain
            // HOST[:PORT] may be the rest of a password with a raw ','.
            None if looks_like_host(part) => part.to_string(),
            None => "***".to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn looks_like_host(part: &str) -> bool {
    if part.starts_with('[') {
        return true;
    }
    match part.rsplit_once(':') {
        Some((host, port)) => !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()),
        None => true,
    }
}

/// The path, query and fragment, with secret parameters and the fragment
/// hidden.
fn redact_tail(tail: &str) -> String {
    let (before_fragment, fragment) = match tail.find('#') {
        Some(i) => (&tail[..i], Some(&tail[i + 1..])),
        None => (tail, None),
    };
    let mut out = match before_fragment.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query.split('&').map(redact_param).collect();
            format!("{path}?{}", params.join("&"))
        }
        None => before_fragment.to_string(),
    };
    match fragment {
        Some("") => out.push('#'),
        Some(_) => out.push_str("#***"),
        None => {}
    }
    out
}

fn redact_param(pair: &str) -> String {
    let Some((name, value)) = pair.split_once('=') else { return pair.to_string() };
    if is_secret_name(name) && !value.is_empty() {
        format!("{name}=***")
    } else if value.contains("://") || value.contains('@') {
        format!("{name}={}", redact_url(value))
    } else {
        pair.to_string()
    }
}

/// Whether a parameter name looks like it holds a secret.
fn is_secret_name(name: &str) -> bool {
    const SECRET_WORDS: &[&str] =
        &["pass", "pwd", "secret", "token", "key", "auth", "credential", "signature", "session", "cookie"];
    let name = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| name.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_hidden_in_every_scheme() {
        for (url, want) in [
            ("redis://user:hunter2@127.0.0.1:6701/notadb", "redis://user:***@127.0.0.1:6701/notadb"),
            ("redis://:hunter2@127.0.0.1:6701", "redis://:***@127.0.0.1:6701"),
            ("rediss://hunter2@h:1/0", "rediss://***@h:1/0"),
            ("redis+cluster://u:hunter2@a:1,u:hunter2@b:2", "redis+cluster://u:***@a:1,u:***@b:2"),
            ("redis+cluster://u:hunter2@a:1,b:2", "redis+cluster://u:***@a:1,b:2"),
            ("memcache://u:hunter2@h:11211", "memcache://u:***@h:11211"),
            ("http://u:hunter2@[::1]:8000/x", "http://u:***@[::1]:8000/x"),
            ("u:hunter2@h:1", "u:***@h:1"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn careless_passwords_hide_more_never_less() {
        for url in [
            "redis://u:hun/ter2@h:1",
            "redis://u:hun?ter2@h:1",
            "redis://u:hun#ter2@h:1",
            "redis://u:hun@ter2@h:1",
            "redis+cluster://u:hun,ter2@a:1",
            "redis://u:hunter2 spaced@h:1",
        ] {
            let shown = redact_url(url);
            assert!(!shown.contains("hun") && !shown.contains("ter2"), "{url} -> {shown}");
        }
    }

    #[test]
    fn secret_parameters_and_fragments_are_hidden() {
        for (url, want) in [
            ("sqlite://c.db?password=hunter2", "sqlite://c.db?password=***"),
            ("sqlite://c.db?mode=rw&Token=hunter2", "sqlite://c.db?mode=rw&Token=***"),
            (
                "dynamodb://t?access_key=AK&secret_access_key=hunter2&region=x",
                "dynamodb://t?access_key=***&secret_access_key=***&region=x",
            ),
            ("dynamodb://t?endpoint=http://u:hunter2@h:1&region=x", "dynamodb://t?endpoint=http://u:***@h:1&region=x"),
            ("memcache://h:1?prefix=p&api_key=hunter2", "memcache://h:1?prefix=p&api_key=***"),
            ("redis://h:1/0#hunter2", "redis://h:1/0#***"),
            ("redis://h:1/0?auth=hunter2#frag", "redis://h:1/0?auth=***#***"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn plain_urls_and_paths_are_unchanged() {
        for url in [
            "memory://",
            "sqlite://counters.sqlite",
            "sqlite:///home/a@b/x.db",
            "redis://127.0.0.1:6379/0",
            "redis+cluster://a:1,b:2,[::1]:3",
            "dynamodb://table?endpoint=http://127.0.0.1:8011&region=us-east-1&create=false",
            "memcache://h:1?prefix=app",
            "nope",
            "",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn urls_in_text_are_found() {
        let text =
            "bad Redis URL \"redis://u:hunter2@h:1/x\": the path; also redis://:hunter2@h2 and sqlite://a?key=hunter2";
        let shown = redact_urls_in(text);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("\"redis://u:***@h:1/x\"") && shown.contains("redis://:***@h2"), "{shown}");
        assert_eq!(redact_urls_in("no url here: a:b@c"), "no url here: a:b@c");
        assert_eq!(redact_urls_in("expected sqlite://PATH"), "expected sqlite://PATH");
    }
}
