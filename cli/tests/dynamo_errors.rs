//! DynamoDB errors through the real binary (issue 14, item 13): a
//! malformed endpoint is a bad URL (exit 2), not "unavailable"; an SDK
//! error is one readable line naming the operation, the table and the
//! service's error code, with the SDK's full detail only under
//! `COUNTERS_LOG=debug`. Against the local DynamoDB server
//! (`scripts/services/dynamodb.sh`).

mod common;

use std::time::Duration;

use common::{Python, counters, random_name, run_for};

/// Longest error line accepted.
const MAX_LINE: usize = 300;

/// Runs `counters --store URL get k` (with `COUNTERS_LOG` if given): exit
/// code and stderr.
fn get(store: &str, log: Option<&str>) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = counters(dir.path());
    command.args(["--store", store, "get", "k"]);
    if let Some(level) = log {
        command.env("COUNTERS_LOG", level);
    }
    let (status, _, err) = run_for(command, Duration::from_secs(90));
    (status.and_then(|s| s.code()), err)
}

/// The one `counters: ...` line of stderr, checked to be short.
fn the_line(err: &str) -> String {
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("counters: ")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].len() < MAX_LINE, "{} bytes: {}", lines[0].len(), lines[0]);
    lines[0].to_string()
}

#[test]
fn malformed_endpoints_are_bad_urls() {
    for endpoint in [
        "http://",
        "https://",
        "http://bad host:1",
        "http://:8011",
        "http://127.0.0.1:0",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:80x",
        "http://u:hunter2@127.0.0.1:8011",
        "http://127.0.0.1:8011?x=1",
        "http://under_score:1",
        "ftp://127.0.0.1:8011",
        "127.0.0.1:8011",
    ] {
        let url = format!("dynamodb://counters?endpoint={endpoint}");
        let (code, err) = get(&url, None);
        assert_eq!(code, Some(2), "{endpoint}: {err}");
        let line = the_line(&err);
        assert!(line.contains("bad DynamoDB URL") && line.contains("endpoint"), "{endpoint}: {line}");
        assert!(!line.contains("hunter2"), "{line}");
    }
}

#[test]
fn an_unreachable_endpoint_is_one_short_line() {
    let (code, err) = get("dynamodb://counters?endpoint=http://127.0.0.1:1", None);
    assert_eq!(code, Some(3), "{err}");
    let line = the_line(&err);
    assert!(line.contains("DescribeTable") && line.contains("\"counters\""), "{line}");
    assert!(line.contains("cannot reach the endpoint") && line.contains("Connection refused"), "{line}");
}

#[test]
fn a_missing_table_is_one_sentence_with_operation_table_and_code() {
    let Some(python) = Python::dynamodb() else { return };
    let table = random_name("missing");
    let url = format!("{}&create=false", python.store_url(&table));
    let (code, err) = get(&url, None);
    assert_eq!(code, Some(4), "{err}");
    let line = the_line(&err);
    assert!(line.contains("DescribeTable"), "{line}");
    assert!(line.contains(&format!("{table:?}")), "{line}");
    assert!(line.contains("ResourceNotFoundException"), "{line}");
    assert!(!line.contains("ServiceError") && !line.contains("HeaderValue"), "debug output in {line}");
    // The full detail is in the debug log.
    let (code, err) = get(&url, Some("debug"));
    assert_eq!(code, Some(4), "{err}");
    assert!(err.lines().any(|l| l.contains("DynamoDB error") && l.contains("ServiceError")), "{err}");
}

#[test]
fn a_wrong_key_schema_is_one_sentence() {
    let Some(python) = Python::dynamodb() else { return };
    let table = random_name("numkey");
    python.admin(&table, "create-number-key");
    let (code, err) = get(&python.store_url(&table), None);
    assert_eq!(code, Some(4), "{err}");
    let line = the_line(&err);
    assert!(line.contains(&table), "{line}");
    assert!(!line.contains("ServiceError") && !line.contains("HeaderValue"), "debug output in {line}");
    python.admin(&table, "delete");
}
