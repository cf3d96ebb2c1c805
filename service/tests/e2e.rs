//! The admin page in a real browser: starts the service on a free loopback
//! port over a temporary SQLite file and runs `node e2e/admin.mjs`, which
//! drives headless Chromium (Debian's `/usr/bin/chromium`) with
//! playwright-core: it increments a counter through the page and waits for
//! the value, the table and the chart to change. Then the service is shut
//! down and the store must hold what the page showed.
//!
//! `node e2e/cross_origin.mjs` attacks a service without a token from a page
//! on another loopback origin (no-cors fetches, a preflighted JSON fetch, a
//! text/plain form, sendBeacon) and by DNS rebinding (`evil.test` mapped to
//! 127.0.0.1): nothing may change, and the admin page must still write.
//!
//! Needs node, Chromium and `e2e/node_modules` (`scripts/services/browser.sh`
//! installs them). Without them the test fails under `CI=true` and is
//! skipped loudly otherwise. The screenshot goes to
//! `$COUNTERS_ADMIN_SCREENSHOT`, or into Cargo's test temp directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::WRITE_TOKEN;
use counters::{Counters, Key};
use counters_service::{Service, ServiceConfig};

fn chromium() -> PathBuf {
    std::env::var_os("COUNTERS_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// What is missing to run the browser test, if anything.
fn missing(e2e: &Path) -> Option<String> {
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Some("node is not on PATH".into());
    }
    if !chromium().exists() {
        return Some(format!("{} does not exist (apt-get install chromium)", chromium().display()));
    }
    if !e2e.join("node_modules/playwright-core/package.json").exists() {
        return Some(format!("{}/node_modules lacks playwright-core (npm ci there)", e2e.display()));
    }
    None
}

/// The e2e directory when node, Chromium and playwright-core are there;
/// `None` (loudly) when not, a failure under `CI=true`.
fn browser_ready() -> Option<PathBuf> {
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e");
    if let Some(what) = missing(&e2e) {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the browser test cannot run under CI: {what}; scripts/services/browser.sh installs it");
        }
        eprintln!("\n*** SKIPPING the browser test: {what} ***\n*** run scripts/services/browser.sh ***\n");
        return None;
    }
    Some(e2e)
}

/// Runs `node e2e/SCRIPT ARGS` (3 minutes at most), prints its output and
/// returns its `RESULT` line's JSON; panics if it failed.
async fn node(e2e: &Path, script: &str, args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let run = tokio::process::Command::new("node")
        .arg(e2e.join(script))
        .args(args)
        .env("COUNTERS_CHROMIUM", chromium())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser test finishes within 3 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(output.status.success(), "{script} failed ({}):\n{stdout}\n{stderr}", output.status);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|json| serde_json::from_str(json).unwrap())
        .expect("the script prints its RESULT")
}

/// Item 1 of issue 14 in the real browser: pages of other origins, and a
/// rebound DNS name, cannot write to a service without a token; its own
/// admin page can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_origins_and_rebound_names_cannot_write_in_headless_chromium() {
    let Some(e2e) = browser_ready() else {
        return;
    };
    let config = ServiceConfig { listen: "127.0.0.1:0".parse().unwrap(), ..ServiceConfig::default() };
    let service = Service::new(
        counters::cache_from_url("memory://").await.unwrap(),
        counters::store_from_url("memory://").await.unwrap(),
        config,
    )
    .unwrap();
    let counters = service.counters().clone();
    counters.put(&Key::parse("sentinel/a").unwrap(), 42).await.unwrap();
    let listener = service.bind().await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service.serve(listener, async move {
        let _ = stopped.await;
    }));

    let result = node(&e2e, "cross_origin.mjs", &[base.as_ref()]).await;
    assert_eq!(result["victim_after_attacks"], 0, "{result}");
    assert_eq!(result["victim_after_rebinding"], 0, "{result}");
    assert_eq!(result["rebinding"]["write"]["status"], 421, "{result}");
    assert_eq!(result["own_page_value"], 3, "{result}");
    let get = |key: &str| {
        let counters = counters.clone();
        let key = Key::parse(key).unwrap();
        async move { counters.get(&key).await.unwrap() }
    };
    assert_eq!((get("victim").await, get("sentinel/a").await, get("own/clicks").await), (0, 42, 3));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server).await.unwrap().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_page_increments_a_counter_in_headless_chromium() {
    let Some(e2e) = browser_ready() else {
        return;
    };

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("e2e.sqlite").display());
    let config = ServiceConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: Some(WRITE_TOKEN.into()),
        flush_interval: Duration::from_secs(30),
        ..ServiceConfig::default()
    };
    let service = Service::new(
        counters::cache_from_url("memory://").await.unwrap(),
        counters::store_from_url(&url).await.unwrap(),
        config,
    )
    .unwrap();
    let listener = service.bind().await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service.serve(listener, async move {
        let _ = stopped.await;
    }));

    let screenshot = std::env::var_os("COUNTERS_ADMIN_SCREENSHOT")
        .map_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("admin.png"), PathBuf::from);
    let result = node(&e2e, "admin.mjs", &[base.as_ref(), WRITE_TOKEN.as_ref(), screenshot.as_os_str()]).await;
    assert!(screenshot.exists(), "a screenshot was taken at {}", screenshot.display());

    // What the page showed is what the store holds once the service drained.
    stop.send(()).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(30), server).await.unwrap().unwrap().unwrap();
    assert!(report.counters >= 2, "the page's writes were pending and drained: {report:?}");
    let check = Counters::builder(
        counters::cache_from_url("memory://").await.unwrap(),
        counters::store_from_url(&url).await.unwrap(),
    )
    .build()
    .unwrap();
    for (key, value) in result.as_object().unwrap() {
        let stored = check.get(&Key::parse(key).unwrap()).await.unwrap();
        assert_eq!(serde_json::json!(stored), *value, "{key}");
    }
    check.shutdown().await.unwrap();
}
