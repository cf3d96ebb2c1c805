//! [`RedisStore`]: a [`DurableStore`] on a standalone Redis.
//!
//! # Layout
//!
//! `<P>` is the key prefix ([`RedisStoreOptions::prefix`], or the URL's
//! `prefix` parameter), empty by default. `<ns>` is a key's namespace (empty
//! for the default namespace), `<name>` its name and `<key>` its display
//! form (`key.to_string()`: `name`, or `ns/name`), which is injective and
//! read back by [`Key::parse`]. `<p>` is a precision in seconds.
//!
//! | Redis key | Type | Content |
//! |---|---|---|
//! | `<P>values:<ns>` | hash | field `<name>` → the counter's exact value, a decimal `i64` |
//! | `<P>names:<ns>` | sorted set | member `<name>`, score 0: listing by name and prefix (`ZRANGEBYLEX`) |
//! | `<P>top:<ns>` | sorted set | member `<name>`, score = the value as a double: top-N (refined exactly, see below) |
//! | `<P>count:<p>:<key>` | hash | field = bucket start in epoch seconds (decimal) → the bucket's count (decimal `i64`) |
//! | `<P>known:` | sorted set | member `<p>:<key>`, score 0: every time series that has buckets |
//! | `<P>series:<key>` | set | the precisions (decimal) of `<key>`'s series, so `delete` finds them |
//! | `<P>batch:<batch id>` | string | marker of an applied batch, or of a split marker (`id.split_marker()` of a batch a part of which was applied), expiring after [`RedisStoreOptions::batch_retention`] |
//!
//! The `count:` and `known:` keys are the layout of "Redis in Action"
//! (section 5.2.1): with the default empty prefix their names are literal
//! (`count:60:clicks:ad42`, member `60:clicks:ad42` of `known:`), so code
//! written for that layout reads and cleans this store's time series, and
//! [`series`](DurableStore::series) and [`clean`](DurableStore::clean) read
//! and clean series that code wrote. (Series written by such code are not
//! in a `series:` set, so [`delete`](DurableStore::delete) does not find
//! them; `clean` does.)
//!
//! # Exactness and atomicity
//!
//! Lua numbers are doubles, so no script does arithmetic on a value: a
//! batch is applied by one script that adds every delta with `HINCRBY`
//! (exact, and refusing to overflow), passing deltas as decimal strings and
//! reading new values back as strings. A script is atomic on a standalone
//! server, and the batch script makes it all-or-nothing: it checks the
//! markers first, checks the types of every key it will touch, and if an
//! `HINCRBY` fails (overflow, or a value that is not an integer) it
//! restores every field it already changed from the string it read before
//! (or deletes a field it created) and reports which entry failed. Only
//! then does it update the indexes (`names:`, `top:`, `known:`, `series:`)
//! and write the markers. A Redis Cluster cannot run one script across hash
//! slots, so this store refuses Cluster targets.
//!
//! The markers keep the split contract of [`DurableStore::apply`]: the
//! script gets as `KEYS` the markers of the batch and of every batch of its
//! [`lineage`](Batch::lineage) (any of them present: `AlreadyApplied`), the
//! marker of the batch's [`split_marker`](BatchId::split_marker) (present:
//! `Split`), and the markers of the split markers of its lineage, which it
//! sets with the batch's own marker when it applies the deltas. All are
//! `<P>batch:` strings with the same expiry.
//!
//! Top-N uses the `top:` scores only to find candidates: rounding an `i64`
//! to a double is monotone, so every counter among the exact top N has a
//! score at least the N-th score; the candidates' exact values are then
//! read from `values:` and sorted exactly, ties by name.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use counter_core::{
    ApplyOutcome, Batch, BatchEntry, BatchId, Cell, CleanReport, DurableStore, Error, ErrorKind, Key, ListOrder,
    ListQuery, Precision, Result, StoreCapabilities,
};
use redis::{Value, cmd};
use tracing::info;

use crate::connection::{RedisConn, map_err};
use crate::target::RedisTarget;

#[path = "store_scripts.rs"]
mod scripts;

use scripts::status;

