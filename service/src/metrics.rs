//! Prometheus metrics through the `metrics` facade, with a recorder of the
//! service's own (not the process-global one, so two services in one process
//! do not mix their numbers).
//!
//! | name | type | from |
//! |---|---|---|
//! | `counters_increments_total` | counter | engine snapshot |
//! | `counters_flushed_batches_total` | counter | engine snapshot |
//! | `counters_flushed_cells_total` | counter | engine snapshot |
//! | `counters_flush_retries_total` | counter | engine snapshot |
//! | `counters_flush_failures_total` | counter | engine snapshot |
//! | `counters_recovered_claims_total` | counter | engine snapshot |
//! | `counters_backpressure_rejections_total` | counter | engine snapshot |
//! | `counters_store_applies_total` | counter | engine snapshot |
//! | `counters_age_bound_exceeded_total` | counter | engine snapshot: cells found pending past their age bound (the store is not keeping up) |
//! | `counters_pending_cells` | gauge | engine snapshot |
//! | `counters_oldest_pending_age_seconds` | gauge | engine snapshot (0 when nothing is pending) |
//! | `counters_last_flush_error` | gauge | 1 while the flusher's last error is set |
//! | `counters_held_batches` | gauge | engine snapshot: batches claimed and not landed in full |
//! | `counters_refused_cells` | gauge | engine snapshot: cells the store refused, held |
//! | `counters_open_claims` | gauge | engine snapshot: claims in the cache, every process's |
//! | `counters_store_failed` | gauge | 1 while the store fails for good (flushing stopped) |
//! | `counters_store_call_duration_seconds{op,outcome}` | histogram | every store call, timed |
//! | `counters_http_requests_total{method,route,status}` | counter | every request |
//! | `counters_http_request_duration_seconds{method,route}` | histogram | every request |
//!
//! Snapshot-fed series are the `counters` facade's (`counters::metrics`,
//! cargo feature `metrics`), so a service embedding the library exports the
//! same ones. They are recorded on each scrape, so they are as fresh as the
//! engine's last reading of the cache (its flusher pass, at most a second
//! old).

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use counters::MetricsSnapshot;
use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::state::AppState;

/// Histogram buckets (seconds), from half a millisecond to ten seconds.
const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The service's metrics: a Prometheus recorder and its render handle.
pub struct ServiceMetrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for ServiceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceMetrics").finish_non_exhaustive()
    }
}

impl Default for ServiceMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ServiceMetrics {
    /// A recorder with latency histograms and every series described.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        let metrics = ServiceMetrics { recorder, handle };
        metrics.with(describe);
        metrics
    }

    /// Runs `f` with this service's recorder as the `metrics` facade's recorder.
    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// Records one HTTP request.
    pub fn record_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.with(|| {
            let labels = [("method", method.to_string()), ("route", route.to_string())];
            counter!("counters_http_requests_total", "method" => method.to_string(), "route" => route.to_string(), "status" => status.to_string())
                .increment(1);
            histogram!("counters_http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
        });
    }

    /// Records one call to the store.
    pub fn record_store_call(&self, op: &'static str, ok: bool, elapsed: Duration) {
        self.with(|| {
            histogram!("counters_store_call_duration_seconds", "op" => op, "outcome" => if ok { "ok" } else { "error" })
                .record(elapsed.as_secs_f64());
        });
    }

    /// Records the engine's snapshot ([`counters::metrics::record`]) and
    /// renders everything in the Prometheus text format.
    pub fn scrape(&self, snapshot: &MetricsSnapshot) -> String {
        self.with(|| counters::metrics::record(snapshot));
        self.handle.render()
    }
}

/// Describes the engine's series (the facade's) and the service's own.
fn describe() {
    counters::metrics::describe();
    describe_histogram!(
        "counters_store_call_duration_seconds",
        Unit::Seconds,
        "Duration of store calls, by operation and outcome."
    );
    describe_counter!("counters_http_requests_total", "HTTP requests, by method, route and status.");
    describe_histogram!(
        "counters_http_request_duration_seconds",
        Unit::Seconds,
        "Duration of HTTP requests, by method and route."
    );
}

/// Middleware: times every request and counts it by route template (never
/// by raw path, so keys do not become labels).
pub async fn track_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Only standard methods become labels: anything else is `other`.
    let method = match request.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS") => m,
        _ => "other",
    }
    .to_string();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let response = next.run(request).await;
    state.metrics.record_request(&method, &route, response.status().as_u16(), started.elapsed());
    response
}

/// The `/metrics` route.
pub(crate) fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/metrics", axum::routing::get(scrape))
}

/// `GET /metrics`: Prometheus text (a read: it follows the read token rules).
async fn scrape(_: crate::auth::CanRead, State(state): State<AppState>) -> Response {
    use axum::response::IntoResponse;
    let body = state.metrics.scrape(&state.counters.metrics());
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}
