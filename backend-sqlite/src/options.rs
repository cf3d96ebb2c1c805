//! Settings of a [`SqliteStore`](crate::SqliteStore).

use std::time::Duration;

/// Settings of a [`SqliteStore`](crate::SqliteStore); start from
/// [`SqliteOptions::default`] and change what you need.
///
/// ```
/// use std::time::Duration;
/// use backend_sqlite::SqliteOptions;
///
/// let options = SqliteOptions::default()
///     .busy_timeout(Duration::from_secs(10))
///     .batch_retention(Duration::from_secs(30 * 24 * 3600));
/// assert_eq!(options.readers, 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// How long a statement waits for a lock held by another connection or
    /// process before failing with a transient
    /// [`Unavailable`](counter_core::ErrorKind::Unavailable) error.
    /// Default 5 s.
    pub busy_timeout: Duration,
    /// How long the identity of an applied batch is remembered, counted from
    /// when it was applied. A batch retried after that would be applied
    /// again, so this must exceed the longest time a batch can wait for a
    /// retry (store outages included). Default 7 days.
    pub batch_retention: Duration,
    /// Forgotten batch identities are pruned at open and then once every
    /// this many applied batches. Default 1,000.
    pub prune_every: u64,
    /// Read connections (reads run in parallel with each other and with the
    /// writer). Default 2, at least 1.
    pub readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            busy_timeout: Duration::from_secs(5),
            batch_retention: Duration::from_secs(7 * 24 * 3600),
            prune_every: 1_000,
            readers: 2,
        }
    }
}

impl SqliteOptions {
    /// Sets [`busy_timeout`](Self::busy_timeout).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Sets [`batch_retention`](Self::batch_retention).
    pub fn batch_retention(mut self, retention: Duration) -> Self {
        self.batch_retention = retention;
        self
    }

    /// Sets [`prune_every`](Self::prune_every) (at least 1).
    pub fn prune_every(mut self, applies: u64) -> Self {
        self.prune_every = applies.max(1);
        self
    }

    /// Sets [`readers`](Self::readers) (at least 1).
    pub fn readers(mut self, connections: usize) -> Self {
        self.readers = connections.max(1);
        self
    }
}
