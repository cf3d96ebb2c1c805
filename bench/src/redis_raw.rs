//! Baseline 5: raw redis-rs `HINCRBY`s, one per increment, from the same
//! tasks over the same kind of connection the Redis cache uses (one
//! multiplexed `ConnectionManager` on a standalone server, one
//! cluster-async connection on a Cluster). This is what a hand-written
//! counter on Redis costs with nothing else attached; the library's Redis
//! cache is compared with it.
//!
//! Also here: reading the server's own accounting (`INFO commandstats`)
//! before and after a phase (see [`crate::server_work`]).

use std::future::Future;

use counters::redis::RedisTarget;
use redis::aio::ConnectionManager;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;

use crate::driver::IncrTarget;
use crate::server_work::CommandStats;

/// The connection of the raw baseline.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Raw `HINCRBY <prefix><name> t <delta>` per increment.
pub struct RedisRawBaseline {
    conn: Connection,
    keys: Vec<String>,
}

impl std::fmt::Debug for RedisRawBaseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRawBaseline").field("keys", &self.keys.len()).finish()
    }
}

fn target_of(url: &str) -> Result<RedisTarget, String> {
    // The library's parser, so both sides reach the same nodes.
    RedisTarget::parse(url).map_err(|e| e.to_string())
}

impl RedisRawBaseline {
    /// Connects to the server or Cluster of `url`; the hashes are named
    /// after `names`.
    pub async fn connect(url: &str, names: &[String]) -> Result<RedisRawBaseline, String> {
        let target = target_of(url)?;
        let failed = |e: redis::RedisError| format!("cannot connect to Redis for the raw baseline: {e}");
        let conn = if target.cluster {
            let client = ClusterClientBuilder::new(target.nodes.clone()).retries(0).build().map_err(failed)?;
            Connection::Cluster(client.get_async_connection().await.map_err(failed)?)
        } else {
            let client = redis::Client::open(target.nodes[0].as_str()).map_err(failed)?;
            Connection::Single(ConnectionManager::new(client).await.map_err(failed)?)
        };
        Ok(RedisRawBaseline { conn, keys: names.to_vec() })
    }

    /// Deletes the baseline's hashes.
    pub async fn clean_up(&self) -> Result<(), String> {
        for chunk in self.keys.chunks(500) {
            for key in chunk {
                // One key per DEL: in a Cluster the keys live in many slots.
                let cmd = redis::cmd("DEL").arg(key).clone();
                let done: Result<i64, _> = match &self.conn {
                    Connection::Single(c) => cmd.query_async(&mut c.clone()).await,
                    Connection::Cluster(c) => cmd.query_async(&mut c.clone()).await,
                };
                done.map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

impl IncrTarget for RedisRawBaseline {
    fn incr(&self, key: usize, delta: i64) -> impl Future<Output = Result<(), String>> + Send {
        let mut cmd = redis::cmd("HINCRBY");
        cmd.arg(&self.keys[key]).arg("t").arg(delta);
        let conn = self.conn.clone();
        async move {
            let total: Result<i64, _> = match conn {
                Connection::Single(mut c) => cmd.query_async(&mut c).await,
                Connection::Cluster(mut c) => cmd.query_async(&mut c).await,
            };
            total.map(|_| ()).map_err(|e| e.to_string())
        }
    }
}

/// Reads `INFO commandstats` of every node `url` names, summed.
pub async fn read_commandstats(url: &str) -> Result<CommandStats, String> {
    let target = target_of(url)?;
    let mut stats = CommandStats::default();
    for node in &target.nodes {
        let client = redis::Client::open(node.as_str()).map_err(|e| e.to_string())?;
        let mut conn = client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
        let text: String =
            redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.map_err(|e| e.to_string())?;
        stats.add_info(&text);
        let cpu: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await.map_err(|e| e.to_string())?;
        stats.add_cpu(&cpu);
    }
    Ok(stats)
}

/// `used_memory` of `INFO memory`, summed over every node `url` names.
pub async fn used_memory(url: &str) -> Result<u64, String> {
    let target = target_of(url)?;
    let mut used = 0;
    for node in &target.nodes {
        let client = redis::Client::open(node.as_str()).map_err(|e| e.to_string())?;
        let mut conn = client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
        let text: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await.map_err(|e| e.to_string())?;
        used += text
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or("no used_memory in INFO memory")?;
    }
    Ok(used)
}
