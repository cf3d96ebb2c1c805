//! A service built from a configuration file runs its families: an
//! immediate namespace is in the store when the increment answers, a
//! threshold family lands once its batch is full, and the rest waits for the
//! file's flush interval.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{post, service_with};
use counters::{DurableStore, Key};
use counters_service::{ConfigFile, ServiceConfig};

const FILE: &str = r#"
flush_interval = "1h"

[[family]]
namespace = "payments"
policy = "immediate"

[[family]]
namespace = "clicks"
prefix = "ad:"
threshold = 3
"#;

#[tokio::test]
async fn the_files_families_decide_when_counters_reach_the_store() {
    let mut config = ServiceConfig::default();
    ConfigFile::parse(FILE, "counters.toml").unwrap().apply(&mut config);
    let (service, store) = service_with(config);
    let app = service.router();
    let stored = |key: Key| {
        let store = store.clone();
        async move { store.get_many(&[key]).await.unwrap()[0] }
    };
    let key = |namespace: &str, name: &str| Key::new(namespace, name).unwrap();

    for (path, body) in [
        ("/v1/counters/payments%2Forder", r#"{"delta": 7}"#),
        ("/v1/counters/web%2Fviews", r#"{"delta": 4}"#),
        ("/v1/counters/clicks%2Fad%3A1", r#"{"delta": 2}"#),
        ("/v1/counters/clicks%2Fother", r#"{"delta": 9}"#),
    ] {
        let r = post(&app, path, body).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
    }
    assert_eq!(stored(key("payments", "order")).await, Some(7), "immediate: written before the answer");

    // The threshold family's batch fills at 3.
    let r = post(&app, "/v1/counters/clicks%2Fad%3A1", r#"{"delta": 1}"#).await;
    assert_eq!(r.json["value"], 3, "{}", r.text);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored(key("clicks", "ad:1")).await != Some(3) {
        assert!(Instant::now() < deadline, "clicks/ad:1 reached its threshold but is not in the store after 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The default family (an hour) and a name outside the prefix still wait.
    assert_eq!(stored(key("web", "views")).await, None);
    assert_eq!(stored(key("clicks", "other")).await, None);
    service.counters().shutdown().await.unwrap();
}

/// A family's `time_sliced` wins over the service's: with slices on for the
/// service, a family that turns them off counts no series, and one that
/// says nothing follows the service.
#[tokio::test]
async fn a_family_turns_time_slices_off_under_a_sliced_service() {
    let text = "time_sliced = true\n[[family]]\nnamespace = \"raw\"\ntime_sliced = false\n";
    let mut config = ServiceConfig::default();
    ConfigFile::parse(text, "counters.toml").unwrap().apply(&mut config);
    let (service, _) = service_with(config);
    let app = service.router();
    for path in ["/v1/counters/raw%2Fhits", "/v1/counters/web%2Fhits"] {
        let r = post(&app, path, r#"{"delta": 5}"#).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
    }
    let sum = |r: &common::Reply| -> i64 {
        r.json["points"].as_array().map_or(0, |p| p.iter().map(|p| p["count"].as_i64().unwrap()).sum())
    };
    let r = common::get(&app, "/v1/series/web%2Fhits").await;
    assert_eq!((r.status, sum(&r)), (StatusCode::OK, 5), "the service's default: sliced: {}", r.text);
    let r = common::get(&app, "/v1/series/raw%2Fhits").await;
    assert_eq!((r.status, sum(&r)), (StatusCode::OK, 0), "the family turned slices off: {}", r.text);
    assert_eq!(common::get(&app, "/v1/counters/raw%2Fhits").await.json["value"], 5);
    service.counters().shutdown().await.unwrap();
}
