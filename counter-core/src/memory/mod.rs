//! In-memory reference backends: [`MemoryCache`], the fast in-process cache,
//! and [`MemoryStore`], a store for tests that is **not durable**.

mod cache;
mod dirty_index;
mod store;

pub use cache::{MAX_REMEMBERED_KEYS, MemoryCache};
pub use store::MemoryStore;
