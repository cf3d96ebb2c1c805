//! `/metrics` is Prometheus text with the named series, fed from the
//! engine's snapshot on each scrape and from timed requests and store calls;
//! `/healthz` and `/readyz` answer as probes.

mod common;

use std::collections::BTreeSet;

use axum::http::StatusCode;
use common::{SetMode, get, post, service};

fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text")
}

fn value(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    let sample = scrape.samples.iter().find(|s| s.metric == name).unwrap_or_else(|| panic!("{name} is missing"));
    match sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: unexpected {other:?}"),
    }
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_with_the_named_series() {
    let (service, _) = service();
    let app = service.router();
    for _ in 0..3 {
        post(&app, "/v1/counters/m", r#"{"delta": 2}"#).await;
    }
    post(&app, "/v1/counters/n", "").await;
    let r = get(&app, "/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let s = scrape(&r.text);
    assert_eq!(value(&s, "counters_increments_total"), 4.0);
    assert_eq!(value(&s, "counters_flushed_batches_total"), 0.0);
    assert_eq!(value(&s, "counters_flush_failures_total"), 0.0);
    assert_eq!(value(&s, "counters_flush_retries_total"), 0.0);
    // Gauges as of the engine's last reading of the cache.
    service.counters().flush().await.unwrap();
    post(&app, "/v1/counters/n", "").await;
    let r = get(&app, "/metrics").await;
    let s = scrape(&r.text);
    assert_eq!(value(&s, "counters_flushed_cells_total"), 2.0);
    assert_eq!(value(&s, "counters_flushed_batches_total"), 1.0);
    assert!(value(&s, "counters_pending_cells") >= 0.0);
    assert!(value(&s, "counters_oldest_pending_age_seconds") >= 0.0);

    let names: BTreeSet<&str> = s.samples.iter().map(|x| x.metric.as_str()).collect();
    for name in [
        "counters_increments_total",
        "counters_flushed_batches_total",
        "counters_flushed_cells_total",
        "counters_flush_retries_total",
        "counters_flush_failures_total",
        "counters_recovered_claims_total",
        "counters_backpressure_rejections_total",
        "counters_store_applies_total",
        "counters_age_bound_exceeded_total",
        "counters_pending_cells",
        "counters_oldest_pending_age_seconds",
        "counters_last_flush_error",
        "counters_store_call_duration_seconds",
        "counters_http_requests_total",
        "counters_http_request_duration_seconds",
    ] {
        assert!(names.contains(name), "{name} is missing from:\n{}", r.text);
    }
    // Store latency is a real histogram, labelled by operation.
    let apply = s
        .samples
        .iter()
        .find(|x| x.metric == "counters_store_call_duration_seconds" && x.labels.get("op") == Some("apply"))
        .expect("the flush's apply was timed");
    assert!(matches!(apply.value, prometheus_parse::Value::Histogram(ref b) if !b.is_empty()), "{apply:?}");
    assert!(r.text.contains("# TYPE counters_store_call_duration_seconds histogram"), "{}", r.text);
    // Requests are counted by route template, never by raw path. (Checked on
    // the text: prometheus-parse's label pattern stops at the `}` inside the
    // template, which Prometheus itself reads fine.)
    assert!(
        r.text
            .lines()
            .any(|l| l == r#"counters_http_requests_total{method="POST",route="/v1/counters/{*key}",status="200"} 5"#),
        "{}",
        r.text
    );
    assert!(
        r.text.contains(r#"counters_http_request_duration_seconds_count{method="POST",route="/v1/counters/{*key}"} 5"#)
    );
    assert!(!r.text.contains("route=\"/v1/counters/m\""));
    service.counters().shutdown().await.unwrap();
}

#[tokio::test]
async fn healthz_and_readyz() {
    let (service, store) = service();
    let app = service.router();
    let r = get(&app, "/healthz").await;
    assert_eq!((r.status, r.json["status"].as_str()), (StatusCode::OK, Some("ok")));
    let r = get(&app, "/readyz").await;
    assert_eq!((r.status, r.json["status"].as_str()), (StatusCode::OK, Some("ready")), "{}", r.text);
    assert_eq!(r.json["store"], "memory");
    store.set(common::Mode::Permanent);
    let r = get(&app, "/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.kind(), "not_ready");
    assert_eq!(get(&app, "/healthz").await.status, StatusCode::OK, "the process is still up");
    store.set(common::Mode::Ok);
    service.counters().shutdown().await.unwrap();
}
