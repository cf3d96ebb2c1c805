//! No password reaches a terminal or a log (issue 14, item 3): the real
//! `counters` binary with backend URLs carrying `hunter2` as a password, a
//! lone token or a secret-looking query parameter, for every scheme,
//! malformed or naming an unreachable port, prints errors that show the URL
//! redacted (`user:***@`, `password=***`) and never the password, with the
//! default log level and with `COUNTERS_LOG=debug`; `counters serve` with
//! such a URL logs none either.

mod common;

use std::time::Duration;

use common::{counters, run_for};

const SECRET: &str = "hunter2";

/// `(--cache or --store, URL)`: malformed ones (exit 2) and well-formed
/// ones naming a closed port (exit 3) or refusing the password (exit 4).
fn urls() -> Vec<(&'static str, String)> {
    let mut urls: Vec<(&'static str, String)> = vec![
        ("--cache", "redis://user:hunter2@127.0.0.1:6701/notadb".into()),
        ("--cache", "redis://user:hunter2@127.0.0.1:6701/0".into()),
        ("--cache", "redis://:hunter2@127.0.0.1:6701".into()),
        ("--cache", "redis://hunter2@127.0.0.1:6701".into()),
        ("--cache", "redis://user:hunter2@127.0.0.1:6701/0?bogus=1".into()),
        ("--cache", "redis://user:hunter2@127.0.0.1:6701/0#frag".into()),
        ("--cache", "redis://user:hun/ter2@127.0.0.1:6701/0".into()),
        ("--cache", "rediss://user:hunter2@127.0.0.1:6701".into()),
        ("--cache", "redis+cluster://user:hunter2@127.0.0.1:6701,127.0.0.1:6702".into()),
        ("--cache", "redis+cluster://user:hunter2@127.0.0.1:6701,user:hunter2@127.0.0.1:6702/x".into()),
        ("--store", "redis://user:hunter2@127.0.0.1:6701/0".into()),
        ("--store", "redis://user:hunter2@127.0.0.1:99999/0".into()),
        ("--cache", "memcache://user:hunter2@127.0.0.1:6701".into()),
        ("--cache", "memcache://127.0.0.1:6701?password=hunter2".into()),
        ("--cache", "memcache://127.0.0.1:6701?prefix=p&token=hunter2".into()),
        ("--store", "dynamodb://counters?endpoint=http://user:hunter2@127.0.0.1:6701&region=us-east-1".into()),
        ("--store", "dynamodb://counters?endpoint=http://127.0.0.1:6701&secret_access_key=hunter2".into()),
        ("--store", "dynamodb://t?endpoint=http://127.0.0.1:6701&aws_session_token=hunter2".into()),
        ("--store", "sqlite://x.db?password=hunter2".into()),
        ("--store", "sqlite://x.db?mode=rw&key=hunter2".into()),
        ("--store", "sqlite://x.db#hunter2".into()),
        ("--cache", "ftp://user:hunter2@127.0.0.1".into()),
        ("--store", "ftp://user:hunter2@127.0.0.1".into()),
        ("--cache", "memory://user:hunter2@x".into()),
    ];
    // A live Redis refusing the password: the driver's own error.
    if let Some(redis) = common::service_url("COUNTERS_TEST_REDIS_URL") {
        let hostport = redis.trim_start_matches("redis://").trim_end_matches('/').to_string();
        urls.push(("--cache", format!("redis://:hunter2@{hostport}/0")));
        urls.push(("--cache", format!("redis://nobody:hunter2@{hostport}/0")));
    }
    urls
}

#[test]
fn one_shot_commands_never_print_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (option, url) in urls() {
        for log in [None, Some("debug"), Some("trace")] {
            let mut command = counters(dir.path());
            command.args([option, url.as_str(), "get", "s1"]);
            if let Some(level) = log {
                command.env("COUNTERS_LOG", level);
            }
            let (status, out, err) = run_for(command, Duration::from_secs(60));
            let code = status.and_then(|s| s.code());
            let last = err.lines().rfind(|l| l.starts_with("counters: ")).unwrap_or("").to_string();
            if !matches!(code, Some(2..=4)) {
                failures.push(format!("{option} {url} (log {log:?}): exit {code:?}, stderr {err}"));
            }
            if err.contains(SECRET) || out.contains(SECRET) {
                let line = err.lines().chain(out.lines()).find(|l| l.contains(SECRET)).unwrap_or("").to_string();
                failures.push(format!("{option} {url} (log {log:?}) printed the password: {line}"));
            }
            if log.is_none() && url.contains("user:hunter2@") && last.contains("user:") && !last.contains("user:***@") {
                failures.push(format!("{option} {url}: the URL is not shown redacted: {last}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn the_message_names_the_redacted_url() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = counters(dir.path());
    command.args(["--cache", "redis://user:hunter2@127.0.0.1:6701/notadb", "get", "s1"]);
    let (status, _, err) = run_for(command, Duration::from_secs(60));
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{err}");
    assert!(err.contains("\"redis://user:***@127.0.0.1:6701/notadb\""), "{err}");
    let mut command = counters(dir.path());
    command.args(["--store", "sqlite://x.db?mode=rw&password=hunter2", "get", "s1"]);
    let (status, _, err) = run_for(command, Duration::from_secs(60));
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{err}");
    assert!(err.contains("sqlite://x.db?mode=rw&password=***"), "{err}");
    assert!(!dir.path().join("x.db").exists(), "a refused URL created a file");
}

#[test]
fn serve_never_logs_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (option, url) in [
        ("--cache", "redis://user:hunter2@127.0.0.1:6701/0"),
        ("--cache", "redis://user:hunter2@127.0.0.1:6701/notadb"),
        ("--cache", "memcache://127.0.0.1:6701?password=hunter2"),
        ("--store", "dynamodb://counters?endpoint=http://user:hunter2@127.0.0.1:6701"),
        ("--store", "sqlite://x.db?token=hunter2"),
    ] {
        for log in [None, Some("debug")] {
            let mut command = counters(dir.path());
            command.args([option, url, "serve", "--listen", "127.0.0.1:0"]);
            if let Some(level) = log {
                command.env("COUNTERS_LOG", level);
            }
            let (status, _, err) = run_for(command, Duration::from_secs(60));
            let code = status.and_then(|s| s.code());
            if !matches!(code, Some(2..=4)) {
                failures.push(format!("serve {option} {url} (log {log:?}): exit {code:?}, stderr {err}"));
            }
            if let Some(line) = err.lines().find(|l| l.contains(SECRET)) {
                failures.push(format!("serve {option} {url} (log {log:?}) logged the password: {line}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
