//! A whole [`Counters`] handle opened by URL or from the environment, with
//! the spill journal that belongs to its store.

use std::future::Future;

use counter_core::{CacheLayer, Counters, CountersBuilder, DurableStore, Result};

use crate::url::{
    cache_from_url, cache_url_from_env, default_journal, journal_from_env, store_from_url, store_url_from_env,
};

/// A builder over the backends two URLs name, with the store's default
/// spill journal (see [`default_journal`]) and otherwise the defaults, to
/// set policies, families and bounds on before `build`.
pub async fn builder_from_urls(cache: &str, store: &str) -> Result<CountersBuilder<dyn CacheLayer, dyn DurableStore>> {
    let journal = default_journal(store);
    Ok(Counters::builder(cache_from_url(cache).await?, store_from_url(store).await?).spill_journal(journal))
}

/// Opening a [`Counters`] handle by URL or from the environment.
///
/// Both open the backends, use the store's spill journal and the default
/// policy (every counter flushed within 10 s), and start the background
/// flusher, so they need a Tokio runtime. Use [`builder_from_urls`] for
/// other settings.
///
/// ```no_run
/// # async fn demo() -> counters::Result<()> {
/// use counters::{Counters, FromUrls, Key};
///
/// // COUNTERS_CACHE and COUNTERS_STORE, or memory:// and sqlite://counters.sqlite.
/// let counters = Counters::from_env().await?;
/// counters.incr(&Key::new("clicks", "ad42")?, 1).await?;
/// counters.shutdown().await?;
/// # Ok(()) }
/// ```
pub trait FromUrls: Sized {
    /// Opens the cache and the store the URLs name (see [`cache_from_url`]
    /// and [`store_from_url`]), with the store's default spill journal.
    fn from_urls(cache: &str, store: &str) -> impl Future<Output = Result<Self>> + Send;

    /// Opens the backends `COUNTERS_CACHE` and `COUNTERS_STORE` name
    /// (default `memory://` and `sqlite://counters.sqlite`), with the spill
    /// journal `COUNTERS_JOURNAL` names (default: the store's).
    fn from_env() -> impl Future<Output = Result<Self>> + Send;
}

impl FromUrls for Counters {
    async fn from_urls(cache: &str, store: &str) -> Result<Self> {
        builder_from_urls(cache, store).await?.build()
    }

    async fn from_env() -> Result<Self> {
        let (cache, store) = (cache_url_from_env(), store_url_from_env());
        let journal = journal_from_env(&store);
        builder_from_urls(&cache, &store).await?.spill_journal(journal).build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use counter_core::{ErrorKind, Key};

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn from_urls_opens_both_backends_and_their_journal() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.sqlite");
        let url = format!("sqlite://{}", file.display());
        let counters = Counters::from_urls("memory://", &url).await.unwrap();
        assert_eq!(counters.cache().capabilities().name, "memory");
        assert_eq!(counters.store().capabilities().name, "sqlite");
        let key = Key::new("clicks", "ad42").unwrap();
        let clone = counters.clone();
        clone.incr(&key, 2).await.unwrap();
        counters.incr(&key, 3).await.unwrap();
        drop(clone);
        counters.shutdown().await.unwrap();
        let store = store_from_url(&url).await.unwrap();
        assert_eq!(store.get_many(std::slice::from_ref(&key)).await.unwrap(), vec![Some(5)]);
    }

    #[tokio::test]
    async fn from_urls_refuses_a_bad_url_before_opening_anything() {
        let e = Counters::from_urls("memory://", "ftp://x").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        let e = Counters::from_urls("nope", "memory://").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    }
}
