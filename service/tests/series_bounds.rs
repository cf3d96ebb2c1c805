//! Series queries and sliced increments over real TCP: a series spans at
//! most `counters::MAX_SERIES_BUCKETS` buckets, times are years 1 to 9999,
//! an event older than every precision's retention is refused, and a
//! listing by an invalid prefix is refused like an invalid key. Every
//! refusal is a 400 with its kind (and field), changes nothing, and the
//! service keeps serving.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use common::{Reply, http, service_with};
use counters_service::ServiceConfig;
use serde_json::Value;

/// What the sentinels look like; no refusal may change it.
async fn snapshot(addr: SocketAddr) -> Vec<Value> {
    let mut out = Vec::new();
    for path in ["/v1/counters/ns%2Fsentinel", "/v1/counters?namespace=ns", "/v1/series/ns%2Fsentinel?precision=60"] {
        let r = http(addr, "GET", path, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        out.push(r.json);
    }
    out
}

fn assert_refused(r: &Reply, kind: &str, field: Option<&str>, message: &str, what: &str) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.text);
    assert_eq!(r.kind(), kind, "{what}: {}", r.text);
    if let Some(field) = field {
        assert_eq!(r.field(), field, "{what}: {}", r.text);
    }
    let text = r.json["error"]["message"].as_str().unwrap_or_default();
    assert!(text.contains(message), "{what}: the message should say {message:?}: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_ranges_and_event_times_are_bounded_over_tcp() {
    let config = ServiceConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        flush_interval: Duration::from_secs(3600),
        ..ServiceConfig::default()
    };
    let (service, _) = service_with(config);
    let listener = service.bind().await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service.serve(listener, async move {
        let _ = stopped.await;
    }));

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let r =
        http(addr, "POST", "/v1/counters/ns%2Fsentinel", Some(&format!(r#"{{"delta": 5, "at": {now}}}"#)), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let before = snapshot(addr).await;
    assert_eq!(before[2]["points"].as_array().map(Vec::len), Some(1), "{:?}", before[2]);

    let bound = counters::MAX_SERIES_BUCKETS;
    assert_eq!(bound, 100_000, "the bound the READMEs state");
    let wide = format!("/v1/series/ns%2Fsentinel?precision=1&from={}&to={now}", now - bound as i64);
    let whole = format!(
        "/v1/series/ns%2Fsentinel?precision=86400&from={}&to={}",
        counters::MIN_EPOCH_SECS,
        counters::MAX_EPOCH_SECS
    );
    let refusals: Vec<(String, &str, Option<&str>, &str)> = vec![
        (wide, "invalid_input", Some("from"), "spans 100001 buckets of 1s; a series query may span at most 100000"),
        (whole, "invalid_input", Some("from"), "a series query may span at most 100000 buckets"),
        ("/v1/series/k?precision=1&to=9223372036854775807".into(), "invalid_input", Some("to"), "years 1 to 9999"),
        ("/v1/series/k?precision=60&to=-9223372036854775808".into(), "invalid_input", Some("to"), "years 1 to 9999"),
        ("/v1/series/k?from=253402300800".into(), "invalid_input", Some("from"), "years 1 to 9999"),
        ("/v1/counters?namespace=ns&prefix=a%01".into(), "invalid_key", None, "prefix contains control character"),
        ("/v1/counters?namespace=ns&prefix=a%E2%80%AE".into(), "invalid_key", None, "prefix contains U+202E"),
    ];
    for (path, kind, field, message) in &refusals {
        let r = http(addr, "GET", path, None, None).await;
        assert_refused(&r, kind, *field, message, path);
        assert_eq!(snapshot(addr).await, before, "{path} changed nothing");
    }

    let writes = [
        (r#"{"at": -9223372036854775808}"#, Some("at"), "years 1 to 9999"),
        (r#"{"at": 253402300800, "delta": 2}"#, Some("at"), "years 1 to 9999"),
        (r#"{"at": 1, "delta": 3}"#, Some("at"), "older than the retention of every precision"),
    ];
    for (body, field, message) in writes {
        let r = http(addr, "POST", "/v1/counters/ns%2Fsentinel", Some(body), None).await;
        assert_refused(&r, "invalid_input", field, message, body);
        let r = http(addr, "POST", "/v1/counters/ns%2Fnew", Some(body), None).await;
        assert_refused(&r, "invalid_input", field, message, body);
        assert_eq!(snapshot(addr).await, before, "{body} changed nothing and created no counter");
    }

    // Right at the bound answers, and the service still counts.
    let at_bound = format!("/v1/series/ns%2Fsentinel?precision=1&from={}&to={now}", now - bound as i64 + 1);
    let r = http(addr, "GET", &at_bound, None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["points"].as_array().map(Vec::len), Some(1), "{}", r.text);
    let r = http(addr, "POST", "/v1/counters/ns%2Fsentinel", Some(r#"{"delta": 1}"#), None).await;
    assert_eq!((r.status, r.json["value"].as_i64()), (StatusCode::OK, Some(6)), "{}", r.text);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), server).await.unwrap().unwrap().unwrap();
}
