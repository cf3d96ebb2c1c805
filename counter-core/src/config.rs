//! Engine settings, set through [`CountersBuilder`](crate::CountersBuilder).

use std::time::Duration;

use rand::Rng;

use crate::policy::Families;
use crate::timeslice::TimeSlices;

/// Retry of transient store errors: exponential backoff with "equal"
/// jitter. The ceiling doubles from `base` up to `max`, and each pause is
/// drawn uniformly between half the ceiling and the ceiling, so that retries
/// of many flushers spread out but none retries at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per store call, the first included (at least 1).
    pub attempts: u32,
    /// Backoff before the second attempt.
    pub base: Duration,
    /// Longest backoff.
    pub max: Duration,
}

impl RetryPolicy {
    /// The pause before attempt `attempt + 1` (attempt counts from 0).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.base.saturating_mul(1u32 << attempt.min(16)).min(self.max);
        let nanos = ceiling.as_nanos().min(u128::from(u64::MAX)) as u64;
        Duration::from_nanos(rand::rng().random_range(nanos / 2..=nanos.max(1)))
    }
}

impl Default for RetryPolicy {
    /// 5 attempts, 50 ms doubling up to 2 s.
    fn default() -> Self {
        RetryPolicy { attempts: 5, base: Duration::from_millis(50), max: Duration::from_secs(2) }
    }
}

/// What `incr` does when too many cells are pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackpressureMode {
    /// Fail at once with [`ErrorKind::Backpressure`](crate::ErrorKind::Backpressure).
    #[default]
    Error,
    /// Wait up to this long for the flusher to catch up, then fail.
    Wait(Duration),
}

/// Everything the engine is configured with.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) families: Families,
    pub(crate) time_slices: TimeSlices,
    pub(crate) retry: RetryPolicy,
    pub(crate) max_pending_cells: u64,
    pub(crate) backpressure: BackpressureMode,
    pub(crate) claim_lease: Duration,
    pub(crate) tick: Option<Duration>,
    pub(crate) background: bool,
    pub(crate) store_timeout: Duration,
    pub(crate) refused_retry: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) spill_dir: Option<std::path::PathBuf>,
    pub(crate) reconcile_every: Option<Duration>,
    pub(crate) reconcile_limit: usize,
    pub(crate) flush_in_flight: usize,
    pub(crate) idempotency_retention: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            families: Families::default(),
            time_slices: TimeSlices::default(),
            retry: RetryPolicy::default(),
            max_pending_cells: 1_000_000,
            backpressure: BackpressureMode::Error,
            claim_lease: Duration::from_secs(30),
            tick: None,
            background: true,
            store_timeout: Duration::from_secs(10),
            refused_retry: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            spill_dir: None,
            reconcile_every: None,
            reconcile_limit: 10_000,
            flush_in_flight: 2,
            idempotency_retention: crate::idempotency::DEFAULT_IDEMPOTENCY_RETENTION,
        }
    }
}

impl Config {
    /// How often the watched counters are reconciled with the store: the
    /// shortest interval of any family, unless set.
    pub(crate) fn reconcile_every(&self) -> Duration {
        self.reconcile_every.unwrap_or_else(|| self.families.shortest_interval())
    }

    /// Cells asked of the cache per page of dirty cells: enough for every
    /// batch in flight several times over (a page ends the pipeline), and
    /// large because a page is cut into batches in key order: the more
    /// cells it holds, the narrower the key range of each batch.
    pub(crate) fn dirty_page(&self, batch: usize) -> usize {
        batch.saturating_mul(self.flush_in_flight).saturating_mul(10).clamp(10_000, 100_000)
    }

    /// How often the background flusher looks for due counters: a quarter of
    /// the shortest interval, between 5 ms and 1 s, unless set.
    pub(crate) fn tick(&self) -> Duration {
        self.tick.unwrap_or_else(|| {
            (self.families.shortest_interval() / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))
        })
    }
}
