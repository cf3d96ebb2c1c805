//! Parsing of `sqlite://PATH` URLs.

use std::path::PathBuf;

use counter_core::{Error, ErrorKind, Result, redact_url};

/// The scheme prefix of a store URL.
pub(crate) const SCHEME: &str = "sqlite://";

fn config(url: &str, why: &str) -> Error {
    Error::new(ErrorKind::Config, format!("bad SQLite store URL {:?}: {why}; expected sqlite://PATH", redact_url(url)))
}

/// The file path of `sqlite://PATH`: everything after `sqlite://`, taken
/// literally (no percent-decoding). `sqlite:///var/lib/c.db` is the absolute
/// path `/var/lib/c.db`, `sqlite://data/c.db` a path relative to the working
/// directory.
///
/// Query strings and fragments (`?mode=...`, `#...`) and in-memory databases
/// are refused rather than silently taken as part of a file name.
pub(crate) fn path_of(url: &str) -> Result<PathBuf> {
    let Some(path) = url.strip_prefix(SCHEME) else {
        return Err(config(url, "the scheme is not sqlite://"));
    };
    if path.is_empty() {
        return Err(config(url, "the path is empty"));
    }
    if path.contains(['?', '#']) {
        return Err(config(url, "query strings and fragments are not supported"));
    }
    if path.trim_start_matches('/').starts_with(":memory:") {
        return Err(config(url, "in-memory databases are not supported"));
    }
    if path.chars().any(char::is_control) {
        return Err(config(url, "the path contains a control character"));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_absolute_and_relative() {
        assert_eq!(path_of("sqlite:///var/lib/c.db").unwrap(), PathBuf::from("/var/lib/c.db"));
        assert_eq!(path_of("sqlite://data/c.db").unwrap(), PathBuf::from("data/c.db"));
    }

    #[test]
    fn malformed_urls_are_config_errors() {
        for bad in [
            "",
            "sqlite:",
            "sqlite://",
            "sqlite::memory:",
            "sqlite://:memory:",
            "postgres://x/y",
            "SQLITE:///x.db",
            "sqlite:///x.db?mode=rwc",
            "sqlite:///x.db#frag",
            "sqlite:///x\0.db",
            "sqlite:///x\n.db",
        ] {
            let e = path_of(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{bad:?}");
            assert!(e.to_string().contains("sqlite://PATH"), "{e}");
        }
    }
}