/// Most entries worth putting in one batch: a batch is one script, which
/// blocks the server while it runs.
const MAX_BATCH: usize = 500;
/// Longest batch retention: Redis refuses expiry times that overflow its
/// millisecond clock, so [`RedisStoreOptions::batch_retention`] is capped
/// at 100 years.
const MAX_RETENTION_SECS: u64 = 100 * 365 * 24 * 3600;
/// Members fetched per round trip when walking a sorted set.
const PAGE: usize = 1_000;
/// Series cleaned per script call.
const CLEAN_PAGE: usize = 200;
/// Up to this many counters matching a prefix, top-N reads them all by name
/// and sorts them; beyond, it walks the `top:` set by score.
const TOP_BY_NAME_MAX: u64 = 10_000;
/// Doubles of magnitude below this are integers that no other `i64`
/// rounds to.
const EXACT_DOUBLE: f64 = 9_007_199_254_740_992.0; // 2^53

/// Settings of a [`RedisStore`]; start from [`RedisStoreOptions::default`]
/// and change what you need.
///
/// ```
/// use std::time::Duration;
/// use backend_redis::RedisStoreOptions;
///
/// let options = RedisStoreOptions::default().prefix("app:").batch_retention(Duration::from_secs(3 * 24 * 3600));
/// assert_eq!(options.prefix, "app:");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStoreOptions {
    /// Prefix of every Redis key the store uses. Default empty, so the time
    /// series are at the literal "Redis in Action" keys (`count:...`,
    /// `known:`). The URL's `prefix` parameter, when given, replaces it.
    pub prefix: String,
    /// How long the identity of an applied batch is remembered (the expiry
    /// of its marker), counted from when it was applied. A batch retried
    /// after that would be applied again, so this must exceed the longest
    /// time a batch can wait for a retry (store outages included). Rounded
    /// up to whole seconds, at least 1, at most 100 years. Default 7 days.
    pub batch_retention: Duration,
}

impl Default for RedisStoreOptions {
    fn default() -> Self {
        RedisStoreOptions { prefix: String::new(), batch_retention: Duration::from_secs(7 * 24 * 3600) }
    }
}

impl RedisStoreOptions {
    /// Sets [`prefix`](Self::prefix).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`batch_retention`](Self::batch_retention).
    pub fn batch_retention(mut self, retention: Duration) -> Self {
        self.batch_retention = retention;
        self
    }
}

/// Names of the Redis keys, from the prefix.
#[derive(Debug, Clone)]
struct Layout {
    prefix: String,
}

impl Layout {
    fn values(&self, namespace: &str) -> String {
        format!("{}values:{namespace}", self.prefix)
    }

    fn names(&self, namespace: &str) -> String {
        format!("{}names:{namespace}", self.prefix)
    }

    fn top(&self, namespace: &str) -> String {
        format!("{}top:{namespace}", self.prefix)
    }

    fn known(&self) -> String {
        format!("{}known:", self.prefix)
    }

    fn count_prefix(&self) -> String {
        format!("{}count:", self.prefix)
    }

    fn series_prefix(&self) -> String {
        format!("{}series:", self.prefix)
    }

    /// `<p>:<key>`: the `known:` member of a series, and the `count:` key's tail.
    fn member(precision: Precision, key: &Key) -> String {
        format!("{}:{key}", precision.secs())
    }

    fn count(&self, precision: Precision, key: &Key) -> String {
        format!("{}count:{}", self.prefix, Layout::member(precision, key))
    }

    fn series(&self, key: &Key) -> String {
        format!("{}series:{key}", self.prefix)
    }

    /// The marker of a batch identity (an applied batch's, or a split
    /// marker).
    fn batch(&self, id: BatchId) -> String {
        format!("{}batch:{id}", self.prefix)
    }
}

