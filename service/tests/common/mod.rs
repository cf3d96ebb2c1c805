//! Helpers of the service's tests: services over memory backends or a
//! temporary SQLite file, requests through `oneshot` or over real TCP, and a
//! store whose failures a test switches on.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use counters::{
    ApplyOutcome, Batch, CleanReport, DurableStore, Error, ErrorKind, Key, ListQuery, MemoryCache, MemoryStore,
    Precision, Result, StoreCapabilities,
};
use counters_service::{Service, ServiceConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

pub const WRITE_TOKEN: &str = "write-token-0123456789";
pub const READ_TOKEN: &str = "read-token-0123456789";

/// How a [`FaultyStore`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Ok = 0,
    Unavailable = 1,
    Permanent = 2,
}

/// A memory store whose calls fail as the test says.
#[derive(Debug, Default)]
pub struct FaultyStore {
    inner: MemoryStore,
    mode: AtomicU8,
}

impl FaultyStore {
    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn check(&self) -> Result<()> {
        match self.mode.load(Ordering::SeqCst) {
            0 => Ok(()),
            1 => Err(Error::new(ErrorKind::Unavailable, "the test store is down")),
            _ => Err(Error::new(ErrorKind::Permanent, "the test store refuses for good")),
        }
    }
}

#[async_trait]
impl DurableStore for FaultyStore {
    fn capabilities(&self) -> StoreCapabilities {
        self.inner.capabilities()
    }
    async fn apply(&self, batch: &Batch) -> Result<ApplyOutcome> {
        self.check()?;
        self.inner.apply(batch).await
    }
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<i64>>> {
        self.check()?;
        self.inner.get_many(keys).await
    }
    async fn delete(&self, key: &Key) -> Result<bool> {
        self.check()?;
        self.inner.delete(key).await
    }
    async fn list(&self, query: &ListQuery) -> Result<Vec<(Key, i64)>> {
        self.check()?;
        self.inner.list(query).await
    }
    async fn series(&self, key: &Key, precision: Precision, from: i64, to: i64) -> Result<Vec<(i64, i64)>> {
        self.check()?;
        self.inner.series(key, precision, from, to).await
    }
    async fn clean(&self, precision: Precision, cutoff: i64) -> Result<CleanReport> {
        self.check()?;
        self.inner.clean(precision, cutoff).await
    }
}

/// A service over a memory cache and a [`FaultyStore`].
pub fn service_with(config: ServiceConfig) -> (Service, Arc<FaultyStore>) {
    let store = Arc::new(FaultyStore::default());
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
    let mut request = Request::builder().method(method).uri(path);
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
