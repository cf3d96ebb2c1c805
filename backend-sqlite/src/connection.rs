//! Opening and configuring connections to the store's file.

use std::path::Path;
use std::time::{Duration, Instant};

use counter_core::{Error, ErrorKind, Result};
use rusqlite::{Connection, ErrorCode, OpenFlags};
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
    let mode = turn_on_wal(&conn, options.busy_timeout)?;
    if !mode.eq_ignore_ascii_case("wal") {
        warn!(path = %path.display(), mode, "SQLite could not use WAL mode; readers will wait for writers");
    }
    conn.pragma_update(None, "synchronous", "NORMAL").context("setting synchronous = NORMAL")?;
    // A flush batch reads and writes thousands of rows under the write
    // lock: with SQLite's default 2 MiB page cache, a table of a few
    // hundred thousand counters is read back from the OS page by page.
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB).context("setting the page cache size")?;
    Ok(conn)
}

/// The write connection's page cache, KiB.
const WRITER_CACHE_KIB: i64 = 32 * 1024;

/// Turns on WAL mode and returns the mode the file is in now.
///
/// Switching a new file to WAL takes its write lock from inside a read, and
/// SQLite answers `SQLITE_BUSY` at once there rather than calling the busy
/// handler (waiting could deadlock), so processes opening a new file
/// together would fail now and then. The switch is retried instead, for at
/// most the busy timeout: each attempt ends its read, so whoever holds the
/// lock can finish.
fn turn_on_wal(conn: &Connection, busy_timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + busy_timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) && Instant::now() + pause < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            result => return result.context("turning on WAL mode"),
        }
    }
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
