//! Connections: one reconnecting multiplexed connection to a standalone
//! server, or a Cluster connection; the URL forms that name them; and how
//! Redis errors map onto the library's error kinds.

use std::time::Duration;

use counter_core::{Error, ErrorKind, Result, redact_url};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};

/// Where a Redis backend connects and how its keys are laid out, parsed
/// from a URL:
///
/// - `redis://[user:password@]host:port[/db][?prefix=P&shards=N]`: one server;
/// - `redis+cluster://[user:password@]host:port,host:port,...[?prefix=P&shards=N]`:
///   a Cluster, reached through any of the listed nodes.
///
/// `rediss://` (TLS) is refused: this build carries no TLS stack.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// One `redis://` URL per node to connect through (one for a standalone server).
    pub nodes: Vec<String>,
    /// Whether the nodes form a Cluster.
    pub cluster: bool,
    /// The `prefix` query parameter, if given.
    pub prefix: Option<String>,
    /// The `shards` query parameter, if given.
    pub shards: Option<u16>,
}

impl RedisTarget {
    /// Parses a `redis://` or `redis+cluster://` URL. Anything malformed or
    /// unknown is a [`Config`](ErrorKind::Config) error naming the URL.
    pub fn parse(url: &str) -> Result<RedisTarget> {
        let bad = |why: &str| Error::new(ErrorKind::Config, format!("bad Redis URL {:?}: {why}", redact_url(url)));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("expected redis://HOST:PORT"))?;
        let cluster = match scheme {
            "redis" => false,
            "redis+cluster" => true,
            "rediss" | "rediss+cluster" => return Err(bad("TLS (rediss://) is not compiled into this build")),
            _ => return Err(bad("the scheme must be redis:// or redis+cluster://")),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((user, rest)) => (Some(user), rest),
            None => (None, rest),
        };
        let (hosts, path) = match rest.split_once('/') {
            Some((hosts, path)) => (hosts, path),
            None => (rest, ""),
        };
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
        let nodes = hosts
            .iter()
            .map(|host| {
                let auth = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
                let db = if path.is_empty() { String::new() } else { format!("/{path}") };
                format!("redis://{auth}{host}{db}")
            })
            .collect();
        for host in &hosts {
            let port = match host.rsplit_once(']') {
                Some((_, after)) => after.strip_prefix(':'),
                None => host.rsplit_once(':').map(|(_, port)| port),
            };
            if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0) || !p.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(bad("a port must be a number from 1 to 65535"));
            }
        }
        let mut target = RedisTarget { nodes, cluster, prefix: None, shards: None };
        let mut seen = Vec::new();
        for pair in query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if seen.contains(&name) {
                return Err(bad(&format!("parameter {name:?} is given more than once")));
            }
            seen.push(name);
            match name {
                "prefix" => target.prefix = Some(percent_decode(value).ok_or_else(|| bad("bad %-escape in prefix"))?),
                "shards" => {
                    target.shards = Some(value.parse().map_err(|_| bad("shards must be a number from 1 to 65535"))?)
                }
                _ => return Err(bad(&format!("unknown parameter {name:?} (known: prefix, shards)"))),
            }
        }
        Ok(target)
    }
}

/// Shows the node URLs with their credentials redacted.
impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(|n| redact_url(n)).collect();
        f.debug_struct("RedisTarget")
            .field("nodes", &nodes)
            .field("cluster", &self.cluster)
            .field("prefix", &self.prefix)
            .field("shards", &self.shards)
            .finish()
    }
}

/// Decodes `%XX` escapes (so a prefix may hold `&`, `=` or `?`); `None` if
/// an escape or the result is malformed.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// A connection to a standalone server or a Cluster. Cheap to clone: clones
/// share one multiplexed connection, which reconnects after a failure.
#[derive(Clone)]
pub(crate) enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisConn::Single(_) => "RedisConn::Single",
            RedisConn::Cluster(_) => "RedisConn::Cluster",
        })
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

