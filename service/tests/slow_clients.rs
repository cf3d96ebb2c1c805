//! Slow clients against the real service on a loopback port: a head sent a
//! byte at a time, a body that never finishes, an idle kept-alive
//! connection and more connections than the limit. Short timeouts are
//! configured so the cases end quickly; the assertions are on behaviour
//! (closed, answered, refused), never on speed.

mod common;

use std::time::Duration;

use common::{Running, raw, request};
use counters_service::ServiceConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config() -> ServiceConfig {
    ServiceConfig {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        max_connections: 4,
        ..ServiceConfig::default()
    }
}

/// Reads until the service closes the connection (or `limit` passes):
/// what it sent, and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (got, closed)
}

/// A head sent one byte a second is cut off by the header timeout before
/// it is complete, and nothing it asked for happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_sent_a_byte_at_a_time_is_closed_before_it_completes() {
    let service = Running::start(config()).await;
    let head = request(service.addr, "POST", "/v1/counters/slow", &[("content-type", b"application/json")], b"{}");
    let mut stream = TcpStream::connect(service.addr).await.unwrap();
    let mut sent = 0;
    let mut closed = false;
    for byte in &head {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        sent += 1;
        // Closed already? (a read of 0 bytes, or a reset)
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {} // an automatic 408 is fine; the close follows
            Err(_) => {}
        }
    }
    assert!(closed, "the service waited for all {} bytes of a head sent a byte a second", head.len());
    assert!(sent < head.len(), "closed after {sent} of {} bytes, before the head was complete", head.len());
    let r = service.http("GET", "/v1/counters/slow", None, None).await;
    assert_eq!(r.json["value"], 0, "the slow request did nothing");
    service.stop().await;
}

/// A body that stops arriving is answered 408 (JSON) by the body timeout
/// and the connection closed; nothing is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_is_408_and_closed() {
    let service = Running::start(config()).await;
    let mut stream = TcpStream::connect(service.addr).await.unwrap();
    let head = format!(
        "POST /v1/counters/slow HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"delta\"",
        service.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (got, closed) = read_until_closed(&mut stream, Duration::from_secs(20)).await;
    assert!(closed, "the service kept a connection whose body stopped arriving");
    let r = common::parse_response(&got).expect("an answer before the close");
    assert_eq!(r.status, 408, "{}", r.text);
    assert_eq!((r.kind(), r.field()), ("request_timeout", "body"));
    let r = service.http("GET", "/v1/counters/slow", None, None).await;
    assert_eq!(r.json["value"], 0, "nothing was counted");
    service.stop().await;
}

/// A kept-alive connection that goes quiet after an answer is closed by the
/// header timeout (it holds a connection slot otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed() {
    let service = Running::start(config()).await;
    let mut stream = TcpStream::connect(service.addr).await.unwrap();
    let head = format!("GET /healthz HTTP/1.1\r\nhost: {}\r\n\r\n", service.addr);
    stream.write_all(head.as_bytes()).await.unwrap();
    let (got, closed) = read_until_closed(&mut stream, Duration::from_secs(20)).await;
    assert!(closed, "the idle connection stayed open");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"), "answered first: {got:?}");
    service.stop().await;
}

/// With every connection slot held by silent clients, a new connection
/// waits (in the listen backlog) and is served as soon as a slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let config = ServiceConfig { header_timeout: Duration::from_secs(30), max_connections: 2, ..config() };
    let service = Running::start(config).await;
    let addr = service.addr;
    // Two silent connections hold both slots (sleep a moment so they are accepted first).
    let mut holders = vec![TcpStream::connect(addr).await.unwrap(), TcpStream::connect(addr).await.unwrap()];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = tokio::spawn(async move { raw(addr, &request(addr, "GET", "/healthz", &[], b"")).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!waiting.is_finished(), "a third connection was served while two held the limit of 2");
    // Free a slot: the waiting request is answered.
    holders.pop();
    let r = tokio::time::timeout(Duration::from_secs(20), waiting).await.expect("served once a slot freed").unwrap();
    assert_eq!(r.expect("an answer").status, 200);
    drop(holders);
    let r = service.http("GET", "/healthz", None, None).await;
    assert_eq!(r.status, 200, "normal requests are still served");
    service.stop().await;
}

/// Shutdown closes idle connections and the listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_closes_idle_connections() {
    let service = Running::start(config()).await;
    let addr = service.addr;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = service.stop().await;
    assert_eq!(report.counters, 0);
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(closed, "an idle connection is closed on shutdown");
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
}

/// A request in flight when shutdown starts (its body half sent) is still
/// answered once the rest arrives, and what it counted is drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_at_shutdown_is_answered_and_drained() {
    let config = ServiceConfig { body_timeout: Duration::from_secs(30), ..config() };
    let service = Running::start(config).await;
    let addr = service.addr;
    let counters = service.counters.clone();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let body = r#"{"delta": 5}"#;
    let head = format!(
        "POST /v1/counters/inflight HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..4]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = tokio::spawn(service.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stopping.is_finished(), "shutdown waits for the request in flight");
    stream.write_all(&body.as_bytes()[4..]).await.unwrap();
    let (got, closed) = read_until_closed(&mut stream, Duration::from_secs(20)).await;
    assert!(closed, "the connection closes after the answer");
    let r = common::parse_response(&got).expect("the request in flight is answered");
    assert_eq!((r.status.as_u16(), r.json["value"].clone()), (200, serde_json::json!(5)), "{}", r.text);
    let report = tokio::time::timeout(Duration::from_secs(20), stopping).await.unwrap().unwrap();
    assert_eq!(report.counters, 1, "its delta was drained");
    let key = counters::Key::parse("inflight").unwrap();
    assert_eq!(counters.store().get_many(&[key]).await.unwrap(), [Some(5)]);
}

/// A client that stops reading a large answer is cut off by the write
/// timeout, which frees its connection slot for the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_and_frees_its_slot() {
    let config = ServiceConfig { write_timeout: Duration::from_secs(1), max_connections: 1, ..config() };
    let service = Running::start(config).await;
    let addr = service.addr;
    // About 10 MB of listing: more than the socket buffers hold.
    let padding = "n".repeat(1000);
    for i in 0..10_000 {
        let key = counters::Key::new("big", format!("{padding}{i:05}")).unwrap();
        service.counters.incr(&key, 1).await.unwrap();
    }
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut reader = socket.connect(addr).await.unwrap();
    let head = format!("GET /v1/counters?namespace=big&limit=10000 HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    reader.write_all(head.as_bytes()).await.unwrap();
    // It reads nothing; the only slot is taken, so this one waits for it.
    let next = tokio::spawn(async move { raw(addr, &request(addr, "GET", "/healthz", &[], b"")).await });
    let r = tokio::time::timeout(Duration::from_secs(30), next)
        .await
        .expect("the stalled answer was cut off and the slot freed")
        .unwrap();
    assert_eq!(r.expect("an answer").status, 200);
    let (got, closed) = read_until_closed(&mut reader, Duration::from_secs(20)).await;
    assert!(closed, "the stalled connection was closed");
    assert!(got.len() < 10_000 * 1000, "the answer was cut off: {} bytes arrived", got.len());
    service.stop().await;
}
