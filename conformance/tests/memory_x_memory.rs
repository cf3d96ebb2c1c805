//! The suite on the in-process reference backends: MemoryCache x MemoryStore.

use std::sync::Arc;

use conformance::Backends;
use counter_core::{MemoryCache, MemoryStore};

async fn setup() -> Option<Backends<MemoryCache, MemoryStore>> {
    Some(Backends::new(Arc::new(MemoryCache::new()), Arc::new(MemoryStore::new())))
}

conformance::conformance_suite!(setup);
