//! Where the cache connects (`memcache://` URLs) and how it lays out and
//! bounds its work.

use std::time::Duration;

use counter_core::{Error, ErrorKind, Result, UrlParams, redact_url};

/// A memcached server named by a URL:
/// `memcache://host:port[?options]`.
///
/// Options (URL query parameters; an unknown or repeated one is a
/// [`Config`](ErrorKind::Config) error), each overriding
/// [`MemcacheCacheOptions`]:
///
/// | parameter | meaning | default |
/// |---|---|---|
/// | `prefix` | key prefix | `counters:` |
/// | `connect_timeout` | bound on opening a connection | `1s` |
/// | `response_timeout` | bound on each reply | `2s` |
/// | `max_connections` | connections open at once (the pool's size) | 4 |
///
/// Durations take a unit: `250ms`, `2s`, `1m`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemcacheTarget {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The `prefix` parameter, if given.
    pub prefix: Option<String>,
    /// The `connect_timeout` parameter, if given.
    pub connect_timeout: Option<Duration>,
    /// The `response_timeout` parameter, if given.
    pub response_timeout: Option<Duration>,
    /// The `max_connections` parameter, if given.
    pub max_connections: Option<usize>,
}

impl MemcacheTarget {
    /// Parses a `memcache://host:port[?options]` URL. Anything malformed or
    /// unknown is a [`Config`](ErrorKind::Config) error naming the URL.
    pub fn parse(url: &str) -> Result<MemcacheTarget> {
        let bad = |why: &str| Error::new(ErrorKind::Config, format!("bad memcached URL {:?}: {why}", redact_url(url)));
        let rest = url.strip_prefix("memcache://").ok_or_else(|| bad("expected memcache://HOST:PORT"))?;
        let mut params = UrlParams::parse("memcached", url)?;
        let authority = rest.split(['?', '#']).next().unwrap_or(rest);
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        if authority.contains(['/', '@', ',']) {
            return Err(bad("expected exactly one HOST:PORT, without path or credentials"));
        }
        let (host, port) = authority.rsplit_once(':').ok_or_else(|| bad("the port is missing"))?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() {
            return Err(bad("the host is missing"));
        }
        let port: u16 = port.parse().map_err(|_| bad("the port must be a number from 1 to 65535"))?;
        if port == 0 || !authority.rsplit_once(':').is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())) {
            return Err(bad("the port must be a number from 1 to 65535"));
        }
        let prefix = params.text("prefix");
        if let Some(prefix) = &prefix {
            check_prefix(prefix).map_err(|e| bad(e.message()))?;
        }
        let connect_timeout = params.duration("connect_timeout")?;
        let response_timeout = params.duration("response_timeout")?;
        let max_connections = params.number::<usize>("max_connections", "a number of connections, at least 1")?;
        if max_connections == Some(0) {
            return Err(bad("max_connections must be at least 1"));
        }
        params.finish()?;
        Ok(MemcacheTarget { host: host.to_string(), port, prefix, connect_timeout, response_timeout, max_connections })
    }

    /// `host:port`, as a socket address string.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Longest key prefix, so that every key stays within memcached's 250 bytes.
pub const MAX_PREFIX_BYTES: usize = 48;

/// Checks a key prefix: up to [`MAX_PREFIX_BYTES`] of `A-Z a-z 0-9 : . _ -`.
pub(crate) fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.len() > MAX_PREFIX_BYTES {
        return Err(Error::new(ErrorKind::Config, format!("the key prefix is longer than {MAX_PREFIX_BYTES} bytes")));
    }
    if !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-')) {
        return Err(Error::new(
            ErrorKind::Config,
            format!("the key prefix {prefix:?} may only hold letters, digits and ':' '.' '_' '-'"),
        ));
    }
    Ok(())
}

