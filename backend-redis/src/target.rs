//! Where a Redis backend connects, parsed from its URL: the nodes, TLS and
//! its certificate authority, credentials, timeouts and the key layout.

use std::path::PathBuf;
use std::time::Duration;

use counter_core::{Error, ErrorKind, Result, UrlParams, redact_url};

/// The default bound on opening a connection (`connect_timeout`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The default bound on a reply (`response_timeout`).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a Redis backend connects and how its keys are laid out, parsed
/// from a URL:
///
/// - `redis://[user:password@]host:port[/db][?options]`: one server;
/// - `redis+cluster://[user:password@]host:port,host:port,...[?options]`:
///   a Cluster, reached through any of the listed nodes;
/// - `rediss://` and `rediss+cluster://`: the same over TLS (rustls), the
///   server's certificate checked against the system's trusted roots, or
///   against the `ca` file's.
///
/// Options (URL query parameters; an unknown one is refused):
///
/// | parameter | meaning | default |
/// |---|---|---|
/// | `prefix` | key prefix | `counters:` (cache), empty (store) |
/// | `shards` | dirty-index shards (cache) | 1, 64 on a Cluster |
/// | `connect_timeout` | bound on opening a connection | `2s` |
/// | `response_timeout` | bound on a reply | `5s` |
/// | `ca` | PEM file of the certificate authorities to trust instead of the system's (TLS only) | |
///
/// Durations are a number and a unit: `250ms`, `2s`, `1m`. There is no
/// option to skip the certificate check.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisTarget {
    /// One `redis://` (or `rediss://`) URL per node to connect through (one
    /// for a standalone server), with the credentials and database.
    pub nodes: Vec<String>,
    /// Whether the nodes form a Cluster.
    pub cluster: bool,
    /// Whether connections use TLS.
    pub tls: bool,
    /// The `ca` parameter: a PEM file of the certificate authorities to trust.
    pub ca: Option<PathBuf>,
    /// The `prefix` parameter, if given.
    pub prefix: Option<String>,
    /// The `shards` parameter, if given.
    pub shards: Option<u16>,
    /// The `connect_timeout` parameter, or its default.
    pub connect_timeout: Duration,
    /// The `response_timeout` parameter, or its default.
    pub response_timeout: Duration,
}

impl RedisTarget {
    /// Parses a `redis://`, `rediss://`, `redis+cluster://` or
    /// `rediss+cluster://` URL. Anything malformed or unknown is a
    /// [`Config`](ErrorKind::Config) error naming the URL (without its
    /// password).
    pub fn parse(url: &str) -> Result<RedisTarget> {
        let mut params = UrlParams::parse("Redis", url)?;
        let bad = |why: &str| Error::new(ErrorKind::Config, format!("bad Redis URL {:?}: {why}", redact_url(url)));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("expected redis://HOST:PORT"))?;
        let (cluster, tls) = match scheme {
            "redis" => (false, false),
            "rediss" => (false, true),
            "redis+cluster" => (true, false),
            "rediss+cluster" => (true, true),
            _ => return Err(bad("the scheme must be redis://, rediss://, redis+cluster:// or rediss+cluster://")),
        };
        let rest = rest.split(['?', '#']).next().unwrap_or(rest);
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((user, rest)) => (Some(user), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        if cluster && !path.is_empty() {
            return Err(bad("a Cluster has only database 0; drop the /DB path"));
        }
        if !path.is_empty() && path.parse::<u32>().is_err() {
            return Err(bad("the path must be a database number"));
        }
        let hosts: Vec<&str> = hosts.split(',').collect();
        if hosts.iter().any(|h| h.is_empty()) {
            return Err(bad("a host is missing"));
        }
        if !cluster && hosts.len() > 1 {
            return Err(bad("several hosts need redis+cluster://"));
        }
        let node_scheme = if tls { "rediss" } else { "redis" };
        let auth = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        let db = if path.is_empty() { String::new() } else { format!("/{path}") };
        let mut nodes = Vec::with_capacity(hosts.len());
        for host in hosts {
            let node = format!("{node_scheme}://{auth}{host}{db}");
            let parsed =
                url::Url::parse(&node).map_err(|e| bad(&format!("the node {host:?} is not host:port ({e})")))?;
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(bad("a host is missing"));
            }
            // A port, when given, is 1 to 65535 in plain digits (no port: 6379).
            let port = match host.rsplit_once(']') {
                Some((_, after)) => after.strip_prefix(':'),
                None => host.rsplit_once(':').map(|(_, port)| port),
            };
            if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) || parsed.port() == Some(0)
            {
                return Err(bad("a port must be a number from 1 to 65535"));
            }
            nodes.push(node);
        }
        let prefix = params.text("prefix");
        let shards = params.number::<u16>("shards", "a number from 1 to 65535")?;
        if shards == Some(0) {
            return Err(bad("shards must be a number from 1 to 65535"));
        }
        let connect_timeout = params.duration("connect_timeout")?.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let response_timeout = params.duration("response_timeout")?.unwrap_or(DEFAULT_RESPONSE_TIMEOUT);
        let ca = params.text("ca").map(PathBuf::from);
        if ca.is_some() && !tls {
            return Err(bad("ca needs TLS: use rediss:// (or rediss+cluster://)"));
        }
        params.finish()?;
        Ok(RedisTarget { nodes, cluster, tls, ca, prefix, shards, connect_timeout, response_timeout })
    }

    /// The certificate authorities of the `ca` file, for the client to trust.
    pub(crate) fn certificates(&self) -> Result<Option<redis::TlsCertificates>> {
        let Some(path) = &self.ca else { return Ok(None) };
        let pem = std::fs::read(path).map_err(|e| {
            Error::new(ErrorKind::Config, format!("cannot read the Redis CA file {}", path.display())).with_source(e)
        })?;
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            return Err(Error::new(
                ErrorKind::Config,
                format!("the Redis CA file {} holds no PEM certificate", path.display()),
            ));
        }
        Ok(Some(redis::TlsCertificates { client_tls: None, root_cert: Some(pem) }))
    }
}

