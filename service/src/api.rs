//! The JSON API under `/v1`: increment, read, put, delete, list, series,
//! flush and status.

use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use counters::{Cell, ErrorKind, FlushOptions, HeldCell, IncrOptions, Key, ListQuery, Policy};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{CanRead, CanWrite};
use crate::config::{MAX_KEYS_PER_REQUEST, MAX_LIST_LIMIT};
use crate::errors::ApiError;
use crate::json::{JsonBody, Params, present};
use crate::keys::{KeyPath, epoch};
use crate::state::AppState;

/// The `/v1` routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/counters", get(list))
        .route("/v1/counters/", any(empty_key))
        .route("/v1/counters/{*key}", get(get_one).post(incr).put(put).delete(delete))
        .route("/v1/get_many", post(get_many))
        .route("/v1/series/", any(empty_key))
        .route("/v1/series/{*key}", get(series))
        .route("/v1/flush", post(flush))
        .route("/v1/status", get(status))
}

type ApiResult = Result<Json<Value>, ApiError>;

/// A route that names no key: the key is empty.
pub(crate) async fn empty_key() -> ApiError {
    ApiError::from_counters(&Key::named("").expect_err("an empty name is invalid"), "key")
}

/// Body of `POST /v1/counters/{key}`. Every field is optional (absent, not
/// `null`: `null` is refused naming the field); `{}` (or an empty body)
/// adds 1.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrBody {
    /// How much to add; negative subtracts. Default 1.
    #[serde(default, deserialize_with = "present")]
    delta: Option<i64>,
    /// Start a missing counter at this value.
    #[serde(default, deserialize_with = "present")]
    default: Option<i64>,
    /// Write-behind policy for this call.
    #[serde(default, deserialize_with = "present")]
    policy: Option<PolicyBody>,
    /// Count into time slices (default: the counter's family, which is the
    /// service's setting unless the config file says otherwise; `at` implies it).
    #[serde(default, deserialize_with = "present")]
    sliced: Option<bool>,
    /// Event time for time slices, epoch seconds (default now).
    #[serde(default, deserialize_with = "present")]
    at: Option<i64>,
    /// Count into the key's ancestors too.
    #[serde(default, deserialize_with = "present")]
    rollup: Option<bool>,
}

/// A per-call policy: `{"immediate": true}` (write-through) or
/// `{"interval_ms": N, "threshold": N}` (either or both).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    #[serde(default, deserialize_with = "present")]
    immediate: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    interval_ms: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    threshold: Option<u64>,
}

impl PolicyBody {
    fn to_policy(&self) -> Result<Policy, ApiError> {
        let field = |name: &str| format!("policy.{name}");
        if self.immediate == Some(true) {
            if self.interval_ms.is_some() || self.threshold.is_some() {
                return Err(ApiError::bad_field("policy", "an immediate policy takes no interval_ms or threshold"));
            }
            return Ok(Policy::immediate());
        }
        if self.interval_ms.is_none() && self.threshold.is_none() {
            return Err(ApiError::bad_field("policy", "give {\"immediate\": true}, or interval_ms and/or threshold"));
        }
        let mut policy = Policy::default();
        if let Some(ms) = self.interval_ms {
            policy = Policy::interval(Duration::from_millis(ms))
                .map_err(|e| ApiError::from_counters(&e, &field("interval_ms")))?;
        }
        if let Some(t) = self.threshold {
            policy = policy.with_threshold(t).map_err(|e| ApiError::from_counters(&e, &field("threshold")))?;
        }
        Ok(policy)
    }
}

impl IncrBody {
    /// The increment's options: what the body says, the counter's family
    /// (the service's defaults, or its config file's families) otherwise.
    fn options(&self) -> Result<IncrOptions, ApiError> {
        let mut options = IncrOptions::new();
        if let Some(d) = self.default {
            options = options.default_value(d);
        }
        if let Some(p) = &self.policy {
            options = options.policy(p.to_policy()?);
        }
        if let Some(r) = self.rollup {
            options = options.rollup(r);
        }
        let at = self.at.map(|secs| epoch(secs, "at")).transpose()?;
        match (self.sliced, at) {
            (Some(false), Some(_)) => {
                return Err(ApiError::bad_field("at", "`at` is the time of a time-sliced increment; sliced is false"));
            }
            (Some(false), None) => options.time_sliced = Some(false),
            (Some(true), at) | (None, at @ Some(_)) => options = options.time_sliced(at),
            (None, None) => {}
        }
        Ok(options)
    }
}

