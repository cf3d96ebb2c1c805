//! Parsing of `sqlite://PATH[?options]` URLs.

use std::path::PathBuf;

use counter_core::{Error, ErrorKind, Result, UrlParams, redact_url};

use crate::options::SqliteOptions;

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
/// Fragments (`#...`) and in-memory databases are refused rather than
/// silently taken as part of a file name; a query holds the options (see
/// [`parse`]).
pub(crate) fn path_of(url: &str) -> Result<PathBuf> {
    let Some(path) = url.strip_prefix(SCHEME) else {
        return Err(config(url, "the scheme is not sqlite://"));
    };
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    if path.is_empty() {
        return Err(config(url, "the path is empty"));
    }
    if path.contains('#') {
        return Err(config(url, "fragments are not supported"));
    }
    if path.trim_start_matches('/').starts_with(":memory:") {
        return Err(config(url, "in-memory databases are not supported"));
    }
    if path.chars().any(char::is_control) {
        return Err(config(url, "the path contains a control character"));
    }
    Ok(PathBuf::from(path))
}

/// The path and the options of `sqlite://PATH[?options]`: `busy_timeout`
/// (a duration such as `500ms` or `5s`) and `readers` (read connections, at
/// least 1) override the defaults of [`SqliteOptions`]. An unknown or
/// repeated parameter is a [`Config`](ErrorKind::Config) error.
pub(crate) fn parse(url: &str) -> Result<(PathBuf, SqliteOptions)> {
    let path = path_of(url)?;
    let mut params = UrlParams::parse("SQLite store", url)?;
    let mut options = SqliteOptions::default();
    if let Some(timeout) = params.duration("busy_timeout")? {
        options.busy_timeout = timeout;
    }
    if let Some(readers) = params.number::<usize>("readers", "a number of read connections, at least 1")? {
        if readers == 0 {
            return Err(params.error("readers must be at least 1"));
        }
        options.readers = readers;
    }
    params.finish()?;
    Ok((path, options))
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
            "sqlite:///x.db#frag",
            "sqlite:///x\0.db",
            "sqlite:///x\n.db",
        ] {
            let e = path_of(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{bad:?}");
            assert!(e.to_string().contains("sqlite://PATH"), "{e}");
        }
        for bad in ["sqlite:///x.db?mode=rwc", "sqlite:///x.db?readers=0", "sqlite:///x.db?busy_timeout=5"] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{bad:?}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn options_come_from_the_query() {
        let (path, options) = parse("sqlite:///var/lib/c.db?busy_timeout=250ms&readers=4").unwrap();
        assert_eq!(path, PathBuf::from("/var/lib/c.db"));
        assert_eq!((options.busy_timeout, options.readers), (std::time::Duration::from_millis(250), 4));
        assert_eq!(parse("sqlite://c.db").unwrap().1, SqliteOptions::default());
    }
}
