//! What the CLI's integration tests share: the `counters` binary run as a
//! user would, a running `counters serve` with its log, one HTTP request at
//! a time, the test services' URLs (a missing one fails under `CI=true` and
//! skips loudly elsewhere), Python's `distributed_counter` on the DynamoDB
//! test server, redis-servers and memcacheds of a test's own, a Redis
//! client small enough for FLUSHALL and SCAN, and the SQLite write lock
//! held by another process.
//!
//! `COUNTERS_TEST_BIN=/path/to/counters` runs the tests against another
//! build of the binary (to see whether a test fails on an older version).
#![allow(dead_code, unused_imports)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use conformance::servers::{PrivateMemcached, PrivateRedis, free_port, installed};
pub use conformance::service_url;

/// The write token every test server is started with.
pub const TOKEN: &str = "serve-test-token-0123456789";

/// The binary under test: `COUNTERS_TEST_BIN`, else this build's.
pub fn binary() -> PathBuf {
    match std::env::var_os("COUNTERS_TEST_BIN") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_counters")),
    }
}

/// The `counters` command in `dir`, with none of the environment variables
/// that would change its backends, tokens, listen address, journal or logs.
pub fn counters(dir: &Path) -> Command {
    let mut c = Command::new(binary());
    c.current_dir(dir)
        .env_remove("COUNTERS_STORE")
        .env_remove("COUNTERS_CACHE")
        .env_remove("COUNTERS_JOURNAL")
        .env_remove("COUNTERS_TOKEN")
        .env_remove("COUNTERS_READ_TOKEN")
        .env_remove("COUNTERS_LISTEN")
        .env_remove("COUNTERS_LOG")
        .env_remove("COUNTERS_CONFIG");
    c
}

/// Runs `counters ARGS` in `dir` to the end.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    counters(dir).args(args).stdin(Stdio::null()).output().expect("the binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

/// A child process killed (and reaped) when dropped, so a failing test
/// leaves nothing running.
pub struct Guard(pub Child);

impl Guard {
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Runs `command` for at most `limit`: its exit status (`None` if it was
/// still running and got killed), stdout and stderr.
pub fn run_for(mut command: Command, limit: Duration) -> (Option<ExitStatus>, String, String) {
    let child =
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("the binary runs");
    let mut guard = Guard(child);
    let mut out = guard.0.stdout.take().unwrap();
    let mut err = guard.0.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(guard);
    (status, out.join().unwrap(), err.join().unwrap())
}

/// Sends signal `name` (`TERM`, `STOP`, ...) to process `pid`.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// A running `counters serve` whose stderr lines arrive on a channel; killed
/// when dropped.
pub struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
    pub addr: SocketAddr,
}

impl Server {
    /// `counters serve` in `dir` on a free loopback port with an hour-long
    /// flush interval (only a flush or the drain writes) and `extra`.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut command = counters(dir);
        command.args(["serve", "--listen", "127.0.0.1:0", "--flush-interval", "3600"]).args(extra);
        Server::spawn(command)
    }

    /// `counters serve` as `command` (which names the subcommand and its
    /// options; `--listen 127.0.0.1:0` lets it pick a port), with the test
    /// token; waits until it listens.
    pub fn spawn(mut command: Command) -> Server {
        let mut child = command
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
    pub fn wait_for(&mut self, text: &str) -> String {
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// One request to this server with the write token.
    pub fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http(self.addr, method, path, body, Some(TOKEN))
    }

    /// One request with the token whose answer is JSON: status and value.
    pub fn json(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (status, text) = self.http(method, path, body);
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: {status} with a body that is not JSON ({e}): {text:?}"));
        (status, value)
    }

    /// The value of the Prometheus series `name` (no labels) in `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let (status, text) = self.http("GET", "/metrics", "");
        assert_eq!(status, 200, "{text}");
        metric(&text, name).unwrap_or_else(|| panic!("no series {name} in /metrics:\n{text}"))
    }

