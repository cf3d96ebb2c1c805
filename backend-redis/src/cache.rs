//! The shared Redis cache.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Display;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use counter_core::testing::{CacheFaults, CachePart};
use counter_core::{
    Batch, BatchEntry, BatchId, CacheCapabilities, CacheIncr, CacheLayer, CacheStats, CachedValue, Cell, DirtyCell,
    Error, ErrorKind, Key, Result, SliceId, now_ms,
};
use futures_util::future::try_join_all;
use redis::{FromRedisValue, Script};

use crate::cache_layout::{Layout, field_suffix, member, parse_member};
use crate::cache_scripts::Scripts;
use crate::connection::{RedisConn, RedisTarget, map_err};

/// How a [`RedisCache`] lays out its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisCacheOptions {
    /// Prefix of every key the cache writes (default `counters:`); no braces.
    pub prefix: String,
    /// Number of hash tags counters are spread over. `None` (the default)
    /// means 1 on a standalone server and 64 on a Cluster. Every process
    /// sharing the cache must use the same value: changing it moves
    /// counters to other keys, and pending deltas left under the old layout
    /// are not flushed.
    pub shards: Option<u16>,
    /// How long a tombstone left by a recovering flusher lives: longer than
    /// any claim can take to record (default one hour).
    pub tombstone_ttl: Duration,
}

impl Default for RedisCacheOptions {
    fn default() -> Self {
        RedisCacheOptions { prefix: "counters:".into(), shards: None, tombstone_ttl: Duration::from_secs(3600) }
    }
}

impl RedisCacheOptions {
    /// The defaults with another key prefix.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        RedisCacheOptions { prefix: prefix.into(), ..Self::default() }
    }

    /// These options with `shards` hash tags.
    pub fn shards(mut self, shards: u16) -> Self {
        self.shards = Some(shards);
        self
    }
}

/// A cache layer in Redis, standalone or Cluster, shared by every process
/// that uses the same server and prefix.
///
/// - An increment is one script call: it adds to the counter's total and
///   returns the new total across all processes (the "reads see writes" guarantee).
/// - Counters are spread over hash tags (see [`RedisCacheOptions::shards`]);
///   everything about one counter lives in one hash slot, and operations on
///   many cells are split by tag.
/// - A claim moves pending deltas into a part record in each tag it touches,
///   atomically per tag, under the batch identity. Another process recovers
///   the claims of a flusher that died. Before anyone but its maker applies a
///   claim, the claim is frozen: every tag gets its part read or a tombstone
///   that stops the maker from adding one, so maker and recoverer always
///   apply the same batch.
/// - A counter whose hash was lost (eviction, `FLUSHALL`, a restart without
///   persistence) reports [`CacheIncr::Missing`] and is reloaded from the
///   store; a half-lost hash counts as lost.
#[derive(Debug)]
pub struct RedisCache {
    conn: RedisConn,
    layout: Layout,
    scripts: Scripts,
    cluster: bool,
    tombstone_ttl_ms: u64,
    /// Tags holding parts of claims this process knows, for `ack`.
    parts: Mutex<HashMap<BatchId, Vec<usize>>>,
}

impl RedisCache {
    /// Connects to the server or Cluster a `redis://` or `redis+cluster://`
    /// URL names (see [`RedisTarget`]), with default options.
    pub async fn connect(url: &str) -> Result<RedisCache> {
        RedisCache::connect_with(RedisTarget::parse(url)?, RedisCacheOptions::default()).await
    }

