//! Opening and configuring connections to the store's file.

use std::path::Path;

use counter_core::{Error, ErrorKind, Result};
use rusqlite::{Connection, OpenFlags};
use tracing::warn;

use crate::errors::Context;
use crate::options::SqliteOptions;
use crate::schema;

/// Prepared statements kept per connection (the store uses about a dozen).
const STATEMENT_CACHE: usize = 32;

/// Opens the write connection: checks (and creates or migrates) the schema,
/// then turns on WAL and `synchronous = NORMAL`. The file is not modified
/// when the schema check refuses it.
pub(crate) fn open_writer(path: &Path, options: &SqliteOptions) -> Result<Connection> {
    let mut conn = open_file(path, options, OpenFlags::SQLITE_OPEN_CREATE)?;
    schema::ensure(&mut conn, path)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).context("turning on WAL mode")?;
    if !mode.eq_ignore_ascii_case("wal") {
        warn!(path = %path.display(), mode, "SQLite could not use WAL mode; readers will wait for writers");
    }
    conn.pragma_update(None, "synchronous", "NORMAL").context("setting synchronous = NORMAL")?;
    Ok(conn)
}

/// Opens a read connection to a file the writer has already checked.
pub(crate) fn open_reader(path: &Path, options: &SqliteOptions) -> Result<Connection> {
    let conn = open_file(path, options, OpenFlags::empty())?;
    conn.pragma_update(None, "query_only", true).context("making a read connection read-only")?;
    Ok(conn)
}

fn open_file(path: &Path, options: &SqliteOptions, extra: OpenFlags) -> Result<Connection> {
    // No SQLITE_OPEN_URI: a path is always a plain file name.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | extra;
    // Whatever the cause (a missing directory, permissions, a full disk),
    // a file that cannot be opened is a configuration problem that
    // retrying will not fix.
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        Error::new(ErrorKind::Permanent, format!("cannot open the SQLite file {}", path.display())).with_source(e)
    })?;
    conn.busy_timeout(options.busy_timeout).context("setting the busy timeout")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}
