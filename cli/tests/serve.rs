//! `counters serve` as a real process: it serves on a free loopback port,
//! and SIGTERM (or SIGINT) makes it stop accepting, drain every pending delta
//! into the SQLite file, log how many counters it flushed and exit 0.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::Output;

use common::{Server, TOKEN, counters, http};

fn get(dir: &Path, key: &str) -> Output {
    counters(dir).args(["get", key]).output().unwrap()
}

#[test]
fn sigterm_drains_pending_counters_logs_the_count_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (status, body) = http(server.addr, "POST", "/v1/counters/web%2Fclicks", r#"{"delta": 41}"#, Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    assert_eq!(http(server.addr, "POST", "/v1/counters/web%2Fviews", "", Some(TOKEN)).0, 200);
    assert_eq!(http(server.addr, "POST", "/v1/counters/web%2Fclicks", "", None).0, 401, "writes need the token");
    let (status, body) = http(server.addr, "GET", "/v1/counters/web%2Fclicks", "", None);
    assert_eq!((status, body.as_str()), (200, r#"{"key":"web/clicks","value":41}"#));
    assert_eq!(http(server.addr, "GET", "/readyz", "", None).0, 200);

    server.signal("TERM");
    let addr = server.addr;
    let (status, log) = server.wait();
    assert_eq!(status.code(), Some(0), "exit 0 after draining:\n{log}");
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("stopped: flushed 2 counters"), "the log says how many were flushed:\n{log}");
    assert!(TcpStream::connect(addr).is_err(), "nothing listens any more");
    // An hour-long interval: only the drain can have written them.
    let o = get(dir.path(), "web/clicks");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "41");
    let o = get(dir.path(), "web/views");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1");
}

#[test]
fn sigint_stops_it_too_and_an_idle_service_flushes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--time-sliced"]);
    server.signal("INT");
    let (status, log) = server.wait();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("stopped: flushed 0 counters"), "{log}");
}

#[test]
fn a_public_address_without_a_token_is_refused_before_anything_opens() {
    let dir = tempfile::tempdir().unwrap();
    let o = counters(dir.path()).args(["serve", "--listen", "0.0.0.0:0"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("refusing to listen on 0.0.0.0:0 without a token"), "{stderr}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "no store file was created");
    let o = counters(dir.path()).args(["serve", "--flush-interval", "0"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn an_address_in_use_is_exit_2_with_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = counters(dir.path()).args(["serve", "--listen", &addr]).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on {addr}")), "{stderr}");
    assert!(!stderr.contains("dropped without shutdown"), "the engine was shut down, not dropped: {stderr}");
}
