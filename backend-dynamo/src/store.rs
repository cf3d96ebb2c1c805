//! The DynamoDB store.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, DeleteRequest, KeysAndAttributes, Put, ReturnValue, TransactWriteItem, Update,
    WriteRequest,
};
use counter_core::{
    ApplyOutcome, Batch, BatchEntry, BatchId, Cell, CleanReport, DurableStore, Error, ErrorKind, Key, ListQuery,
    Precision, Result, StoreCapabilities,
};

use crate::errors::{is_transient_code, map_sdk};
use crate::numbers::exact_i64;
use crate::tables::{Tables, attr, ensure};
use crate::target::{DynamoTarget, client};

/// Most items in one `TransactWriteItems`.
const MAX_TRANSACTION: usize = 100;

/// Most entries in one batch as claimed: a transaction holds at most 100
/// items, and a batch as claimed needs two marker items besides its
/// entries (its own marker, and the check that it was not split).
///
/// A half of a batch split `d` times (see [`Batch::halves`]) needs `2 + 2d`
/// marker items (a check and a split marker per batch of its lineage) and
/// holds at most `ceil(98 / 2^d)` entries: 53 items at depth 1, 31 at
/// depth 2, and never more than 100 (a batch of 98 entries is down to
/// single entries at depth 7: 17 items).
pub const MAX_BATCH: usize = MAX_TRANSACTION - 2;

/// The batch identity the probe's condition check names: never a batch's
/// (those are UUIDs), and never written.
const PROBE_ID: &str = "counters-store-probe";

/// Error codes of an endpoint that does not know an operation.
fn is_unknown_operation(code: &str) -> bool {
    ["UnknownOperation", "UnrecognizedOperation", "InvalidAction", "NotImplemented"].iter().any(|c| code.contains(c))
}

/// Most keys in one `BatchGetItem`.
const MAX_GET: usize = 100;

/// Most requests in one `BatchWriteItem`.
const MAX_WRITE: usize = 25;

/// Settings of a [`DynamoStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DynamoOptions {
    /// How long batch markers are kept (DynamoDB's TTL removes them after
    /// that, up to two days later): longer than any batch can be held and
    /// retried. Default 7 days.
    pub batch_retention: Duration,
    /// Time-slice buckets expire through TTL after this many bucket widths
    /// past their start (a backstop for the cleaner). Default 240.
    pub slice_ttl_buckets: u32,
}

impl Default for DynamoOptions {
    fn default() -> Self {
        DynamoOptions { batch_retention: Duration::from_secs(7 * 24 * 3600), slice_ttl_buckets: 240 }
    }
}

/// A [`DurableStore`] on DynamoDB.
///
/// - Counters live in a table with the layout of Python's
///   `distributed_counter` (string hash key `key` holding the counter's
///   display form, number `counter_value`), so either can read and
///   increment the other's counters. Time slices and batch markers live in
///   two side tables (see the crate README).
/// - A batch is one `TransactWriteItems`: a conditional `Put` of a marker
///   item for the batch identity, and an `ADD` per entry, each conditioned
///   on the result staying within i64. A batch seen before fails on its
///   marker and changes nothing, whether it is retried by the SDK, by the
///   engine after a lost ack, or by a second flusher, and however long
///   after (the marker outlives DynamoDB's 10-minute idempotency window).
///   The same transaction keeps the split contract of
///   [`DurableStore::apply`]: a `ConditionCheck` that no batch of the
///   lineage has a marker, one that the batch's split marker is absent, and
///   a `Put` of the split marker of every batch of the lineage.
/// - Opening it checks that the endpoint can keep that protocol (the key
///   schema, and a no-op transaction), so an endpoint without transactions
///   is refused before any increment is acknowledged.
/// - Reads are strongly consistent. Values that are not exact integers
///   within i64 (a float another client wrote) are errors naming the key.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    tables: Tables,
    options: DynamoOptions,
    /// The endpoint, for messages.
    endpoint: String,
    /// Whether [`probe`](DurableStore::probe) succeeded once (it is not
    /// repeated then).
    probed: Arc<AtomicBool>,
}

