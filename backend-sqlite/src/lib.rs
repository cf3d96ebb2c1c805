//! SQLite durable store for the counters library.
//!
//! [`SqliteStore`] implements [`counter_core::DurableStore`] over one SQLite
//! file: the embedded default store, durable across restarts and shareable
//! by several processes on one machine. Each flush batch is applied in one
//! transaction together with the record of its identity, so it lands exactly
//! once however often it is retried.
//!
//! ```no_run
//! # async fn demo() -> counter_core::Result<()> {
//! use std::sync::Arc;
//! use backend_sqlite::SqliteStore;
//! use counter_core::{Counters, Key, MemoryCache};
//!
//! let store = SqliteStore::from_url("sqlite:///var/lib/app/counters.db").await?;
//! let counters = Counters::builder(Arc::new(MemoryCache::new()), Arc::new(store)).build()?;
//! counters.incr(&Key::new("clicks", "ad42")?, 1).await?;
//! counters.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! The crate's README describes the schema, the URL form, how exactly-once
//! holds, concurrency and durability settings.
#![deny(missing_docs)]

mod apply;
mod connection;
mod errors;
mod options;
mod read;
mod remove;
mod schema;
mod store;
mod url;

pub use options::SqliteOptions;
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use store::{MAX_BATCH, SqliteStore};
