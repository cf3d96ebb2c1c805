//! memcached cache layer for the counters library.
//!
//! [`MemcacheCache`] is a [`CacheLayer`](counter_core::CacheLayer) shared by
//! every process that points at the same memcached server and key prefix,
//! built from a URL: `memcache://host:port[?prefix=P]`.
//!
//! memcached is fast, shared and lossy by design; this crate hides its
//! sharp edges:
//!
//! - its counters are unsigned 64-bit (`decr` saturates, `incr` wraps):
//!   totals are stored with an offset of 2^63 and every change is an
//!   `incr` whose wrap shows in the reply and is undone (or, for deltas of
//!   2^62 and more, a compare-and-swap), so totals and deltas are exact
//!   signed i64s and an overflow is a typed error that changes nothing;
//! - it cannot list keys: a shared dirty index (append-only lists per time
//!   window, written ahead of every change) and a claims index let any
//!   process find every pending delta and every open claim;
//! - it has no transactions: claims go through claim slots that only one
//!   batch can commit (add and compare-and-swap), so two flushers never
//!   flush a delta twice and a claim whose maker died is recovered by
//!   another process;
//! - keys are at most 250 printable bytes: any valid counter key maps
//!   injectively to a safe key (percent-encoded, or hashed when long, with
//!   the full key kept in the value and checked), so no key can inject a
//!   command;
//! - a cached counter is rebased on the store's value (convergence) by an
//!   offset kept in its flushed-mark entry: one compare-and-swap shifts the
//!   reported total and mark together, proposed first so that increments of
//!   every process keep the shifted total in range;
//! - it evicts entries one by one: a counter that lost its total or its
//!   flushed mark counts as lost and is reloaded from the store, which
//!   only ever receives deltas.
//!
//! The client is this crate's own: a small async client of the meta
//! protocol over tokio TCP streams (see the README for why). It needs
//! memcached 1.6 or later.
#![deny(missing_docs)]

mod cache;
mod claims;
mod client;
mod dirty;
#[cfg(feature = "testing")]
mod faults;
mod last_listing;
mod layout;
mod lineage;
mod once;
mod options;
mod rebase;
mod values;

pub use cache::MemcacheCache;
pub use options::{MAX_PREFIX_BYTES, MemcacheCacheOptions, MemcacheTarget};
