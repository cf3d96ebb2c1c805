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

/// Runs `counters serve ARGS` with `env`, expecting it to refuse to start:
/// exit 2, stderr containing `message`, and nothing created in `dir`.
fn refused_at_start(args: &[&str], env: &[(&str, &str)], message: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = counters(dir.path());
    command.arg("serve").args(["--listen", "127.0.0.1:0"]).args(args).env_remove("COUNTERS_ALLOWED_HOSTS");
    for (name, value) in env {
        command.env(name, value);
    }
    let o = command.stdin(std::process::Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
    assert!(stderr.contains(message), "{args:?} {env:?}: {stderr}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "{args:?} {env:?}: a file was created");
}

#[test]
fn a_read_token_without_a_write_token_is_refused_at_start() {
    let message = "--read-token without --token would leave writes open";
    refused_at_start(&["--read-token", "reader-0123456789"], &[], message);
    refused_at_start(&[], &[("COUNTERS_READ_TOKEN", "reader-0123456789")], message);
}

#[test]
fn empty_tokens_are_refused_at_start_not_taken_as_none() {
    refused_at_start(&[], &[("COUNTERS_TOKEN", "")], "--token (or COUNTERS_TOKEN) is empty");
    refused_at_start(&["--token", ""], &[], "--token (or COUNTERS_TOKEN) is empty");
    let read = [("COUNTERS_TOKEN", "writer-0123456789"), ("COUNTERS_READ_TOKEN", "")];
    refused_at_start(&[], &read, "--read-token (or COUNTERS_READ_TOKEN) is empty");
}

#[test]
fn bad_limits_and_allowed_hosts_are_refused_at_start() {
    refused_at_start(&["--allowed-host", "http://counters.test"], &[], "--allowed-host \"http://counters.test\"");
    refused_at_start(&[], &[("COUNTERS_ALLOWED_HOSTS", "ok.test,bad host")], "--allowed-host \"bad host\"");
    for option in ["--header-timeout", "--body-timeout", "--write-timeout"] {
        refused_at_start(&[option, "0"], &[], "must be above zero");
    }
    refused_at_start(&["--max-connections", "0"], &[], "the connection limit must be at least 1");
}

#[test]
fn an_address_in_use_creates_no_store_file() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = counters(dir.path()).args(["serve", "--listen", &addr]).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on {addr}")), "{stderr}");
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(files.is_empty(), "nothing was created before the bind failed: {files:?}");
}

/// One raw request to `addr` naming `host`, with extra header lines.
fn raw(addr: std::net::SocketAddr, method: &str, path: &str, host: &str, extra: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    let status = answer.split(' ').nth(1).unwrap().parse().unwrap();
    (status, answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

#[test]
fn serve_checks_hosts_and_origins_and_takes_allowed_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = counters(dir.path());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--flush-interval", "3600", "--allowed-host", "counters.test"])
        .env("COUNTERS_ALLOWED_HOSTS", "ignored.test");
    let server = Server::spawn(command);
    let addr = server.addr;
    let auth = format!("authorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\n");
    let own = addr.to_string();
    let write = |host: &str, extra: &str| {
        raw(addr, "POST", "/v1/counters/k", host, &format!("{auth}{extra}"), r#"{"delta": 2}"#)
    };
    let (status, body) = write("evil.example", "");
    assert_eq!(status, 421, "{body}");
    assert!(body.contains(r#""kind":"unknown_host""#), "{body}");
    let (status, body) = write(&own, "origin: http://evil.example\r\n");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(r#""kind":"cross_origin""#), "{body}");
    let (status, body) = raw(
        addr,
        "POST",
        "/v1/counters/k",
        &own,
        &format!("authorization: Bearer {TOKEN}\r\ncontent-type: text/plain\r\n"),
        r#"{"delta": 2}"#,
    );
    assert_eq!(status, 415, "{body}");
    assert_eq!(
        raw(addr, "GET", "/v1/counters/k", "ignored.test", "", "").0,
        421,
        "the option wins over the environment"
    );
    assert_eq!(write(&format!("counters.test:{}", addr.port()), "origin: http://counters.test\r\n").0, 200);
    assert_eq!(write(&format!("localhost:{}", addr.port()), "").0, 200);
    let (status, body) = server.http("GET", "/v1/counters/k", "");
    assert_eq!((status, body.as_str()), (200, r#"{"key":"k","value":4}"#), "only the two allowed writes counted");
    drop(server);

    // COUNTERS_ALLOWED_HOSTS, comma-separated, when the option is absent.
    let mut command = counters(dir.path());
    command.args(["serve", "--listen", "127.0.0.1:0"]).env("COUNTERS_ALLOWED_HOSTS", "a.test,b.test:1");
    let server = Server::spawn(command);
    assert_eq!(raw(server.addr, "GET", "/healthz", "a.test", "", "").0, 200);
    assert_eq!(raw(server.addr, "GET", "/healthz", "b.test:1", "", "").0, 200);
    assert_eq!(raw(server.addr, "GET", "/healthz", "b.test:2", "", "").0, 421);
}

#[test]
fn a_head_sent_slowly_is_cut_off_by_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--header-timeout", "1", "--max-connections", "8", "--body-timeout", "1"]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(1))).unwrap();
    let head = format!("GET /healthz HTTP/1.1\r\nhost: {}\r\nx-padding: {}\r\n\r\n", server.addr, "p".repeat(40));
    let mut closed = false;
    for byte in head.as_bytes() {
        if std::io::Write::write_all(&mut stream, &[*byte]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match std::io::Read::read(&mut stream, &mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "the service waited for a head sent a byte a second");
    assert_eq!(server.http("GET", "/healthz", "").0, 200, "and still serves");
}
