//! Many first opens of one new file at once: every one of them succeeds.
//!
//! The schema check reads the header (`application_id`, `user_version`) and
//! the size of `sqlite_schema`; unless the three reads are one snapshot, an
//! open racing with another one's schema creation can see a mix of the
//! empty file and the new schema, and refuse the file as "another
//! application's". The processes test re-executes its own binary with
//! `OPENER_DB` set; the children run only `opener_child`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use backend_sqlite::{APPLICATION_ID, SCHEMA_VERSION, SqliteStore};

const OPENER_DB: &str = "BACKEND_SQLITE_TEST_OPENER_DB";
/// Threads opening each new file at once.
const THREADS: usize = 6;
/// New files opened by the threads test.
const THREAD_ROUNDS: usize = 150;
/// Processes opening each new file at once, like `counters incr` run in
/// parallel.
const PROCESSES: usize = 6;
/// New files opened by the processes test.
const PROCESS_ROUNDS: usize = 40;

fn open(path: &Path) -> Result<SqliteStore, String> {
    SqliteStore::open_blocking(path, Default::default()).map_err(|e| e.to_string())
}

/// Waits (a little) for the go file, so that the openers start together.
fn wait_for(go: &Path) {
    while !go.exists() {
        std::thread::sleep(Duration::from_micros(100));
    }
}

fn check_header(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let app: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0)).unwrap();
    let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!((app, version), (APPLICATION_ID, SCHEMA_VERSION));
}

#[test]
fn threads_opening_one_new_file_at_once_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for round in 0..THREAD_ROUNDS {
        let path: PathBuf = dir.path().join(format!("new{round}.db"));
        let start = Arc::new(Barrier::new(THREADS));
        let openers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    open(&path).map(drop)
                })
            })
            .collect();
        for opener in openers {
            if let Err(e) = opener.join().unwrap() {
                failures.push(format!("round {round}: {e}"));
            }
        }
        check_header(&path);
    }
    let opens = THREADS * THREAD_ROUNDS;
    assert!(failures.is_empty(), "{} of {opens} opens failed, the first: {}", failures.len(), failures[0]);
}

#[test]
fn opener_child() {
    let Ok(dir) = std::env::var(OPENER_DB) else {
        return; // Not a child: nothing to do.
    };
    let dir = PathBuf::from(dir);
    let mut failed = 0;
    for round in 0..PROCESS_ROUNDS {
        wait_for(&dir.join(format!("go{round}")));
        if let Err(e) = open(&dir.join(format!("new{round}.db"))) {
            eprintln!("round {round}: {e}");
            failed += 1;
        }
    }
    println!("\nRESULT {failed}");
}

#[test]
fn processes_opening_one_new_file_at_once_all_succeed() {
    if std::env::var(OPENER_DB).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "opener_child", "--nocapture", "--test-threads=1"])
                .env(OPENER_DB, dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Every child waits for go{round} before its open of new{round}.db; give
    // them a moment to start, then release the rounds one by one (a child
    // still busy with the previous round just starts late).
    std::thread::sleep(Duration::from_millis(300));
    for round in 0..PROCESS_ROUNDS {
        std::fs::write(dir.path().join(format!("go{round}")), b"").unwrap();
        std::thread::sleep(Duration::from_millis(25));
    }
    let mut failed = 0;
    let mut messages = String::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child failed: {stdout} {stderr}");
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .unwrap_or_else(|| panic!("no result from the child: {stdout}"));
        failed += line.trim().parse::<usize>().unwrap();
        messages.push_str(&stderr);
    }
    for round in 0..PROCESS_ROUNDS {
        check_header(&dir.path().join(format!("new{round}.db")));
    }
    let opens = PROCESSES * PROCESS_ROUNDS;
    assert_eq!(failed, 0, "{failed} of {opens} opens failed:\n{messages}");
}