/// A [`DurableStore`] on a standalone Redis server, durable as far as the
/// server's persistence (RDB, AOF) is configured to be.
///
/// Every batch is applied by one Lua script that also records the batch's
/// identity (expiring after [`RedisStoreOptions::batch_retention`]), so a
/// batch is applied exactly once, all of it or nothing, however often it is
/// retried and by whichever process. Time series are kept in the layout of
/// "Redis in Action".
///
/// # Layout
///
/// `<P>` is the key prefix ([`RedisStoreOptions::prefix`]), `<ns>` a key's
/// namespace, `<name>` its name, `<key>` its display form
/// (`key.to_string()`), `<p>` a precision in seconds:
///
/// | Redis key | Type | Content |
/// |---|---|---|
/// | `<P>values:<ns>` | hash | field `<name>` → the counter's value, a decimal `i64` |
/// | `<P>names:<ns>` | sorted set | member `<name>`, score 0 (listing by name) |
/// | `<P>top:<ns>` | sorted set | member `<name>`, score = the value as a double (top-N candidates) |
/// | `<P>count:<p>:<key>` | hash | field = bucket start, epoch seconds → count ("Redis in Action") |
/// | `<P>known:` | sorted set | member `<p>:<key>`, score 0 ("Redis in Action") |
/// | `<P>series:<key>` | set | the precisions of `<key>`'s time series |
/// | `<P>batch:<batch id>` | string | marker of an applied batch or a split marker, expiring after the retention |
///
/// With the default empty prefix, code written for the book's layout reads
/// and cleans this store's time series, and this store reads and cleans
/// series that code wrote (but [`delete`](DurableStore::delete) only finds
/// series written through this store).
///
/// Only a standalone server (`redis://`) is supported: a Cluster cannot run
/// one script over keys in different hash slots, which atomic batches need.
///
/// Cloning is cheap and shares the connection, one multiplexed connection
/// that reconnects after a failure.
#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConn,
    layout: Layout,
    options: RedisStoreOptions,
    retention_secs: u64,
}

impl RedisStore {
    /// Connects to the standalone server named by `url`
    /// (`redis://[user:password@]host:port[/db][?prefix=P]`, see
    /// [`RedisTarget`]) with default options.
    ///
    /// A malformed URL, or a `redis+cluster://` one, is a
    /// [`Config`](ErrorKind::Config) error; a server that does not answer is
    /// [`Unavailable`](ErrorKind::Unavailable).
    pub async fn connect(url: &str) -> Result<RedisStore> {
        RedisStore::connect_with(RedisTarget::parse(url)?, RedisStoreOptions::default()).await
    }

    /// The same as [`connect`](Self::connect).
    pub async fn from_url(url: &str) -> Result<RedisStore> {
        RedisStore::connect(url).await
    }

    /// Connects to `target` with `options`. The target's `prefix` (the
    /// URL's `prefix` parameter), when given, replaces
    /// [`options.prefix`](RedisStoreOptions::prefix); its `shards`
    /// parameter (a cache setting) is ignored.
    ///
    /// A Cluster target is a [`Config`](ErrorKind::Config) error.
    pub async fn connect_with(target: RedisTarget, mut options: RedisStoreOptions) -> Result<RedisStore> {
        if target.cluster {
            return Err(Error::new(
                ErrorKind::Config,
                "the Redis store needs a standalone server (redis://), not a Cluster: it applies each batch \
                 atomically with one Lua script, which a Redis Cluster cannot run across hash slots \
                 (a Cluster works as the cache layer, RedisCache)",
            ));
        }
        if let Some(prefix) = &target.prefix {
            options.prefix = prefix.clone();
        }
        let retention = options.batch_retention;
        let retention_secs =
            (retention.as_secs().saturating_add(u64::from(retention.subsec_nanos() > 0))).clamp(1, MAX_RETENTION_SECS);
        let conn = RedisConn::connect(&target).await?;
        info!(prefix = %options.prefix, "Redis counter store connected");
        Ok(RedisStore { conn, layout: Layout { prefix: options.prefix.clone() }, options, retention_secs })
    }

    /// The options in effect (with the URL's prefix applied).
    pub fn options(&self) -> &RedisStoreOptions {
        &self.options
    }

    fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Exact values of `names` of `namespace`, skipping names without one.
    async fn values_of(&self, namespace: &str, names: &[Vec<u8>]) -> Result<Vec<(Key, i64)>> {
        let hash = self.layout.values(namespace);
        let mut out = Vec::with_capacity(names.len());
        for chunk in names.chunks(PAGE) {
            let values: Vec<Option<Vec<u8>>> =
                cmd("HMGET").arg(&hash).arg(chunk).query_async(&mut self.conn()).await.map_err(map_err)?;
            for (name, value) in chunk.iter().zip(values) {
                let Some(value) = value else { continue };
                let key = member_key(namespace, name, &hash)?;
                let value = parse_value(&value, &key, &hash)?;
                out.push((key, value));
            }
        }
        Ok(out)
    }

    /// Up to `limit` counters of `namespace` whose names start with
    /// `prefix`, by name.
    async fn list_by_name(&self, namespace: &str, prefix: &str, limit: usize) -> Result<Vec<(Key, i64)>> {
        let names_key = self.layout.names(namespace);
        let (mut min, max) = lex_range(prefix);
        let mut out = Vec::new();
        while out.len() < limit {
            let page = (limit - out.len()).clamp(1, PAGE);
            let names: Vec<Vec<u8>> = cmd("ZRANGEBYLEX")
                .arg(&names_key)
                .arg(&min)
                .arg(&max)
                .arg("LIMIT")
                .arg(0)
                .arg(page)
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?;
            let Some(last) = names.last() else { break };
            min = [b"(", last.as_slice()].concat();
            out.extend(self.values_of(namespace, &names).await?);
            if names.len() < page {
                break;
            }
        }
        Ok(out)
    }

    /// The `query.limit` largest counters, exactly (see the module docs).
    async fn list_top(&self, query: &ListQuery) -> Result<Vec<(Key, i64)>> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let namespace = query.namespace.as_str();
        let prefix = query.prefix.as_bytes();
        if !prefix.is_empty() {
            let (min, max) = lex_range(&query.prefix);
            let matching: u64 = cmd("ZLEXCOUNT")
                .arg(self.layout.names(namespace))
                .arg(&min)
                .arg(&max)
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?;
            if matching <= TOP_BY_NAME_MAX {
                let mut all = self.list_by_name(namespace, &query.prefix, usize::MAX).await?;
                query.finish(&mut all);
                return Ok(all);
            }
        }
        let top = self.layout.top(namespace);
        let page = if prefix.is_empty() { query.limit.clamp(16, PAGE) } else { PAGE };
        // Matching members by descending score, until `limit` of them.
        let mut matches: Vec<(Vec<u8>, f64)> = Vec::new();
        let mut start = 0;
        loop {
            let items: Vec<(Vec<u8>, f64)> = cmd("ZREVRANGE")
                .arg(&top)
                .arg(start)
                .arg(start + page - 1)
                .arg("WITHSCORES")
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?;
            let fetched = items.len();
            matches.extend(items.into_iter().filter(|(name, _)| name.starts_with(prefix)));
            if matches.len() >= query.limit || fetched < page {
                break;
            }
            start += page;
        }
        let candidates = if matches.len() < query.limit {
            matches.into_iter().map(|(name, _)| name).collect()
        } else {
            // Everything scored above the N-th score is in; of those scored
            // exactly that, every one if the score stands for several i64
            // values, else (all equal) the first ones by name.
            let cut = matches[query.limit - 1].1;
            let mut candidates: Vec<Vec<u8>> =
                matches.into_iter().filter(|(_, score)| *score > cut).map(|(name, _)| name).collect();
            let mut wanted = if cut.abs() < EXACT_DOUBLE { query.limit - candidates.len() } else { usize::MAX };
            let mut offset = 0;
            while wanted > 0 {
                let items: Vec<Vec<u8>> = cmd("ZRANGEBYSCORE")
                    .arg(&top)
                    .arg(cut)
                    .arg(cut)
                    .arg("LIMIT")
                    .arg(offset)
                    .arg(PAGE)
                    .query_async(&mut self.conn())
                    .await
                    .map_err(map_err)?;
                let fetched = items.len();
                for name in items.into_iter().filter(|name| name.starts_with(prefix)) {
                    if wanted == 0 {
                        break;
                    }
                    candidates.push(name);
                    wanted -= 1;
                }
                if fetched < PAGE {
                    break;
                }
                offset += PAGE;
            }
            candidates
        };
        // Pages by index can overlap when scores change meanwhile.
        let mut candidates = candidates;
        candidates.sort_unstable();
        candidates.dedup();
        let mut out = self.values_of(namespace, &candidates).await?;
        query.finish(&mut out);
        Ok(out)
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the target: its URLs may carry a password.
        f.debug_struct("RedisStore").field("conn", &self.conn).field("options", &self.options).finish()
    }
}

