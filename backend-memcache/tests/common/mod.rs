//! What the memcached tests share: the test server's URL (a missing one
//! fails under CI and skips loudly elsewhere), caches under random
//! prefixes, and private servers for tests that stop or flush them.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backend_memcache::{MemcacheCache, MemcacheCacheOptions, MemcacheTarget};

fn ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// The URL of the shared test server, or `None` after a loud message (a
/// panic under `CI=true`).
pub fn service_url() -> Option<String> {
    match std::env::var("COUNTERS_TEST_MEMCACHE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(!ci(), "COUNTERS_TEST_MEMCACHE_URL is not set and CI=true: a missing service is a failure");
            eprintln!(
                "\n*** SKIPPING: COUNTERS_TEST_MEMCACHE_URL is not set; run ./scripts/test to start memcached. ***\n"
            );
            None
        }
    }
}

pub fn random_prefix() -> String {
    format!("t{:016x}:", rand::random::<u64>())
}

/// A cache on `url` under `prefix` with these options.
pub async fn cache_with(url: &str, options: MemcacheCacheOptions) -> MemcacheCache {
    MemcacheCache::connect_with(MemcacheTarget::parse(url).unwrap(), options).await.expect("connect to memcached")
}

/// A cache on `url` under `prefix`.
pub async fn cache_at(url: &str, prefix: &str) -> MemcacheCache {
    cache_with(url, MemcacheCacheOptions::with_prefix(prefix)).await
}

/// A memcached of this test's own, on a free loopback port; killed when
/// dropped.
pub struct PrivateMemcached {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateMemcached {
    /// Starts one, or `None` (a panic under CI) if memcached is missing.
    pub fn start() -> Option<PrivateMemcached> {
        if Command::new("memcached").arg("-V").stdout(Stdio::null()).status().is_err() {
            assert!(!ci(), "memcached is not installed and CI=true");
            eprintln!("\n*** SKIPPING: memcached is not installed; run ./scripts/test. ***\n");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = PrivateMemcached { port, child: None };
        server.restart();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("memcache://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: everything is lost).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        let user = if std::env::var("USER").map(|u| u == "root").unwrap_or(true) {
            "root".to_string()
        } else {
            std::env::var("USER").unwrap()
        };
        let child = Command::new("memcached")
            .args(["-l", "127.0.0.1", "-p", &self.port.to_string(), "-U", "0", "-m", "64", "-u", &user])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start memcached");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "memcached on port {} did not start", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PrivateMemcached {
    fn drop(&mut self) {
        self.kill();
    }
}
