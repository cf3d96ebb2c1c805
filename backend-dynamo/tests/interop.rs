//! Our store and Python's `distributed_counter` package (from the test
//! environment's virtualenv) share one table: each reads the other's values
//! and their increments add up.

mod common;

use std::process::Command;

use common::*;
use counter_core::{DurableStore, ErrorKind};

/// Runs one operation of the Python package; its printed result.
fn python(endpoint: &str, table: &str, args: &[&str]) -> String {
    let python = std::env::var("COUNTERS_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop.py");
    let out = Command::new(&python).arg(script).arg(endpoint).arg(table).args(args).output().expect("run python");
    assert!(out.status.success(), "python {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn python_available() -> bool {
    let ci = matches!(std::env::var("CI").as_deref(), Ok("true" | "1"));
    match std::env::var("COUNTERS_TEST_PYTHON") {
        Ok(_) => true,
        Err(_) => {
            assert!(!ci, "COUNTERS_TEST_PYTHON is not set and CI=true: run ./scripts/test");
            eprintln!("\n*** SKIPPING: COUNTERS_TEST_PYTHON is not set; run ./scripts/test. ***\n");
            false
        }
    }
}

#[tokio::test]
async fn python_and_rust_share_counters_and_their_increments_add_up() {
    let Some(endpoint) = endpoint() else { return };
    if !python_available() {
        return;
    }
    let table = random_table();
    // The Python package creates the table (provisioned): we use it as it is.
    python(&endpoint, &table, &["create", "-"]);
    python(&endpoint, &table, &["put", "shared", "10"]);
    let store = store_on(&endpoint, &table).await;
    let shared = key("shared");
    assert_eq!(store.get_many(std::slice::from_ref(&shared)).await.unwrap(), [Some(10)]);

    store.apply(&counter_batch(&[(&shared, 5)])).await.unwrap();
    assert_eq!(python(&endpoint, &table, &["get", "shared"]), "15");
    assert_eq!(python(&endpoint, &table, &["increment", "shared", "3"]), "18");
    assert_eq!(store.get_many(std::slice::from_ref(&shared)).await.unwrap(), [Some(18)]);

    let ours = key("ours");
    store.apply(&counter_batch(&[(&ours, -7)])).await.unwrap();
    assert_eq!(python(&endpoint, &table, &["get", "ours"]), "-7");
    assert_eq!(python(&endpoint, &table, &["increment", "ours", "2"]), "-5");
    assert_eq!(store.get_many(&[ours]).await.unwrap(), [Some(-5)]);
    assert_eq!(python(&endpoint, &table, &["increment", "fresh", "4", "100"]), "104");
    assert_eq!(store.get_many(&[key("fresh")]).await.unwrap(), [Some(104)]);
}

#[tokio::test]
async fn values_that_are_not_i64_integers_are_errors_not_truncations() {
    let Some(endpoint) = endpoint() else { return };
    if !python_available() {
        return;
    }
    let store = fresh_store(&endpoint).await;
    let table = store.table().to_string();
    python(&endpoint, &table, &["put", "float", "14"]);
    python(&endpoint, &table, &["increment", "float", "0.4"]);
    python(&endpoint, &table, &["put", "huge", &(1u128 << 70).to_string()]);
    for name in ["float", "huge"] {
        let e = store.get_many(&[key(name)]).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Permanent, "{name}: {e}");
        assert_eq!(e.key(), Some(name));
        assert!(e.to_string().contains("not an integer within the signed 64-bit range"), "{e}");
    }
    // A delta beyond the i64 range is refused; a delta onto a fraction is
    // added exactly (DynamoDB's decimals), and reading it stays an error.
    let e = store.apply(&counter_batch(&[(&key("huge"), 1)])).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent, "{e}");
    store.apply(&counter_batch(&[(&key("float"), 1)])).await.unwrap();
    assert_eq!(python(&endpoint, &table, &["get", "float"]), "15.4");
    assert_eq!(python(&endpoint, &table, &["get", "huge"]), (1u128 << 70).to_string(), "left as it was");
}
