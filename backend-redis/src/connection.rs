//! Connections: one reconnecting multiplexed connection to a standalone
//! server, or a Cluster connection, over TCP or TLS; and how Redis errors
//! map onto the library's error kinds.

use std::time::Duration;

use crate::target::RedisTarget;
use counter_core::{Error, ErrorKind, Result};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};

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

impl RedisConn {
    /// Connects to `target`. A server that does not answer is
    /// [`Unavailable`](ErrorKind::Unavailable); a refused login, or a TLS
    /// certificate that is not trusted, is [`Permanent`](ErrorKind::Permanent).
    pub(crate) async fn connect(target: &RedisTarget) -> Result<RedisConn> {
        let certificates = target.certificates()?;
        if target.cluster {
            // No client-side retries: a request whose reply was lost would be
            // sent again, and an increment counted twice. Failures surface as
            // transient errors; the engine retries what is safe to retry.
            let mut builder = ClusterClientBuilder::new(target.nodes.clone())
                .retries(0)
                .connection_timeout(target.connect_timeout)
                .response_timeout(target.response_timeout);
            if let Some(certificates) = certificates {
                builder = builder.certs(certificates);
            }
            let client = builder
                .build()
                .map_err(|e| Error::new(ErrorKind::Config, "bad Redis Cluster configuration").with_source(e))?;
            let conn = client.get_async_connection().await.map_err(map_err)?;
            Ok(RedisConn::Cluster(conn))
        } else {
            let client = match certificates {
                Some(certificates) => redis::Client::build_with_tls(target.nodes[0].as_str(), certificates),
                None => redis::Client::open(target.nodes[0].as_str()),
            }
            .map_err(|e| Error::new(ErrorKind::Config, "bad Redis URL").with_source(e))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(target.connect_timeout))
                .set_response_timeout(Some(target.response_timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            let conn = ConnectionManager::new_with_config(client, config).await.map_err(map_err)?;
            Ok(RedisConn::Single(conn))
        }
    }

    /// Sends `cmd` to the node that serves `key`'s slot (any key works for
    /// a standalone server): for commands such as `SCAN` that name no key.
    #[cfg(feature = "testing")]
    pub(crate) async fn query_on_node_of<T: redis::FromRedisValue>(&self, key: &[u8], cmd: Cmd) -> Result<T> {
        match self {
            RedisConn::Single(conn) => cmd.query_async(&mut conn.clone()).await.map_err(map_err),
            RedisConn::Cluster(conn) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
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
    // rustls's verdict on the server's certificate, as the client reports
    // it (on the first connection, a reconnection or a Cluster node's):
    // retrying cannot cure it.
    let text = e.to_string();
    if text.contains("invalid peer certificate") || text.contains("UnknownIssuer") {
        return Error::permanent(
            "the Redis server's TLS certificate is not trusted: give the certificate authority that signed it \
             with ?ca=PATH (a PEM file), or check the host name",
            e,
        );
    }
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