fn epoch_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn series_name(key: &Key, precision: Precision) -> String {
    format!("{}:{key}", precision.secs())
}

/// The exact i64 in a number attribute, `None` if absent.
fn read_number(
    item: &HashMap<String, AttributeValue>,
    name: &str,
    what: impl std::fmt::Display,
) -> Result<Option<i64>> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::N(text)) => exact_i64(text).map(Some).ok_or_else(|| {
            Error::new(
                ErrorKind::Permanent,
                format!("DynamoDB holds {text} in {name}, which is not an integer within the signed 64-bit range"),
            )
            .with_key(&what)
        }),
        Some(other) => {
            Err(Error::new(ErrorKind::Permanent, format!("DynamoDB holds a non-number in {name}: {other:?}"))
                .with_key(&what))
        }
    }
}

/// The condition that keeps `attribute + delta` within i64.
fn stays_in_range(delta: i64) -> (&'static str, AttributeValue) {
    if delta >= 0 {
        ("attribute_not_exists(#v) OR #v <= :lim", n(i64::MAX - delta))
    } else {
        ("attribute_not_exists(#v) OR #v >= :lim", n(i64::MIN - delta))
    }
}

impl DynamoStore {
    /// Opens the store a `dynamodb://TABLE?...` URL names (see
    /// [`DynamoTarget`]), creating missing tables unless `create=false`.
    pub async fn connect(url: &str) -> Result<DynamoStore> {
        DynamoStore::connect_with(DynamoTarget::parse(url)?, DynamoOptions::default()).await
    }

    /// Opens the store on `target` with `options`.
    ///
    /// Checks that the endpoint can keep the protocol before it returns
    /// (see [`probe`](DurableStore::probe)): tables whose keys have other
    /// names or types than the layout's, or an endpoint without
    /// `TransactWriteItems` (a DynamoDB emulator such as dynalite), are a
    /// [`Permanent`](ErrorKind::Permanent) error.
    pub async fn connect_with(target: DynamoTarget, options: DynamoOptions) -> Result<DynamoStore> {
        let client = client(&target).await;
        let tables = Tables::new(&target.table);
        ensure(&client, &tables, target.create).await?;
        let endpoint = match (&target.endpoint, &target.region) {
            (Some(endpoint), _) => endpoint.clone(),
            (None, Some(region)) => format!("of AWS region {region}"),
            (None, None) => "of the AWS configuration".to_string(),
        };
        let store = DynamoStore { client, tables, options, endpoint, probed: Arc::new(AtomicBool::new(false)) };
        store.probe().await?;
        Ok(store)
    }

    /// The counters table.
    pub fn table(&self) -> &str {
        &self.tables.counters
    }

    fn entry_update(&self, entry: &BatchEntry, now: i64) -> TransactWriteItem {
        let (condition, limit) = stays_in_range(entry.delta);
        let update = match &entry.cell {
            Cell::Counter(key) => Update::builder()
                .table_name(&self.tables.counters)
                .key(attr::KEY, s(key.to_string()))
                .update_expression("ADD #v :d")
                .expression_attribute_names("#v", attr::VALUE),
            Cell::Slice(slice) => {
                let ttl = slice
                    .start
                    .saturating_add(i64::from(slice.precision.secs()) * i64::from(self.options.slice_ttl_buckets));
                Update::builder()
                    .table_name(&self.tables.slices)
                    .key(attr::SERIES, s(series_name(&slice.key, slice.precision)))
                    .key(attr::START, n(slice.start))
                    .update_expression("ADD #v :d SET #e = :e")
                    .expression_attribute_names("#v", attr::COUNT)
                    .expression_attribute_names("#e", attr::EXPIRES)
                    .expression_attribute_values(":e", n(ttl.max(now)))
            }
        };
        let update = update
            .condition_expression(condition)
            .expression_attribute_values(":d", n(entry.delta))
            .expression_attribute_values(":lim", limit)
            .build()
            .expect("table, key and expression are set");
        TransactWriteItem::builder().update(update).build()
    }

