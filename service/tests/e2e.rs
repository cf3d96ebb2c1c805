//! The admin page in a real browser: starts the service on a free loopback
//! port over a temporary SQLite file and runs `node e2e/admin.mjs`, which
//! drives headless Chromium (Debian's `/usr/bin/chromium`) with
//! playwright-core: it increments a counter through the page and waits for
//! the value, the table and the chart to change. Then the service is shut
//! down and the store must hold what the page showed.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_page_increments_a_counter_in_headless_chromium() {
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e");
    if let Some(what) = missing(&e2e) {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the browser test cannot run under CI: {what}; scripts/services/browser.sh installs it");
        }
        eprintln!("\n*** SKIPPING the admin page browser test: {what} ***\n*** run scripts/services/browser.sh ***\n");
        return;
    }

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
    let run = tokio::process::Command::new("node")
        .arg(e2e.join("admin.mjs"))
        .args([base.as_str(), WRITE_TOKEN])
        .arg(&screenshot)
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
    assert!(output.status.success(), "the browser test failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(screenshot.exists(), "a screenshot was taken at {}", screenshot.display());

    // What the page showed is what the store holds once the service drained.
    let result: serde_json::Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|json| serde_json::from_str(json).unwrap())
        .expect("the script prints its RESULT");
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