/// The request header that makes an increment idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// `POST /v1/counters/{key}`: adds `delta` and answers the new total. With
/// an `Idempotency-Key` header, a repeat of the request (the same key and
/// body) counts nothing and answers the first total; the same key with
/// another body is 422.
async fn incr(
    _: CanWrite,
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
    uri: Uri,
    headers: HeaderMap,
    JsonBody(body): JsonBody<IncrBody>,
) -> Response {
    if let Err(e) = Params::new(uri.query(), &[]) {
        return e.into_response();
    }
    let mut options = match body.options() {
        Ok(options) => options,
        Err(e) => return e.into_response(),
    };
    let mut keys = headers.get_all(IDEMPOTENCY_KEY).iter();
    match (keys.next(), keys.next()) {
        (Some(_), Some(_)) => {
            return ApiError::bad_field("Idempotency-Key", "give one Idempotency-Key header, not several")
                .into_response();
        }
        (Some(value), None) => match value.to_str().map(str::to_string) {
            Ok(id) => match counters::check_idempotency_key(&id) {
                Ok(()) => options = options.idempotency_key(id),
                Err(e) => return ApiError::bad_field("Idempotency-Key", e.message()).into_response(),
            },
            Err(_) => {
                return ApiError::bad_field("Idempotency-Key", "an idempotency key holds only visible ASCII")
                    .into_response();
            }
        },
        _ => {}
    }
    if let (Some(at), Some(true)) = (options.at, options.time_sliced) {
        // An event older than every retention is refused naming `at` (the
        // library refuses it too, but cannot name the field).
        if let Err(e) = state.counters.time_slice_config().check_event_time(at, std::time::SystemTime::now()) {
            return ApiError::from_counters(&e.with_key(&key), "at").into_response();
        }
    }
    match state.counters.incr_with(&key, body.delta.unwrap_or(1), &options).await {
        Ok(total) => Json(json!({ "key": key.to_string(), "value": total })).into_response(),
        Err(e) => ApiError::from_write(&e, "delta", &key),
    }
}

/// `GET /v1/counters/{key}`: the total (durable plus pending; 0 if absent).
async fn get_one(_: CanRead, State(state): State<AppState>, KeyPath(key): KeyPath, uri: Uri) -> ApiResult {
    Params::new(uri.query(), &[])?;
    let value = state.counters.get(&key).await.map_err(|e| ApiError::from_counters(&e, "key"))?;
    Ok(Json(json!({ "key": key.to_string(), "value": value })))
}

/// Body of `PUT /v1/counters/{key}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    #[serde(default, deserialize_with = "present")]
    value: Option<i64>,
}

/// `PUT /v1/counters/{key}`: sets the value.
async fn put(
    _: CanWrite,
    State(state): State<AppState>,
    KeyPath(key): KeyPath,
    uri: Uri,
    JsonBody(body): JsonBody<PutBody>,
) -> Response {
    if let Err(e) = Params::new(uri.query(), &[]) {
        return e.into_response();
    }
    let value = match body.value {
        Some(value) => value,
        None => return ApiError::bad_field("value", "the body needs {\"value\": N}").into_response(),
    };
    match state.counters.put(&key, value).await {
        Ok(()) => Json(json!({ "key": key.to_string(), "value": value })).into_response(),
        Err(e) => ApiError::from_write(&e, "value", &key),
    }
}

/// `DELETE /v1/counters/{key}`: deletes a counter and its series.
async fn delete(_: CanWrite, State(state): State<AppState>, KeyPath(key): KeyPath, uri: Uri) -> ApiResult {
    Params::new(uri.query(), &[])?;
    let deleted = state.counters.delete(&key).await.map_err(|e| ApiError::from_counters(&e, "key"))?;
    Ok(Json(json!({ "key": key.to_string(), "deleted": deleted })))
}

/// Body of `POST /v1/get_many`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetManyBody {
    #[serde(default)]
    keys: Vec<String>,
}

