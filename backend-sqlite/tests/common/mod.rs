//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use backend_sqlite::SqliteStore;
use counter_core::{Batch, BatchEntry, BatchId, Cell, Key, Precision, SliceId};

/// A temporary directory and a store file path in it.
pub fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("counters.db");
    (dir, path)
}

/// A fresh store in a temporary directory.
pub async fn temp_store() -> (tempfile::TempDir, SqliteStore) {
    let (dir, path) = temp_db();
    let store = SqliteStore::open(&path).await.expect("open store");
    (dir, store)
}

pub fn key(namespace: &str, name: &str) -> Key {
    Key::new(namespace, name).expect("valid key")
}

pub fn counter(key: &Key, delta: i64) -> BatchEntry {
    BatchEntry { cell: Cell::Counter(key.clone()), delta }
}

pub fn precision(secs: u32) -> Precision {
    Precision::from_secs(secs).expect("precision")
}

pub fn slice(key: &Key, secs: u32, start: i64, delta: i64) -> BatchEntry {
    BatchEntry { cell: Cell::Slice(SliceId { key: key.clone(), precision: precision(secs), start }), delta }
}

pub fn batch(entries: Vec<BatchEntry>) -> Batch {
    Batch::claimed(BatchId::new(), entries)
}

/// The file's bytes, to check that something left it untouched.
pub fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read file")
}