    /// Connects to `target`. The URL's `prefix` and `shards` parameters, if
    /// given, override `options`.
    pub async fn connect_with(target: RedisTarget, mut options: RedisCacheOptions) -> Result<RedisCache> {
        if let Some(prefix) = &target.prefix {
            options.prefix = prefix.clone();
        }
        if target.shards.is_some() {
            options.shards = target.shards;
        }
        let shards = options.shards.unwrap_or(if target.cluster { 64 } else { 1 });
        let layout = Layout::new(&options.prefix, shards)?;
        let conn = RedisConn::connect(&target).await?;
        let cache = RedisCache {
            conn,
            layout,
            scripts: Scripts::new(),
            cluster: target.cluster,
            tombstone_ttl_ms: options.tombstone_ttl.as_millis().max(1) as u64,
            parts: Mutex::new(HashMap::new()),
        };
        let _: String = redis::cmd("PING").query_async(&mut cache.conn.clone()).await.map_err(map_err)?;
        Ok(cache)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        self.layout.prefix()
    }

    /// Number of hash tags counters are spread over.
    pub fn shards(&self) -> usize {
        self.layout.shards()
    }

    async fn invoke<T: FromRedisValue>(&self, script: &Script, keys: &[String], args: &[String]) -> Result<T> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        invocation.invoke_async(&mut self.conn.clone()).await.map_err(map_err)
    }

    async fn query<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T> {
        pipe.query_async(&mut self.conn.clone()).await.map_err(map_err)
    }

    fn remember_parts(&self, id: BatchId, shards: Vec<usize>) {
        self.parts.lock().expect("parts lock").insert(id, shards);
    }

    /// Freezes a claim and reads it whole (see the type's docs). `None` if
    /// no part of it is left.
    async fn freeze(&self, id: BatchId) -> Result<Option<Batch>> {
        let text = id.to_string();
        let ttl = self.tombstone_ttl_ms.to_string();
        let parts: Vec<Vec<String>> = try_join_all((0..self.layout.shards()).map(|shard| {
            let keys = [self.layout.claim(shard, &text)];
            let args = [ttl.clone()];
            async move { self.invoke::<Vec<String>>(&self.scripts.freeze, &keys, &args).await }
        }))
        .await?;
        let mut batch = Batch::claimed(id, Vec::new());
        let mut shards = Vec::new();
        for (shard, part) in parts.iter().enumerate() {
            if !part.is_empty() {
                shards.push(shard);
            }
            for pair in part.chunks(2) {
                let [cell, marks] = pair else { continue };
                let (old, new) = marks.split_once(' ').ok_or_else(|| corrupt(cell, marks))?;
                batch.entries.push(BatchEntry { cell: parse_member(cell)?, delta: delta(old, new, cell)? });
            }
        }
        if batch.is_empty() {
            // Nothing left (acknowledged meanwhile): drop the index entries.
            self.ack(id).await?;
            return Ok(None);
        }
        self.remember_parts(id, shards);
        Ok(Some(batch))
    }

    /// Batch ids indexed in `shards`, made at or before `cutoff_ms`.
    async fn claim_ids(&self, shards: impl Iterator<Item = usize>, cutoff_ms: u64) -> Result<BTreeSet<BatchId>> {
        let lists: Vec<Vec<String>> = try_join_all(shards.map(|shard| {
            let cmd = redis::cmd("ZRANGEBYSCORE").arg(self.layout.claims(shard)).arg("-inf").arg(cutoff_ms).clone();
            async move { cmd.query_async::<Vec<String>>(&mut self.conn.clone()).await.map_err(map_err) }
        }))
        .await?;
        lists.into_iter().flatten().map(|id| id.parse::<BatchId>().map_err(|_| corrupt("claims", &id))).collect()
    }

    /// Cells grouped by shard, each once, in the order first seen.
    fn by_shard<'a>(&self, cells: impl Iterator<Item = &'a Cell>) -> Vec<(usize, Vec<&'a Cell>)> {
        let mut groups: Vec<(usize, Vec<&Cell>)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for cell in cells {
            if !seen.insert(cell) {
                continue;
            }
            let shard = self.layout.shard_of(cell.key());
            match groups.iter_mut().find(|(s, _)| *s == shard) {
                Some((_, group)) => group.push(cell),
                None => groups.push((shard, vec![cell])),
            }
        }
        groups
    }

    /// Runs the slices script for one shard's slices, adding `delta`.
    async fn add_to_slices(&self, shard: usize, slices: &[&SliceId], delta: i64) -> Result<Option<usize>> {
        let mut keys = vec![self.layout.dirty(shard)];
        let undo: Vec<String> =
            if delta == i64::MIN { vec![i64::MAX.to_string(), "1".into()] } else { vec![(-delta).to_string()] };
        let mut args = vec![delta.to_string(), now_ms().to_string(), undo.len().to_string()];
        args.extend(undo);
        for slice in slices {
            let cell = Cell::Slice((*slice).clone());
            keys.push(self.layout.slice_hash(&slice.key));
            args.push(field_suffix(&cell));
            args.push(member(&cell));
        }
        let reply: Vec<String> = self.invoke(&self.scripts.slices, &keys, &args).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(None),
            Some("overflow") => Ok(Some(reply.get(1).and_then(|i| i.parse::<usize>().ok()).unwrap_or(1) - 1)),
            _ => Err(corrupt("slices", &format!("{reply:?}"))),
        }
    }
}

