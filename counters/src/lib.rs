//! Real-time counters: count clicks, impressions, API calls and A/B results
//! at rates no database takes one write per event, without losing or
//! double-counting them.
//!
//! This facade re-exports [`counter_core`] and, behind cargo features, each
//! backend crate.
#![deny(missing_docs)]

pub use counter_core::*;