/// How a [`MemcacheCache`](crate::MemcacheCache) lays out its keys and
/// bounds its work. Every process sharing a cache must use the same
/// `prefix`, `index_shards`, `dirty_shards` and `dirty_window`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemcacheCacheOptions {
    /// Prefix of every key the cache writes (default `counters:`).
    pub prefix: String,
    /// Number of lists the index of open claims is spread over (default 16).
    pub index_shards: u16,
    /// Number of lists each window of the dirty index is spread over
    /// (default 8). Each list is one memcached item (at most 1 MB by
    /// default), so raise it for many counters turning dirty per window.
    pub dirty_shards: u16,
    /// Width of a window of the dirty index (default 5 s).
    pub dirty_window: Duration,
    /// How far the processes' clocks may disagree (default 10 s): a window
    /// is compacted only that long after it closed.
    pub clock_margin: Duration,
    /// How far back the dirty index is read when its head is unknown
    /// (evicted; default 10 minutes).
    pub lookback: Duration,
    /// Longest wait for a reply (default 2 s).
    pub timeout: Duration,
    /// Longest wait for a connection (default 1 s).
    pub connect_timeout: Duration,
    /// Most connections open at once (default 4). Concurrent callers'
    /// commands share writes on them, so a few connections carry many
    /// callers, and fewer connections make larger shared writes: with 64
    /// tasks on 2 cores, 2 and 4 connections gave 283k and 281k increments
    /// per second, 8 gave 217k and 16 gave 131k.
    pub max_connections: usize,
}

impl Default for MemcacheCacheOptions {
    fn default() -> Self {
        MemcacheCacheOptions {
            prefix: "counters:".into(),
            index_shards: 16,
            dirty_shards: 8,
            dirty_window: Duration::from_secs(5),
            clock_margin: Duration::from_secs(10),
            lookback: Duration::from_secs(600),
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            max_connections: 4,
        }
    }
}

impl MemcacheCacheOptions {
    /// The defaults with another key prefix.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        MemcacheCacheOptions { prefix: prefix.into(), ..Self::default() }
    }

    /// Checks the options; a bad one is a [`Config`](ErrorKind::Config) error.
    pub(crate) fn check(&self) -> Result<()> {
        check_prefix(&self.prefix)?;
        let config = |m: &str| Err(Error::new(ErrorKind::Config, m.to_string()));
        if self.index_shards == 0 || self.dirty_shards == 0 {
            return config("the memcached cache needs at least one index shard and one dirty shard");
        }
        if self.dirty_window.as_millis() == 0 {
            return config("the dirty window must be at least 1 ms");
        }
        if self.max_connections == 0 {
            return config("the memcached cache needs at least one connection");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_bad_ones_are_config_errors_naming_the_url() {
        let t = MemcacheTarget::parse("memcache://127.0.0.1:11311?prefix=app:").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.prefix.as_deref()), ("127.0.0.1", 11311, Some("app:")));
        assert_eq!(t.addr(), "127.0.0.1:11311");
        let o = MemcacheTarget::parse("memcache://h:1?connect_timeout=250ms&response_timeout=3s&max_connections=4")
            .unwrap();
        assert_eq!(o.connect_timeout, Some(Duration::from_millis(250)));
        assert_eq!((o.response_timeout, o.max_connections), (Some(Duration::from_secs(3)), Some(4)));
        assert_eq!(MemcacheTarget::parse("memcache://[::1]:1/").unwrap().addr(), "[::1]:1");
        for bad in [
            "memcached://h:1",
            "memcache://h",
            "memcache://:1",
            "memcache://h:0",
            "memcache://h:99999",
            "memcache://h:1/db",
            "memcache://u:p@h:1",
            "memcache://h:1?shards=2",
            "memcache://h:1?prefix=a b",
            "memcache://h:1?prefix=a&prefix=b",
            "memcache://h:+1",
            "memcache://h:1?max_connections=0",
            "memcache://h:1?connect_timeout=1",
            "memcache://h:1?response_timeout=0ms",
            "redis://h:1",
        ] {
            let e = MemcacheTarget::parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{bad}");
            assert!(e.to_string().contains(&counter_core::redact_url(bad)), "{e}");
        }
    }

    #[test]
    fn options_are_checked() {
        assert!(MemcacheCacheOptions::default().check().is_ok());
        assert!(MemcacheCacheOptions::with_prefix("x".repeat(49)).check().is_err());
        assert!(MemcacheCacheOptions::with_prefix("a%b").check().is_err());
        let o = MemcacheCacheOptions { index_shards: 0, ..MemcacheCacheOptions::default() };
        assert_eq!(o.check().unwrap_err().kind(), ErrorKind::Config);
    }
}