fn corrupt(what: impl Display, value: &str) -> Error {
    Error::new(ErrorKind::Permanent, format!("the Redis cache holds something it did not write: {what} = {value:?}"))
}

fn num(text: &str, key: impl Display) -> Result<i64> {
    text.parse().map_err(|_| corrupt(key, text))
}

/// The delta between two flushed marks, which the claim script keeps
/// within the i64 range.
fn delta(old: &str, new: &str, cell: &str) -> Result<i64> {
    let d = i128::from(num(new, cell)?) - i128::from(num(old, cell)?);
    i64::try_from(d).map_err(|_| corrupt(cell, &format!("{old} {new}")))
}

fn overflow(key: &Key) -> Error {
    Error::new(ErrorKind::Overflow, "the total would leave the signed 64-bit range").with_key(key)
}

#[async_trait]
impl CacheLayer for RedisCache {
    fn capabilities(&self) -> CacheCapabilities {
        let mut caps = CacheCapabilities::new(if self.cluster { "redis-cluster" } else { "redis" });
        caps.shared = true;
        caps.atomic_claim = true;
        caps.durable_claims = true;
        caps.max_claim = 1_000;
        caps
    }

    async fn incr(&self, key: &Key, delta: i64) -> Result<CacheIncr> {
        let shard = self.layout.shard_of(key);
        let keys = [self.layout.counter_hash(key), self.layout.dirty(shard)];
        let args = [delta.to_string(), now_ms().to_string(), member(&Cell::Counter(key.clone()))];
        let reply: Vec<String> = self.invoke(&self.scripts.incr, &keys, &args).await.map_err(|e| e.with_key(key))?;
        match reply.as_slice() {
            [status] if status == "missing" => Ok(CacheIncr::Missing),
            [status] if status == "overflow" => Err(overflow(key)),
            [status, total, flushed] if status == "ok" => {
                let (total, flushed) = (num(total, key)?, num(flushed, key)?);
                Ok(CacheIncr::Applied { total, pending: i128::from(total) - i128::from(flushed) })
            }
            _ => Err(corrupt(key, &format!("{reply:?}"))),
        }
    }

    async fn load(&self, key: &Key, durable: i64, extra: i64) -> Result<i64> {
        let total = durable.checked_add(extra).ok_or_else(|| overflow(key))?;
        let shard = self.layout.shard_of(key);
        let keys = [self.layout.counter_hash(key), self.layout.dirty(shard)];
        let args = [
            total.to_string(),
            durable.to_string(),
            now_ms().to_string(),
            member(&Cell::Counter(key.clone())),
            if extra != 0 { "1".into() } else { "0".into() },
        ];
        let reply: String = self.invoke(&self.scripts.load, &keys, &args).await.map_err(|e| e.with_key(key))?;
        num(&reply, key)
    }

