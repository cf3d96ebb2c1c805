//! The schema check at open: ours is created, versioned and reopened;
//! anything else is refused with a clear permanent error and left untouched.

mod common;

use backend_sqlite::{APPLICATION_ID, SCHEMA_VERSION, SqliteOptions, SqliteStore};
use common::*;
use counter_core::{DurableStore, ErrorKind};
use rusqlite::Connection;

fn header(path: &std::path::Path) -> (i32, i32) {
    let conn = Connection::open(path).unwrap();
    let app: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0)).unwrap();
    let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    (app, version)
}

#[tokio::test]
async fn a_new_file_gets_our_schema_in_wal_mode_and_reopens() {
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&path).await.unwrap();
    let k = key("", "x");
    store.apply(&batch(vec![counter(&k, 7)])).await.unwrap();
    drop(store);
    assert_eq!(header(&path), (APPLICATION_ID, SCHEMA_VERSION));
    let conn = Connection::open(&path).unwrap();
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    drop(conn);
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.get_many(&[k]).await.unwrap(), [Some(7)]);
}

#[tokio::test]
async fn an_empty_file_is_initialised() {
    let (_dir, path) = temp_db();
    std::fs::write(&path, b"").unwrap();
    SqliteStore::open(&path).await.unwrap();
    assert_eq!(header(&path), (APPLICATION_ID, SCHEMA_VERSION));
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_left_untouched() {
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&path).await.unwrap();
    store.apply(&batch(vec![counter(&key("", "x"), 1)])).await.unwrap();
    drop(store);
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        // Fold the WAL into the main file so the bytes below are complete.
        conn.pragma_update(None, "journal_mode", "DELETE").unwrap();
    }
    let before = bytes(&path);
    let e = SqliteStore::open(&path).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent, "{e}");
    let text = e.to_string();
    assert!(text.contains(&format!("schema version {}", SCHEMA_VERSION + 1)) && text.contains("newer"), "{text}");
    assert!(!text.contains('\n'));
    assert_eq!(bytes(&path), before);
    assert_eq!(header(&path), (APPLICATION_ID, SCHEMA_VERSION + 1));
}

#[tokio::test]
async fn another_applications_database_is_refused_and_left_untouched() {
    let (_dir, path) = temp_db();
    for application_id in [0, 0x1234_5678] {
        std::fs::remove_file(&path).ok();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE counters (namespace TEXT, name TEXT, value INTEGER);
                 INSERT INTO counters VALUES ('', 'theirs', 1);",
            )
            .unwrap();
            conn.pragma_update(None, "application_id", application_id).unwrap();
        }
        let before = bytes(&path);
        let e = SqliteStore::open(&path).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Permanent, "{e}");
        assert!(e.to_string().contains("another application"), "{e}");
        assert_eq!(bytes(&path), before, "the file was modified");
        assert!(!path.with_extension("db-wal").exists());
    }
}

#[tokio::test]
async fn our_id_with_missing_tables_is_refused() {
    let (_dir, path) = temp_db();
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE other (x INTEGER);").unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION).unwrap();
    }
    let e = SqliteStore::open(&path).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent, "{e}");
    assert!(e.to_string().contains("lacks some of the tables"), "{e}");
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_refused_and_left_untouched() {
    let (_dir, path) = temp_db();
    for content in
        [b"hello, this is a text file and not a database\n".repeat(200), vec![0xAB; 100], b"SQLite format 2\0".to_vec()]
    {
        std::fs::write(&path, &content).unwrap();
        let e = SqliteStore::open(&path).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Permanent, "{e}");
        assert!(e.to_string().contains("is not an SQLite database"), "{e}");
        assert_eq!(bytes(&path), content, "the file was modified");
    }
}

#[tokio::test]
async fn an_unopenable_path_is_a_permanent_error() {
    let (dir, _) = temp_db();
    let e = SqliteStore::open(dir.path().join("missing-dir/c.db")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent, "{e}");
    assert!(e.to_string().contains("missing-dir"), "{e}");
}

#[tokio::test]
async fn urls() {
    let (_dir, path) = temp_db();
    let url = format!("sqlite://{}", path.display());
    let store = SqliteStore::from_url(&url).await.unwrap();
    assert_eq!(store.path(), path);
    for bad in ["sqlite:/x.db", "sqlite://", "sqlite::memory:", "redis://localhost", "sqlite:///x.db?mode=ro"] {
        let e = SqliteStore::from_url(bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{bad}: {e}");
    }
}

#[test]
fn open_blocking_works_without_a_runtime() {
    let (_dir, path) = temp_db();
    let store = SqliteStore::open_blocking(&path, SqliteOptions::default().readers(1)).unwrap();
    assert_eq!(store.options().readers, 1);
}
