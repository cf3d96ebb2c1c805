//! The shared Redis cache.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
#[cfg(feature = "testing")]
use counter_core::testing::{CacheFaults, CachePart};
use counter_core::{
    Batch, BatchEntry, BatchId, CacheCapabilities, CacheIncr, CacheIncrOnce, CacheLayer, CacheStats, CachedValue, Cell,
    DirtyCell, Error, ErrorKind, Key, Once, Result, SliceId, now_ms,
};
use dashmap::DashMap;
use futures_util::future::try_join_all;
use redis::{FromRedisValue, Script, ToRedisArgs, Value};

use crate::cache_layout::{Layout, field_suffix, member, named_range, parse_member, parse_named};
use crate::cache_scripts::Scripts;
use crate::connection::{RedisConn, map_err};
use crate::target::RedisTarget;

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
    /// How long a counter's registration in the live set lasts (default 30
    /// s). A process registers a counter with its first increment and then
    /// adds with one bare command for half of this; a thorough sweep
    /// forgets a registration only once it is a whole lease old. The other
    /// half is the margin for an increment delayed on its way to the
    /// server. Shorter leases cost more registrations;
    /// longer ones more counters to sweep. At least 100 ms: a shorter one is
    /// a [`Config`](ErrorKind::Config) error at connect.
    pub lease: Duration,
}

