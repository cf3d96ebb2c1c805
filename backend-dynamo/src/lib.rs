//! DynamoDB durable store for the counters library.
//!
//! [`DynamoStore`] keeps counters in the table layout of Python's
//! `distributed_counter` package (string hash key `key`, number
//! `counter_value`), so services in either language share counters, and
//! applies every flush batch exactly once with one transaction that also
//! writes a marker for the batch identity.
//!
//! ```no_run
//! # async fn demo() -> counter_core::Result<()> {
//! let store = backend_dynamo::DynamoStore::connect("dynamodb://counters?region=eu-west-1").await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod errors;
mod numbers;
mod store;
mod tables;
mod target;

pub use store::{DynamoOptions, DynamoStore, MAX_BATCH};
pub use target::DynamoTarget;