    /// Waits for the exit (up to 30 s) and collects the rest of stderr.
    pub fn wait(mut self) -> (ExitStatus, String) {
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
        let rest: Vec<String> = self.lines.try_iter().collect();
        self.log.extend(rest);
        // The reader thread may still hold the last lines.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.log.push(line);
        }
        (status, self.log.join("\n"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The value of the unlabelled series `name` in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// One HTTP/1.1 request; answers the status and the body. Fails after 30 s
/// without an answer.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"));
    let status = raw.split(' ').nth(1).unwrap().parse().unwrap();
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Something random enough to name a table, prefix or key space.
pub fn random_name(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&(nanos, std::process::id(), std::thread::current().id()), &mut h);
    format!("{prefix}{:016x}", std::hash::Hasher::finish(&h))
}

/// The files of the spill journals under `dir` (`*.batches`, any depth).
pub fn journal_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|x| x == "batches") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Python's `distributed_counter` and boto3 on the DynamoDB test server.
pub struct Python {
    pub python: String,
    pub endpoint: String,
}

impl Python {
    /// The DynamoDB test server (moto) and the virtualenv's python, or
    /// `None` (a failure under CI) when either is not set.
    pub fn dynamodb() -> Option<Python> {
        let endpoint = service_url("COUNTERS_TEST_DYNAMODB_URL")?;
        let python = service_url("COUNTERS_TEST_PYTHON")?;
        Some(Python { python, endpoint })
    }

    /// `dynamodb://TABLE` on the test server.
    pub fn store_url(&self, table: &str) -> String {
        format!("dynamodb://{table}?endpoint={}&region=us-east-1", self.endpoint)
    }

    /// One operation of `distributed_counter` (backend-dynamo's
    /// `interop.py`: `create -`, `get KEY`, `put KEY N`, `increment KEY D`);
    /// its printed result.
    pub fn counter(&self, table: &str, args: &[&str]) -> String {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../backend-dynamo/tests/interop.py");
        self.script(script, table, args)
    }

    /// One table operation of `common/dynamo_admin.py` (`delete`,
    /// `recreate`, `create-number-key`).
    pub fn admin(&self, table: &str, op: &str) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/dynamo_admin.py");
        self.script(script, table, &[op]);
    }

