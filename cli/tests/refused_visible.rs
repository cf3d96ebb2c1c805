//! Nothing of a refused call is visible afterwards (issue 14, item 12): an
//! increment refused for an overflow of a rollup parent does not leave the
//! never-counted child listed (at 0), inspected as cached, or in the
//! store, through `counters serve` over its default in-process cache and
//! over a Redis cache, and through the CLI over Redis.

mod common;

use common::{Server, random_name, run, serve_with, service_url, stderr, stdout};

/// The listing of `namespace` as `(key, value)` pairs.
fn listing(server: &Server, namespace: &str) -> Vec<(String, i64)> {
    let (status, body) = server.json("GET", &format!("/v1/counters?namespace={namespace}"), "");
    assert_eq!(status, 200, "{body}");
    body["counters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| (row["key"].as_str().unwrap().to_string(), row["value"].as_i64().unwrap()))
        .collect()
}

/// The refused rollup against one running service: 400 overflow, then the
/// listing and the child's inspection exactly as before, before and after
/// a flush, and the service still counts.
fn refused_rollup_is_invisible(server: &Server, namespace: &str) {
    let (parent, child, sentinel) = (format!("{namespace}/p"), format!("{namespace}/p:q"), format!("{namespace}/s"));
    let (status, body) =
        server.json("PUT", &format!("/v1/counters/{parent}"), &format!(r#"{{"value": {}}}"#, i64::MAX));
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.json("POST", &format!("/v1/counters/{sentinel}"), r#"{"delta": 3}"#);
    assert_eq!(status, 200, "{body}");
    let before = listing(server, namespace);
    let (_, inspected_before) = server.json("GET", &format!("/v1/inspect/{child}"), "");

    let (status, body) = server.json("POST", &format!("/v1/counters/{child}"), r#"{"delta": 1, "rollup": true}"#);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["kind"], "overflow", "{body}");
    assert_eq!(body["error"]["key"].as_str(), Some(parent.as_str()), "{body}");

    assert_eq!(listing(server, namespace), before, "the refused increment left {child} listed");
    let (_, inspected) = server.json("GET", &format!("/v1/inspect/{child}"), "");
    assert_eq!(inspected, inspected_before, "the refused increment changed what inspecting {child} shows");
    let (status, body) = server.json("POST", "/v1/flush", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(listing(server, namespace), before, "after a flush");
    let (status, body) = server.json("GET", &format!("/v1/counters/{child}"), "");
    assert_eq!((status, body["value"].as_i64()), (200, Some(0)), "{body}");
    // Still serving: the child counts on its own, the parent is untouched.
    let (status, body) = server.json("POST", &format!("/v1/counters/{child}"), r#"{"delta": 2}"#);
    assert_eq!((status, body["value"].as_i64()), (200, Some(2)), "{body}");
    let (status, body) = server.json("GET", &format!("/v1/counters/{parent}"), "");
    assert_eq!((status, body["value"].as_i64()), (200, Some(i64::MAX)), "{body}");
}

#[test]
fn refused_rollup_leaves_nothing_over_the_default_cache() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    refused_rollup_is_invisible(&server, &random_name("rv"));
}

#[test]
fn refused_rollup_leaves_nothing_over_a_redis_cache() {
    let Some(redis) = service_url("COUNTERS_TEST_REDIS_URL") else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with(dir.path(), &["--cache", &redis], &["--flush-interval", "3600"]);
    refused_rollup_is_invisible(&server, &random_name("rv"));
}

/// The CLI over a shared (Redis) cache: exit 2 with the overflow named, and
/// the next process lists exactly what it listed before.
#[test]
fn refused_rollup_leaves_nothing_through_the_cli() {
    let Some(redis) = service_url("COUNTERS_TEST_REDIS_URL") else { return };
    let dir = tempfile::tempdir().unwrap();
    let namespace = random_name("rvcli");
    let with = |args: &[&str]| {
        let mut all = vec!["--cache", redis.as_str()];
        all.extend_from_slice(args);
        run(dir.path(), &all)
    };
    let max = i64::MAX.to_string();
    let parent = format!("{namespace}/p");
    let child = format!("{namespace}/p:q");
    assert!(with(&["put", &parent, &max]).status.success());
    let before = with(&["list", "--namespace", &namespace]);
    assert!(before.status.success(), "{}", stderr(&before));
    let refused = with(&["incr", &child, "--rollup"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("overflow"), "{}", stderr(&refused));
    let after = with(&["list", "--namespace", &namespace]);
    assert_eq!(stdout(&after), stdout(&before), "the refused increment left {child} listed");
    let value = with(&["get", &child]);
    assert_eq!(stdout(&value), "0");
    let counted = with(&["incr", &child]);
    assert_eq!(stdout(&counted), "1", "{}", stderr(&counted));
}
