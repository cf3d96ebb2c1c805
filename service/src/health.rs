//! `/healthz` (the process is up) and `/readyz` (the store answers).

use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use counters::Key;
use serde_json::json;

use crate::errors::{ApiError, RETRY_AFTER_UNAVAILABLE};
use crate::state::AppState;

/// The key `/readyz` reads from the store (reading creates nothing).
pub const PROBE_NAMESPACE: &str = "counters-service";
/// The name of the probe key.
pub const PROBE_NAME: &str = "readyz";

/// The health routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

/// `GET /healthz`: 200 while the process serves requests.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when the store answered a read of the probe key
/// within the ready timeout; 503 with `Retry-After` when it did not, while
/// the store fails for good (a missing table, bad credentials, a store that
/// cannot keep the protocol: flushing has stopped), or while the service
/// drains for shutdown.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_draining() {
        return ApiError::shutting_down().into_response();
    }
    if let Some(e) = state.counters.store_failure() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("the store fails for good, flushing has stopped: {e}"),
        )
        .with_retry_after(RETRY_AFTER_UNAVAILABLE)
        .into_response();
    }
    let probe = Key::new(PROBE_NAMESPACE, PROBE_NAME).expect("the probe key is valid");
    let started = Instant::now();
    let answer = tokio::time::timeout(state.info.ready_timeout, state.counters.store().get_many(&[probe])).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match answer {
        Ok(Ok(_)) => {
            (StatusCode::OK, Json(json!({ "status": "ready", "store": state.info.store, "store_ms": elapsed_ms })))
                .into_response()
        }
        Ok(Err(e)) => {
            let mut error = ApiError::from_counters(&e, "store");
            error.status = StatusCode::SERVICE_UNAVAILABLE;
            error.kind = "not_ready";
            error.field = None;
            error.retry_after = Some(RETRY_AFTER_UNAVAILABLE);
            error.into_response()
        }
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("the store did not answer within {:?}", state.info.ready_timeout),
        )
        .with_retry_after(RETRY_AFTER_UNAVAILABLE)
        .into_response(),
    }
}