impl Default for RedisCacheOptions {
    fn default() -> Self {
        RedisCacheOptions {
            prefix: "counters:".into(),
            shards: None,
            tombstone_ttl: Duration::from_secs(3600),
            lease: Duration::from_secs(30),
        }
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

    /// These options with another lease length (see [`lease`](Self::lease)).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }
}

/// A counter this process registered.
#[derive(Debug)]
struct Lease {
    /// Until when it may send bare adds.
    until: Instant,
    /// Whether it sent one since the last sweep (the counter is then in
    /// `touched`).
    touched: AtomicBool,
}

/// The shortest lease: half of it must leave room for a round trip.
const MIN_LEASE: Duration = Duration::from_millis(100);

/// Registrations between two clean-ups of the expired leases a process
/// remembers.
const LEASE_CLEANUP_EVERY: u64 = 4096;

/// Counters a sweep step reads (`ZSCAN ... COUNT`).
const SWEEP_STEP: usize = 1000;

/// A cache layer in Redis, standalone or Cluster, shared by every process
/// that uses the same server and prefix.
///
/// - An increment returns the counter's new total across all processes (the
///   "reads see writes" guarantee). The first increment of a counter in a
///   process registers it in the shard's live set for a lease (a script);
///   until half the lease has passed, every further increment is one bare
///   `BITFIELD` that adds to the total and reads the state and flushed mark
///   back. A sweep indexes the leased counters with a pending delta as
///   dirty: the counters this process added to (cheap: it keeps a list),
///   and every half lease, or at a flush barrier, every process's (a scan
///   of the live sets, which also forgets registrations a whole lease old),
///   so no increment lands on a counter nobody will look at.
/// - Counters are spread over hash tags (see [`RedisCacheOptions::shards`]);
///   everything about one counter lives in one hash slot, and operations on
///   many cells are split by tag.
/// - A claim moves pending deltas into a part record in each tag it touches,
///   atomically per tag, under the batch identity. Another process recovers
///   the claims of a flusher that died. Before anyone but its maker applies a
///   claim, the claim is frozen: every tag gets its part read or a tombstone
///   that stops the maker from adding one, so maker and recoverer always
///   apply the same batch.
/// - A counter whose string was lost (eviction, `FLUSHALL`, a restart without
///   persistence) reports [`CacheIncr::Missing`] and is reloaded from the
///   store. A bare increment that finds no loaded counter takes its delta
///   back at once (unless a reload took it in meanwhile), so a lost counter
///   is never turned into a wrong total.
#[derive(Debug)]
pub struct RedisCache {
    conn: RedisConn,
    layout: Layout,
    scripts: Scripts,
    cluster: bool,
    tombstone_ttl_ms: u64,
    lease: Duration,
    /// The counters this process may add to with a bare `BITFIELD` (looked
    /// up on every increment: foldhash, seeded per process).
    leases: DashMap<Key, Arc<Lease>, foldhash::fast::RandomState>,
    registrations: AtomicU64,
    /// Leased counters with bare adds since the last sweep, each once.
    touched: Mutex<Vec<Key>>,
    /// When the live sets were last swept in full.
    last_full_sweep: Mutex<Option<Instant>>,
    /// When this process last swept its own bare adds.
    last_own_sweep: Mutex<Instant>,
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
        if options.lease < MIN_LEASE {
            return Err(Error::new(
                ErrorKind::Config,
                format!("the Redis cache's lease is {:?}; it must be at least {MIN_LEASE:?}", options.lease),
            ));
        }
        let conn = RedisConn::connect(&target).await?;
        let cache = RedisCache {
            conn,
            layout,
            scripts: Scripts::new(),
            cluster: target.cluster,
            tombstone_ttl_ms: options.tombstone_ttl.as_millis().max(1) as u64,
            lease: options.lease,
            leases: DashMap::default(),
            registrations: AtomicU64::new(0),
            touched: Mutex::new(Vec::new()),
            last_full_sweep: Mutex::new(None),
            last_own_sweep: Mutex::new(Instant::now()),
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

    async fn invoke<T: FromRedisValue, A: ToRedisArgs>(
        &self,
        script: &Script,
        keys: &[String],
        args: &[A],
    ) -> Result<T> {
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

    async fn command<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        cmd.query_async(&mut self.conn.clone()).await.map_err(map_err)
    }

    /// This process's lease on `key`, if it holds one: it may add with a
    /// bare `BITFIELD`.
    fn lease_of(&self, key: &Key) -> Option<Arc<Lease>> {
        self.leases.get(key).filter(|lease| Instant::now() < lease.until).map(|lease| lease.clone())
    }

    /// A bare add under `lease` landed on a loaded counter: noted for the
    /// next sweep of this process's own. (Noted after the reply, so an add
    /// that lands after a sweep read the counter is noted after that sweep
    /// cleared the note.)
    fn note_bare_add(&self, key: &Key, lease: &Lease) {
        if !lease.touched.swap(true, Relaxed) {
            self.touched.lock().expect("touched lock").push(key.clone());
        }
    }

    /// Remembers a registration sent at `sent`: bare adds for half a lease.
    /// Every [`LEASE_CLEANUP_EVERY`] registrations, forgets expired leases;
    /// in a process that has not swept for a whole lease (it runs no
    /// flusher), also the notes of bare adds, which other processes'
    /// thorough sweeps cover, so that they do not pile up.
    fn note_lease(&self, key: &Key, sent: Instant) {
        self.leases
            .insert(key.clone(), Arc::new(Lease { until: sent + self.lease / 2, touched: AtomicBool::new(false) }));
        if self.registrations.fetch_add(1, Relaxed) % LEASE_CLEANUP_EVERY == LEASE_CLEANUP_EVERY - 1 {
            let now = Instant::now();
            let idle = self.last_own_sweep.lock().expect("sweep lock").elapsed() >= self.lease;
            if idle {
                let mut touched = self.touched.lock().expect("touched lock");
                touched.clear();
                touched.shrink_to_fit();
            }
            self.leases.retain(|_, lease| {
                if idle {
                    lease.touched.store(false, Relaxed);
                }
                // A counter noted since the last sweep stays until it is swept.
                lease.until > now || lease.touched.load(Relaxed)
            });
        }
    }

    /// Indexes the counters this process added to with bare adds since the
    /// last sweep: one script per shard and 1,000 counters.
    async fn sweep_own(&self) -> Result<()> {
        *self.last_own_sweep.lock().expect("sweep lock") = Instant::now();
        let touched = std::mem::take(&mut *self.touched.lock().expect("touched lock"));
        let mut by_shard: HashMap<usize, Vec<String>> = HashMap::new();
        for key in &touched {
            if let Some(lease) = self.leases.get(key) {
                // Cleared before the script reads the counter: an add after
                // this point notes the counter again.
                lease.touched.store(false, Relaxed);
            }
            by_shard.entry(self.layout.shard_of(key)).or_default().push(member(&Cell::Counter(key.clone())));
        }
        let now = now_ms().to_string();
        let steps = by_shard.iter().flat_map(|(shard, members)| members.chunks(SWEEP_STEP).map(move |m| (*shard, m)));
        let result = try_join_all(steps.map(|(shard, members)| {
            let keys = [self.layout.dirty(shard), self.layout.named(shard)];
            let mut args = vec![self.layout.value_prefix(shard), now.clone()];
            args.extend(members.iter().cloned());
            async move { self.invoke::<i64, _>(&self.scripts.index, &keys, &args).await }
        }))
        .await;
        if result.is_err() {
            // Noted again for the next sweep (the thorough one finds them too).
            for key in touched {
                if self.leases.get(&key).is_some_and(|lease| !lease.touched.swap(true, Relaxed)) {
                    self.touched.lock().expect("touched lock").push(key);
                }
            }
        }
        result.map(|_| ())
    }

    /// Whether a thorough sweep is due on this cache's own schedule: every
    /// half lease, so that the bare adds of a process that died before its
    /// sweep, or that runs no flusher, are indexed within that.
    fn full_sweep_due(&self) -> bool {
        self.last_full_sweep.lock().expect("sweep lock").is_none_or(|at| at.elapsed() >= self.lease / 2)
    }

    /// The first increment of a lease: a script that adds and registers.
    async fn register_and_add(&self, key: &Key, value: String, delta: i64) -> Result<CacheIncr> {
        let sent = Instant::now();
        let shard = self.layout.shard_of(key);
        let keys = [value, self.layout.dirty(shard), self.layout.live(shard), self.layout.named(shard)];
        let args = [delta.to_string(), now_ms().to_string(), member(&Cell::Counter(key.clone()))];
        let reply: Vec<Vec<u8>> = self.invoke(&self.scripts.register, &keys, &args).await?;
        match reply.as_slice() {
            [status] if status == b"missing" => Ok(CacheIncr::Missing),
            [status] if status == b"overflow" => Err(overflow(key)),
            [status, fields] if status == b"ok" => {
                self.note_lease(key, sent);
                let (total, flushed) = pair(fields, key)?;
                Ok(applied(total, flushed))
            }
            _ => Err(corrupt(key, &format!("{reply:?}"))),
        }
    }

    /// A bare add found no loaded counter: takes the delta back, unless a
    /// reload took it in meanwhile (then it counted).
    async fn undo(&self, key: &Key, value: String, delta: i64) -> Result<CacheIncr> {
        let steps: Vec<String> =
            if delta == i64::MIN { vec![i64::MAX.to_string(), "1".into()] } else { vec![(-delta).to_string()] };
        let reply: Vec<Vec<u8>> = self.invoke(&self.scripts.undo, &[value], &steps).await?;
        match reply.as_slice() {
            [status] if status == b"undone" => Ok(CacheIncr::Missing),
            [status, fields] if status == b"loaded" => {
                let (total, flushed) = pair(fields, key)?;
                Ok(applied(total, flushed))
            }
            _ => Err(corrupt(key, &format!("{reply:?}"))),
        }
    }

    /// One shard's sweep (see [`CacheLayer::sweep`]): steps of
    /// [`SWEEP_STEP`] counters until the live set's scan is done.
    async fn sweep_shard(&self, shard: usize) -> Result<()> {
        let keys = [self.layout.live(shard), self.layout.dirty(shard), self.layout.named(shard)];
        let lease = self.lease.as_millis().to_string();
        let prefix = self.layout.value_prefix(shard);
        let mut cursor = "0".to_string();
        loop {
            let args = [cursor, SWEEP_STEP.to_string(), lease.clone(), prefix.clone()];
            let reply: Vec<String> = self.invoke(&self.scripts.sweep, &keys, &args).await?;
            match reply.first() {
                Some(next) if next == "0" => return Ok(()),
                Some(next) => cursor = next.clone(),
                None => return Err(corrupt("sweep", &format!("{reply:?}"))),
            }
        }
    }

    fn remember_parts(&self, id: BatchId, shards: Vec<usize>) {
        self.parts.lock().expect("parts lock").insert(id, shards);
    }

    /// Freezes a claim and reads it whole (see the type's docs). `None` if
    /// no part of it is left.
    async fn freeze(&self, id: BatchId) -> Result<Option<Batch>> {
        let text = id.to_string();
        let ttl = self.tombstone_ttl_ms.to_string();
        let parts: Vec<Vec<Vec<u8>>> = try_join_all((0..self.layout.shards()).map(|shard| {
            let keys = [self.layout.claim(shard, &text)];
            let args = [ttl.clone()];
            async move { self.invoke::<Vec<Vec<u8>>, _>(&self.scripts.freeze, &keys, &args).await }
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
                let cell = parse_member(&text_of(cell)?)?;
                let (old, new) = recorded_marks(&cell, marks)?;
                batch.entries.push(BatchEntry { delta: delta(old, new, &cell)?, cell });
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

/// A reply that must be text.
fn text_of(bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| corrupt("a reply", &String::from_utf8_lossy(bytes)))
}

/// A big-endian i64 field of a counter's string.
fn field(bytes: &[u8], key: impl Display) -> Result<i64> {
    let raw: [u8; 8] = bytes.try_into().map_err(|_| corrupt(key, &format!("{bytes:?}")))?;
    Ok(i64::from_be_bytes(raw))
}

/// Two big-endian i64 fields: a total and a flushed mark.
fn pair(bytes: &[u8], key: impl Display) -> Result<(i64, i64)> {
    if bytes.len() != 16 {
        return Err(corrupt(key, &format!("{bytes:?}")));
    }
    Ok((field(&bytes[..8], &key)?, field(&bytes[8..], &key)?))
}

/// A cell's flushed mark as a claim returns it: 8 bytes for a counter,
/// decimal for a slice.
fn mark(cell: &Cell, bytes: &[u8]) -> Result<i64> {
    match cell {
        Cell::Counter(key) => field(bytes, key),
        Cell::Slice(_) => num(&text_of(bytes)?, cell_name(cell)),
    }
}

/// The old and new marks a claim part records for a cell: 16 bytes for a
/// counter; decimal `"<old> <new>"` for a slice, and for a counter in a
/// part written by the hash layout of 0.1 (so that a claim left by an older
/// process still lands).
fn recorded_marks(cell: &Cell, bytes: &[u8]) -> Result<(i64, i64)> {
    match cell {
        Cell::Counter(key) if bytes.len() == 16 => pair(bytes, key),
        Cell::Counter(_) | Cell::Slice(_) => {
            let text = text_of(bytes)?;
            let (old, new) = text.split_once(' ').ok_or_else(|| corrupt(cell_name(cell), &text))?;
            Ok((num(old, cell_name(cell))?, num(new, cell_name(cell))?))
        }
    }
}

fn cell_name(cell: &Cell) -> String {
    member(cell)
}

/// The delta between two flushed marks, which the claim script keeps
/// within the i64 range.
fn delta(old: i64, new: i64, cell: &Cell) -> Result<i64> {
    i64::try_from(i128::from(new) - i128::from(old)).map_err(|_| corrupt(cell_name(cell), &format!("{old} {new}")))
}

/// A cell's cached state from its `GETRANGE` (a counter) or `HMGET` (a
/// slice) reply; `None` if it is not cached.
fn cached_value(cell: &Cell, value: Value) -> Result<Option<CachedValue>> {
    let bad = |e: redis::ParsingError| Error::new(ErrorKind::Permanent, "unexpected reply from Redis").with_source(e);
    let (total, flushed) = match cell {
        Cell::Counter(key) => {
            let bytes: Vec<u8> = redis::from_redis_value(value).map_err(bad)?;
            if bytes.len() < 24 || bytes[..8] != 1i64.to_be_bytes() {
                return Ok(None);
            }
            pair(&bytes[8..24], key)?
        }
        Cell::Slice(_) => {
            let (total, flushed): (Option<String>, Option<String>) = redis::from_redis_value(value).map_err(bad)?;
            let (Some(total), Some(flushed)) = (total, flushed) else { return Ok(None) };
            (num(&total, cell_name(cell))?, num(&flushed, cell_name(cell))?)
        }
    };
    let pending = i128::from(total) - i128::from(flushed);
    let total = match cell {
        Cell::Counter(_) => total,
        // A slice's "total" is its pending delta (the cache holds no base for slices).
        Cell::Slice(_) => i64::try_from(pending).unwrap_or(total),
    };
    Ok(Some(CachedValue { total, pending }))
}

/// Arguments of the bare add's `BITFIELD`, the command's name included.
const BARE_ADD_ARGS: usize = 14;

/// Bytes of the bare add's arguments beside the key: the words and the
/// delta (at most 20 digits).
const BARE_ADD_BYTES: usize = 72;

/// The three fields of a counter's `BITFIELD` reply (state, total, mark;
/// `None` for a nil: an `INCRBY` refused by `OVERFLOW FAIL`), read
/// straight from the reply; `None` for any other shape.
fn bare_add_reply(reply: &Value) -> Option<[Option<i64>; 3]> {
    let field = |value: &Value| match value {
        Value::Int(n) => Some(Some(*n)),
        Value::Nil => Some(None),
        _ => None,
    };
    match reply {
        Value::Array(items) => match items.as_slice() {
            [a, b, c] => Some([field(a)?, field(b)?, field(c)?]),
            _ => None,
        },
        _ => None,
    }
}

fn applied(total: i64, flushed: i64) -> CacheIncr {
    CacheIncr::Applied { total, pending: i128::from(total) - i128::from(flushed) }
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
        let value = self.layout.counter_value(key);
        if delta == 0 {
            let mut cmd = redis::cmd("BITFIELD");
            cmd.arg(&value).arg(&["GET", "i64", "#0", "GET", "i64", "#1", "GET", "i64", "#2"][..]);
            let reply: Value = self.command(&cmd).await.map_err(|e| e.with_key(key))?;
            return match bare_add_reply(&reply) {
                Some([Some(1), Some(total), Some(flushed)]) => Ok(applied(total, flushed)),
                Some([Some(_), _, _]) => Ok(CacheIncr::Missing),
                _ => Err(corrupt(key, &format!("{reply:?}"))),
            };
        }
        let Some(lease) = self.lease_of(key) else {
            return self.register_and_add(key, value, delta).await.map_err(|e| e.with_key(key));
        };
        // The hot path: one command, its buffers sized once.
        let mut cmd = redis::Cmd::with_capacity(BARE_ADD_ARGS, value.len() + BARE_ADD_BYTES);
        cmd.arg("BITFIELD")
            .arg(&value)
            .arg(&["GET", "i64", "#0", "OVERFLOW", "FAIL", "INCRBY", "i64", "#1"][..])
            .arg(delta)
            .arg(&["GET", "i64", "#2"][..]);
        let reply: Value = self.command(&cmd).await.map_err(|e| e.with_key(key))?;
        match bare_add_reply(&reply) {
            Some([Some(1), Some(total), Some(flushed)]) => {
                self.note_bare_add(key, &lease);
                Ok(applied(total, flushed))
            }
            Some([Some(1), None, _]) => Err(overflow(key)),
            Some([Some(0), added, _]) => {
                // Lost: no bare adds until a reload registers it again.
                self.leases.remove(key);
                match added {
                    Some(_) => self.undo(key, value, delta).await.map_err(|e| e.with_key(key)),
                    None => Ok(CacheIncr::Missing),
                }
            }
            _ => Err(corrupt(key, &format!("{reply:?}"))),
        }
    }

    async fn incr_once(&self, key: &Key, delta: i64, once: &Once) -> Result<CacheIncrOnce> {
        let sent = Instant::now();
        let shard = self.layout.shard_of(key);
        let keys = [
            self.layout.counter_value(key),
            self.layout.dirty(shard),
            self.layout.live(shard),
            self.layout.named(shard),
            self.layout.once_record(key, &once.key),
        ];
        let args = [
            delta.to_string(),
            now_ms().to_string(),
            member(&Cell::Counter(key.clone())),
            once.fingerprint.to_string(),
            once.retention.as_millis().max(1).to_string(),
        ];
        let reply: Vec<Vec<u8>> = self.invoke(&self.scripts.once, &keys, &args).await.map_err(|e| e.with_key(key))?;
        match reply.as_slice() {
            [status] if status == b"missing" => Ok(CacheIncrOnce::Missing),
            [status] if status == b"overflow" => Err(overflow(key)),
            [status, record] if status == b"repeated" => {
                let bad = || corrupt(key, &format!("idempotency record {record:?}"));
                let space = record.iter().position(|&b| b == b' ').ok_or_else(bad)?;
                let fingerprint = std::str::from_utf8(&record[..space]).ok().and_then(|f| f.parse().ok());
                let total = <[u8; 8]>::try_from(&record[space + 1..]).ok().map(i64::from_be_bytes);
                match (fingerprint, total) {
                    (Some(fingerprint), Some(total)) => Ok(CacheIncrOnce::Repeated { total, fingerprint }),
                    _ => Err(bad()),
                }
            }
            [status, fields] if status == b"ok" => {
                self.note_lease(key, sent);
                let (total, flushed) = pair(fields, key)?;
                Ok(CacheIncrOnce::Applied { total, pending: i128::from(total) - i128::from(flushed) })
            }
            _ => Err(corrupt(key, &format!("{reply:?}"))),
        }
    }

    async fn forget_once(&self, key: &Key, idempotency_key: &str) -> Result<()> {
        let _: i64 = self.command(redis::cmd("DEL").arg(self.layout.once_record(key, idempotency_key))).await?;
        Ok(())
    }

    async fn load(&self, key: &Key, durable: i64, extra: i64) -> Result<i64> {
        let total = durable.checked_add(extra).ok_or_else(|| overflow(key))?;
        let shard = self.layout.shard_of(key);
        let keys = [
            self.layout.counter_value(key),
            self.layout.dirty(shard),
            self.layout.live(shard),
            self.layout.named(shard),
        ];
        let args = [
            total.to_string(),
            durable.to_string(),
            now_ms().to_string(),
            member(&Cell::Counter(key.clone())),
            if extra != 0 { "1".into() } else { "0".into() },
        ];
        let reply: Vec<Vec<u8>> = self.invoke(&self.scripts.load, &keys, &args).await.map_err(|e| e.with_key(key))?;
        match reply.as_slice() {
            [status, total] if status == b"ok" => field(total, key),
            [status] if status == b"overflow" => Err(overflow(key)),
            _ => Err(corrupt(key, &format!("{reply:?}"))),
        }
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
        let keys = [self.layout.counter_value(key), self.layout.dirty(shard), self.layout.named(shard)];
        let args: [Vec<u8>; 3] = [
            total.to_be_bytes().to_vec(),
            now_ms().to_string().into_bytes(),
            member(&Cell::Counter(key.clone())).into_bytes(),
        ];
        let reply: Vec<Vec<u8>> = self.invoke(&self.scripts.set, &keys, &args).await.map_err(|e| e.with_key(key))?;
        match reply.as_slice() {
            [status] if status == b"missing" => Ok(None),
            [status, old] if status == b"ok" => Ok(Some(field(old, key)?)),
            _ => Err(corrupt(key, &format!("{reply:?}"))),
        }
    }

    async fn rebase(&self, key: &Key, flushed: i64, shift: i64) -> Result<bool> {
        let keys = [self.layout.counter_value(key)];
        let args: [Vec<u8>; 2] = [flushed.to_be_bytes().to_vec(), shift.to_string().into_bytes()];
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
        let replies: Vec<Vec<Value>> = try_join_all(groups.iter().map(|(_, group)| {
            let mut pipe = redis::pipe();
            for cell in group {
                match cell {
                    Cell::Counter(key) => pipe.cmd("GETRANGE").arg(self.layout.counter_value(key)).arg(0).arg(23),
                    Cell::Slice(_) => {
                        let suffix = field_suffix(cell);
                        pipe.cmd("HMGET")
                            .arg(self.layout.key_of(cell))
                            .arg(format!("t{suffix}"))
                            .arg(format!("f{suffix}"))
                    }
                };
            }
            async move { self.query(&pipe).await }
        }))
        .await?;
        let mut found: HashMap<&Cell, CachedValue> = HashMap::new();
        for ((_, group), reply) in groups.iter().zip(replies) {
            for (cell, value) in group.iter().zip(reply) {
                if let Some(value) = cached_value(cell, value)? {
                    found.insert(cell, value);
                }
            }
        }
        Ok(cells.iter().map(|cell| found.get(cell).copied()).collect())
    }

    async fn remove(&self, key: &Key) -> Result<()> {
        let shard = self.layout.shard_of(key);
        let keys = [
            self.layout.counter_value(key),
            self.layout.slice_hash(key),
            self.layout.dirty(shard),
            self.layout.live(shard),
            self.layout.named(shard),
        ];
        let args = [member(&Cell::Counter(key.clone())), key.to_string()];
        let _: i64 = self.invoke(&self.scripts.remove, &keys, &args).await.map_err(|e| e.with_key(key))?;
        self.leases.remove(key);
        Ok(())
    }

    async fn sweep(&self, thorough: bool) -> Result<()> {
        self.sweep_own().await?;
        if thorough || self.full_sweep_due() {
            let started = Instant::now();
            try_join_all((0..self.layout.shards()).map(|shard| self.sweep_shard(shard))).await?;
            *self.last_full_sweep.lock().expect("sweep lock") = Some(started);
        }
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

    async fn dirty_counters(&self, namespace: &str, prefix: &str, limit: usize) -> Result<Vec<DirtyCell>> {
        let Some((start, end)) = named_range(namespace, prefix) else { return Ok(Vec::new()) };
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Each shard's first `limit` names; the first `limit` of them all.
        let lists: Vec<Vec<String>> = try_join_all((0..self.layout.shards()).map(|shard| {
            let cmd = redis::cmd("ZRANGEBYLEX")
                .arg(self.layout.named(shard))
                .arg(&start)
                .arg(&end)
                .arg("LIMIT")
                .arg(0)
                .arg(limit.min(i64::MAX as usize))
                .clone();
            async move { cmd.query_async::<Vec<String>>(&mut self.conn.clone()).await.map_err(map_err) }
        }))
        .await?;
        let mut keys = lists.iter().flatten().map(|m| parse_named(m)).collect::<Result<Vec<Key>>>()?;
        keys.sort();
        keys.truncate(limit);
        let cells: Vec<Cell> = keys.iter().cloned().map(Cell::Counter).collect();
        let (since, values) = futures_util::future::try_join(self.dirty_since(&keys), self.get_many(&cells)).await?;
        // A counter claimed between the reads is clean: left out.
        Ok(cells
            .into_iter()
            .zip(since.into_iter().zip(values))
            .filter_map(|(cell, since)| match since {
                (Some(since), Some(value)) => Some(DirtyCell { cell, pending: value.pending, dirty_since_ms: since }),
                _ => None,
            })
            .collect())
    }

    async fn dirty_since(&self, keys: &[Key]) -> Result<Vec<Option<u64>>> {
        let cells: Vec<Cell> = keys.iter().cloned().map(Cell::Counter).collect();
        let groups = self.by_shard(cells.iter());
        let replies: Vec<Vec<Option<f64>>> = try_join_all(groups.iter().map(|(shard, group)| {
            let mut cmd = redis::cmd("ZMSCORE");
            cmd.arg(self.layout.dirty(*shard));
            for cell in group {
                cmd.arg(member(cell));
            }
            async move { cmd.query_async::<Vec<Option<f64>>>(&mut self.conn.clone()).await.map_err(map_err) }
        }))
        .await?;
        let mut found: HashMap<&Cell, u64> = HashMap::new();
        for ((_, group), scores) in groups.iter().zip(replies) {
            for (cell, score) in group.iter().zip(scores) {
                if let Some(score) = score {
                    found.insert(cell, score as u64);
                }
            }
        }
        Ok(cells.iter().map(|cell| found.get(cell).copied()).collect())
    }

    async fn claim(&self, id: BatchId, cells: &[Cell]) -> Result<Batch> {
        let text = id.to_string();
        let (created, now) = (id.created_ms().to_string(), now_ms().to_string());
        let groups = self.by_shard(cells.iter());
        let replies: Vec<Vec<Vec<u8>>> = try_join_all(groups.iter().map(|(shard, group)| {
            let mut keys = vec![
                self.layout.claim(*shard, &text),
                self.layout.claims(*shard),
                self.layout.dirty(*shard),
                self.layout.named(*shard),
            ];
            let mut args = vec![text.clone(), created.clone(), now.clone()];
            for cell in group {
                keys.push(self.layout.key_of(cell));
                args.push(field_suffix(cell));
                args.push(member(cell));
            }
            async move { self.invoke::<Vec<Vec<u8>>, _>(&self.scripts.claim, &keys, &args).await }
        }))
        .await?;
        let mut batch = Batch::claimed(id, Vec::new());
        let mut shards = Vec::new();
        for ((shard, _), reply) in groups.iter().zip(replies) {
            match reply.first().map(Vec::as_slice) {
                // A recovering flusher froze this claim first: these cells stay pending.
                Some(b"refused") => continue,
                Some(b"ok") => {}
                _ => return Err(corrupt("claim", &format!("{reply:?}"))),
            }
            if reply.len() > 1 {
                shards.push(*shard);
            }
            for triple in reply[1..].chunks(3) {
                let [cell, old, new] = triple else { return Err(corrupt("claim", &format!("{reply:?}"))) };
                let cell = parse_member(&text_of(cell)?)?;
                let (old, new) = (mark(&cell, old)?, mark(&cell, new)?);
                batch.entries.push(BatchEntry { delta: delta(old, new, &cell)?, cell });
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
            async move { self.invoke::<i64, _>(&self.scripts.ack, &keys, &args).await }
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

/// Test hooks (cargo feature `testing`).
#[cfg(feature = "testing")]
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

    /// Deletes the counter's string. Its state, total and flushed mark live
    /// in one key, so Redis cannot lose one without the others: losing a
    /// part of it is losing it.
    async fn lose_part(&self, key: &Key, part: CachePart) -> Result<()> {
        let _ = part;
        let _: i64 = self.command(redis::cmd("DEL").arg(self.layout.counter_value(key))).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::bare_add_reply;

    #[test]
    fn a_bitfield_reply_is_three_fields_or_nothing() {
        let reply = |items: Vec<Value>| Value::Array(items);
        assert_eq!(
            bare_add_reply(&reply(vec![Value::Int(1), Value::Int(i64::MIN), Value::Int(-3)])),
            Some([Some(1), Some(i64::MIN), Some(-3)])
        );
        assert_eq!(
            bare_add_reply(&reply(vec![Value::Int(1), Value::Nil, Value::Int(0)])),
            Some([Some(1), None, Some(0)])
        );
        for bad in [
            reply(vec![Value::Int(1), Value::Int(2)]),
            reply(vec![Value::Int(1), Value::Int(2), Value::Int(3), Value::Int(4)]),
            reply(vec![Value::Int(1), Value::Okay, Value::Int(3)]),
            Value::Int(1),
            Value::Nil,
        ] {
            assert_eq!(bare_add_reply(&bad), None, "{bad:?}");
        }
    }
}
