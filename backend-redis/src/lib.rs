//! Redis backends for the counters library.
//!
//! - [`RedisCache`]: a [`CacheLayer`](counter_core::CacheLayer) shared by
//!   every process that points at the same Redis (standalone or Cluster).
//!   An increment is one `BITFIELD` command (a script the first time a
//!   process touches the counter in a lease) that adds to the counter's
//!   total and returns the new cluster-wide total; claims of pending deltas are
//!   atomic and recorded in Redis, so a flusher that dies leaves work
//!   another process recovers.
//! - [`RedisStore`]: a [`DurableStore`](counter_core::DurableStore) on a
//!   standalone Redis (with whatever persistence its operator configures),
//!   applying each batch once, keeping time slices in the layout of
//!   "Redis in Action".
//!
//! Both are built from a URL (see [`RedisTarget`]): `redis://host:port` or
//! `redis+cluster://host:port,host:port`.
#![deny(missing_docs)]

mod cache;
mod cache_layout;
mod cache_scripts;
mod connection;
mod store;
mod target;

pub use cache::{RedisCache, RedisCacheOptions};
pub use store::{RedisStore, RedisStoreOptions};
pub use target::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, RedisTarget};