    async fn incr_slices(&self, slices: &[SliceId], delta: i64) -> Result<()> {
        if delta == 0 || slices.is_empty() {
            return Ok(());
        }
        let mut groups: Vec<(usize, Vec<&SliceId>)> = Vec::new();
        for slice in slices {
            let shard = self.layout.shard_of(&slice.key);
            match groups.iter_mut().find(|(s, _)| *s == shard) {
                Some((_, group)) => group.push(slice),
                None => groups.push((shard, vec![slice])),
            }
        }
        // Each shard's slices change atomically; a later shard's overflow
        // undoes the earlier shards, so the call is all or nothing.
        for (done, (shard, group)) in groups.iter().enumerate() {
            let failed = self.add_to_slices(*shard, group, delta).await?;
            if let Some(index) = failed {
                for (shard, group) in &groups[..done] {
                    let steps: &[i64] = if delta == i64::MIN { &[i64::MAX, 1] } else { &[-delta] };
                    for step in steps {
                        self.add_to_slices(*shard, group, *step).await?;
                    }
                }
                let key = group.get(index).map(|s| &s.key).unwrap_or(&group[0].key);
                return Err(overflow(key));
            }
        }
        Ok(())
    }

    async fn set(&self, key: &Key, total: i64) -> Result<Option<i64>> {
        let shard = self.layout.shard_of(key);
        let keys = [self.layout.counter_hash(key), self.layout.dirty(shard)];
        let args = [total.to_string(), now_ms().to_string(), member(&Cell::Counter(key.clone()))];
        let reply: Vec<String> = self.invoke(&self.scripts.set, &keys, &args).await.map_err(|e| e.with_key(key))?;
        match reply.as_slice() {
            [status] if status == "missing" => Ok(None),
            [status, old] if status == "ok" => Ok(Some(num(old, key)?)),
            _ => Err(corrupt(key, &format!("{reply:?}"))),
        }
    }

