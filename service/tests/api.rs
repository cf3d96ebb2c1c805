//! The `/v1` API through the router: what each endpoint answers, and the
//! status code of every kind of failure.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{Method, StatusCode};
use common::{Mode, SetMode, call, get, post, service, service_with};
use counters_service::ServiceConfig;
use serde_json::json;

#[tokio::test]
async fn increment_get_put_delete_round_trip() {
    let (service, _) = service();
    let app = service.router();
    let r = post(&app, "/v1/counters/clicks%2Fad42%3Aus", r#"{"delta": 5}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json, json!({ "key": "clicks/ad42:us", "value": 5 }));
    // An empty body adds 1; the raw slash form names the same counter.
    let r = post(&app, "/v1/counters/clicks/ad42:us", "").await;
    assert_eq!(r.json["value"], 6);
    let r = post(&app, "/v1/counters/clicks/ad42:us", r#"{"delta": -10}"#).await;
    assert_eq!(r.json["value"], -4, "a negative delta decrements");
    assert_eq!(get(&app, "/v1/counters/clicks%2Fad42%3Aus").await.json["value"], -4);
    // Default namespace, default value.
    let r = post(&app, "/v1/counters/plain", r#"{"delta": 1, "default": 100}"#).await;
    assert_eq!(r.json, json!({ "key": "plain", "value": 101 }));
    assert_eq!(get(&app, "/v1/counters/never-seen").await.json["value"], 0);

    let r = call(&app, Method::PUT, "/v1/counters/plain", Some(r#"{"value": -7}"#), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(get(&app, "/v1/counters/plain").await.json["value"], -7);

    let r = post(&app, "/v1/get_many", r#"{"keys": ["plain", "clicks/ad42:us", "nothing"]}"#).await;
    assert_eq!(
        r.json["counters"],
        json!([
            { "key": "plain", "value": -7 },
            { "key": "clicks/ad42:us", "value": -4 },
            { "key": "nothing", "value": 0 },
        ])
    );

    let r = call(&app, Method::DELETE, "/v1/counters/plain", None, None).await;
    assert_eq!(r.json, json!({ "key": "plain", "deleted": true }));
    let r = call(&app, Method::DELETE, "/v1/counters/plain", None, None).await;
    assert_eq!(r.json, json!({ "key": "plain", "deleted": false }));
    assert_eq!(get(&app, "/v1/counters/plain").await.json["value"], 0);
    service.counters().shutdown().await.unwrap();
}

#[tokio::test]
async fn list_by_name_and_top_n_with_prefix() {
    let (service, _) = service();
    let app = service.router();
    for (name, n) in [("a:1", 3), ("a:2", 30), ("a:3", 10), ("b:1", 99)] {
        post(&app, &format!("/v1/counters/ns%2F{name}"), &format!(r#"{{"delta": {n}}}"#)).await;
    }
    // A flushed counter and a pending one are both listed.
    post(&app, "/v1/flush", "").await;
    post(&app, "/v1/counters/ns%2Fa:4", r#"{"delta": 20}"#).await;
    let r = get(&app, "/v1/counters?namespace=ns&prefix=a:&top=2").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["order"], "value");
    assert_eq!(r.json["counters"], json!([{ "key": "ns/a:2", "value": 30 }, { "key": "ns/a:4", "value": 20 }]));
    let r = get(&app, "/v1/counters?namespace=ns&prefix=a:&limit=3").await;
    let names: Vec<&str> = r.json["counters"].as_array().unwrap().iter().map(|c| c["key"].as_str().unwrap()).collect();
    assert_eq!(names, ["ns/a:1", "ns/a:2", "ns/a:3"]);
    let r = get(&app, "/v1/counters").await;
    assert_eq!(r.json["counters"], json!([]), "the default namespace is empty");
    service.counters().shutdown().await.unwrap();
}

#[tokio::test]
async fn time_slices_at_event_time_and_series() {
    let (service, _) = service();
    let app = service.router();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let minute = now - now.rem_euclid(60);
    let ten_ago = minute - 600;
    post(&app, "/v1/counters/hits", &format!(r#"{{"delta": 2, "at": {ten_ago}}}"#)).await;
    post(&app, "/v1/counters/hits", &format!(r#"{{"delta": 3, "sliced": true, "at": {}}}"#, ten_ago + 1)).await;
    post(&app, "/v1/counters/hits", r#"{"delta": 4, "sliced": true}"#).await;
    post(&app, "/v1/counters/hits", r#"{"delta": 100, "sliced": false}"#).await;
    let r = get(&app, &format!("/v1/series/hits?precision=60&from={}&to={}", ten_ago - 60, minute + 59)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["precision"], 60);
    assert_eq!(
        r.json["points"],
        json!([{ "start": ten_ago, "count": 5 }, { "start": minute, "count": 4 }]),
        "unsliced increments are not in the series"
    );
    // Defaults: the finest precision over the retained samples up to now
    // (the 1 s buckets of ten minutes ago are past their retention).
    let r = get(&app, "/v1/series/hits").await;
    assert_eq!(r.json["precision"], 1);
    assert_eq!(r.json["points"].as_array().unwrap().iter().map(|p| p["count"].as_i64().unwrap()).sum::<i64>(), 4);
    assert_eq!(get(&app, "/v1/counters/hits").await.json["value"], 109);
    service.counters().shutdown().await.unwrap();
}

#[tokio::test]
async fn per_call_policies_and_a_sliced_service() {
    let config = ServiceConfig { time_sliced: true, ..ServiceConfig::default() };
    let (service, store) = service_with(config);
    let app = service.router();
    let r = post(&app, "/v1/counters/now", r#"{"delta": 2, "policy": {"immediate": true}}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let durable = counters::DurableStore::get_many(&*store, &[counters::Key::named("now").unwrap()]).await.unwrap();
    assert_eq!(durable, [Some(2)], "an immediate policy writes through before answering");
    post(&app, "/v1/counters/batch", r#"{"policy": {"interval_ms": 60000, "threshold": 3}}"#).await;
    let r = get(&app, "/v1/series/batch?precision=1").await;
    assert_eq!(r.json["points"][0]["count"], 1, "the service counts every increment into slices");
    service.counters().shutdown().await.unwrap();
}

/// Each bad input is a 400 whose JSON error names the field.
#[tokio::test]
async fn bad_input_is_400_naming_the_field() {
    let (service, _) = service();
    let app = service.router();
    post(&app, "/v1/counters/big", r#"{"delta": 9223372036854775807}"#).await;
    let long = "x".repeat(1025);
    let cases: Vec<(Method, String, Option<&str>, &str, &str)> = vec![
        (Method::POST, "/v1/counters/bad%01key".into(), None, "key", "invalid_key"),
        (Method::GET, format!("/v1/counters/{long}"), None, "key", "invalid_key"),
        (Method::GET, "/v1/counters/ns%2F".into(), None, "key", "invalid_key"),
        (Method::GET, "/v1/counters/".into(), None, "key", "invalid_key"),
        (Method::GET, "/v1/counters/bad%FFutf8".into(), None, "key", "invalid_key"),
        (Method::POST, "/v1/counters/k".into(), Some(r#"{"delta": "one"}"#), "delta", "invalid_input"),
        (Method::POST, "/v1/counters/k".into(), Some(r#"{"delta": 1.5}"#), "delta", "invalid_input"),
        (Method::POST, "/v1/counters/k".into(), Some(r#"{"detla": 1}"#), "detla", "invalid_input"),
        (Method::POST, "/v1/counters/k".into(), Some(r#"{"delta": 1"#), "body", "invalid_input"),
        (Method::POST, "/v1/counters/big".into(), Some(r#"{"delta": 1}"#), "delta", "overflow"),
        (Method::POST, "/v1/counters/k".into(), Some(r#"{"policy": {}}"#), "policy", "invalid_input"),
        (
            Method::POST,
            "/v1/counters/k".into(),
            Some(r#"{"policy": {"threshold": 0}}"#),
            "policy.threshold",
            "invalid_input",
        ),
        (
            Method::POST,
            "/v1/counters/k".into(),
            Some(r#"{"policy": {"interval_ms": 0}}"#),
            "policy.interval_ms",
            "invalid_input",
        ),
        (
            Method::POST,
            "/v1/counters/k".into(),
            Some(r#"{"policy": {"immediate": true, "threshold": 2}}"#),
            "policy",
            "invalid_input",
        ),
        (Method::POST, "/v1/counters/k".into(), Some(r#"{"sliced": false, "at": 5}"#), "at", "invalid_input"),
        (Method::POST, "/v1/counters/k".into(), Some(r#"{"at": 99999999999999}"#), "at", "invalid_input"),
        (Method::PUT, "/v1/counters/k".into(), Some("{}"), "value", "invalid_input"),
        (Method::PUT, "/v1/counters/k".into(), Some(r#"{"value": 9223372036854775808}"#), "value", "invalid_input"),
        (Method::POST, "/v1/get_many".into(), Some(r#"{"keys": ["ok", ""]}"#), "keys[1]", "invalid_key"),
        (Method::POST, "/v1/get_many".into(), Some(r#"{"keys": "ok"}"#), "keys", "invalid_input"),
        (Method::GET, "/v1/counters?namespace=a%2Fb".into(), None, "namespace", "invalid_key"),
        (Method::GET, "/v1/counters?top=2&limit=3".into(), None, "top", "invalid_input"),
        (Method::GET, "/v1/counters?limit=many".into(), None, "limit", "invalid_input"),
        (Method::GET, "/v1/counters?limit=10001".into(), None, "limit", "invalid_input"),
        (Method::GET, "/v1/counters?prefx=a".into(), None, "prefx", "invalid_input"),
        (Method::GET, "/v1/series/k?precision=7".into(), None, "precision", "invalid_input"),
        (Method::GET, "/v1/series/k?from=10&to=5".into(), None, "from", "invalid_input"),
        (Method::GET, "/v1/series/k?to=soon".into(), None, "to", "invalid_input"),
        (Method::GET, "/v1/inspect?limit=-1".into(), None, "limit", "invalid_input"),
    ];
    for (method, path, body, field, kind) in cases {
        let r = call(&app, method.clone(), &path, body, None).await;
        let shown = format!("{method} {} {body:?}", &path[..path.len().min(60)]);
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{shown}: {}", r.text);
        assert_eq!(r.field(), field, "{shown}: {}", r.text);
        assert_eq!(r.kind(), kind, "{shown}: {}", r.text);
        assert!(!r.json["error"]["message"].as_str().unwrap().is_empty());
    }
    let too_many: Vec<String> = (0..1001).map(|i| format!("k{i}")).collect();
    let r = post(&app, "/v1/get_many", &json!({ "keys": too_many }).to_string()).await;
    assert_eq!((r.status, r.field()), (StatusCode::BAD_REQUEST, "keys"));
    // Nothing was created by the bad requests.
    let r = get(&app, "/v1/counters").await;
    assert_eq!(r.json["counters"], json!([{ "key": "big", "value": i64::MAX }]));
    service.counters().shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_in_json() {
    let (service, _) = service();
    let app = service.router();
    for path in ["/nope", "/v2/counters/x", "/v1/counter/x", "/v1"] {
        let r = get(&app, path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.kind(), "not_found");
    }
    let r = call(&app, Method::PATCH, "/v1/counters/x", None, None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.kind(), "method_not_allowed");
    let r = get(&app, "/v1/flush").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    service.counters().shutdown().await.unwrap();
}

#[tokio::test]
async fn an_oversized_body_is_413_and_changes_nothing() {
    let config = ServiceConfig { body_limit: 1024, ..ServiceConfig::default() };
    let (service, _) = service_with(config);
    let app = service.router();
    let padding = " ".repeat(2048);
    let r = post(&app, "/v1/counters/k", &format!(r#"{{"delta": 5{padding}}}"#)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    assert_eq!((r.kind(), r.field()), ("body_too_large", "body"));
    let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
    let r = post(&app, "/v1/get_many", &json!({ "keys": keys }).to_string()).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(get(&app, "/v1/counters/k").await.json["value"], 0);
    let r = post(&app, "/v1/counters/k", &format!(r#"{{"delta": 5}}{}"#, " ".repeat(900))).await;
    assert_eq!(r.status, StatusCode::OK, "a body under the limit is fine");
    service.counters().shutdown().await.unwrap();
}

/// Store down: reads are 503 with Retry-After, increments keep succeeding
/// until the pending bound, then 503 backpressure; a permanent refusal is 502.
#[tokio::test]
async fn store_failures_are_503_with_retry_after_and_502() {
    let config =
        ServiceConfig { max_pending: 3, flush_interval: Duration::from_millis(40), ..ServiceConfig::default() };
    let (service, store) = service_with(config);
    let app = service.router();
    store.set(Mode::Unavailable);
    let r = get(&app, "/v1/counters/never-cached").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.kind(), "unavailable");
    assert_eq!(r.header("retry-after"), Some("5"));
    let r = get(&app, "/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("retry-after"), Some("5"));

    // New counters cannot be loaded while the store is down; counters
    // already cached keep counting. Three pending cells reach the bound.
    store.set(Mode::Ok);
    let mut last = std::collections::BTreeMap::new();
    for k in ["a", "b", "c"] {
        let r = post(&app, &format!("/v1/counters/{k}"), "").await;
        assert_eq!(r.status, StatusCode::OK);
        last.insert(k, r.json["value"].as_i64().unwrap());
    }
    store.set(Mode::Unavailable);
    let mut backpressure = None;
    for _ in 0..200 {
        for k in ["a", "b", "c", "d"] {
            let r = post(&app, &format!("/v1/counters/{k}"), "").await;
            if r.status == StatusCode::OK {
                last.insert(k, r.json["value"].as_i64().unwrap());
            } else {
                backpressure = Some(r);
            }
        }
        if backpressure.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = backpressure.expect("increments get backpressure once the pending bound is reached");
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.kind(), "backpressure");
    assert_eq!(r.header("retry-after"), Some("1"));

    store.set(Mode::Permanent);
    let r = get(&app, "/v1/counters?namespace=x").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert_eq!(r.kind(), "backend_failed");

    store.set(Mode::Ok);
    service.counters().shutdown().await.unwrap();
    let keys: Vec<counters::Key> = last.keys().map(|k| counters::Key::named(k).unwrap()).collect();
    let durable = counters::DurableStore::get_many(&*store, &keys).await.unwrap();
    let expected: Vec<Option<i64>> = last.values().map(|v| Some(*v)).collect();
    assert_eq!(durable, expected, "every accepted increment is drained once the store is back");
    // After shutdown, every call is 503 shut_down.
    let r = post(&app, "/v1/counters/a", "").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.kind(), "shut_down");
    assert_eq!(r.header("retry-after"), Some("5"));
}

#[tokio::test]
async fn status_and_inspect_show_durable_pending_and_age() {
    let (service, _) = service();
    let app = service.router();
    post(&app, "/v1/counters/ns%2Fpage:home", r#"{"delta": 7}"#).await;
    post(&app, "/v1/flush", "").await;
    post(&app, "/v1/counters/ns%2Fpage:home", r#"{"delta": 3}"#).await;
    post(&app, "/v1/counters/ns%2Fpage:about", r#"{"delta": 50}"#).await;
    post(&app, "/v1/counters/ns%2Fother", r#"{"delta": 1}"#).await;
    tokio::time::sleep(Duration::from_millis(30)).await;

    let r = get(&app, "/v1/inspect/ns%2Fpage:home").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.json["total"].as_i64(), r.json["durable"].as_i64(), r.json["pending"].as_i64()),
        (Some(10), Some(7), Some(3))
    );
    assert!(r.json["pending_for_ms"].as_u64().unwrap() >= 20, "{}", r.text);

    let r = get(&app, "/v1/inspect?namespace=ns&prefix=page:").await;
    let rows = r.json["counters"].as_array().unwrap();
    let keys: Vec<&str> = rows.iter().map(|c| c["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["ns/page:about", "ns/page:home"], "largest first, prefix applied");
    let r = get(&app, "/v1/inspect?namespace=ns&search=HOM").await;
    assert_eq!(r.json["counters"].as_array().unwrap().len(), 1, "search is case-insensitive: {}", r.text);

    let r = get(&app, "/v1/status").await;
    assert_eq!(r.json["cache"], "memory");
    assert_eq!(r.json["engine"]["increments"], 4);
    assert_eq!(r.json["precisions"], json!([1, 5, 60, 300, 3600, 18000, 86400]));
    assert_eq!(r.json["auth"], json!({ "writes_need_token": false, "reads_need_token": false }));
    post(&app, "/v1/flush", "").await;
    let r = get(&app, "/v1/inspect/ns%2Fpage:home").await;
    assert_eq!((r.json["durable"].as_i64(), r.json["pending"].as_i64()), (Some(10), Some(0)));
    assert!(r.json["pending_for_ms"].is_null());
    service.counters().shutdown().await.unwrap();
}