    fn script(&self, script: &str, table: &str, args: &[&str]) -> String {
        let out = Command::new(&self.python)
            .arg(script)
            .arg(&self.endpoint)
            .arg(table)
            .args(args)
            .output()
            .expect("run python");
        assert!(out.status.success(), "python {script} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

/// `counters --store STORE serve` in `dir` on a free loopback port, with
/// `options` (`--flush-interval`, `--cache`, ...) after `serve`.
pub fn serve_on(dir: &Path, store: &str, options: &[&str]) -> Server {
    serve_with(dir, &["--store", store], options)
}

/// `counters GLOBAL... serve --listen 127.0.0.1:0 OPTIONS...` in `dir`.
pub fn serve_with(dir: &Path, global: &[&str], options: &[&str]) -> Server {
    let mut command = counters(dir);
    command.args(global).args(["serve", "--listen", "127.0.0.1:0"]).args(options);
    Server::spawn(command)
}

/// `POST /v1/counters/KEY {"delta": D}`: the status and the answer.
pub fn incr(server: &Server, key: &str, delta: i64) -> (u16, serde_json::Value) {
    server.json("POST", &format!("/v1/counters/{key}"), &format!(r#"{{"delta": {delta}}}"#))
}

/// The value an answer reports.
pub fn value(answer: &(u16, serde_json::Value)) -> (u16, i64) {
    (answer.0, answer.1["value"].as_i64().unwrap_or_else(|| panic!("no value in {}", answer.1)))
}

/// Polls `check` every 100 ms for up to `limit`; whether it became true.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `counters --store STORE get KEYS...` in `dir` (which holds the journal
/// the previous runs there left; the default in-process cache): succeeds;
/// the values in order.
pub fn get_all(dir: &Path, store: &str, keys: &[&str]) -> Vec<i64> {
    let mut args = vec!["--store", store, "get"];
    args.extend_from_slice(keys);
    let o = run(dir, &args);
    assert_eq!(o.status.code(), Some(0), "counters get {keys:?}: {}", stderr(&o));
    let out = stdout(&o);
    let values: Vec<i64> = if keys.len() == 1 {
        vec![out.parse().unwrap_or_else(|_| panic!("not a number: {out:?}"))]
    } else {
        out.lines().map(|l| l.rsplit('\t').next().unwrap().parse().unwrap()).collect()
    };
    assert_eq!(values.len(), keys.len(), "{out}");
    values
}

/// A python3 child holding the SQLite write lock of `file` (BEGIN
/// IMMEDIATE) until it is dropped.
pub fn hold_write_lock(file: &Path) -> Guard {
    let script = "import sqlite3, sys, time\n\
                  c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)\n\
                  c.execute('BEGIN IMMEDIATE')\n\
                  print('locked', flush=True)\n\
                  time.sleep(120)\n";
    let mut child = Guard(
        Command::new("python3")
            .args(["-c", script])
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs"),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "locked", "python3 could not lock {}", file.display());
    child
}

/// A Redis reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

/// One command to the Redis server on loopback `port` (a connection of its
/// own, RESP2): its reply. Panics when the server does not answer.
pub fn redis_command<A: AsRef<[u8]>>(port: u16, args: &[A]) -> Resp {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("redis on {port}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request).unwrap();
    read_resp(&mut BufReader::new(stream))
}

fn read_resp(reader: &mut impl BufRead) -> Resp {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).expect("a reply from redis");
    let line = String::from_utf8_lossy(&line).trim_end().to_string();
    let (kind, rest) = line.split_at(1);
    let number = || rest.parse::<i64>().unwrap_or_else(|_| panic!("a bad reply from redis: {line:?}"));
    match kind {
        "+" => Resp::Simple(rest.to_string()),
        "-" => Resp::Error(rest.to_string()),
        ":" => Resp::Int(number()),
        "$" if number() < 0 => Resp::Bulk(None),
        "$" => {
            let mut data = vec![0; number() as usize + 2];
            reader.read_exact(&mut data).unwrap();
            data.truncate(data.len() - 2);
            Resp::Bulk(Some(data))
        }
        "*" if number() < 0 => Resp::Array(None),
        "*" => Resp::Array(Some((0..number()).map(|_| read_resp(reader)).collect())),
        _ => panic!("a bad reply from redis: {line:?}"),
    }
}

/// Deletes every key of the Redis server on `port` that contains `text`
/// (SCAN, then DEL one key at a time, so that it works on a Cluster node
/// too: a node scans and deletes only the keys it owns). How many it
/// deleted.
pub fn redis_delete_containing(port: u16, text: &str) -> usize {
    let pattern = format!("*{text}*");
    let mut cursor = b"0".to_vec();
    let mut deleted = 0;
    loop {
        let reply =
            redis_command(port, &[b"SCAN".as_slice(), &cursor, b"MATCH", pattern.as_bytes(), b"COUNT", b"1000"]);
        let Resp::Array(Some(parts)) = reply else { panic!("SCAN on {port}: {reply:?}") };
        let [Resp::Bulk(Some(next)), Resp::Array(Some(keys))] = parts.as_slice() else {
            panic!("SCAN on {port}: {parts:?}")
        };
        for key in keys {
            let Resp::Bulk(Some(key)) = key else { panic!("SCAN on {port}: {key:?}") };
            match redis_command(port, &[b"DEL".as_slice(), key]) {
                Resp::Int(n) => deleted += n as usize,
                other => panic!("DEL {} on {port}: {other:?}", String::from_utf8_lossy(key)),
            }
        }
        if next.as_slice() == b"0" {
            return deleted;
        }
        cursor = next.clone();
    }
}

/// The ports of the servers a `redis://` or `redis+cluster://` URL names
/// (on loopback).
pub fn redis_ports(url: &str) -> Vec<u16> {
    let hosts = url.split_once("://").map_or(url, |(_, rest)| rest);
    let hosts = hosts.split(['/', '?']).next().unwrap();
    hosts
        .split(',')
        .map(|host| host.rsplit(':').next().unwrap().parse().unwrap_or_else(|_| panic!("no port in {url}")))
        .collect()
}
