//! The service over real TCP: it answers, and a shutdown signal stops it
//! after draining every pending delta into the SQLite file.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{WRITE_TOKEN, http};
use counters::{Counters, Key};
use counters_service::{Service, ServiceConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_tcp_and_drains_into_sqlite_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("c.sqlite").display());
    let cache = counters::cache_from_url("memory://").await.unwrap();
    let store = counters::store_from_url(&url).await.unwrap();
    let config = ServiceConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: Some(WRITE_TOKEN.into()),
        flush_interval: Duration::from_secs(3600),
        ..ServiceConfig::default()
    };
    let service = Service::new(cache, store, config).unwrap();
    let listener = service.bind().await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service.serve(listener, async move {
        let _ = stopped.await;
    }));

    let r = http(addr, "POST", "/v1/counters/web%2Fclicks", Some(r#"{"delta": 41}"#), Some(WRITE_TOKEN)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = http(addr, "POST", "/v1/counters/web%2Fviews", None, Some(WRITE_TOKEN)).await;
    assert_eq!(r.json["value"], 1);
    let r = http(addr, "POST", "/v1/counters/web%2Fclicks", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = http(addr, "GET", "/v1/counters/web%2Fclicks", None, None).await;
    assert_eq!(r.json["value"], 41);
    let r = http(addr, "GET", "/admin", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.header("content-security-policy").unwrap().contains("script-src 'self'"));
    let r = http(addr, "GET", "/", None, None).await;
    assert_eq!((r.status, r.header("location")), (StatusCode::TEMPORARY_REDIRECT, Some("/admin")));

    stop.send(()).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(20), server).await.unwrap().unwrap().unwrap();
    assert_eq!(report.counters, 2, "both counters were pending (hour-long interval) and drained");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed");

    // The file holds what was counted.
    let store = counters::store_from_url(&url).await.unwrap();
    let check = Counters::builder(counters::cache_from_url("memory://").await.unwrap(), store).build().unwrap();
    let keys = [Key::new("web", "clicks").unwrap(), Key::new("web", "views").unwrap()];
    assert_eq!(check.get_many(&keys).await.unwrap(), [41, 1]);
    check.shutdown().await.unwrap();
}
