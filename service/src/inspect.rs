//! Counters in detail, for the admin page: per counter its total, its
//! durable value (the store's), its pending delta (the cache's) and how long
//! that delta has been pending.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::Uri;
use axum::routing::{any, get};
use axum::{Json, Router};
use counters::{Cell, Key, ListQuery, now_ms};
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::{check_listing, empty_key};
use crate::auth::CanRead;
use crate::config::MAX_LIST_LIMIT;
use crate::errors::ApiError;
use crate::json::Params;
use crate::keys::KeyPath;
use crate::state::AppState;

/// Most counters a search looks through before filtering by text.
const SEARCH_SCAN: usize = MAX_LIST_LIMIT;

/// The `/v1/inspect` routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/inspect", get(inspect_many))
        .route("/v1/inspect/", any(empty_key))
        .route("/v1/inspect/{*key}", get(inspect_one))
}

/// One counter in detail.
#[derive(Debug, Serialize)]
struct Detail {
    key: String,
    namespace: String,
    name: String,
    /// The counter's total: durable + in flight + pending (+ drift).
    total: i64,
    /// The store's value (0 if it has none).
    durable: i64,
    /// Deltas taken from the cache for the store, not landed yet (`null`
    /// while another process holds a claim of the counter).
    in_flight: Option<i128>,
    /// The cache's pending delta (not yet in the store).
    pending: i128,
    /// `total - (durable + in_flight + pending)`: 0, except for a moment
    /// after someone else wrote the store (the cache then converges within
    /// one reconcile interval); `null` when `in_flight` is.
    drift: Option<i128>,
    /// How long the oldest part of the pending delta has waited, if any.
    pending_for_ms: Option<u64>,
    /// Deltas the store refused for good, held and tried again (part of
    /// `in_flight`).
    held: i64,
    /// Why the store refuses them.
    #[serde(skip_serializing_if = "Option::is_none")]
    held_error: Option<String>,
}

/// Readings of the store and the cache taken again while a batch landing
/// between them makes them disagree.
const CONSISTENT_READS: usize = 3;

/// Details of `keys` whose totals (for those not cached) are `totals`. The
/// store, the cache and what is in flight are read again while they
/// disagree (a batch landed between the reads), so the numbers shown add up
/// unless the cache really drifted.
async fn details(state: &AppState, keys: Vec<Key>, totals: Vec<i64>) -> Result<Vec<Detail>, ApiError> {
    let counters = &state.counters;
    let cells: Vec<Cell> = keys.iter().cloned().map(Cell::Counter).collect();
    let (mut durable, mut cached, mut in_flight) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..CONSISTENT_READS {
        durable = counters.store().get_many(&keys).await?;
        cached = counters.cache().get_many(&cells).await?;
        in_flight = counters.in_flight(&keys).await?;
        let adds_up = durable.iter().zip(&cached).zip(&in_flight).all(|((d, c), f)| match (c, f) {
            (Some(c), Some(f)) => i128::from(c.total) == i128::from(d.unwrap_or(0)) + f + c.pending,
            _ => true,
        });
        if adds_up {
            break;
        }
    }
    let since: Vec<Option<u64>> = if cached.iter().flatten().any(|c| c.pending != 0) {
        counters.cache().dirty_since(&keys).await?
    } else {
        vec![None; keys.len()]
    };
    let mut held: HashMap<Key, (i64, String)> = HashMap::new();
    for cell in counters.held_cells() {
        if let Cell::Counter(key) = &cell.cell {
            let entry = held.entry(key.clone()).or_insert((0, cell.error.to_string()));
            entry.0 = entry.0.saturating_add(cell.delta);
        }
    }
    let now = now_ms();
    Ok(keys
        .into_iter()
        .zip(totals)
        .zip(durable.into_iter().zip(cached).zip(in_flight))
        .zip(since)
        .map(|(((key, total), ((durable, cached), in_flight)), since)| {
            let pending = cached.map_or(0, |c| c.pending);
            let total = cached.map_or(total, |c| c.total);
            let durable = durable.unwrap_or(0);
            // An uncached counter's total is read from the store: nothing to drift.
            let drift = match cached {
                Some(_) => in_flight.map(|f| i128::from(total) - i128::from(durable) - f - pending),
                None => Some(0),
            };
            let pending_for_ms = since.filter(|_| pending != 0).map(|s| now.saturating_sub(s));
            let (held, held_error) = held.remove(&key).map_or((0, None), |(d, e)| (d, Some(e)));
            Detail {
                key: key.to_string(),
                namespace: key.namespace().to_string(),
                name: key.name().to_string(),
                total,
                durable,
                in_flight,
                pending,
                drift,
                pending_for_ms,
                held,
                held_error,
            }
        })
        .collect())
}

/// `GET /v1/inspect?namespace=NS&prefix=P&search=TEXT&limit=N`: counters of
/// a namespace by name prefix whose names contain `search`
/// (case-insensitive), largest first, at most `limit` (default 100).
async fn inspect_many(_: CanRead, State(state): State<AppState>, uri: Uri) -> Result<Json<Value>, ApiError> {
    let params = Params::new(uri.query(), &["namespace", "prefix", "search", "limit"])?;
    let (namespace, prefix) = (params.text("namespace"), params.text("prefix"));
    check_listing(namespace, prefix)?;
    let search = params.text("search").to_lowercase();
    let limit = params.parsed::<usize>("limit")?.unwrap_or(100);
    if limit > MAX_LIST_LIMIT {
        return Err(ApiError::bad_field("limit", format!("limit={limit}; at most {MAX_LIST_LIMIT}")));
    }
    let query = if search.is_empty() {
        ListQuery::new(namespace, prefix).top(limit)
    } else {
        ListQuery::new(namespace, prefix).limit(SEARCH_SCAN)
    };
    let mut rows = state.counters.list(&query).await.map_err(|e| ApiError::from_counters(&e, "prefix"))?;
    let scanned = rows.len();
    rows.retain(|(k, _)| search.is_empty() || k.name().to_lowercase().contains(&search));
    let matched = rows.len();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(limit);
    let (keys, totals): (Vec<Key>, Vec<i64>) = rows.into_iter().unzip();
    let details = details(&state, keys, totals).await?;
    Ok(Json(json!({
        "namespace": namespace,
        "prefix": prefix,
        "search": search,
        "matched": matched,
        "scanned": scanned,
        "counters": details,
    })))
}

/// `GET /v1/inspect/{key}`: one counter in detail.
async fn inspect_one(
    _: CanRead,
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    Params::new(uri.query(), &[])?;
    let total = state.counters.get(&key).await.map_err(|e| ApiError::from_counters(&e, "key"))?;
    let mut details = details(&state, vec![key], vec![total]).await?;
    Ok(Json(json!(details.pop())))
}
