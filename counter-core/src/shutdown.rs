//! `Counters::shutdown`: stop admitting calls, wait for the ones in flight,
//! drain, and, when the store does not take everything, keep it: in the
//! spill journal, or in the shared cache.

use std::time::Duration;

use tracing::{error, info, warn};

use crate::cache::CacheLayer;
use crate::counters::Counters;
use crate::error::{Error, ErrorKind, Result};
use crate::report::FlushReport;
use crate::store::DurableStore;

impl<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> Counters<C, S> {
    /// Stops admitting calls (they fail with [`ShutDown`](ErrorKind::ShutDown)),
    /// waits for the calls in flight, stops the background flusher, drains
    /// every pending delta to the store and reports what it flushed.
    ///
    /// When the store does not take everything within the shutdown timeout
    /// (it is down, hangs, or refuses cells), nothing is dropped:
    ///
    /// - with an in-process cache and a [spill journal](CountersBuilder::spill_journal),
    ///   what is left is written to the journal, the handle closes, and the
    ///   error is [`Deferred`](ErrorKind::Deferred), naming the file: the
    ///   next handle over the journal lands it;
    /// - with a shared cache, what is left stays in the shared cache (other
    ///   processes' flushers, or the next start, land it), the handle
    ///   closes, and the error is [`Deferred`](ErrorKind::Deferred) too;
    /// - with an in-process cache and no journal, the handle stays open for
    ///   another `shutdown` (calls stay refused), and the error is the
    ///   store's.
    ///
    /// Once closed, further calls fail with [`ShutDown`](ErrorKind::ShutDown).
    pub async fn shutdown(&self) -> Result<FlushReport> {
        let engine = &*self.engine;
        // Clones that shut down at once: the second waits, then finds it closed.
        let _one = self.background.shutting_down.lock().await;
        if engine.is_closed() {
            return Err(Error::new(ErrorKind::ShutDown, "the counters handle was shut down"));
        }
        engine.gate.close().await;
        let task = self.background.stop();
        if let Some(mut task) = task {
            // A pass stuck on a hung store is not worth waiting for: what it
            // holds is in the backlog, and landing it again is a no-op.
            if tokio::time::timeout(Duration::from_secs(1), &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
        let drained = match tokio::time::timeout(engine.config.shutdown_timeout, engine.flush_all(false, false)).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorKind::Unavailable,
                format!("the store did not take every pending delta within {:?}", engine.config.shutdown_timeout),
            )),
        };
        let result = match drained {
            Ok(report) => {
                engine.close();
                info!(
                    batches = report.batches,
                    counters = report.counters,
                    slices = report.slices,
                    "counters shut down, pending deltas flushed"
                );
                Ok(report)
            }
            Err(e) => self.undelivered(e).await,
        };
        let _ = engine.refresh_gauges().await;
        result
    }

    /// What shutdown does with what the store did not take (see
    /// [`shutdown`](Self::shutdown)).
    async fn undelivered(&self, cause: Error) -> Result<FlushReport> {
        let engine = &*self.engine;
        let shared = engine.cache.capabilities().shared;
        let (batches, cells) = engine.backlog_size();
        let spilled = match engine.spill(!shared).await {
            Ok(spilled) => spilled,
            Err(e) => {
                error!(error = %e, cause = %cause, "could not write the spill journal: call shutdown again");
                return Err(e.with_source(cause));
            }
        };
        let journal = match &spilled {
            Some((path, batches, cells)) => {
                format!("; {batches} batches of {cells} cells were written to the spill journal {}", path.display())
            }
            None => String::new(),
        };
        if shared {
            // What the cache records as claims, other flushers land; what it
            // lost the records of is only safe in a journal.
            let recorded = spilled.is_some() || engine.backlog_recorded_in_cache().await.unwrap_or(false);
            if !recorded {
                warn!(error = %cause, "counters hold batches the shared cache lost track of, and no spill journal: call shutdown again");
                return Err(cause);
            }
            engine.close();
            let e = Error::new(
                ErrorKind::Deferred,
                format!(
                    "shut down with deltas the store did not take ({cause}); they are held in the shared {} cache \
                     ({batches} claimed batches of {cells} cells, and the cells still pending), where other \
                     processes' flushers or the next start land them{journal}",
                    engine.cache.capabilities().name
                ),
            )
            .with_source(cause);
            warn!(error = %e, "counters shut down without draining");
            return Err(e);
        }
        match spilled {
            Some(_) => {
                engine.close();
                let e = Error::new(
                    ErrorKind::Deferred,
                    format!(
                        "shut down with deltas the store did not take ({cause}){journal}, which the next start \
                         replays"
                    ),
                )
                .with_source(cause);
                warn!(error = %e, "counters spilled what the store did not take");
                Err(e)
            }
            None if engine.journal_dir().is_none() => {
                warn!(error = %cause, "counters could not drain and have no spill journal: call shutdown again");
                Err(cause)
            }
            // Nothing was left to spill after all.
            None => {
                engine.close();
                Ok(FlushReport::default())
            }
        }
    }
}
