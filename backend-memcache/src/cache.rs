//! The shared memcached cache: its handle, its construction, and what its
//! operations share (reading a cell's state, the local caches of lineage
//! ids and of claim shards).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use counter_core::{
    Batch, BatchId, CacheCapabilities, CacheIncr, CacheIncrOnce, CacheLayer, CacheStats, CachedValue, Cell, DirtyCell,
    Error, ErrorKind, Key, Once, Result, SliceId,
};

use crate::client::{Client, ClientConfig, Pipeline, Reply, Status};
use crate::dirty::Registry;
use crate::last_listing::LastListing;
use crate::layout::{Layout, encode, raw_id};
use crate::options::{MemcacheCacheOptions, MemcacheTarget};
use crate::values::{Flushed, Offset, corrupt, decode_total, parse_u64};

/// Most lineage ids remembered per process before the memory is reset.
const MAX_REMEMBERED_LINEAGES: usize = 100_000;

/// A cache layer in memcached, shared by every process that uses the same
/// server and prefix. See the crate documentation for the layout and the
/// protocols.
///
/// - An increment is one round trip: memcached's atomic `incr` on the
///   counter's total and a read of its flushed mark, pipelined. It returns
///   the counter's new total across all processes.
/// - Totals are signed and exact over the whole i64 range although
///   memcached's counters are unsigned; an overflow is an
///   [`Overflow`](ErrorKind::Overflow) error that changes nothing.
/// - Claims take each cell's pending delta through a claim slot that only
///   one batch can commit (memcached's add and compare-and-swap), so two
///   flushers, in one process or many, never take the same delta; another
///   process recovers the claims of one that died.
/// - A counter that lost its total or its flushed mark (an eviction, a
///   restart) reports [`CacheIncr::Missing`] and is reloaded from the
///   store; the store only ever receives deltas.
#[derive(Debug)]
pub struct MemcacheCache {
    pub(crate) client: Client,
    pub(crate) layout: Layout,
    pub(crate) options: MemcacheCacheOptions,
    pub(crate) registry: Registry,
    /// The dirty cells of the last listing, for the gauges.
    pub(crate) last_listing: LastListing,
    /// Lineage ids last seen per encoded id, to read or add to a total in
    /// the same round trip as its flushed mark.
    lineages: Mutex<HashMap<String, u64>>,
    /// Claims-index shards of batches this process claimed or recovered.
    pub(crate) parts: Mutex<HashMap<BatchId, Vec<u16>>>,
}

/// A cell with its raw and encoded ids.
#[derive(Debug, Clone)]
pub(crate) struct CellRef {
    pub(crate) cell: Cell,
    pub(crate) raw: String,
    pub(crate) enc: String,
}

impl CellRef {
    pub(crate) fn new(cell: Cell) -> CellRef {
        let raw = raw_id(&cell);
        let enc = encode(&raw);
        CellRef { cell, raw, enc }
    }

    pub(crate) fn counter(key: &Key) -> CellRef {
        CellRef::new(Cell::Counter(key.clone()))
    }

    pub(crate) fn slice(slice: &SliceId) -> CellRef {
        CellRef::new(Cell::Slice(slice.clone()))
    }
}

/// A cell's state in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// No flushed mark: not cached.
    Absent,
    /// The flushed mark is frozen: a reload is under way.
    Frozen { f_cas: u64 },
    /// A live lineage: the stored mark and total (`None` when the total is
    /// lost; with its token), and the offset of the values it reports.
    Live { mark: i64, lineage: u64, seq: u64, f_cas: u64, offset: Offset, total: Option<(i64, u64)> },
}

impl State {
    /// Reported total and pending delta of a complete cell.
    pub(crate) fn value(&self) -> Option<(i64, i128)> {
        match *self {
            State::Live { mark, offset, total: Some((t, _)), .. } => {
                let (total, mark) = (offset.report(t), offset.report(mark));
                Some((total, i128::from(total) - i128::from(mark)))
            }
            _ => None,
        }
    }
}