    /// A `Put` of the marker of `id`, on the condition that it is new when
    /// `new_only` (a batch's own marker), unconditional otherwise (a split
    /// marker, which the other half of a batch may have written already).
    fn marker(&self, id: BatchId, now: i64, new_only: bool) -> TransactWriteItem {
        let expires = now.saturating_add(self.options.batch_retention.as_secs() as i64);
        let put = Put::builder()
            .table_name(&self.tables.batches)
            .item(attr::ID, s(id.to_string()))
            .item(attr::EXPIRES, n(expires));
        let put = if new_only {
            put.condition_expression("attribute_not_exists(#id)").expression_attribute_names("#id", attr::ID)
        } else {
            put
        };
        TransactWriteItem::builder().put(put.build().expect("table and item are set")).build()
    }

    /// A `ConditionCheck` that no marker of `id` exists; writes nothing.
    fn unmarked(&self, id: &str) -> TransactWriteItem {
        let check = ConditionCheck::builder()
            .table_name(&self.tables.batches)
            .key(attr::ID, s(id))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", attr::ID)
            .build()
            .expect("table, key and condition are set");
        TransactWriteItem::builder().condition_check(check).build()
    }

    /// Why an entry's condition failed: an overflow, a value that is not an
    /// integer, or (it changed since) nothing a retry cannot cure.
    async fn explain_refusal(&self, entry: &BatchEntry) -> Error {
        let current = match &entry.cell {
            Cell::Counter(key) => self.get_many(std::slice::from_ref(key)).await.map(|v| v[0]),
            Cell::Slice(slice) => self
                .series(&slice.key, slice.precision, slice.start, slice.start)
                .await
                .map(|v| v.first().map(|(_, count)| *count)),
        };
        match current {
            Err(e) => e,
            Ok(Some(value)) if value.checked_add(entry.delta).is_none() => {
                Error::new(ErrorKind::Overflow, "the value would leave the signed 64-bit range")
                    .with_key(entry.cell.key())
            }
            Ok(_) => Error::new(ErrorKind::Unavailable, "a concurrent write changed the value; retry")
                .with_key(entry.cell.key()),
        }
    }

    async fn scan_all(
        &self,
        table: &str,
        filter: Option<ScanFilter<'_>>,
    ) -> Result<Vec<HashMap<String, AttributeValue>>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let mut request = self.client.scan().table_name(table).consistent_read(true).set_exclusive_start_key(start);
            if let Some(filter) = &filter {
                request = request.filter_expression(filter.expression);
                for (placeholder, name) in &filter.names {
                    request = request.expression_attribute_names(*placeholder, *name);
                }
                for (placeholder, value) in &filter.values {
                    request = request.expression_attribute_values(*placeholder, value.clone());
                }
            }
            let page = request.send().await.map_err(|e| map_sdk(e, "Scan", table))?;
            items.extend(page.items().iter().cloned());
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(items),
            }
        }
    }

    /// Deletes slice items by key, 25 at a time, retrying unprocessed ones.
    async fn delete_slices(&self, keys: Vec<HashMap<String, AttributeValue>>) -> Result<u64> {
        let total = keys.len() as u64;
        for chunk in keys.chunks(MAX_WRITE) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|key| {
                    let delete = DeleteRequest::builder().set_key(Some(key.clone())).build().expect("key is set");
                    WriteRequest::builder().delete_request(delete).build()
                })
                .collect();
            let mut attempt = 0;
            while !requests.is_empty() {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.tables.slices, requests)
                    .send()
                    .await
                    .map_err(|e| map_sdk(e, "BatchWriteItem", &self.tables.slices))?;
                requests =
                    out.unprocessed_items().and_then(|u| u.get(&self.tables.slices)).cloned().unwrap_or_default();
                backoff(&mut attempt, !requests.is_empty(), &self.tables.slices).await?;
            }
        }
        Ok(total)
    }
}