#[async_trait]
impl DurableStore for RedisStore {
    fn capabilities(&self) -> StoreCapabilities {
        let mut caps = StoreCapabilities::new("redis");
        caps.durable = true;
        caps.shared = true;
        caps.max_batch = MAX_BATCH;
        caps
    }

    async fn apply(&self, batch: &Batch) -> Result<ApplyOutcome> {
        let layout = &self.layout;
        let known = layout.known();
        let mut invocation = scripts::APPLY.prepare_invoke();
        // The split contract: the guards (the batch and its lineage), the
        // batch's split marker, then the split markers the batch records.
        invocation.key(layout.batch(batch.id));
        for ancestor in &batch.lineage {
            invocation.key(layout.batch(*ancestor));
        }
        invocation.key(layout.batch(batch.id.split_marker()));
        for ancestor in &batch.lineage {
            invocation.key(layout.batch(ancestor.split_marker()));
        }
        invocation.arg(self.retention_secs).arg(batch.lineage.len());
        for entry in &batch.entries {
            let delta = entry.delta.to_string();
            match &entry.cell {
                Cell::Counter(key) => {
                    let namespace = key.namespace();
                    invocation
                        .key(layout.values(namespace))
                        .key(layout.names(namespace))
                        .key(layout.top(namespace))
                        .arg("c")
                        .arg(key.name())
                        .arg(delta)
                        .arg("")
                        .arg("");
                }
                Cell::Slice(slice) => {
                    invocation
                        .key(layout.count(slice.precision, &slice.key))
                        .key(layout.series(&slice.key))
                        .key(&known)
                        .arg("s")
                        .arg(slice.start.to_string())
                        .arg(delta)
                        .arg(Layout::member(slice.precision, &slice.key))
                        .arg(slice.precision.secs().to_string());
                }
            }
        }
        let reply: Vec<Value> = invocation.invoke_async(&mut self.conn()).await.map_err(map_err)?;
        let entry = |i: &Value| -> Option<&BatchEntry> {
            let Value::Int(i) = i else { return None };
            batch.entries.get(usize::try_from(*i).ok()?.checked_sub(1)?)
        };
        match reply.as_slice() {
            [Value::Int(status::APPLIED)] => Ok(ApplyOutcome::Applied),
            [Value::Int(status::ALREADY_APPLIED)] => Ok(ApplyOutcome::AlreadyApplied),
            [Value::Int(status::SPLIT)] => Ok(ApplyOutcome::Split),
            [Value::Int(status::OVERFLOW), i] if entry(i).is_some() => {
                let cell = &entry(i).expect("checked").cell;
                Err(Error::new(
                    ErrorKind::Overflow,
                    format!("applying the batch would take {cell} out of the i64 range; nothing was applied"),
                )
                .with_key(cell.key()))
            }
            [Value::Int(status::NOT_INTEGER), i, message] if entry(i).is_some() => {
                let cell = &entry(i).expect("checked").cell;
                Err(Error::new(
                    ErrorKind::Permanent,
                    format!(
                        "Redis holds a value that is not a 64-bit integer for {cell} ({}); nothing was applied",
                        text(message)
                    ),
                )
                .with_key(cell.key()))
            }
            [Value::Int(status::WRONG_TYPE), i, redis_key] if entry(i).is_some() => {
                let cell = &entry(i).expect("checked").cell;
                Err(wrong_type(&text(redis_key)).with_key(cell.key()))
            }
            _ => Err(unexpected("applying a batch", &reply)),
        }
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<i64>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let hashes: Vec<String> = keys.iter().map(|k| self.layout.values(k.namespace())).collect();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (key, hash) in keys.iter().zip(&hashes) {
            pipe.cmd("HGET").arg(hash).arg(key.name());
        }
        let replies: Vec<redis::RedisResult<Option<Vec<u8>>>> =
            pipe.query_async(&mut self.conn()).await.map_err(map_err)?;
        if replies.len() != keys.len() {
            return Err(Error::new(ErrorKind::Permanent, "Redis answered a pipeline of reads with the wrong count"));
        }
        keys.iter()
            .zip(&hashes)
            .zip(replies)
            .map(|((key, hash), reply)| match reply {
                Ok(Some(raw)) => parse_value(&raw, key, hash).map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(map_err(e).with_key(key)),
            })
            .collect()
    }

