//! Malformed backend URLs through the real binary: repeated or unknown
//! parameters, fragments, ports out of range or written oddly, endpoints
//! without a host. Each is exit 2 with the URL (redacted) and the reason
//! on one line, before any backend is opened: no file appears in the
//! directory, the sentinel counter is unchanged, and a good command works
//! afterwards. (Several were exit 3 "unavailable", or silently took the
//! last of two values, before.)

mod common;

use std::path::Path;
use std::time::Duration;

use common::{counters, run, run_for, service_url, stderr, stdout};

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

#[test]
fn malformed_urls_are_exit_2_and_change_nothing() {
    let redis = service_url("COUNTERS_TEST_REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6391".into());
    let memcache = service_url("COUNTERS_TEST_MEMCACHE_URL").unwrap_or_else(|| "memcache://127.0.0.1:11311".into());
    let dynamo = service_url("COUNTERS_TEST_DYNAMODB_URL").unwrap_or_else(|| "http://127.0.0.1:8011".into());
    let redis = redis.trim_end_matches('/').to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        ("--cache", format!("{redis}/0?prefix=a&prefix=b"), "more than once"),
        ("--cache", format!("{redis}/0?shards=2&shards=3"), "more than once"),
        ("--store", format!("{redis}/0?prefix=a&prefix=b"), "more than once"),
        ("--cache", format!("{redis}/0?color=red"), "unknown parameter"),
        ("--cache", format!("{redis}/0#fragment"), "bad Redis URL"),
        ("--cache", "redis://127.0.0.1:0/0".into(), "port"),
        ("--cache", "redis://127.0.0.1:99999/0".into(), "port"),
        ("--cache", "redis://127.0.0.1:+6391/0".into(), "port"),
        ("--cache", "redis+cluster://127.0.0.1:7391,127.0.0.1:65536".into(), "port"),
        ("--cache", format!("{memcache}?prefix=a&prefix=b"), "more than once"),
        ("--cache", format!("{memcache}#fragment"), "bad memcached URL"),
        ("--cache", "memcache://127.0.0.1:+11311".into(), "port"),
        ("--cache", "memcache://127.0.0.1:0".into(), "port"),
        ("--store", format!("dynamodb://counters?endpoint={dynamo}&region=a&region=b"), "more than once"),
        ("--store", format!("dynamodb://counters?endpoint={dynamo}&create=true&create=false"), "more than once"),
        ("--store", format!("dynamodb://counters?endpoint={dynamo}&endpoint=http://127.0.0.1:1"), "more than once"),
        ("--store", format!("dynamodb://counters?endpoint={dynamo}&region=eu/west"), "region"),
        ("--store", format!("dynamodb://counters?endpoint={dynamo}#fragment"), "a fragment"),
        ("--store", "dynamodb://counters?endpoint=http://".into(), "no host"),
        ("--store", "dynamodb://counters?endpoint=http://bad host:1".into(), "space"),
        ("--store", "dynamodb://counters?endpoint=http://127.0.0.1:65536".into(), "port"),
        ("--store", "sqlite://x.db#fragment".into(), "fragments"),
        ("--store", "sqlite://x.db?mode=ro".into(), "unknown parameter \"mode\""),
        ("--store", "sqlite://x.db?readers=0".into(), "readers must be at least 1"),
        ("--cache", format!("{redis}/0?connect_timeout=5"), "duration"),
        ("--cache", format!("{memcache}?max_connections=0"), "max_connections"),
        ("--store", "sqlite://".into(), "empty"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(run(d, &["incr", "sentinel", "3"]).status.success());
    let before = files(d);
    let mut failures = Vec::new();
    for (option, url, reason) in &cases {
        let mut command = counters(d);
        command.args([*option, url.as_str(), "incr", "sentinel"]);
        let (status, out, err) = run_for(command, Duration::from_secs(60));
        let code = status.and_then(|s| s.code());
        let lines: Vec<&str> = err.lines().collect();
        if code != Some(2) || lines.len() != 1 || !err.contains(reason) || !out.is_empty() {
            failures.push(format!(
                "{option} {url}: exit {code:?}, stdout {out:?}, stderr {err:?} (want exit 2, {reason:?})"
            ));
        }
        if files(d) != before {
            failures.push(format!("{option} {url}: the directory changed"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases:\n{}", failures.len(), cases.len(), failures.join("\n"));
    let out = run(d, &["incr", "sentinel"]);
    assert_eq!(stdout(&out), "4", "{}", stderr(&out));
}