/// A scan's filter: the expression and its placeholders.
struct ScanFilter<'a> {
    expression: &'a str,
    names: Vec<(&'a str, &'a str)>,
    values: Vec<(&'a str, AttributeValue)>,
}

/// Sleeps before retrying unprocessed items (10 ms doubling), or gives up
/// with a transient error after 10 attempts.
async fn backoff(attempt: &mut u32, more: bool, table: &str) -> Result<()> {
    if !more {
        return Ok(());
    }
    *attempt += 1;
    if *attempt > 10 {
        return Err(Error::new(ErrorKind::Unavailable, format!("DynamoDB kept items of {table:?} unprocessed")));
    }
    tokio::time::sleep(Duration::from_millis(10 << (*attempt).min(8))).await;
    Ok(())
}

#[async_trait]
impl DurableStore for DynamoStore {
    fn capabilities(&self) -> StoreCapabilities {
        let mut caps = StoreCapabilities::new("dynamodb");
        caps.shared = true;
        caps.max_batch = MAX_BATCH;
        caps
    }

    async fn probe(&self) -> Result<()> {
        if self.probed.load(Ordering::Relaxed) {
            return Ok(());
        }
        // A transaction of one condition check: it writes nothing, and
        // answers whether the endpoint knows TransactWriteItems at all.
        let sent = self
            .client
            .transact_write_items()
            .transact_items(self.unmarked(PROBE_ID))
            .customize()
            .config_override(engine_retries())
            .send()
            .await;
        match sent {
            Ok(_) => {}
            // The condition failed (someone wrote that item): transactions work.
            Err(e)
                if matches!(e.as_service_error(), Some(TransactWriteItemsError::TransactionCanceledException(_))) => {}
            Err(e) if e.code().is_some_and(is_unknown_operation) => {
                return Err(Error::new(
                    ErrorKind::Permanent,
                    format!(
                        "the DynamoDB endpoint {} does not support TransactWriteItems, which this store needs to \
                         apply each batch exactly once (it answered {}); use DynamoDB or an emulator with \
                         transactions (DynamoDB Local, moto)",
                        self.endpoint,
                        e.code().unwrap_or_default()
                    ),
                ));
            }
            Err(e) => return Err(map_sdk(e, "TransactWriteItems (the probe)", &self.tables.batches)),
        }
        self.probed.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn apply(&self, batch: &Batch) -> Result<ApplyOutcome> {
        let lineage = batch.lineage.len();
        let markers = 2 + 2 * lineage;
        if markers + batch.entries.len() > MAX_TRANSACTION {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "a DynamoDB batch holds at most {MAX_BATCH} entries (fewer for a part of a split batch: \
                     {markers} marker items and its entries must fit in {MAX_TRANSACTION}), this one {}",
                    batch.entries.len()
                ),
            ));
        }
        let now = epoch_secs();
        let entries: Vec<&BatchEntry> = batch.entries.iter().filter(|e| e.delta != 0).collect();
        // Items, in the order the cancellation reasons follow: the batch's
        // marker (conditional), a check per batch of its lineage, a check
        // of its split marker, the split marker of every batch of its
        // lineage, then the entries. All are distinct items, as a
        // transaction requires.
        let mut items = vec![self.marker(batch.id, now, true)];
        items.extend(batch.lineage.iter().map(|a| self.unmarked(&a.to_string())));
        items.push(self.unmarked(&batch.id.split_marker().to_string()));
        items.extend(batch.lineage.iter().map(|a| self.marker(a.split_marker(), now, false)));
        items.extend(entries.iter().map(|e| self.entry_update(e, now)));
        let sent = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .customize()
            .config_override(engine_retries())
            .send()
            .await;
        let error = match sent {
            Ok(_) => return Ok(ApplyOutcome::Applied),
            Err(error) => error,
        };
        let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = error.as_service_error() else {
            return Err(map_sdk(error, "TransactWriteItems", &self.tables.counters));
        };
        let codes: Vec<&str> = cancelled.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None")).collect();
        let failed = |i: usize| codes.get(i) == Some(&"ConditionalCheckFailed");
        // The batch or a batch of its lineage was applied.
        if (0..=lineage).any(failed) {
            return Ok(ApplyOutcome::AlreadyApplied);
        }
        // A part of the batch was applied.
        if failed(lineage + 1) {
            return Ok(ApplyOutcome::Split);
        }
        for (code, entry) in codes.iter().skip(markers).zip(&entries) {
            if *code == "ConditionalCheckFailed" {
                return Err(self.explain_refusal(entry).await);
            }
        }
        let kind = if codes.iter().all(|c| *c == "None" || is_transient_code(c)) {
            ErrorKind::Unavailable
        } else {
            ErrorKind::Permanent
        };
        Err(Error::new(kind, format!("DynamoDB cancelled the batch transaction: {codes:?}")))
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<i64>>> {
        let unique: BTreeSet<String> = keys.iter().map(|k| k.to_string()).collect();
        let unique: Vec<String> = unique.into_iter().collect();
        let mut found: HashMap<String, Option<i64>> = HashMap::new();
        for chunk in unique.chunks(MAX_GET) {
            let request_keys = chunk.iter().map(|k| HashMap::from([(attr::KEY.to_string(), s(k.clone()))])).collect();
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(request_keys))
                    .consistent_read(true)
                    .projection_expression("#k, #v")
                    .expression_attribute_names("#k", attr::KEY)
                    .expression_attribute_names("#v", attr::VALUE)
                    .build()
                    .expect("keys are set"),
            );
            let mut attempt = 0;
            while let Some(request) = pending.take() {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.tables.counters, request)
                    .send()
                    .await
                    .map_err(|e| map_sdk(e, "BatchGetItem", &self.tables.counters))?;
                for item in out.responses().and_then(|r| r.get(&self.tables.counters)).into_iter().flatten() {
                    if let Some(AttributeValue::S(key)) = item.get(attr::KEY) {
                        found.insert(key.clone(), read_number(item, attr::VALUE, key)?);
                    }
                }
                pending = out.unprocessed_keys().and_then(|u| u.get(&self.tables.counters)).cloned();
                pending = pending.filter(|p| !p.keys().is_empty());
                backoff(&mut attempt, pending.is_some(), &self.tables.counters).await?;
            }
        }
        Ok(keys.iter().map(|k| found.get(&k.to_string()).copied().flatten()).collect())
    }

    async fn delete(&self, key: &Key) -> Result<bool> {
        let text = key.to_string();
        let old = self
            .client
            .delete_item()
            .table_name(&self.tables.counters)
            .key(attr::KEY, s(text.clone()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| map_sdk(e, "DeleteItem", &self.tables.counters).with_key(key))?;
        let existed = old.attributes().is_some_and(|a| !a.is_empty());
        let candidates = self
            .scan_all(
                &self.tables.slices,
                Some(ScanFilter {
                    expression: "contains(#s, :k)",
                    names: vec![("#s", attr::SERIES)],
                    values: vec![(":k", s(text.clone()))],
                }),
            )
            .await?;
        let mine: Vec<_> = candidates
            .into_iter()
            .filter(|item| match item.get(attr::SERIES) {
                Some(AttributeValue::S(series)) => series.split_once(':').map(|(_, k)| k) == Some(text.as_str()),
                _ => false,
            })
            .filter_map(|item| {
                let series = item.get(attr::SERIES)?.clone();
                let start = item.get(attr::START)?.clone();
                Some(HashMap::from([(attr::SERIES.to_string(), series), (attr::START.to_string(), start)]))
            })
            .collect();
        let slices = self.delete_slices(mine).await?;
        Ok(existed || slices > 0)
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<(Key, i64)>> {
        let mut entries = Vec::new();
        for item in self.scan_all(&self.tables.counters, None).await? {
            let Some(AttributeValue::S(text)) = item.get(attr::KEY) else { continue };
            // Items other clients wrote under keys we cannot read are not ours to list.
            let Ok(key) = Key::parse_stored(text) else { continue };
            if !query.matches(&key) {
                continue;
            }
            if let Some(value) = read_number(&item, attr::VALUE, &key)? {
                entries.push((key, value));
            }
        }
        query.finish(&mut entries);
        Ok(entries)
    }

    async fn series(&self, key: &Key, precision: Precision, from: i64, to: i64) -> Result<Vec<(i64, i64)>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.tables.slices)
                .consistent_read(true)
                .key_condition_expression("#s = :s AND #t BETWEEN :a AND :b")
                .expression_attribute_names("#s", attr::SERIES)
                .expression_attribute_names("#t", attr::START)
                .expression_attribute_values(":s", s(series_name(key, precision)))
                .expression_attribute_values(":a", n(from))
                .expression_attribute_values(":b", n(to))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| map_sdk(e, "Query", &self.tables.slices).with_key(key))?;
            for item in page.items() {
                let bucket = read_number(item, attr::START, key)?.unwrap_or_default();
                let count = read_number(item, attr::COUNT, key)?.unwrap_or_default();
                out.push((bucket, count));
            }
            match page.last_evaluated_key() {
                Some(last) if !last.is_empty() => start = Some(last.clone()),
                _ => break,
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    async fn clean(&self, precision: Precision, cutoff: i64) -> Result<CleanReport> {
        let prefix = format!("{}:", precision.secs());
        let old = self
            .scan_all(
                &self.tables.slices,
                Some(ScanFilter {
                    expression: "begins_with(#s, :p) AND #t < :c",
                    names: vec![("#s", attr::SERIES), ("#t", attr::START)],
                    values: vec![(":p", s(prefix)), (":c", n(cutoff))],
                }),
            )
            .await?;
        let mut touched = BTreeSet::new();
        let keys: Vec<_> = old
            .into_iter()
            .filter_map(|item| {
                let series = item.get(attr::SERIES)?.clone();
                let start = item.get(attr::START)?.clone();
                if let AttributeValue::S(name) = &series {
                    touched.insert(name.clone());
                }
                Some(HashMap::from([(attr::SERIES.to_string(), series), (attr::START.to_string(), start)]))
            })
            .collect();
        let buckets_removed = self.delete_slices(keys).await?;
        let mut series_removed = 0;
        for series in touched {
            let left = self
                .client
                .query()
                .table_name(&self.tables.slices)
                .consistent_read(true)
                .key_condition_expression("#s = :s")
                .expression_attribute_names("#s", attr::SERIES)
                .expression_attribute_values(":s", s(series))
                .limit(1)
                .send()
                .await
                .map_err(|e| map_sdk(e, "Query", &self.tables.slices))?;
            if left.items().is_empty() {
                series_removed += 1;
            }
        }
        Ok(CleanReport { buckets_removed, series_removed })
    }
}

/// The SDK's settings for the writes the engine retries itself (a batch's
/// apply and the probe): one attempt each, so that the SDK's three attempts
/// do not stack under the engine's (which back off, count, and split
/// refused batches). Reads keep the SDK's standard retries: nothing retries
/// them above.
fn engine_retries() -> aws_sdk_dynamodb::config::Builder {
    aws_sdk_dynamodb::config::Builder::default().retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
}
