//! [`SqliteStore`]: the [`DurableStore`] implementation, its connections,
//! and the hop from async callers to blocking SQLite calls.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use counter_core::{
    ApplyOutcome, Batch, CleanReport, DurableStore, Error, ErrorKind, Key, ListQuery, Precision, Result,
    StoreCapabilities,
};
use rusqlite::Connection;
use tracing::{debug, info, warn};

use crate::errors::from_sqlite;
use crate::options::SqliteOptions;
use crate::{apply, connection, read, remove, url};

/// Most entries worth putting in one batch: one batch is one write
/// transaction, which holds the file's write lock while it runs.
pub const MAX_BATCH: usize = 5_000;

/// A [`DurableStore`] in an SQLite file: embedded, durable, and shareable by
/// several processes on one machine.
///
/// Every batch is applied in one `BEGIN IMMEDIATE` transaction that also
/// records its identity, so a batch is applied exactly once however often
/// it is retried, by this process or another one. See the crate's README for
/// the schema, the concurrency model and the durability settings.
///
/// All SQLite work runs on Tokio's blocking thread pool
/// ([`tokio::task::spawn_blocking`]), never on the async worker threads: the
/// async methods need a Tokio runtime. One write connection serialises this
/// process's writes; reads use a few read connections (see
/// [`SqliteOptions::readers`]) and, thanks to WAL, never wait for writers.
///
/// Cloning is cheap and shares the connections.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    options: SqliteOptions,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    applied_since_prune: AtomicU64,
}

impl SqliteStore {
    /// Opens (or creates) the store at `path` with default options.
    ///
    /// Creates the schema in a new or empty file and migrates an older one.
    /// A file that is not an SQLite database, belongs to another application
    /// or has a newer schema version gets a
    /// [`Permanent`](ErrorKind::Permanent) error and is left untouched.
    /// Runs on the blocking thread pool, so it needs a Tokio runtime.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        SqliteStore::open_with(path, SqliteOptions::default()).await
    }

    /// Opens (or creates) the store at `path` with `options`; see
    /// [`open`](Self::open).
    pub async fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        blocking(move || SqliteStore::open_blocking(path, options)).await
    }

    /// Opens the store named by a URL of the form `sqlite://PATH[?options]`
    /// (`sqlite:///var/lib/counters.db` for an absolute path,
    /// `sqlite://counters.db` for a relative one). Options:
    /// `busy_timeout` (a duration: `500ms`, `5s`) and `readers` (read
    /// connections); the others keep their defaults. A malformed URL or an
    /// unknown option is a [`Config`](ErrorKind::Config) error.
    pub async fn from_url(url: &str) -> Result<SqliteStore> {
        let (path, options) = url::parse(url)?;
        SqliteStore::open_with(path, options).await
    }

    /// Opens the store like [`open_with`](Self::open_with) but on the
    /// calling thread, for code outside an async runtime. Do not call it on
    /// an async worker thread: it does file I/O and may wait up to the busy
    /// timeout for a lock.
    pub fn open_blocking(path: impl AsRef<Path>, options: SqliteOptions) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        let writer = connection::open_writer(&path, &options)?;
        let readers = (0..options.readers.max(1))
            .map(|_| connection::open_reader(&path, &options).map(Mutex::new))
            .collect::<Result<Vec<_>>>()?;
        match apply::forget_old_ids(&writer, options.batch_retention) {
            Ok(n) if n > 0 => debug!(forgotten = n, "forgot old batch identities"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "could not forget old batch identities"),
        }
        info!(path = %path.display(), "SQLite counter store open");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                options,
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
                applied_since_prune: AtomicU64::new(0),
            }),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The options it was opened with.
    pub fn options(&self) -> &SqliteOptions {
        &self.inner.options
    }

    /// Number of batch identities remembered (split markers included).
    pub async fn applied_batches(&self) -> Result<u64> {
        self.read(|conn| {
            let n: i64 = conn
                .query_row("SELECT count(*) FROM applied_batches", [], |r| r.get(0))
                .map_err(|e| from_sqlite("counting batch identities", e))?;
            Ok(n as u64)
        })
        .await
    }

    /// Forgets now the identities of batches applied longer ago than
    /// [`SqliteOptions::batch_retention`] (this also happens at open and
    /// every [`SqliteOptions::prune_every`] applied batches). Returns how
    /// many were forgotten.
    pub async fn forget_old_batches(&self) -> Result<u64> {
        let retention = self.inner.options.batch_retention;
        self.write(move |conn| apply::forget_old_ids(conn, retention).map(|n| n as u64)).await
    }

    /// Runs `f` with the write connection on the blocking pool.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        blocking(move || f(&mut lock(&inner.writer))).await
    }

    /// Runs `f` with a read connection on the blocking pool: a free one if
    /// there is one, else the next in turn.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        blocking(move || {
            let readers = &inner.readers;
            let first = inner.next_reader.fetch_add(1, Relaxed) % readers.len();
            let free =
                (0..readers.len()).map(|i| &readers[(first + i) % readers.len()]).find_map(|m| match m.try_lock() {
                    Ok(guard) => Some(guard),
                    Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                    Err(std::sync::TryLockError::WouldBlock) => None,
                });
            let mut conn = match free {
                Some(guard) => guard,
                None => lock(&readers[first]),
            };
            f(&mut conn)
        })
        .await
    }
}

/// Locks a connection. A panic while it was held rolled back any open
/// transaction (rusqlite's `Transaction` rolls back on drop), so the
/// connection is still usable.
fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs blocking SQLite work off the async worker threads.
async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => {
            Err(Error::new(ErrorKind::Unavailable, "the SQLite call was cancelled: the runtime is shutting down")
                .with_source(e))
        }
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl DurableStore for SqliteStore {
    fn capabilities(&self) -> StoreCapabilities {
        let mut caps = StoreCapabilities::new("sqlite");
        caps.durable = true;
        caps.shared = true;
        caps.max_batch = MAX_BATCH;
        caps
    }

    async fn apply(&self, batch: &Batch) -> Result<ApplyOutcome> {
        let batch = batch.clone();
        let inner = self.inner.clone();
        self.write(move |conn| {
            let outcome = apply::apply(conn, &batch)?;
            let options = &inner.options;
            if outcome == ApplyOutcome::Applied
                && inner.applied_since_prune.fetch_add(1, Relaxed) + 1 >= options.prune_every
            {
                inner.applied_since_prune.store(0, Relaxed);
                // Best effort: the batch is applied whatever happens here.
                match apply::forget_old_ids(conn, options.batch_retention) {
                    Ok(n) if n > 0 => debug!(forgotten = n, "forgot old batch identities"),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "could not forget old batch identities"),
                }
            }
            Ok(outcome)
        })
        .await
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<i64>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = keys.to_vec();
        self.read(move |conn| read::get_many(conn, &keys)).await
    }

    async fn delete(&self, key: &Key) -> Result<bool> {
        let key = key.clone();
        self.write(move |conn| remove::delete(conn, &key)).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<(Key, i64)>> {
        let query = query.clone();
        self.read(move |conn| read::list(conn, &query)).await
    }

    async fn series(&self, key: &Key, precision: Precision, from: i64, to: i64) -> Result<Vec<(i64, i64)>> {
        if from > to {
            return Ok(Vec::new());
        }
        let key = key.clone();
        self.read(move |conn| read::series(conn, &key, precision, from, to)).await
    }

    async fn clean(&self, precision: Precision, cutoff: i64) -> Result<CleanReport> {
        self.write(move |conn| remove::clean(conn, precision, cutoff)).await
    }
}
