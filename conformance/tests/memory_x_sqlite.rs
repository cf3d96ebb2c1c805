//! The suite on the embedded default: MemoryCache x SqliteStore, each test
//! on a fresh SQLite file under Cargo's scratch directory for tests.
#![cfg(feature = "sqlite")]

use std::path::PathBuf;
use std::sync::Arc;

use backend_sqlite::SqliteStore;
use conformance::Backends;
use counter_core::MemoryCache;

async fn setup() -> Option<Backends<MemoryCache, SqliteStore>> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance-sqlite");
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let n: u64 = rand::random();
    let store = SqliteStore::open(dir.join(format!("{n:016x}.sqlite"))).await.expect("open SQLite");
    Some(Backends::new(Arc::new(MemoryCache::new()), Arc::new(store)))
}

conformance::conformance_suite!(setup, model_cases = 32);
