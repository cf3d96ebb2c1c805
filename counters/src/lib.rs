//! Real-time counters: count clicks, impressions, API calls and A/B results
//! at rates no database takes one write per event, without losing or
//! double-counting them.
//!
//! This facade re-exports [`counter_core`] and, behind cargo features, each
//! backend crate (`sqlite`, on by default), and opens backends by URL
//! ([`cache_from_url`], [`store_from_url`], [`FromUrls::from_urls`]) or from
//! the environment ([`FromUrls::from_env`]).
//!
//! ```no_run
//! # async fn demo() -> counters::Result<()> {
//! use counters::{Counters, FromUrls, Key};
//!
//! // The embedded default: in-process cache, SQLite file.
//! let counters = Counters::from_urls("memory://", "sqlite://counters.sqlite").await?;
//! counters.incr(&Key::new("clicks", "ad42")?, 1).await?;
//! counters.shutdown().await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The engine's numbers as `metrics` series (cargo feature `metrics`).
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
mod open;
mod url;

pub use counter_core::*;
pub use open::{FromUrls, builder_from_urls};
pub use url::{
    CACHE_ENV, DEFAULT_CACHE_URL, DEFAULT_STORE_URL, JOURNAL_ENV, STORE_ENV, cache_from_url, cache_url_from_env,
    default_journal, journal_from_env, store_from_url, store_url_from_env,
};

/// The SQLite durable store (cargo feature `sqlite`).
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite {
    pub use backend_sqlite::*;
}

/// The Redis backends: a shared cache (standalone or Cluster) and a store.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis {
    pub use backend_redis::*;
}

/// The DynamoDB store.
#[cfg(feature = "dynamo")]
#[cfg_attr(docsrs, doc(cfg(feature = "dynamo")))]
pub mod dynamo {
    pub use backend_dynamo::*;
}

/// The memcached cache.
#[cfg(feature = "memcache")]
#[cfg_attr(docsrs, doc(cfg(feature = "memcache")))]
pub mod memcache {
    pub use backend_memcache::*;
}
