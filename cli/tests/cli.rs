//! The `counters` binary, run as a user would, in fresh directories.

use std::path::Path;
use std::process::{Command, Output};

fn counters(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_counters"))
        .args(args)
        .current_dir(dir)
        .env_remove("COUNTERS_STORE")
        .env_remove("COUNTERS_CACHE")
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

#[test]
fn incr_then_get_in_a_fresh_directory_prints_the_total() {
    let dir = tempfile::tempdir().unwrap();
    let o = counters(dir.path(), &["incr", "clicks:ad42", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "5");
    let o = counters(dir.path(), &["get", "clicks:ad42"]);
    assert_eq!(stdout(&o), "5");
    assert!(dir.path().join("counters.sqlite").exists(), "the default store is an SQLite file here");
    counters(dir.path(), &["decr", "clicks:ad42", "7"]);
    let o = counters(dir.path(), &["--json", "get", "clicks:ad42", "other"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v, serde_json::json!([{ "key": "clicks:ad42", "value": -2 }, { "key": "other", "value": 0 }]));
}

#[test]
fn a_bad_key_is_one_line_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(1025);
    for bad in [vec!["incr", ""], vec!["incr", long.as_str()], vec!["get", "ok", "bad\u{1}"], vec!["put", "a\nb", "1"]]
    {
        let o = counters(dir.path(), &bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.starts_with("counters: invalid key"), "{err}");
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing was created");
    }
}

#[test]
fn overflow_and_bad_urls_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    assert!(counters(dir.path(), &["put", "big", "9223372036854775807"]).status.success());
    let o = counters(dir.path(), &["incr", "big", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("overflow for key \"big\""), "{}", stderr(&o));
    assert_eq!(stdout(&counters(dir.path(), &["get", "big"])), "9223372036854775807");
    let o = counters(dir.path(), &["--store", "ftp://nowhere", "get", "x"]);
    assert_eq!(o.status.code(), Some(2));
    let o = counters(dir.path(), &["--cache", "redis://127.0.0.1:1/notadb", "get", "x"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[cfg(feature = "redis")]
#[test]
fn an_unreachable_redis_is_transient() {
    let dir = tempfile::tempdir().unwrap();
    let o = counters(dir.path(), &["--cache", "redis://127.0.0.1:1", "get", "x"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

/// Two invocations in two directories share the counter through Redis,
/// and the Redis store keeps it.
#[cfg(feature = "redis")]
#[test]
fn a_redis_cache_and_store_are_shared_between_invocations() {
    let Ok(url) = std::env::var("COUNTERS_TEST_REDIS_URL") else {
        let ci = matches!(std::env::var("CI").as_deref(), Ok("true" | "1"));
        assert!(!ci, "COUNTERS_TEST_REDIS_URL is not set and CI=true: a missing service is a failure");
        eprintln!("*** SKIPPING: COUNTERS_TEST_REDIS_URL is not set ***");
        return;
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let prefix = format!("cli{nanos:x}:");
    let cache = format!("{url}?prefix={prefix}c:");
    let store = format!("{url}?prefix={prefix}s:");
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let args = |extra: &[&'static str]| {
        let mut v: Vec<String> = vec!["--cache".into(), cache.clone(), "--store".into(), store.clone()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |dir: &std::path::Path, extra: &[&'static str]| {
        let v = args(extra);
        counters(dir, &v.iter().map(String::as_str).collect::<Vec<_>>())
    };
    assert_eq!(stdout(&run(a.path(), &["incr", "shared", "2"])), "2");
    assert_eq!(stdout(&run(b.path(), &["incr", "shared", "3"])), "5");
    assert_eq!(stdout(&run(a.path(), &["get", "shared"])), "5");
    assert!(std::fs::read_dir(a.path()).unwrap().next().is_none(), "no SQLite file: Redis is the store");
}

#[test]
fn a_file_that_is_not_ours_is_a_backend_failure() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("counters.sqlite"), b"this is not a database").unwrap();
    let o = counters(dir.path(), &["get", "x"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1);
    assert_eq!(std::fs::read(dir.path().join("counters.sqlite")).unwrap(), b"this is not a database");
}

#[test]
fn put_delete_list_series_and_flush() {
    let dir = tempfile::tempdir().unwrap();
    let ok = |args: &[&str]| {
        let o = counters(dir.path(), args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    ok(&["put", "ads/a", "10"]);
    ok(&["incr", "ads/b", "30"]);
    ok(&["incr", "ads/c:x", "20", "--rollup"]);
    assert_eq!(ok(&["list", "--namespace", "ads"]), "ads/a\t10\nads/b\t30\nads/c\t20\nads/c:x\t20");
    assert_eq!(ok(&["list", "--namespace", "ads", "--top", "2"]), "ads/b\t30\nads/c\t20");
    assert_eq!(ok(&["delete", "ads/a"]), "deleted ads/a");
    assert_eq!(ok(&["get", "ads/a"]), "0");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    // Two days ago: within the daily buckets' retention (120 days) only.
    let day = (now - 2 * 86_400).div_euclid(86_400) * 86_400;
    ok(&["incr", "hits", "3", "--sliced", "--at", &day.to_string()]);
    ok(&["incr", "hits", "4", "--sliced", "--at", &(day + 30).to_string()]);
    let minute = now - now % 60;
    ok(&["incr", "hits", "2", "--sliced"]);
    let series = ok(&["series", "hits", "--precision", "60", "--from", &(minute - 60).to_string()]);
    let last = series.lines().last().unwrap_or_default().to_string();
    assert!(last == format!("{minute}\t2") || last == format!("{}\t2", minute + 60), "{series}");
    let daily = ok(&["series", "hits", "--precision", "86400", "--from", &day.to_string(), "--to", &day.to_string()]);
    assert_eq!(daily, format!("{day}\t7"));
    let o = counters(dir.path(), &["series", "hits", "--precision", "7"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown precision 7s"), "{}", stderr(&o));
    assert!(ok(&["flush"]).starts_with("flushed 0 counters"));
}

#[test]
fn help_names_every_backend_compiled_in() {
    let dir = tempfile::tempdir().unwrap();
    let o = counters(dir.path(), &["--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let help = stdout(&o);
    // A flag's help, over the lines clap wraps it into (up to the next flag).
    let line = |flag: &str| {
        let mut lines = help.lines().skip_while(|l| !l.trim_start().starts_with(flag));
        let first = lines.next().unwrap_or_default().to_string();
        lines.take_while(|l| !l.trim_start().starts_with('-')).fold(first, |all, l| all + " " + l.trim())
    };
    let (cache, store) = (line("--cache"), line("--store"));
    assert!(cache.contains("memory://"), "{cache}");
    assert!(store.contains("sqlite://") && store.contains("memory://"), "{store}");
    assert_eq!(cache.contains("redis://") && cache.contains("redis+cluster://"), cfg!(feature = "redis"), "{cache}");
    assert_eq!(cache.contains("rediss://"), cfg!(feature = "redis"), "{cache}");
    assert_eq!(store.contains("redis://"), cfg!(feature = "redis"), "{store}");
    assert_eq!(cache.contains("memcache://"), cfg!(feature = "memcache"), "{cache}");
    assert_eq!(store.contains("dynamodb://"), cfg!(feature = "dynamo"), "{store}");
}