/// Shows the node URLs with their credentials redacted.
impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(|n| redact_url(n)).collect();
        f.debug_struct("RedisTarget")
            .field("nodes", &nodes)
            .field("cluster", &self.cluster)
            .field("tls", &self.tls)
            .field("ca", &self.ca)
            .field("prefix", &self.prefix)
            .field("shards", &self.shards)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_targets() {
        let t = RedisTarget::parse("redis://127.0.0.1:6391").unwrap();
        assert_eq!(
            t,
            RedisTarget {
                nodes: vec!["redis://127.0.0.1:6391".into()],
                cluster: false,
                tls: false,
                ca: None,
                prefix: None,
                shards: None,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            }
        );
        let t = RedisTarget::parse("redis://u:p@h:1/3?prefix=app:&shards=4").unwrap();
        assert_eq!(t.nodes, vec!["redis://u:p@h:1/3"]);
        assert_eq!((t.prefix.as_deref(), t.shards), (Some("app:"), Some(4)));
        let t = RedisTarget::parse("redis://h:1?prefix=a%26b%3D").unwrap();
        assert_eq!(t.prefix.as_deref(), Some("a&b="));
        let t = RedisTarget::parse("redis+cluster://a:1,b:2").unwrap();
        assert!(t.cluster && !t.tls);
        assert_eq!(t.nodes, vec!["redis://a:1", "redis://b:2"]);
        let t =
            RedisTarget::parse("rediss+cluster://u:p@a:1,b:2?ca=/etc/ca.pem&connect_timeout=250ms&response_timeout=1m")
                .unwrap();
        assert!(t.cluster && t.tls);
        assert_eq!(t.nodes, vec!["rediss://u:p@a:1", "rediss://u:p@b:2"]);
        assert_eq!(t.ca, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!((t.connect_timeout, t.response_timeout), (Duration::from_millis(250), Duration::from_secs(60)));
    }

    #[test]
    fn malformed_urls_are_config_errors() {
        for url in [
            "redis:/x",
            "http://h:1",
            "redis://a:1,b:2",
            "redis+cluster://a:1/2",
            "redis://h:1/db",
            "redis://h:1?shards=0x",
            "redis://h:1?shards=0",
            "redis://h:1?color=red",
            "redis+cluster://a:1,,b:2",
            "redis://h:1?prefix=a&prefix=b",
            "redis://h:1?shards=1&shards=2",
            "redis://h:0",
            "redis://h:99999",
            "redis://h:+1",
            "redis+cluster://a:1,b:65536",
            "redis://[::1]:0",
            "redis://h:",
            "redis://h:1?prefix=%zz",
            "redis://h:1?prefix=%4",
            "redis://h:1?ca=/etc/ca.pem",
            "rediss://h:1?connect_timeout=0s",
            "rediss://h:1?response_timeout=5",
            "rediss://h:1?insecure=true",
        ] {
            let e = RedisTarget::parse(url).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{url}");
            assert!(e.to_string().contains(url), "{url}: {e}");
        }
        let t = RedisTarget::parse("redis+cluster://u:hunter2@a:1,b:2").unwrap();
        assert!(!format!("{t:?}").contains("hunter2"), "{t:?}");
        assert!(RedisTarget::parse("redis://[::1]:6379").is_ok());
        for no_port in ["redis://localhost", "redis://[::1]", "rediss://u:p@cache.example.net"] {
            assert!(RedisTarget::parse(no_port).is_ok(), "{no_port}: the default port");
        }
        let t = RedisTarget::parse("redis://h:1?prefix=a+b").unwrap();
        assert_eq!(t.prefix.as_deref(), Some("a+b"), "a plus in a prefix stays a plus");
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = std::env::temp_dir().join(format!("counters-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ca.pem");
        std::fs::write(&file, "not a certificate").unwrap();
        let t = RedisTarget::parse(&format!("rediss://h:1?ca={}", file.display())).unwrap();
        let e = t.certificates().err().expect("refused");
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
        let t = RedisTarget::parse(&format!("rediss://h:1?ca={}", dir.join("missing.pem").display())).unwrap();
        let e = t.certificates().err().expect("refused");
        assert!(e.to_string().contains("cannot read the Redis CA file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
