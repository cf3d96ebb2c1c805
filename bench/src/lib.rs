//! Benchmarks of the counters library.
//!
//! The library exists for speed without loss; this crate measures the
//! speed, always against a baseline measured in the same run, so every
//! figure is a ratio that survives a change of machine:
//!
//! - criterion benches of the hot paths (`benches/`);
//! - `counters-load`, a load generator that drives any cache x store
//!   combination ([`run`]), and three scenarios: bytes per counter in the
//!   in-process cache ([`memory_size`]), flush cost against the number
//!   of idle counters ([`flush_scale`]) and listing cost against the dirty
//!   counters of other namespaces ([`list_scale`]).
//!
//! See the crate's README for the commands and `BENCHMARKS.md` at the
//! workspace root for the method and the latest figures.
#![deny(missing_docs)]

pub mod backends;
pub mod counting_store;
pub mod driver;
pub mod flush_scale;
pub mod idempotency_cost;
pub mod latency;
pub mod list_scale;
pub mod machine;
pub mod memcache_raw;
pub mod memory_size;
pub mod pending_age;
pub mod process_cpu;
pub mod process_memory;
pub mod progress;
pub mod redis_benchmark;
#[cfg(feature = "redis")]
pub mod redis_raw;
pub mod report;
pub mod run;
pub mod server_work;
pub mod store_apply;
pub mod targets;
pub mod workload;
