//! The suite on every cache x store pair compiled in: each test opens its
//! backends fresh (a key prefix, a table or a file of its own) on the
//! servers `scripts/test` starts. Tests are named
//! `<cache>::<store>::{concrete,dyn_dispatch}::<case>`.

conformance::conformance_matrix! {
    caches: [
        memory,
        #[cfg(feature = "redis")]
        redis,
        #[cfg(feature = "redis")]
        redis_cluster,
        #[cfg(feature = "memcache")]
        memcache,
    ],
    stores: [
        memory,
        #[cfg(feature = "sqlite")]
        sqlite,
        #[cfg(feature = "redis")]
        redis_store,
        #[cfg(feature = "dynamo")]
        dynamo,
    ],
}
