//! `counters serve` as a real process: it serves on a free loopback port,
//! and SIGTERM (or SIGINT) makes it stop accepting, drain every pending delta
//! into the SQLite file, log how many counters it flushed and exit 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TOKEN: &str = "serve-test-token-0123456789";

fn counters(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_counters"));
    c.current_dir(dir)
        .env_remove("COUNTERS_STORE")
        .env_remove("COUNTERS_CACHE")
        .env_remove("COUNTERS_TOKEN")
        .env_remove("COUNTERS_READ_TOKEN")
        .env_remove("COUNTERS_LISTEN")
        .env_remove("COUNTERS_LOG");
    c
}

/// A running `counters serve` whose stderr lines arrive on a channel.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
    addr: SocketAddr,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut child = counters(dir)
            .args(["serve", "--listen", "127.0.0.1:0", "--flush-interval", "3600"])
            .args(extra)
            .env("COUNTERS_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("counters serve starts");
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server { child, lines, log: Vec::new(), addr: "0.0.0.0:0".parse().unwrap() };
        let line = server.wait_for("listening on http://");
        let url = &line[line.find("http://").unwrap() + 7..];
        server.addr = url.split_whitespace().next().unwrap().parse().expect("the log names the address");
        server
    }

    /// The first stderr line containing `text`, waiting up to 20 s.
    fn wait_for(&mut self, text: &str) -> String {
        if let Some(line) = self.log.iter().find(|l| l.contains(text)) {
            return line.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.log.push(line.clone());
            if line.contains(text) {
                return line;
            }
        }
        panic!("no line with {text:?} in stderr:\n{}", self.log.join("\n"));
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the exit (up to 30 s) and collects the rest of stderr.
    fn wait(mut self) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("counters serve did not exit after the signal:\n{}", self.log.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.log.extend(self.lines.try_iter().collect::<Vec<_>>());
        // The reader thread may still hold the last lines.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.log.push(line);
        }
        (status, self.log.join("\n"))
    }
}

/// One HTTP/1.1 request; answers the status and the body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let status = raw.split(' ').nth(1).unwrap().parse().unwrap();
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

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