    async fn rebase(&self, key: &Key, flushed: i64, shift: i64) -> Result<bool> {
        let keys = [self.layout.counter_hash(key)];
        let args = [flushed.to_string(), shift.to_string()];
        let reply: Vec<String> = self.invoke(&self.scripts.rebase, &keys, &args).await.map_err(|e| e.with_key(key))?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(true),
            Some("moved") => Ok(false),
            Some("overflow") => {
                Err(Error::new(ErrorKind::Overflow, "the rebased total would leave the signed 64-bit range")
                    .with_key(key))
            }
            _ => Err(corrupt(key, &format!("{reply:?}"))),
        }
    }

    async fn get_many(&self, cells: &[Cell]) -> Result<Vec<Option<CachedValue>>> {
        let groups = self.by_shard(cells.iter());
        let replies: Vec<Vec<(Option<String>, Option<String>)>> = try_join_all(groups.iter().map(|(_, group)| {
            let mut pipe = redis::pipe();
            for cell in group {
                let suffix = field_suffix(cell);
                pipe.cmd("HMGET").arg(self.layout.hash_of(cell)).arg(format!("t{suffix}")).arg(format!("f{suffix}"));
            }
            async move { self.query(&pipe).await }
        }))
        .await?;
        let mut found: HashMap<&Cell, CachedValue> = HashMap::new();
        for ((_, group), reply) in groups.iter().zip(replies) {
            for (cell, (total, flushed)) in group.iter().zip(reply) {
                if let (Some(total), Some(flushed)) = (total, flushed) {
                    let (total, flushed) = (num(&total, cell)?, num(&flushed, cell)?);
                    let pending = i128::from(total) - i128::from(flushed);
                    let total = match cell {
                        Cell::Counter(_) => total,
                        // A slice's "total" is its pending delta (the cache holds no base for slices).
                        Cell::Slice(_) => i64::try_from(pending).unwrap_or(total),
                    };
                    found.insert(cell, CachedValue { total, pending });
                }
            }
        }
        Ok(cells.iter().map(|cell| found.get(cell).copied()).collect())
    }

    async fn remove(&self, key: &Key) -> Result<()> {
        let shard = self.layout.shard_of(key);
        let keys = [self.layout.counter_hash(key), self.layout.slice_hash(key), self.layout.dirty(shard)];
        let args = [member(&Cell::Counter(key.clone())), key.to_string()];
        let _: i64 = self.invoke(&self.scripts.remove, &keys, &args).await.map_err(|e| e.with_key(key))?;
        Ok(())
    }

    async fn dirty(&self, dirty_before_ms: u64, limit: usize) -> Result<Vec<DirtyCell>> {
        let lists: Vec<Vec<(String, f64)>> = try_join_all((0..self.layout.shards()).map(|shard| {
            let cmd = redis::cmd("ZRANGEBYSCORE")
                .arg(self.layout.dirty(shard))
                .arg("-inf")
                .arg(dirty_before_ms)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(limit.min(i64::MAX as usize))
                .clone();
            async move { cmd.query_async::<Vec<(String, f64)>>(&mut self.conn.clone()).await.map_err(map_err) }
        }))
        .await?;
        let mut listed: Vec<(String, f64)> = lists.into_iter().flatten().collect();
        listed.sort_by(|a, b| a.1.total_cmp(&b.1));
        listed.truncate(limit);
        let cells = listed.iter().map(|(m, _)| parse_member(m)).collect::<Result<Vec<_>>>()?;
        let values = self.get_many(&cells).await?;
        Ok(cells
            .into_iter()
            .zip(listed)
            .zip(values)
            .filter_map(|((cell, (_, since)), value)| {
                value.map(|v| DirtyCell { cell, pending: v.pending, dirty_since_ms: since as u64 })
            })
            .collect())
    }

    async fn claim(&self, id: BatchId, cells: &[Cell]) -> Result<Batch> {
        let text = id.to_string();
        let (created, now) = (id.created_ms().to_string(), now_ms().to_string());
        let groups = self.by_shard(cells.iter());
        let replies: Vec<Vec<String>> = try_join_all(groups.iter().map(|(shard, group)| {
            let mut keys =
                vec![self.layout.claim(*shard, &text), self.layout.claims(*shard), self.layout.dirty(*shard)];
            let mut args = vec![text.clone(), created.clone(), now.clone()];
            for cell in group {
                keys.push(self.layout.hash_of(cell));
                args.push(field_suffix(cell));
                args.push(member(cell));
            }
            async move { self.invoke::<Vec<String>>(&self.scripts.claim, &keys, &args).await }
        }))
        .await?;
        let mut batch = Batch::claimed(id, Vec::new());
        let mut shards = Vec::new();
        for ((shard, _), reply) in groups.iter().zip(replies) {
            match reply.first().map(String::as_str) {
                // A recovering flusher froze this claim first: these cells stay pending.
                Some("refused") => continue,
                Some("ok") => {}
                _ => return Err(corrupt("claim", &format!("{reply:?}"))),
            }
            if reply.len() > 1 {
                shards.push(*shard);
            }
            for triple in reply[1..].chunks(3) {
                let [cell, old, new] = triple else { return Err(corrupt("claim", &format!("{reply:?}"))) };
                batch.entries.push(BatchEntry { cell: parse_member(cell)?, delta: delta(old, new, cell)? });
            }
        }
        if !shards.is_empty() {
            self.remember_parts(id, shards);
        }
        Ok(batch)
    }

    async fn ack(&self, id: BatchId) -> Result<()> {
        let shards = self.parts.lock().expect("parts lock").remove(&id);
        let shards = shards.unwrap_or_else(|| (0..self.layout.shards()).collect());
        let text = id.to_string();
        try_join_all(shards.into_iter().map(|shard| {
            let keys = [self.layout.claim(shard, &text), self.layout.claims(shard)];
            let args = [text.clone()];
            async move { self.invoke::<i64>(&self.scripts.ack, &keys, &args).await }
        }))
        .await?;
        Ok(())
    }

    async fn claims(&self, older_than_ms: u64) -> Result<Vec<Batch>> {
        let cutoff = now_ms().saturating_sub(older_than_ms);
        let mut out = Vec::new();
        for id in self.claim_ids(0..self.layout.shards(), cutoff).await? {
            if let Some(batch) = self.freeze(id).await? {
                out.push(batch);
            }
        }
        Ok(out)
    }

    async fn claims_for(&self, keys: &[Key]) -> Result<Vec<Batch>> {
        let shards: BTreeSet<usize> = keys.iter().map(|k| self.layout.shard_of(k)).collect();
        let wanted: std::collections::HashSet<&Key> = keys.iter().collect();
        let mut out = Vec::new();
        for id in self.claim_ids(shards.iter().copied(), u64::MAX).await? {
            // Only claims with a cell of these keys: read the parts in their shards first.
            let mut touches = false;
            for &shard in &shards {
                let cells: Vec<String> = redis::cmd("HKEYS")
                    .arg(self.layout.claim(shard, &id.to_string()))
                    .query_async(&mut self.conn.clone())
                    .await
                    .map_err(map_err)?;
                touches |= cells.iter().filter_map(|m| parse_member(m).ok()).any(|cell| wanted.contains(cell.key()));
            }
            if touches {
                out.extend(self.freeze(id).await?);
            }
        }
        Ok(out)
    }

    async fn stats(&self) -> Result<CacheStats> {
        let per_shard: Vec<(u64, Vec<(String, f64)>, Vec<String>)> =
            try_join_all((0..self.layout.shards()).map(|shard| {
                let mut pipe = redis::pipe();
                pipe.cmd("ZCARD").arg(self.layout.dirty(shard));
                pipe.cmd("ZRANGE").arg(self.layout.dirty(shard)).arg(0).arg(0).arg("WITHSCORES");
                pipe.cmd("ZRANGE").arg(self.layout.claims(shard)).arg(0).arg(-1);
                async move { self.query(&pipe).await }
            }))
            .await?;
        let mut stats = CacheStats::default();
        // A claim has a part in each tag it touched: count it once.
        let mut claims = std::collections::HashSet::new();
        for (dirty, oldest, ids) in per_shard {
            stats.dirty_cells += dirty;
            claims.extend(ids);
            if let Some((_, since)) = oldest.first() {
                let since = *since as u64;
                stats.oldest_dirty_ms = Some(stats.oldest_dirty_ms.map_or(since, |o| o.min(since)));
            }
        }
        stats.open_claims = claims.len() as u64;
        Ok(stats)
    }
}

