//! Token rules: writes need the write token when one is set, reads are open
//! on loopback unless a read token is set, the read token cannot write, and
//! a non-loopback address is refused without a token.

mod common;

use axum::http::{Method, StatusCode};
use common::{READ_TOKEN, WRITE_TOKEN, call, service_with};
use counters::ErrorKind;
use counters_service::{Service, ServiceConfig};

fn config(token: Option<&str>, read_token: Option<&str>) -> ServiceConfig {
    ServiceConfig {
        token: token.map(str::to_string),
        read_token: read_token.map(str::to_string),
        ..ServiceConfig::default()
    }
}

#[tokio::test]
async fn writes_need_the_write_token_and_reads_stay_open_on_loopback() {
    let (service, _) = service_with(config(Some(WRITE_TOKEN), None));
    let app = service.router();
    let writes = [
        (Method::POST, "/v1/counters/k", Some("{}")),
        (Method::PUT, "/v1/counters/k", Some(r#"{"value": 3}"#)),
        (Method::DELETE, "/v1/counters/k", None),
        (Method::POST, "/v1/flush", None),
    ];
    for (method, path, body) in &writes {
        let r = call(&app, method.clone(), path, *body, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path} without a token");
        assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"counters\""));
        assert_eq!(r.field(), "authorization");
        let r = call(&app, method.clone(), path, *body, Some("wrong")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path} with a wrong token");
        assert!(r.header("www-authenticate").unwrap().contains("invalid_token"));
        let r = call(&app, method.clone(), path, *body, Some(WRITE_TOKEN)).await;
        assert_eq!(r.status, StatusCode::OK, "{method} {path} with the token: {}", r.text);
    }
    // A refused write changed nothing.
    let r = call(&app, Method::POST, "/v1/counters/n", Some(r#"{"delta": 5}"#), Some("wrong")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    for path in ["/v1/counters/n", "/v1/counters", "/v1/series/n", "/v1/status", "/v1/inspect", "/metrics"] {
        let r = call(&app, Method::GET, path, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path} is open on loopback: {}", r.text);
    }
    assert_eq!(call(&app, Method::GET, "/v1/counters/n", None, None).await.json["value"], 0);
    let r = call(&app, Method::POST, "/v1/get_many", Some(r#"{"keys": ["n"]}"#), None).await;
    assert_eq!(r.status, StatusCode::OK, "get_many is a read");
    // The scheme must be Bearer.
    let mut request = axum::http::Request::post("/v1/flush");
    request = request.header("authorization", format!("Basic {WRITE_TOKEN}")).header("host", "127.0.0.1:8080");
    let response = tower::ServiceExt::oneshot(app.clone(), request.body(axum::body::Body::empty()).unwrap());
    assert_eq!(response.await.unwrap().status(), StatusCode::UNAUTHORIZED);
    service.counters().shutdown().await.unwrap();
}

#[tokio::test]
async fn a_read_token_closes_reads_and_cannot_write() {
    let (service, _) = service_with(config(Some(WRITE_TOKEN), Some(READ_TOKEN)));
    let app = service.router();
    for path in ["/v1/counters/n", "/v1/counters", "/v1/series/n", "/v1/status", "/v1/inspect/n", "/metrics"] {
        let r = call(&app, Method::GET, path, None, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        for token in [READ_TOKEN, WRITE_TOKEN] {
            let r = call(&app, Method::GET, path, None, Some(token)).await;
            assert_eq!(r.status, StatusCode::OK, "{path} with a token: {}", r.text);
        }
    }
    let r = call(&app, Method::POST, "/v1/counters/n", None, Some(READ_TOKEN)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.header("www-authenticate").unwrap().contains("insufficient_scope"));
    // Probes and the page's files stay open.
    for path in ["/healthz", "/readyz", "/admin", "/admin/admin.js", "/admin/admin.css"] {
        assert_eq!(call(&app, Method::GET, path, None, None).await.status, StatusCode::OK, "{path}");
    }
    service.counters().shutdown().await.unwrap();
}

#[tokio::test]
async fn without_any_token_loopback_is_open_for_writes() {
    let (service, _) = service_with(config(None, None));
    let app = service.router();
    let r = call(&app, Method::POST, "/v1/counters/k", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    service.counters().shutdown().await.unwrap();
}

#[tokio::test]
async fn a_non_loopback_address_needs_a_token() {
    let cache = std::sync::Arc::new(counters::MemoryCache::new());
    let store = std::sync::Arc::new(counters::MemoryStore::new());
    // Port 8080: the requests below name 127.0.0.1:8080 as their host.
    let public = ServiceConfig { listen: "0.0.0.0:8080".parse().unwrap(), ..ServiceConfig::default() };
    let e = Service::new(cache.clone(), store.clone(), public.clone()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("without a token"), "{e}");

    // With a token, reads there need it too (no read token, reads not public).
    let guarded = ServiceConfig { token: Some(WRITE_TOKEN.into()), ..public.clone() };
    let service = Service::new(cache.clone(), store.clone(), guarded).unwrap();
    let app = service.router();
    assert_eq!(call(&app, Method::GET, "/v1/counters/k", None, None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&app, Method::GET, "/v1/counters/k", None, Some(WRITE_TOKEN)).await.status, StatusCode::OK);
    service.counters().shutdown().await.unwrap();

    let open_reads = ServiceConfig { token: Some(WRITE_TOKEN.into()), public_reads: true, ..public };
    let service = Service::new(cache.clone(), store.clone(), open_reads).unwrap();
    let app = service.router();
    assert_eq!(call(&app, Method::GET, "/v1/counters/k", None, None).await.status, StatusCode::OK);
    service.counters().shutdown().await.unwrap();

    // A loopback configuration handed a non-loopback listener refuses it too.
    let service = Service::new(cache, store, ServiceConfig::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let e = service.serve(listener, std::future::pending()).await.unwrap_err();
    assert!(e.to_string().contains("refusing to serve"), "{e}");
}