impl MemcacheCache {
    /// Connects to the server a `memcache://host:port[?prefix=P]` URL
    /// names, with default options. A malformed URL is a
    /// [`Config`](ErrorKind::Config) error naming it; a server that does
    /// not answer is [`Unavailable`](ErrorKind::Unavailable).
    pub async fn connect(url: &str) -> Result<MemcacheCache> {
        MemcacheCache::connect_with(MemcacheTarget::parse(url)?, MemcacheCacheOptions::default()).await
    }

    /// Connects to `target`. The URL's parameters (`prefix`, timeouts,
    /// `max_connections`), where given, override the options'. Fails with [`Permanent`](ErrorKind::Permanent) if the
    /// server does not speak the meta protocol (memcached 1.6 or later).
    pub async fn connect_with(target: MemcacheTarget, mut options: MemcacheCacheOptions) -> Result<MemcacheCache> {
        if let Some(prefix) = &target.prefix {
            options.prefix = prefix.clone();
        }
        options.connect_timeout = target.connect_timeout.unwrap_or(options.connect_timeout);
        options.timeout = target.response_timeout.unwrap_or(options.timeout);
        options.max_connections = target.max_connections.unwrap_or(options.max_connections);
        options.check()?;
        let client = Client::new(ClientConfig {
            addr: target.addr(),
            timeout: options.timeout,
            connect_timeout: options.connect_timeout,
            max_connections: options.max_connections,
        });
        let mut probe = Pipeline::new();
        probe.noop();
        let reply = client.run(&probe).await?;
        if reply.first().map(|r| r.status) != Some(Status::Noop) {
            return Err(Error::new(
                ErrorKind::Permanent,
                format!("memcached at {} does not speak the meta protocol (memcached 1.6 or later)", target.addr()),
            ));
        }
        Ok(MemcacheCache {
            client,
            layout: Layout::new(&options.prefix, options.index_shards, options.dirty_shards),
            registry: Registry::new(&options),
            last_listing: LastListing::default(),
            options,
            lineages: Mutex::new(HashMap::new()),
            parts: Mutex::new(HashMap::new()),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        self.layout.prefix()
    }

    /// The options this cache runs with.
    pub fn options(&self) -> &MemcacheCacheOptions {
        &self.options
    }

    /// The server's address (`host:port`).
    pub fn addr(&self) -> &str {
        self.client.addr()
    }

    pub(crate) fn lineage_of(&self, enc: &str) -> Option<u64> {
        self.lineages.lock().expect("lineages lock").get(enc).copied()
    }

    pub(crate) fn remember_lineage(&self, enc: &str, lineage: u64) {
        let mut lineages = self.lineages.lock().expect("lineages lock");
        if lineages.len() >= MAX_REMEMBERED_LINEAGES {
            lineages.clear();
        }
        lineages.insert(enc.to_string(), lineage);
    }

    pub(crate) fn forget_lineage(&self, enc: &str) {
        self.lineages.lock().expect("lineages lock").remove(enc);
    }

    #[cfg(feature = "testing")]
    pub(crate) fn forget_all_lineages(&self) {
        self.lineages.lock().expect("lineages lock").clear();
    }

    /// Reads a flushed-mark reply. `expected` is the raw id the entry must
    /// name (a different one is a hash collision); without it, the raw id
    /// found must encode to `enc`. Returns the state (without the total),
    /// the item's token and the raw id.
    pub(crate) fn flushed_from<'r>(
        &self,
        reply: &'r Reply,
        enc: &str,
        expected: Option<&str>,
    ) -> Result<(Option<Flushed>, u64, Option<&'r str>)> {
        let reply = reply.check()?;
        match reply.status {
            Status::Miss => Ok((None, 0, None)),
            Status::Value => {
                let value = reply.value.as_deref().unwrap_or_default();
                let (flushed, raw) = Flushed::parse(value).ok_or_else(|| corrupt(self.layout.flushed(enc), value))?;
                match expected {
                    Some(want) if want != raw => {
                        return Err(Error::new(
                            ErrorKind::Permanent,
                            format!("memcached key collision: {enc} holds the counter {raw:?}, not {want:?}"),
                        ));
                    }
                    None if encode(raw) != enc => return Err(corrupt(self.layout.flushed(enc), value)),
                    _ => {}
                }
                Ok((Some(flushed), reply.cas.unwrap_or(0), Some(raw)))
            }
            _ => Err(corrupt(self.layout.flushed(enc), reply.text().unwrap_or("").as_bytes())),
        }
    }

    /// Reads a total reply: `None` if the total is missing.
    pub(crate) fn total_from(&self, reply: &Reply, key: &str) -> Result<Option<(i64, u64)>> {
        let reply = reply.check()?;
        match reply.status {
            Status::Miss | Status::NotFound => Ok(None),
            Status::Value => {
                let value = reply.value.as_deref().unwrap_or_default();
                let stored = parse_u64(value).ok_or_else(|| corrupt(key, value))?;
                Ok(Some((decode_total(stored), reply.cas.unwrap_or(0))))
            }
            _ => Err(corrupt(key, reply.text().unwrap_or("").as_bytes())),
        }
    }

    /// The state of each cell (by encoded id, with the raw id it must name
    /// if known), and the raw id found. Two round trips at most: flushed
    /// marks (with the totals of lineages this process knows), then the
    /// other totals.
    pub(crate) async fn read_states(&self, cells: &[(&str, Option<&str>)]) -> Result<Vec<(State, Option<String>)>> {
        let mut p = Pipeline::new();
        let known: Vec<Option<u64>> = cells.iter().map(|(enc, _)| self.lineage_of(enc)).collect();
        for ((enc, _), lineage) in cells.iter().zip(&known) {
            p.get(&self.layout.flushed(enc), "v c");
            if let Some(lineage) = lineage {
                p.get(&self.layout.total(enc, *lineage), "v c");
            }
        }
        let replies = self.client.run(&p).await?;
        let mut replies = replies.iter();
        let mut out = Vec::with_capacity(cells.len());
        let mut second = Vec::new();
        for (i, ((enc, expected), lineage)) in cells.iter().zip(&known).enumerate() {
            let f = replies.next().ok_or_else(|| corrupt("pipeline", b""))?;
            let t = match lineage {
                Some(_) => Some(replies.next().ok_or_else(|| corrupt("pipeline", b""))?),
                None => None,
            };
            let (flushed, f_cas, raw) = self.flushed_from(f, enc, *expected)?;
            let state = match flushed {
                None => State::Absent,
                Some(Flushed::Frozen) => State::Frozen { f_cas },
                Some(Flushed::Live { mark, lineage: found, seq, offset }) => {
                    let total = match (lineage, t) {
                        (Some(known), Some(t)) if *known == found => {
                            self.total_from(t, &self.layout.total(enc, found))?
                        }
                        _ => {
                            second.push((i, found));
                            None
                        }
                    };
                    self.remember_lineage(enc, found);
                    State::Live { mark, lineage: found, seq, f_cas, offset, total }
                }
            };
            if matches!(state, State::Absent | State::Frozen { .. }) && lineage.is_some() {
                self.forget_lineage(enc);
            }
            out.push((state, raw.map(str::to_string)));
        }
        if !second.is_empty() {
            let mut p = Pipeline::new();
            for (i, lineage) in &second {
                p.get(&self.layout.total(cells[*i].0, *lineage), "v c");
            }
            let replies = self.client.run(&p).await?;
            for ((i, lineage), reply) in second.iter().zip(&replies) {
                let total = self.total_from(reply, &self.layout.total(cells[*i].0, *lineage))?;
                if let State::Live { total: slot, .. } = &mut out[*i].0 {
                    *slot = total;
                }
            }
        }
        Ok(out)
    }

    /// [`read_states`](Self::read_states) for cells this process names.
    pub(crate) async fn states_of(&self, cells: &[CellRef]) -> Result<Vec<State>> {
        let ids: Vec<(&str, Option<&str>)> = cells.iter().map(|c| (c.enc.as_str(), Some(c.raw.as_str()))).collect();
        Ok(self.read_states(&ids).await?.into_iter().map(|(state, _)| state).collect())
    }
}

pub(crate) fn overflow(key: &Key) -> Error {
    Error::new(ErrorKind::Overflow, "the total would leave the signed 64-bit range").with_key(key)
}

#[async_trait]
impl CacheLayer for MemcacheCache {
    fn capabilities(&self) -> CacheCapabilities {
        let mut caps = CacheCapabilities::new("memcache");
        caps.shared = true;
        caps.atomic_claim = true;
        caps.durable_claims = true;
        caps.max_claim = 1_000;
        caps
    }

