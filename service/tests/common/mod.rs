//! Helpers of the service's tests: services over memory backends or a
//! temporary SQLite file, requests through `oneshot` or over real TCP, and a
//! store whose failures a test switches on.
#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use counters::{MemoryCache, MemoryStore, Result};
use counters_service::{Service, ServiceConfig};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

pub const WRITE_TOKEN: &str = "write-token-0123456789";
pub const READ_TOKEN: &str = "read-token-0123456789";

/// How the test store answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ok,
    /// Every call fails transiently (the store is down).
    Unavailable,
    /// Every call fails for good.
    Permanent,
}

/// The conformance suite's fault-injecting store over a memory store.
pub type FaultyStore = conformance::faults::FaultyStore<MemoryStore>;

/// Switching the test store between the [`Mode`]s.
pub trait SetMode {
    fn set(&self, mode: Mode);
}

impl SetMode for FaultyStore {
    fn set(&self, mode: Mode) {
        self.set_down(mode == Mode::Unavailable);
        self.set_refusing(mode == Mode::Permanent);
    }
}

/// A service over a memory cache and a [`FaultyStore`].
pub fn service_with(config: ServiceConfig) -> (Service, Arc<FaultyStore>) {
    let store = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
    let service = Service::new(Arc::new(MemoryCache::new()), store.clone(), config).expect("the service builds");
    (service, store)
}

/// A service with default settings (loopback, no tokens).
pub fn service() -> (Service, Arc<FaultyStore>) {
    service_with(ServiceConfig::default())
}

/// A response: status, headers, body as JSON (or `Value::String` when not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    /// The `error.field` of an error body.
    pub fn field(&self) -> &str {
        self.json["error"]["field"].as_str().unwrap_or("")
    }

    /// The `error.kind` of an error body.
    pub fn kind(&self) -> &str {
        self.json["error"]["kind"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn reply(status: StatusCode, headers: HeaderMap, bytes: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(bytes).to_string();
    let json = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
    Reply { status, headers, text, json }
}

/// Sends a request through the router with `oneshot`.
pub async fn call(router: &Router, method: Method, path: &str, body: Option<&str>, token: Option<&str>) -> Reply {
    // The default listen address, as a client of it would name it.
    let mut request = Request::builder().method(method).uri(path).header("host", "127.0.0.1:8080");
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string()))).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    reply(parts.status, parts.headers, &bytes)
}

pub async fn get(router: &Router, path: &str) -> Reply {
    call(router, Method::GET, path, None, None).await
}

pub async fn post(router: &Router, path: &str, body: &str) -> Reply {
    call(router, Method::POST, path, Some(body), None).await
}

/// One HTTP/1.1 request over a real TCP connection (`Connection: close`).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>, token: Option<&str>) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("the service accepts connections");
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    if let Some(t) = token {
        request.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    request.push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        headers
            .append(axum::http::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(), value.trim().parse().unwrap());
    }
    let body = &raw[split + 4..];
    assert!(headers.get("transfer-encoding").is_none(), "responses here have a content-length");
    reply(StatusCode::from_u16(status).unwrap(), headers, body)
}

/// A service over memory backends serving on a free loopback port until
/// [`stop`](Running::stop).
pub struct Running {
    pub addr: SocketAddr,
    pub counters: Arc<counters::Counters>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<counters::FlushReport>>,
}

impl Running {
    /// Serves `config` (its `listen` replaced by `127.0.0.1:0`).
    pub async fn start(config: ServiceConfig) -> Running {
        Running::start_on("127.0.0.1:0", config).await
    }

    /// Serves `config` on `listen` (a free port: `...:0`).
    pub async fn start_on(listen: &str, config: ServiceConfig) -> Running {
        let config = ServiceConfig { listen: listen.parse().unwrap(), ..config };
        let (service, _) = service_with(config);
        let counters = service.counters().clone();
        let listener = service.bind().await.expect("a free loopback port");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(service.serve(listener, async move {
            let _ = stopped.await;
        }));
        Running { addr, counters, stop, server }
    }

    /// A well-formed request (with this service's Host, `Connection: close`).
    pub async fn http(&self, method: &str, path: &str, body: Option<&str>, token: Option<&str>) -> Reply {
        http(self.addr, method, path, body, token).await
    }

    /// Stops it and waits for the drain.
    pub async fn stop(self) -> counters::FlushReport {
        let _ = self.stop.send(());
        tokio::time::timeout(std::time::Duration::from_secs(30), self.server)
            .await
            .expect("the service stops within 30 s")
            .unwrap()
            .unwrap()
    }
}

/// Sends `request` as is on a new connection and reads until the service
/// closes it (at most 30 s): the answer, or `None` when it closed the
/// connection without one.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Option<Reply> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("the service accepts connections");
    // The service may answer and close before reading everything (a reset
    // then is fine: what it answered was read before).
    let _ = stream.write_all(request).await;
    let mut raw = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let mut buf = [0u8; 65536];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the service neither answered nor closed the connection within 30 s");
    parse_response(&raw)
}

/// Parses one HTTP/1.1 response with a `Content-Length` (or none) from `raw`.
pub fn parse_response(raw: &[u8]) -> Option<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        headers.append(axum::http::HeaderName::from_bytes(name.trim().as_bytes()).ok()?, value.trim().parse().ok()?);
    }
    let mut body = &raw[split + 4..];
    if let Some(length) = headers.get("content-length").and_then(|v| v.to_str().ok()?.parse::<usize>().ok()) {
        body = &body[..length.min(body.len())];
    }
    Some(reply(StatusCode::from_u16(status).unwrap(), headers, body))
}

/// A raw HTTP/1.1 request: `headers` as given (add `host` yourself, or use
/// [`request`]), `Content-Length` added when `body` is not empty.
pub fn request_without_host(method: &str, path: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    let has_length = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    let chunked = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
    if !body.is_empty() && !has_length && !chunked {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// A raw HTTP/1.1 request to `addr` (its `host` header first).
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let host = addr.to_string();
    let mut all: Vec<(&str, &[u8])> = vec![("host", host.as_bytes())];
    all.extend_from_slice(headers);
    request_without_host(method, path, &all, body)
}