/// `POST /v1/get_many`: totals of many counters, in order.
async fn get_many(_: CanRead, State(state): State<AppState>, JsonBody(body): JsonBody<GetManyBody>) -> ApiResult {
    if body.keys.len() > MAX_KEYS_PER_REQUEST {
        return Err(ApiError::bad_field(
            "keys",
            format!("{} keys; at most {MAX_KEYS_PER_REQUEST} per request", body.keys.len()),
        ));
    }
    let keys = body
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| Key::parse(k).map_err(|e| ApiError::from_counters(&e, "key").with_field(format!("keys[{i}]"))))
        .collect::<Result<Vec<Key>, ApiError>>()?;
    let values = state.counters.get_many(&keys).await.map_err(|e| ApiError::from_counters(&e, "keys"))?;
    let rows: Vec<Value> = keys.iter().zip(values).map(|(k, v)| json!({ "key": k.to_string(), "value": v })).collect();
    Ok(Json(json!({ "counters": rows })))
}

/// Validates a listing's namespace and name prefix by the key rules
/// (400 `invalid_key` with field `namespace` or `prefix`).
pub(crate) fn check_listing(namespace: &str, prefix: &str) -> Result<(), ApiError> {
    Key::validate_namespace(namespace).map_err(|e| ApiError::from_counters(&e, "namespace").with_field("namespace"))?;
    Key::validate_prefix(prefix).map_err(|e| ApiError::from_counters(&e, "prefix").with_field("prefix"))
}

/// `GET /v1/counters?namespace=NS&prefix=P&top=N` (largest first) or
/// `&limit=N` (by name, default 1000).
async fn list(_: CanRead, State(state): State<AppState>, uri: Uri) -> ApiResult {
    let params = Params::new(uri.query(), &["namespace", "prefix", "top", "limit"])?;
    let (namespace, prefix) = (params.text("namespace"), params.text("prefix"));
    check_listing(namespace, prefix)?;
    let top: Option<usize> = params.parsed("top")?;
    let limit: Option<usize> = params.parsed("limit")?;
    let query = ListQuery::new(namespace, prefix);
    let (query, order, n, field) = match (top, limit) {
        (Some(_), Some(_)) => return Err(ApiError::bad_field("top", "give either top or limit, not both")),
        (Some(n), None) => (query.top(n), "value", n, "top"),
        (None, l) => {
            let n = l.unwrap_or(1_000);
            (query.limit(n), "name", n, "limit")
        }
    };
    if n > MAX_LIST_LIMIT {
        return Err(ApiError::bad_field(field, format!("{field}={n}; at most {MAX_LIST_LIMIT}")));
    }
    let rows = state.counters.list(&query).await.map_err(|e| ApiError::from_counters(&e, "prefix"))?;
    let rows: Vec<Value> = rows.iter().map(|(k, v)| json!({ "key": k.to_string(), "value": v })).collect();
    Ok(Json(json!({ "namespace": namespace, "prefix": prefix, "order": order, "counters": rows })))
}

/// `GET /v1/series/{key}?precision=S&from=EPOCH&to=EPOCH`: `(start, count)`
/// points of a time-sliced counter. Defaults: the finest precision, the
/// retained samples up to now. Empty buckets are left out.
async fn series(_: CanRead, State(state): State<AppState>, KeyPath(key): KeyPath, uri: Uri) -> ApiResult {
    let params = Params::new(uri.query(), &["precision", "from", "to"])?;
    let info = &state.info;
    let precision = params.parsed::<u32>("precision")?.unwrap_or(info.precisions[0]);
    if !info.precisions.contains(&precision) {
        return Err(ApiError::bad_field(
            "precision",
            format!("precision={precision} is not configured (configured: {:?} seconds)", info.precisions),
        ));
    }
    let to = match params.parsed::<i64>("to")? {
        Some(t) => epoch(t, "to")?,
        None => SystemTime::now(),
    };
    let span = Duration::from_secs(u64::from(precision) * u64::from(info.samples.saturating_sub(1)));
    let from = match params.parsed::<i64>("from")? {
        Some(f) => epoch(f, "from")?,
        None => to.checked_sub(span).unwrap_or(SystemTime::UNIX_EPOCH),
    };
    if from > to {
        return Err(ApiError::bad_field("from", "the range starts after it ends (from > to)"));
    }
    // The precision, the order and the years are checked above: what the
    // library refuses here is a range of too many buckets, a fault of `from`.
    let points =
        state.counters.series(&key, precision, from, to).await.map_err(|e| ApiError::from_counters(&e, "from"))?;
    let points: Vec<Value> = points.iter().map(|(s, c)| json!({ "start": s, "count": c })).collect();
    Ok(Json(json!({
        "key": key.to_string(),
        "precision": precision,
        "from": counters::epoch_secs(from),
        "to": counters::epoch_secs(to),
        "points": points,
    })))
}