    async fn delete(&self, key: &Key) -> Result<bool> {
        let layout = &self.layout;
        let namespace = key.namespace();
        let reply: Vec<Value> = scripts::DELETE
            .key(layout.values(namespace))
            .key(layout.names(namespace))
            .key(layout.top(namespace))
            .key(layout.series(key))
            .key(layout.known())
            .arg(key.name())
            .arg(key.to_string())
            .arg(layout.count_prefix())
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| map_err(e).with_key(key))?;
        match reply.as_slice() {
            [Value::Int(status::APPLIED), Value::Int(n)] => Ok(*n > 0),
            [Value::Int(status::WRONG_TYPE), _, redis_key] => Err(wrong_type(&text(redis_key)).with_key(key)),
            _ => Err(unexpected("deleting a counter", &reply).with_key(key)),
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<(Key, i64)>> {
        match query.order {
            ListOrder::ByName => {
                let mut out = self.list_by_name(&query.namespace, &query.prefix, query.limit).await?;
                query.finish(&mut out);
                Ok(out)
            }
            ListOrder::ByValueDesc => self.list_top(query).await,
        }
    }

    async fn series(&self, key: &Key, precision: Precision, from: i64, to: i64) -> Result<Vec<(i64, i64)>> {
        if from > to {
            return Ok(Vec::new());
        }
        let hash = self.layout.count(precision, key);
        let fields: std::collections::HashMap<Vec<u8>, Vec<u8>> =
            cmd("HGETALL").arg(&hash).query_async(&mut self.conn()).await.map_err(|e| map_err(e).with_key(key))?;
        let mut out = Vec::new();
        for (field, value) in fields {
            // Fields that are not bucket starts are not ours: left alone.
            let Some(start) = canonical_i64(&field) else { continue };
            if (from..=to).contains(&start) {
                out.push((start, parse_value(&value, key, &hash)?));
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    async fn clean(&self, precision: Precision, cutoff: i64) -> Result<CleanReport> {
        let layout = &self.layout;
        let known = layout.known();
        let (count_prefix, series_prefix) = (layout.count_prefix(), layout.series_prefix());
        let tag = format!("{}:", precision.secs());
        let max = format!("({};", precision.secs()); // ';' follows ':'
        let mut min = format!("[{tag}").into_bytes();
        let mut report = CleanReport::default();
        loop {
            let members: Vec<Vec<u8>> = cmd("ZRANGEBYLEX")
                .arg(&known)
                .arg(&min)
                .arg(&max)
                .arg("LIMIT")
                .arg(0)
                .arg(CLEAN_PAGE)
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?;
            let Some(last) = members.last() else { break };
            min = [b"(", last.as_slice()].concat();
            let mut invocation = scripts::CLEAN.prepare_invoke();
            invocation.key(&known).arg(cutoff.to_string()).arg(precision.secs().to_string());
            for member in &members {
                let key_text = &member[tag.len()..];
                invocation
                    .key([count_prefix.as_bytes(), member].concat())
                    .key([series_prefix.as_bytes(), key_text].concat())
                    .arg(member);
            }
            let (buckets, series): (u64, u64) = invocation.invoke_async(&mut self.conn()).await.map_err(map_err)?;
            report.buckets_removed += buckets;
            report.series_removed += series;
            if members.len() < CLEAN_PAGE {
                break;
            }
        }
        Ok(report)
    }
}

/// `ZRANGEBYLEX` bounds of the names starting with `prefix`.
fn lex_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        return (b"-".to_vec(), b"+".to_vec());
    }
    let min = [b"[", prefix.as_bytes()].concat();
    // The first string after every one starting with `prefix`: UTF-8 has no
    // 0xFF byte, so the last byte can always be incremented.
    let mut max = [b"(", prefix.as_bytes()].concat();
    if let Some(last) = max.last_mut() {
        *last += 1;
    }
    (min, max)
}

/// The key of a member of a `names:`/`top:` set.
fn member_key(namespace: &str, name: &[u8], redis_key: &str) -> Result<Key> {
    let text = std::str::from_utf8(name).map_err(|_| {
        Error::new(
            ErrorKind::Permanent,
            format!("{redis_key} holds a counter name that is not UTF-8: {:?}", String::from_utf8_lossy(name)),
        )
    })?;
    Key::stored(namespace, text).map_err(|e| {
        Error::new(ErrorKind::Permanent, format!("{redis_key} holds a name that is not a valid counter name"))
            .with_source(e)
    })
}

/// A decimal `i64` in its canonical form (what `i64::to_string` writes and
/// the clean script recognises), or `None`.
fn canonical_i64(raw: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(raw).ok()?;
    let value: i64 = text.parse().ok()?;
    (value.to_string() == text).then_some(value)
}

/// A stored counter value, or a [`Permanent`](ErrorKind::Permanent) error
/// naming `key` if it is not an integer.
fn parse_value(raw: &[u8], key: &Key, redis_key: &str) -> Result<i64> {
    std::str::from_utf8(raw).ok().and_then(|text| text.parse::<i64>().ok()).ok_or_else(|| {
        Error::new(
            ErrorKind::Permanent,
            format!(
                "Redis holds {:?} for this counter in {redis_key}, which is not a 64-bit integer; \
                 something other than this store wrote it",
                String::from_utf8_lossy(raw)
            ),
        )
        .with_key(key)
    })
}

fn wrong_type(redis_key: &str) -> Error {
    Error::new(
        ErrorKind::Permanent,
        format!(
            "Redis key {redis_key:?} holds a different data type than this store keeps there; \
             nothing was changed (is another application using the same keys? set a prefix)"
        ),
    )
}

fn unexpected(doing: &str, reply: &[Value]) -> Error {
    Error::new(ErrorKind::Permanent, format!("unexpected reply from Redis {doing}: {reply:?}"))
}

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lex_ranges_cover_exactly_the_prefix() {
        assert_eq!(lex_range(""), (b"-".to_vec(), b"+".to_vec()));
        assert_eq!(lex_range("ads:"), (b"[ads:".to_vec(), b"(ads;".to_vec()));
        let (_, max) = lex_range("é");
        assert_eq!(max, [b'(', 0xC3, 0xAA]);
    }

    #[test]
    fn only_canonical_integers_are_bucket_starts() {
        assert_eq!(canonical_i64(b"60"), Some(60));
        assert_eq!(canonical_i64(b"-60"), Some(-60));
        assert_eq!(canonical_i64(b"0"), Some(0));
        assert_eq!(canonical_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [&b"060"[..], b"+60", b"-0", b"6e1", b"", b" 60", b"9223372036854775808"] {
            assert_eq!(canonical_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn layout_keys() {
        let layout = Layout { prefix: String::new() };
        let key = Key::parse("clicks:ad42").unwrap();
        let p60 = Precision::from_secs(60).unwrap();
        assert_eq!(layout.count(p60, &key), "count:60:clicks:ad42");
        assert_eq!(Layout::member(p60, &key), "60:clicks:ad42");
        assert_eq!(layout.known(), "known:");
        let layout = Layout { prefix: "app:".into() };
        let key = Key::new("ns", "a/b").unwrap();
        assert_eq!(layout.count(p60, &key), "app:count:60:ns/a/b");
        assert_eq!(layout.values("ns"), "app:values:ns");
        assert_eq!(layout.series(&key), "app:series:ns/a/b");
    }
}
