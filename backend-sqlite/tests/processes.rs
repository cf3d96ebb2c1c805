//! Two OS processes flushing into one file at once lose and double nothing.
//!
//! The test re-executes its own binary twice with `WRITER_DB` set; the
//! children run only `writer_child` (which does nothing in a normal run).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use backend_sqlite::SqliteStore;
use common::*;
use counter_core::{ApplyOutcome, Batch, BatchId, DurableStore};

const WRITER_DB: &str = "BACKEND_SQLITE_TEST_WRITER_DB";
const WRITER_INDEX: &str = "BACKEND_SQLITE_TEST_WRITER_INDEX";
const SHARED_BASE: &str = "BACKEND_SQLITE_TEST_SHARED_BASE";
const ROUNDS: u64 = 1_000;
const CHILDREN: u64 = 2;

/// Applies, retrying transient errors as the engine does.
async fn apply(store: &SqliteStore, batch: &Batch) -> ApplyOutcome {
    for _ in 0..50 {
        match store.apply(batch).await {
            Ok(outcome) => return outcome,
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("apply failed: {e}"),
        }
    }
    panic!("apply kept failing");
}

/// The shared batch of round `round`: the same identity and deltas in every
/// child, like a claim that two flushers both try to land.
fn shared_batch(base: u128, round: u64) -> Batch {
    Batch::claimed(
        BatchId::from_u128(base + u128::from(round)),
        vec![counter(&key("p", "shared"), 1), counter(&key("p", "total"), 1)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_child() {
    let Ok(path) = std::env::var(WRITER_DB) else {
        return; // Not a child: nothing to do.
    };
    let me: u64 = std::env::var(WRITER_INDEX).unwrap().parse().unwrap();
    let base: u128 = std::env::var(SHARED_BASE).unwrap().parse().unwrap();
    let store = SqliteStore::open(&path).await.unwrap();
    // Start together, so that the writes really interleave.
    let go = std::path::Path::new(&path).with_extension("go");
    while !go.exists() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (total, mine) = (key("p", "total"), key("p", &format!("child{me}")));
    let (mut shared_applied, mut shared_seen) = (0, 0);
    for round in 0..ROUNDS {
        let own = batch(vec![counter(&total, 1), counter(&mine, 1), slice(&total, 60, 0, 1)]);
        assert_eq!(apply(&store, &own).await, ApplyOutcome::Applied);
        if round % 5 == 0 {
            // A retry after a lost acknowledgement.
            assert_eq!(apply(&store, &own).await, ApplyOutcome::AlreadyApplied);
        }
        if round % 2 == 0 {
            match apply(&store, &shared_batch(base, round)).await {
                ApplyOutcome::Applied => shared_applied += 1,
                ApplyOutcome::AlreadyApplied => shared_seen += 1,
                other => panic!("a batch never split answered {other:?}"),
            }
        }
    }
    println!("\nRESULT {shared_applied} {shared_seen}");
}

#[test]
fn two_processes_flush_into_one_file_exactly() {
    if std::env::var(WRITER_DB).is_ok() {
        return;
    }
    let (_dir, path) = temp_db();
    let base = BatchId::new().as_u128();
    // Both children also race to create the schema of the new file.
    let children: Vec<_> = (0..CHILDREN)
        .map(|i| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
                .env(WRITER_DB, &path)
                .env(WRITER_INDEX, i.to_string())
                .env(SHARED_BASE, base.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::fs::write(path.with_extension("go"), b"").unwrap();
    let (mut applied, mut seen) = (0, 0);
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {stdout}");
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
            .unwrap_or_else(|| panic!("no result from the child: {stdout}"));
        eprintln!("child: shared batches applied / found applied: {line}");
        let (a, s) = line.split_once(' ').unwrap();
        applied += a.parse::<u64>().unwrap();
        seen += s.parse::<u64>().unwrap();
    }
    let shared = ROUNDS.div_ceil(2);
    assert_eq!(applied, shared, "each shared batch lands exactly once");
    assert_eq!(seen, shared * (CHILDREN - 1));

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(&path).await.unwrap();
        let mut keys = vec![key("p", "total"), key("p", "shared")];
        keys.extend((0..CHILDREN).map(|i| key("p", &format!("child{i}"))));
        let values = store.get_many(&keys).await.unwrap();
        let rounds = ROUNDS as i64;
        let children = CHILDREN as i64;
        let mut expected = vec![Some(children * rounds + shared as i64), Some(shared as i64)];
        expected.extend((0..CHILDREN).map(|_| Some(rounds)));
        assert_eq!(values, expected);
        assert_eq!(store.series(&key("p", "total"), precision(60), 0, 0).await.unwrap(), [(0, children * rounds)]);
        assert_eq!(store.applied_batches().await.unwrap(), CHILDREN * ROUNDS + shared);
    });
}
