//! The schema: created, recognised and migrated by this crate, and refused
//! when a file belongs to something else or to a newer version.
//!
//! A file is ours when its `PRAGMA application_id` is [`APPLICATION_ID`];
//! its `PRAGMA user_version` is the schema version. Both live in the
//! database header and change in the same transaction as the tables.

use std::path::Path;

use counter_core::{Error, ErrorKind, Result};
use rusqlite::{Connection, ErrorCode, TransactionBehavior};
use tracing::info;

use crate::errors::{Context, from_sqlite};

/// `PRAGMA application_id` of a counters store: the ASCII bytes `Cntr`.
pub const APPLICATION_ID: i32 = 0x436E_7472;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i32 = 1;

/// Version 0 (an empty file) to 1.
///
/// Tables are `STRICT`, so a value can never silently become a REAL or a
/// string; `WITHOUT ROWID` tables are clustered by their primary key.
const V1: &str = "
CREATE TABLE counters (
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    value     INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
) STRICT, WITHOUT ROWID;
CREATE INDEX counters_by_value ON counters (namespace, value DESC, name);

CREATE TABLE slices (
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    precision INTEGER NOT NULL,
    start     INTEGER NOT NULL,
    count     INTEGER NOT NULL,
    PRIMARY KEY (namespace, name, precision, start)
) STRICT, WITHOUT ROWID;
CREATE INDEX slices_by_age ON slices (precision, start);

CREATE TABLE applied_batches (
    id         BLOB NOT NULL PRIMARY KEY,
    applied_ms INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX applied_batches_by_age ON applied_batches (applied_ms);
";

/// `MIGRATIONS[v]` takes a file from version `v` to `v + 1`.
const MIGRATIONS: &[&str] = &[V1];

const _: () = assert!(MIGRATIONS.len() == SCHEMA_VERSION as usize);

/// Tables every version has.
const TABLES: [&str; 3] = ["counters", "slices", "applied_batches"];

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No schema at all: a new or empty file.
    Empty,
    /// Our schema at this version (never newer than this build's).
    Ours(i32),
}

/// Makes sure the file behind `conn` holds our schema at
/// [`SCHEMA_VERSION`], creating or migrating it if needed. A file that is
/// not SQLite, belongs to another application or has a newer schema gets a
/// [`Permanent`](ErrorKind::Permanent) error and is not modified.
pub(crate) fn ensure(conn: &mut Connection, path: &Path) -> Result<()> {
    // The three reads of `inspect` must see one snapshot: read one by one,
    // they can straddle another process's creation of the schema (an
    // application id of 0 read before its commit, the tables after) and
    // refuse a file that is ours. A deferred transaction that only reads
    // takes no write lock; dropping it ends it.
    let snapshot = conn
        .transaction_with_behavior(TransactionBehavior::Deferred)
        .map_err(|e| refused(path, e, "could not start a read transaction"))?;
    let state = inspect(&snapshot, path)?;
    drop(snapshot);
    if state == State::Ours(SCHEMA_VERSION) {
        return check_tables(conn, path);
    }
    // Check again under the write lock: another process may be creating or
    // migrating the same file right now.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| refused(path, e, "could not lock it to create the schema"))?;
    let from = match inspect(&tx, path)? {
        State::Empty => 0,
        State::Ours(version) => version,
    };
    if from == SCHEMA_VERSION {
        // Someone else got there first; dropping `tx` rolls back nothing.
        drop(tx);
        return check_tables(conn, path);
    }
    for migration in &MIGRATIONS[from as usize..] {
        tx.execute_batch(migration).context("creating or migrating the SQLite schema")?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID).context("writing the SQLite application id")?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION).context("writing the SQLite schema version")?;
    tx.commit().context("committing the SQLite schema")?;
    info!(path = %path.display(), from, to = SCHEMA_VERSION, "SQLite counter store schema ready");
    check_tables(conn, path)
}

/// Reads the header and the schema size without writing anything. Call it
/// inside a transaction, so that the three reads are one snapshot.
fn inspect(conn: &Connection, path: &Path) -> Result<State> {
    let application_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|e| refused(path, e, "could not read it"))?;
    let version: i32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| refused(path, e, "could not read it"))?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(|e| refused(path, e, "could not read it"))?;
    let path = path.display();
    if application_id == APPLICATION_ID {
        if version > SCHEMA_VERSION {
            return Err(Error::new(
                ErrorKind::Permanent,
                format!(
                    "{path} has counters schema version {version}, newer than the {SCHEMA_VERSION} this build supports; upgrade the library to open it"
                ),
            ));
        }
        if version < 1 {
            return Err(Error::new(
                ErrorKind::Permanent,
                format!("{path} has the counters application id but schema version {version}, which never existed"),
            ));
        }
        return Ok(State::Ours(version));
    }
    if application_id == 0 && objects == 0 && version == 0 {
        return Ok(State::Empty);
    }
    Err(Error::new(
        ErrorKind::Permanent,
        format!(
            "{path} is an SQLite database of another application (application_id {application_id:#010x}, user_version {version}, {objects} schema objects), not a counters store; refusing to touch it"
        ),
    ))
}

/// Checks that the tables of our schema are all there.
fn check_tables(conn: &Connection, path: &Path) -> Result<()> {
    let found: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN (?1, ?2, ?3)", TABLES, |r| {
            r.get(0)
        })
        .context("reading the SQLite schema")?;
    if found != TABLES.len() as i64 {
        return Err(Error::new(
            ErrorKind::Permanent,
            format!(
                "{} has the counters application id but lacks some of the tables {TABLES:?}; it was damaged by hand",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// The error for a file that could not even be read or locked.
fn refused(path: &Path, error: rusqlite::Error, what: &str) -> Error {
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => Error::new(
            ErrorKind::Permanent,
            format!("{} is not an SQLite database; refusing to touch it", path.display()),
        )
        .with_source(error),
        _ => from_sqlite(&format!("opening {}: {what}", path.display()), error),
    }
}
