//! Core of the `counters` library: real-time counters incremented in a fast
//! cache and written behind to a durable store **exactly once**.
//!
//! - [`Key`] and [`Error`]: the key model (namespace + hierarchical name,
//!   validated before any backend is touched) and the one error type.
//! - [`CacheLayer`] and [`DurableStore`]: the two traits a backend
//!   implements; object-safe, with `Send` futures.
//! - [`Counters`]: the handle users call, with the write-behind engine
//!   behind it (policies, coalescing, retries, claim recovery, backpressure,
//!   time-sliced counters, metrics).
//! - [`MemoryCache`] and [`MemoryStore`]: in-memory reference backends.
//!
//! The guarantees are stated in the workspace README and proved by
//! the `conformance` crate against every backend combination.
#![deny(missing_docs)]

mod background;
mod backlog;
mod batch;
mod cache;
mod cell;
mod cold_reads;
pub mod combining;
mod config;
mod converge;
mod counters;
mod engine;
mod error;
mod flushing;
mod gate;
mod idempotency;
mod key;
mod landing;
pub mod memory;
mod metrics;
mod policy;
mod redact;
mod report;
mod shutdown;
mod spill;
mod spilling;
mod store;
/// Fault injection for tests (cargo feature `testing`): never in a
/// production build.
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod timeslice;
mod url_params;

pub use batch::{ApplyOutcome, Batch, BatchEntry, BatchId, now_ms};
pub use cache::{CacheCapabilities, CacheIncr, CacheLayer, CacheStats, CachedValue, DirtyCell};
pub use cell::{Cell, Precision, SliceId};
pub use combining::{CombiningCache, CombiningOptions};
pub use config::{BackpressureMode, RetryPolicy};
pub use counters::{Counters, CountersBuilder, FlushOptions, IncrOptions};
pub use error::{Error, ErrorKind, Result};
pub use idempotency::{
    CacheIncrOnce, DEFAULT_IDEMPOTENCY_RETENTION, MAX_IDEMPOTENCY_KEY_BYTES, MAX_IDEMPOTENCY_RETENTION, Once,
    check_idempotency_key, decode_record, encode_record,
};
pub use key::{Key, MAX_NAME_BYTES, MAX_NAMESPACE_BYTES};
pub use memory::{MemoryCache, MemoryStore};
pub use metrics::MetricsSnapshot;
pub use policy::{DEFAULT_INTERVAL, Families, Family, Policy};
pub use redact::{redact_url, redact_urls_in};
pub use report::{FlushReport, HeldCell};
pub use store::{CleanReport, DurableStore, ListOrder, ListQuery, StoreCapabilities};
pub use timeslice::{
    DEFAULT_PRECISIONS, DEFAULT_SAMPLES, MAX_EPOCH_SECS, MAX_SERIES_BUCKETS, MIN_EPOCH_SECS, TimeSlices, bucket_count,
    checked_epoch_secs, epoch_secs, epoch_time,
};
pub use url_params::UrlParams;
