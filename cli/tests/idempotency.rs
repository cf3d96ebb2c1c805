//! Exactly once from the caller: a client sends an increment and drops the
//! connection before the reply (a timeout, a proxy giving up), then retries
//! on another `serve` process sharing the Redis cache. With an
//! `Idempotency-Key` the counter moves once per increment, however the
//! first request fared; without one, the retries count twice.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{Server, TOKEN, random_name, serve_with, service_url};

const INCREMENTS: usize = 1_000;

/// `POST /v1/counters/{key}` with `{"delta": 1}` and, if given, an
/// `Idempotency-Key`. With `read`, waits for the answer and returns its
/// status; otherwise closes the connection once the request is written.
fn post(addr: SocketAddr, key: &str, idempotency_key: Option<&str>, read: bool) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let header = idempotency_key.map(|k| format!("idempotency-key: {k}\r\n")).unwrap_or_default();
    let body = r#"{"delta": 1}"#;
    write!(
        stream,
        "POST /v1/counters/{key} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\nauthorization: Bearer {TOKEN}\r\n\
         {header}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    if !read {
        return None;
    }
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("an answer");
    Some(raw.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0))
}

/// The counter's total as `server` answers it.
fn total(server: &Server, key: &str) -> i64 {
    let (status, value) = server.json("GET", &format!("/v1/counters/{key}"), "");
    assert_eq!(status, 200, "{value}");
    value["value"].as_i64().unwrap()
}

/// Two `serve` processes over one Redis cache prefix and one SQLite file.
fn two_servers(redis: &str) -> (Server, Server, [tempfile::TempDir; 3]) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let cache = format!("{redis}?prefix={}:", random_name("idem"));
    let store = format!("sqlite://{}", dirs[2].path().join("counters.sqlite").display());
    let global = ["--cache", cache.as_str(), "--store", store.as_str()];
    let a = serve_with(dirs[0].path(), &global, &["--flush-interval", "1"]);
    let b = serve_with(dirs[1].path(), &global, &["--flush-interval", "1"]);
    (a, b, dirs)
}

/// Each increment: sent to one process and abandoned, then retried on the
/// other until it answers 200. Returns the counter's total.
fn abandon_and_retry(a: &Server, b: &Server, key: &str, with_keys: bool) -> i64 {
    for i in 0..INCREMENTS {
        let (first, retry) = if i % 2 == 0 { (a, b) } else { (b, a) };
        let id = with_keys.then(|| format!("req-{i}"));
        post(first.addr, key, id.as_deref(), false);
        let status = post(retry.addr, key, id.as_deref(), true);
        assert_eq!(status, Some(200), "increment {i}: the retry is answered");
    }
    // Requests abandoned last may still be on their way in the server.
    std::thread::sleep(Duration::from_millis(500));
    let (ta, tb) = (total(a, key), total(b, key));
    assert_eq!(ta, tb, "both processes read the shared total");
    ta
}

#[test]
fn retries_with_an_idempotency_key_count_each_increment_once_across_two_processes() {
    let Some(redis) = service_url("COUNTERS_TEST_REDIS_URL") else { return };
    let (a, b, _dirs) = two_servers(&redis);
    let moved = abandon_and_retry(&a, &b, "orders", true);
    assert_eq!(moved, INCREMENTS as i64, "with keys: every increment once, whether its first request counted or not");

    // The control: the same traffic without keys counts the abandoned
    // requests that got through as well (so the test above can fail).
    let moved = abandon_and_retry(&a, &b, "unkeyed", false);
    assert!(moved > INCREMENTS as i64, "without keys, abandoned requests that got through count twice: {moved}");
    eprintln!("without keys: {moved} for {INCREMENTS} increments");
}

#[test]
fn the_same_key_with_another_body_is_422_and_a_bad_key_400() {
    let Some(redis) = service_url("COUNTERS_TEST_REDIS_URL") else { return };
    let (a, b, _dirs) = two_servers(&redis);
    let send = |server: &Server, key: &str, delta: i64| {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        let body = format!(r#"{{"delta": {delta}}}"#);
        write!(
            stream,
            "POST /v1/counters/c HTTP/1.1\r\nhost: {}\r\nconnection: close\r\nauthorization: Bearer {TOKEN}\r\n\
             idempotency-key: {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            server.addr,
            body.len()
        )
        .unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let status: u16 = raw.split(' ').nth(1).unwrap().parse().unwrap();
        (status, raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
    };
    assert_eq!(send(&a, "k1", 5).0, 200);
    let (status, body) = send(&b, "k1", 5);
    assert_eq!((status, body.contains(r#""value":5"#)), (200, true), "a repeat answers the first total: {body}");
    let (status, body) = send(&b, "k1", 6);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("idempotency_key_reused"), "{body}");
    for bad in ["two words".to_string(), "k".repeat(129)] {
        let (status, body) = send(&a, &bad, 1);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("Idempotency-Key"), "{body}");
    }
    assert_eq!(total(&a, "c"), 5, "the repeat, the conflict and the bad key counted nothing");
}

/// `counters incr --idempotency-key`: run again with the same key (after a
/// timeout, say) over a shared cache, it prints the first total and counts
/// nothing; a bad key is exit 2 before anything opens.
#[test]
fn the_cli_counts_a_keyed_increment_once() {
    let Some(redis) = service_url("COUNTERS_TEST_REDIS_URL") else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = format!("{redis}?prefix={}:", random_name("idem-cli"));
    let store = format!("sqlite://{}", dir.path().join("counters.sqlite").display());
    let incr = |delta: &str, key: &str| {
        common::run(
            dir.path(),
            &["--cache", &cache, "--store", &store, "incr", "paid", delta, "--idempotency-key", key],
        )
    };
    for _ in 0..2 {
        let o = incr("5", "order-7");
        assert!(o.status.success(), "{}", common::stderr(&o));
        assert_eq!(common::stdout(&o), "5", "the retry prints the first total");
    }
    let o = incr("6", "order-7");
    assert_eq!(o.status.code(), Some(2), "another delta under the same key: {}", common::stderr(&o));
    assert!(common::stderr(&o).contains("idempotency key"), "{}", common::stderr(&o));
    let o = incr("1", "two words");
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    let o = common::run(dir.path(), &["--cache", &cache, "--store", &store, "get", "paid"]);
    assert_eq!(common::stdout(&o), "5", "{}", common::stderr(&o));
    let o = common::run(dir.path(), &["--store", &store, "incr", "paid", "1", "--idempotency-key", "k"]);
    assert_eq!(o.status.code(), Some(2), "the in-process cache cannot keep the key: {}", common::stderr(&o));
    assert!(common::stderr(&o).contains("needs a shared cache"), "{}", common::stderr(&o));
}