#[async_trait]
impl CacheFaults for RedisCache {
    /// Deletes every key of this cache (its prefix), claims included, as
    /// `FLUSHALL` would, without touching other users of the server.
    async fn lose_everything(&self) -> Result<()> {
        for shard in 0..self.layout.shards() {
            let pattern = self.layout.shard_pattern(shard);
            let node_key = self.layout.dirty(shard);
            let mut cursor: u64 = 0;
            loop {
                let cmd = redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).clone();
                let (next, keys): (u64, Vec<String>) = self.conn.query_on_node_of(node_key.as_bytes(), cmd).await?;
                if !keys.is_empty() {
                    // Every key of a shard shares its hash tag, so one DEL serves them all.
                    let _: i64 =
                        redis::cmd("DEL").arg(&keys).query_async(&mut self.conn.clone()).await.map_err(map_err)?;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        self.parts.lock().expect("parts lock").clear();
        Ok(())
    }

    /// Deletes one field of the counter's hash, as a partial loss would.
    async fn lose_part(&self, key: &Key, part: CachePart) -> Result<()> {
        let field = match part {
            CachePart::Total => "t",
            CachePart::FlushedMark => "f",
        };
        let _: i64 = redis::cmd("HDEL")
            .arg(self.layout.counter_hash(key))
            .arg(field)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
