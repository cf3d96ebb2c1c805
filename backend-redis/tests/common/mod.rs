//! What the Redis tests share: the test servers' URLs (a missing one fails
//! under CI and skips loudly elsewhere), fresh caches under random
//! prefixes, and private servers for tests that stop or flush them.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backend_redis::{RedisCache, RedisCacheOptions, RedisTarget};

/// The URL in `env`, or `None` after a loud message (a panic under `CI=true`).
pub fn service_url(env: &str) -> Option<String> {
    match std::env::var(env) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let ci = std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false);
            assert!(!ci, "{env} is not set and CI=true: a missing service is a failure, not a skip");
            eprintln!("\n*** SKIPPING: {env} is not set; run ./scripts/test to start Redis. ***\n");
            None
        }
    }
}

pub fn random_prefix() -> String {
    format!("t{:016x}:", rand::random::<u64>())
}

/// A cache on `url` under `prefix`, with `shards` hash tags if given.
pub async fn cache_at(url: &str, prefix: &str, shards: Option<u16>) -> RedisCache {
    let mut options = RedisCacheOptions::with_prefix(prefix);
    if let Some(shards) = shards {
        options = options.shards(shards);
    }
    RedisCache::connect_with(RedisTarget::parse(url).unwrap(), options).await.expect("connect to Redis")
}

/// A redis-server of this test's own, on a free loopback port, without
/// persistence; killed when dropped.
pub struct PrivateRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one, or `None` (a panic under CI) if redis-server is missing.
    pub fn start() -> Option<PrivateRedis> {
        if Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_err() {
            let ci = std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false);
            assert!(!ci, "redis-server is not installed and CI=true");
            eprintln!("\n*** SKIPPING: redis-server is not installed; run ./scripts/test. ***\n");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = PrivateRedis { port, dir, child: None };
        server.restart();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: nothing is saved).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server on port {} did not start", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