impl RedisConn {
    /// Connects to `target`. A server that does not answer is
    /// [`Unavailable`](ErrorKind::Unavailable); a refused login is
    /// [`Permanent`](ErrorKind::Permanent).
    pub(crate) async fn connect(target: &RedisTarget) -> Result<RedisConn> {
        if target.cluster {
            // No client-side retries: a request whose reply was lost would be
            // sent again, and an increment counted twice. Failures surface as
            // transient errors; the engine retries what is safe to retry.
            let client = ClusterClientBuilder::new(target.nodes.clone())
                .retries(0)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .build()
                .map_err(|e| Error::new(ErrorKind::Config, "bad Redis Cluster configuration").with_source(e))?;
            let conn = client.get_async_connection().await.map_err(map_err)?;
            Ok(RedisConn::Cluster(conn))
        } else {
            let client = redis::Client::open(target.nodes[0].as_str())
                .map_err(|e| Error::new(ErrorKind::Config, "bad Redis URL").with_source(e))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            let conn = ConnectionManager::new_with_config(client, config).await.map_err(map_err)?;
            Ok(RedisConn::Single(conn))
        }
    }

    /// Sends `cmd` to the node that serves `key`'s slot (any key works for
    /// a standalone server): for commands such as `SCAN` that name no key.
    pub(crate) async fn query_on_node_of<T: redis::FromRedisValue>(&self, key: &[u8], cmd: Cmd) -> Result<T> {
        match self {
            RedisConn::Single(conn) => cmd.query_async(&mut conn.clone()).await.map_err(map_err),
            RedisConn::Cluster(conn) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
                    key,
                    SlotAddr::Master,
                )));
                let value = conn.clone().route_command(cmd, route).await.map_err(map_err)?;
                redis::from_redis_value(value)
                    .map_err(|e| Error::new(ErrorKind::Permanent, "unexpected reply from Redis").with_source(e))
            }
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(conn) => conn.req_packed_command(cmd),
            RedisConn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(conn) => conn.get_db(),
            RedisConn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Maps a Redis error onto the library's kinds: anything about reaching the
/// server (I/O, timeouts, a Cluster that is resharding, failing over or
/// loading) is transient; a refused login, a missing permission or data of
/// the wrong type is permanent.
pub(crate) fn map_err(e: RedisError) -> Error {
    use redis::ErrorKind as K;
    let transient = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            K::Io
                | K::Parse
                | K::ClusterConnectionNotFound
                | K::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::Moved
                        | ServerErrorKind::Ask
                )
        )
        || matches!(e.code(), Some("BUSY" | "OOM" | "LOADING"));
    if transient {
        Error::unavailable("Redis is unavailable", e)
    } else {
        Error::permanent("Redis refused the operation", e)
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
            RedisTarget { nodes: vec!["redis://127.0.0.1:6391".into()], cluster: false, prefix: None, shards: None }
        );
        let t = RedisTarget::parse("redis://u:p@h:1/3?prefix=app:&shards=4").unwrap();
        assert_eq!(t.nodes, vec!["redis://u:p@h:1/3"]);
        assert_eq!((t.prefix.as_deref(), t.shards), (Some("app:"), Some(4)));
        let t = RedisTarget::parse("redis://h:1?prefix=a%26b%3D").unwrap();
        assert_eq!(t.prefix.as_deref(), Some("a&b="));
        let t = RedisTarget::parse("redis+cluster://a:1,b:2").unwrap();
        assert!(t.cluster);
        assert_eq!(t.nodes, vec!["redis://a:1", "redis://b:2"]);
    }

    #[test]
    fn malformed_urls_are_config_errors() {
        for url in [
            "redis:/x",
            "http://h:1",
            "rediss://h:1",
            "redis://a:1,b:2",
            "redis+cluster://a:1/2",
            "redis://h:1/db",
            "redis://h:1?shards=0x",
            "redis://h:1?color=red",
            "redis+cluster://a:1,,b:2",
            "redis://h:1?prefix=%zz",
            "redis://h:1?prefix=%4",
            "redis://h:1?prefix=a&prefix=b",
            "redis://h:1?shards=1&shards=2",
            "redis://h:0",
            "redis://h:99999",
            "redis://h:+1",
            "redis+cluster://a:1,b:65536",
            "redis://[::1]:0",
        ] {
            let e = RedisTarget::parse(url).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{url}");
            assert!(e.to_string().contains(url), "{e}");
        }
        let t = RedisTarget::parse("redis+cluster://u:hunter2@a:1,b:2").unwrap();
        assert!(!format!("{t:?}").contains("hunter2"), "{t:?}");
        assert!(RedisTarget::parse("redis://[::1]:6379").is_ok());
    }
}