/// `POST /v1/flush[?recover=true]`: writes every pending delta to the store
/// now, and reports the claims other processes hold. A cell the store
/// refuses for good is 502 `store_refused` (the other cells landed; the
/// refused ones are held, see `/v1/status` and `/v1/inspect`).
async fn flush(_: CanWrite, State(state): State<AppState>, uri: Uri) -> ApiResult {
    let params = Params::new(uri.query(), &["recover"])?;
    let options = FlushOptions::new().recover_claims(params.parsed::<bool>("recover")?.unwrap_or(false));
    let report = state.counters.flush_with(&options).await.map_err(|e| match e.kind() {
        ErrorKind::Overflow | ErrorKind::InvalidInput | ErrorKind::InvalidKey => {
            let mut api = ApiError::new(StatusCode::BAD_GATEWAY, "store_refused", e.to_string());
            api.key = e.key().map(Box::from);
            api
        }
        _ => ApiError::from(e),
    })?;
    Ok(Json(json!({
        "batches": report.batches,
        "counters": report.counters,
        "slices": report.slices,
        "recovered": report.recovered,
        "outstanding_claims": report.outstanding_claims,
        "oldest_claim_age_ms": report.oldest_claim_age.map(|a| a.as_millis() as u64),
    })))
}

/// A held (refused) cell as JSON.
pub(crate) fn held_json(held: &HeldCell) -> Value {
    let (key, slice) = match &held.cell {
        Cell::Counter(key) => (key, None),
        Cell::Slice(s) => (&s.key, Some(json!({ "precision": s.precision.secs(), "start": s.start }))),
    };
    json!({
        "key": key.to_string(),
        "slice": slice,
        "delta": held.delta,
        "error": held.error.to_string(),
        "attempts": held.attempts,
        "refused_for_ms": held.refused_for.as_millis() as u64,
        "next_attempt_in_ms": held.next_attempt_in.as_millis() as u64,
    })
}

/// `GET /v1/status`: backends, time slices, token rules and the engine's
/// metrics (what the admin page shows at a glance).
async fn status(_: CanRead, State(state): State<AppState>) -> ApiResult {
    let m = state.counters.metrics();
    let info = &state.info;
    Ok(Json(json!({
        "cache": info.cache,
        "store": info.store,
        "precisions": info.precisions,
        "samples": info.samples,
        "time_sliced": info.time_sliced,
        "flush_interval_ms": info.flush_interval.as_millis() as u64,
        "auth": {
            "writes_need_token": state.access.writes_need_token(),
            "reads_need_token": state.access.reads_need_token(),
        },
        "engine": {
            "increments": m.increments,
            "batches_flushed": m.batches_flushed,
            "cells_flushed": m.cells_flushed,
            "retries": m.retries,
            "failures": m.failures,
            "recovered_claims": m.recovered_claims,
            "backpressure_rejections": m.backpressure_rejections,
            "pending_cells": m.pending_cells,
            "oldest_pending_age_ms": m.oldest_pending_age.map(|a| a.as_millis() as u64),
            "store_applies": m.store_applies,
            "store_apply_ms": m.store_apply_time.as_secs_f64() * 1000.0,
            "last_error": m.last_error,
            "held_batches": m.held_batches,
            "refused_cells": m.refused_cells,
            "open_claims": m.open_claims,
            "store_failure": m.store_failure,
        },
        "held_cells": state.counters.held_cells().iter().map(held_json).collect::<Vec<_>>(),
    })))
}
