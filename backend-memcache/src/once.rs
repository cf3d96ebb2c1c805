//! Idempotent increments on memcached, which cannot change two items in one
//! step: the call first takes its key (an `add` of a "pending" record, which
//! only one caller wins), then adds to the total, then sets the record to
//! the new total. A repeat that finds the record pending waits for it; one
//! that finds it final answers it.
//!
//! A call whose add failed in a way that may have reached the server (a
//! connection that broke) leaves the record pending: the key stays taken
//! for the retention, and repeats fail with "in progress" instead of risking
//! a second count. So on memcached a keyed increment counts at most once,
//! and exactly once unless the link to memcached broke mid-call.

use std::time::Duration;

use counter_core::{CacheIncr, CacheIncrOnce, Cell, Error, ErrorKind, Key, Once, Result, decode_record, encode_record};
use tracing::warn;

use crate::cache::MemcacheCache;
use crate::client::{Pipeline, Status};
use crate::layout::{encode, fnv1a_128, raw_id};

/// The value of a record whose call has not answered yet.
const PENDING: &[u8] = b"pending";

/// How long a repeat waits for a pending record to be answered.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(2);

impl MemcacheCache {
    fn once_record(&self, key: &Key, idempotency_key: &str) -> String {
        let counter = encode(&raw_id(&Cell::Counter(key.clone())));
        format!("{}o{:032x}:{counter}", self.layout.space(), fnv1a_128(idempotency_key.as_bytes()))
    }

    /// See [`CacheLayer::incr_once`](counter_core::CacheLayer::incr_once).
    pub(crate) async fn add_once(&self, key: &Key, delta: i64, once: &Once) -> Result<CacheIncrOnce> {
        let record = self.once_record(key, &once.key);
        let ttl = format!("T{}", once.retention.as_secs().max(1));
        let started = tokio::time::Instant::now();
        loop {
            let mut p = Pipeline::new();
            p.set(&record, PENDING, &format!("ME {ttl}"));
            let taken = self.client.run(&p).await?.remove(0);
            if taken.check()?.status != Status::NotStored {
                return self.add_taken(key, delta, once, &record, &ttl).await;
            }
            let mut p = Pipeline::new();
            p.get(&record, "v");
            let seen = self.client.run(&p).await?.remove(0);
            match seen.check()?.value.as_deref() {
                // Gone meanwhile (the first call found nothing to add to): take it.
                None if started.elapsed() < WAIT_FOR_FIRST => continue,
                None => {
                    return Err(Error::new(ErrorKind::Unavailable, "could not take an idempotency key in memcached")
                        .with_key(key));
                }
                Some(PENDING) if started.elapsed() < WAIT_FOR_FIRST => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Some(PENDING) => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        "an increment with this idempotency key is in progress, or its process lost memcached \
                         before recording its answer; it counted at most once; retry later",
                    )
                    .with_key(key));
                }
                Some(value) => {
                    let text = String::from_utf8_lossy(value);
                    let (fingerprint, total) = decode_record(&text).ok_or_else(|| {
                        Error::new(ErrorKind::Permanent, format!("unexpected idempotency record {text:?} in memcached"))
                            .with_key(key)
                    })?;
                    return Ok(CacheIncrOnce::Repeated { total, fingerprint });
                }
            }
        }
    }

    /// The key is this call's: adds, then records the answer.
    async fn add_taken(&self, key: &Key, delta: i64, once: &Once, record: &str, ttl: &str) -> Result<CacheIncrOnce> {
        match self.add_to_total(key, delta).await.map_err(|e| e.or_key(key)) {
            Ok(CacheIncr::Applied { total, pending }) => {
                let mut p = Pipeline::new();
                p.set(record, encode_record(once.fingerprint, total).as_bytes(), ttl);
                let answered = self.client.run(&p).await.and_then(|r| r[0].check().map(|_| ()));
                if let Err(e) = answered {
                    // Counted: repeats find it pending and fail rather than count again.
                    warn!(key = %key, error = %e, "could not record the answer of a keyed increment");
                }
                Ok(CacheIncrOnce::Applied { total, pending })
            }
            Ok(CacheIncr::Missing) => {
                self.release(record).await?;
                Ok(CacheIncrOnce::Missing)
            }
            Err(e) if !e.is_transient() => {
                // A refusal changed nothing: the key is free again.
                self.release(record).await?;
                Err(e)
            }
            // It may have reached the server: the key stays taken.
            Err(e) => Err(e),
        }
    }

    async fn release(&self, record: &str) -> Result<()> {
        let mut p = Pipeline::new();
        p.delete(record, "");
        self.client.run(&p).await?[0].check()?;
        Ok(())
    }

    /// See [`CacheLayer::forget_once`](counter_core::CacheLayer::forget_once).
    pub(crate) async fn forget_key(&self, key: &Key, idempotency_key: &str) -> Result<()> {
        self.release(&self.once_record(key, idempotency_key)).await
    }
}