    async fn incr(&self, key: &Key, delta: i64) -> Result<CacheIncr> {
        let applied = self.add_to_total(key, delta).await.map_err(|e| e.or_key(key));
        // A cell it made dirty, or may have (an error after the add may
        // have reached the server), makes the gauges list again.
        let dirtied = match &applied {
            Ok(CacheIncr::Applied { pending, .. }) => *pending == i128::from(delta),
            Ok(CacheIncr::Missing) => false,
            Err(_) => true,
        };
        if delta != 0 && dirtied {
            self.last_listing.changed();
        }
        applied
    }

    async fn incr_once(&self, key: &Key, delta: i64, once: &Once) -> Result<CacheIncrOnce> {
        let outcome = self.add_once(key, delta, once).await;
        self.last_listing.changed();
        outcome
    }

    async fn forget_once(&self, key: &Key, idempotency_key: &str) -> Result<()> {
        self.forget_key(key, idempotency_key).await
    }

    async fn load(&self, key: &Key, durable: i64, extra: i64) -> Result<i64> {
        let total = self.install(key, durable, extra).await.map_err(|e| e.or_key(key));
        if extra != 0 {
            self.last_listing.changed();
        }
        total
    }

    async fn incr_slices(&self, slices: &[SliceId], delta: i64) -> Result<()> {
        let added = self.add_to_slices(slices, delta).await;
        if added.is_err() && delta != 0 {
            // Some may have reached the server (see `incr`).
            self.last_listing.changed();
        }
        added
    }

