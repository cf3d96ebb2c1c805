//! Mapping of SQLite errors onto the library's error kinds: transient
//! conditions (a lock held too long, a full disk) become
//! [`ErrorKind::Unavailable`], everything that retrying cannot fix becomes
//! [`ErrorKind::Permanent`].

use counter_core::{Error, ErrorKind};
use rusqlite::ErrorCode;

/// Whether an SQLite error may go away if the operation is retried.
///
/// - busy / locked: another connection holds the write lock past the busy
///   timeout;
/// - disk full: space can be freed without touching the store, and the
///   pending deltas wait in the cache meanwhile (the engine retries with
///   backoff and applies backpressure), which is better than failing for good;
/// - out of memory, an interrupted statement, a schema change seen by a
///   prepared statement, an I/O error (network file systems, a volume being
///   remounted).
///
/// Corruption, a read-only or unopenable file, permission and
/// not-a-database errors, and SQL or type errors are permanent.
pub(crate) fn is_transient(error: &rusqlite::Error) -> bool {
    match error.sqlite_error_code() {
        Some(code) => matches!(
            code,
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::OutOfMemory
                | ErrorCode::OperationInterrupted
                | ErrorCode::SchemaChanged
                | ErrorCode::SystemIoFailure
        ),
        None => false,
    }
}

/// Converts an SQLite error met while doing `what` into the library's error.
pub(crate) fn from_sqlite(what: &str, error: rusqlite::Error) -> Error {
    let kind = if is_transient(&error) { ErrorKind::Unavailable } else { ErrorKind::Permanent };
    let message = match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            format!("{what}: the SQLite database stayed locked past the busy timeout")
        }
        Some(ErrorCode::DiskFull) => format!("{what}: the disk holding the SQLite file is full"),
        Some(ErrorCode::DatabaseCorrupt) => format!("{what}: the SQLite file is corrupt"),
        Some(ErrorCode::NotADatabase) => format!("{what}: the file is not an SQLite database"),
        Some(ErrorCode::ReadOnly) => format!("{what}: the SQLite file is read-only"),
        _ => format!("{what}: SQLite failed"),
    };
    Error::new(kind, message).with_source(error)
}

/// An extension to name what failed on `rusqlite` results.
pub(crate) trait Context<T> {
    /// Converts the error, saying what was being done.
    fn context(self, what: &str) -> counter_core::Result<T>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn context(self, what: &str) -> counter_core::Result<T> {
        self.map_err(|e| from_sqlite(what, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn busy_and_full_are_transient_corruption_is_not() {
        let busy = from_sqlite("applying a batch", failure(rusqlite::ffi::SQLITE_BUSY));
        assert_eq!(busy.kind(), ErrorKind::Unavailable);
        assert!(busy.to_string().contains("busy timeout"), "{busy}");
        let locked = from_sqlite("x", failure(rusqlite::ffi::SQLITE_LOCKED));
        assert_eq!(locked.kind(), ErrorKind::Unavailable);
        let full = from_sqlite("x", failure(rusqlite::ffi::SQLITE_FULL));
        assert_eq!(full.kind(), ErrorKind::Unavailable);
        for code in [
            rusqlite::ffi::SQLITE_CORRUPT,
            rusqlite::ffi::SQLITE_READONLY,
            rusqlite::ffi::SQLITE_NOTADB,
            rusqlite::ffi::SQLITE_CANTOPEN,
            rusqlite::ffi::SQLITE_PERM,
        ] {
            assert_eq!(from_sqlite("x", failure(code)).kind(), ErrorKind::Permanent);
        }
        let text = from_sqlite("x", rusqlite::Error::InvalidQuery);
        assert_eq!(text.kind(), ErrorKind::Permanent);
        assert!(!text.to_string().contains('\n'));
    }
}
