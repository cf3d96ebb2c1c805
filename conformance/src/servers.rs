//! Servers a test owns: a redis-server or a memcached of its own on a free
//! loopback port, to kill, restart or flush without disturbing the shared
//! test servers. The workspace's tests all use these.
//!
//! A missing program fails under `CI=true` and skips loudly elsewhere, like
//! a missing shared service (see [`service_url`](crate::service_url)).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `CI` is set to `true` (or `1`).
pub fn under_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// Whether `program --version` runs; if not, a failure under `CI=true`
/// and a loud skip elsewhere.
pub fn installed(program: &str) -> bool {
    if Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok() {
        return true;
    }
    assert!(!under_ci(), "{program} is not installed and CI=true: a missing service is a failure, not a skip");
    eprintln!("\n*** SKIPPING: {program} is not installed; run ./scripts/test. ***\n");
    false
}

/// A free loopback port (nothing listens on it once this returns).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind loopback").local_addr().expect("local address").port()
}

/// A server process of a test's own: SIGKILLed when dropped.
#[derive(Debug, Default)]
struct Process(Option<Child>);

impl Process {
    fn pid(&self) -> u32 {
        self.0.as_ref().expect("the server runs").id()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            // A stopped (SIGSTOP) process dies of SIGKILL too.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One line to a server on `port`, and the first line of its reply.
fn exchange(port: u16, line: &[u8]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(line)?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    Ok(reply.trim_end().to_string())
}

fn wait_until(what: &str, port: u16, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} on port {port} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A redis-server of the test's own on a free loopback port, in a temporary
/// directory; killed when dropped.
#[derive(Debug)]
pub struct PrivateRedis {
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    persistent: bool,
    process: Process,
}

impl PrivateRedis {
    /// Starts one that keeps nothing on disk (a kill loses everything), or
    /// `None` (a failure under CI) if redis-server is not installed.
    pub fn start() -> Option<PrivateRedis> {
        Self::launch(false)
    }

    /// Starts one that appends every write to its AOF and fsyncs it before
    /// answering, so a SIGKILL and a restart keep everything it
    /// acknowledged.
    pub fn start_persistent() -> Option<PrivateRedis> {
        Self::launch(true)
    }

    fn launch(persistent: bool) -> Option<PrivateRedis> {
        if !installed("redis-server") {
            return None;
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut server = PrivateRedis { port: free_port(), dir, persistent, process: Process::default() };
        server.restart();
        Some(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stops the server with SIGKILL.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server (again) on the same port, and waits until it
    /// answers `PING`.
    pub fn restart(&mut self) {
        self.kill();
        let appendonly = if self.persistent { "yes" } else { "no" };
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(["--appendonly", appendonly, "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.process = Process(Some(child));
        let port = self.port;
        wait_until("redis-server", port, || {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let mut buf = [0u8; 64];
            s.write_all(b"PING\r\n").is_ok() && matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
        });
    }
}

/// A memcached of the test's own on a free loopback port, 64 MB, no UDP;
/// killed when dropped.
#[derive(Debug)]
pub struct PrivateMemcached {
    /// Its port.
    pub port: u16,
    process: Process,
}

impl PrivateMemcached {
    /// Starts one, or `None` (a failure under CI) if memcached is not
    /// installed.
    pub fn start() -> Option<PrivateMemcached> {
        if !installed("memcached") {
            return None;
        }
        let mut server = PrivateMemcached { port: free_port(), process: Process::default() };
        server.restart();
        Some(server)
    }

    /// `memcache://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("memcache://127.0.0.1:{}", self.port)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stops the server with SIGKILL (everything it held is lost).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server (again, empty) on the same port, and waits until
    /// it answers the meta no-op.
    pub fn restart(&mut self) {
        self.kill();
        let mut command = Command::new("memcached");
        command.args(["-l", "127.0.0.1", "-p", &self.port.to_string(), "-U", "0", "-m", "64"]);
        // memcached refuses to run as root unless told which user to be.
        if Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0") {
            command.args(["-u", "root"]);
        }
        self.process =
            Process(Some(command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start memcached")));
        let port = self.port;
        wait_until("memcached", port, || exchange(port, b"mn\r\n").ok().as_deref() == Some("MN"));
    }

    /// Invalidates everything it holds (`flush_all`).
    pub fn flush_all(&self) {
        let reply = exchange(self.port, b"flush_all\r\n");
        assert_eq!(
            reply.as_ref().ok().map(String::as_str),
            Some("OK"),
            "flush_all on memcached {}: {reply:?}",
            self.port
        );
    }
}