    async fn set(&self, key: &Key, total: i64) -> Result<Option<i64>> {
        let previous = self.set_total(key, total).await.map_err(|e| e.or_key(key));
        self.last_listing.changed();
        previous
    }

    async fn get_many(&self, cells: &[Cell]) -> Result<Vec<Option<CachedValue>>> {
        let refs: Vec<CellRef> = cells.iter().cloned().map(CellRef::new).collect();
        let states = self.states_of(&refs).await?;
        Ok(cells
            .iter()
            .zip(states)
            .map(|(cell, state)| {
                state.value().map(|(total, pending)| match cell {
                    Cell::Counter(_) => CachedValue { total, pending },
                    // A slice's "total" is its pending delta (the cache holds no base for slices).
                    Cell::Slice(_) => CachedValue { total: i64::try_from(pending).unwrap_or(total), pending },
                })
            })
            .collect())
    }

    async fn rebase(&self, key: &Key, flushed: i64, shift: i64) -> Result<bool> {
        self.shift_counter(key, flushed, shift).await.map_err(|e| e.or_key(key))
    }

    async fn remove(&self, key: &Key) -> Result<()> {
        self.forget(key).await.map_err(|e| e.or_key(key))
    }

    async fn dirty(&self, dirty_before_ms: u64, limit: usize) -> Result<Vec<DirtyCell>> {
        self.list_dirty(dirty_before_ms, limit).await
    }

    async fn claim(&self, id: BatchId, cells: &[Cell]) -> Result<Batch> {
        self.claim_cells(id, cells).await
    }

    async fn ack(&self, id: BatchId) -> Result<()> {
        self.forget_claim(id).await
    }

    async fn claims(&self, older_than_ms: u64) -> Result<Vec<Batch>> {
        self.recover_older_than(older_than_ms).await
    }

    async fn claims_for(&self, keys: &[Key]) -> Result<Vec<Batch>> {
        self.recover_touching(keys).await
    }

    async fn claimed_keys(&self, keys: &[Key]) -> Result<Vec<(BatchId, Vec<Key>)>> {
        self.intents_touching(keys).await
    }

    async fn stats(&self) -> Result<CacheStats> {
        self.gauges().await
    }
}
