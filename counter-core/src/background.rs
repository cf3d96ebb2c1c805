//! The background flusher of a [`Counters`](crate::Counters) handle and its
//! clones: started by the builder, stopped by `shutdown`, or aborted when
//! the last clone is dropped.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{Instrument, info_span, warn};

use crate::cache::CacheLayer;
use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::store::DurableStore;

/// The flusher task every clone of one handle shares.
pub(crate) struct Background<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> {
    engine: Arc<Engine<C, S>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Held by a `shutdown` in progress: clones shut down one at a time.
    pub(crate) shutting_down: tokio::sync::Mutex<()>,
}

impl<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> Background<C, S> {
    /// Starts the flusher of `engine` (if its configuration wants one) in a
    /// `tracing` span named `counters_flusher` with the backends' names.
    pub(crate) fn start(engine: Arc<Engine<C, S>>) -> Result<Self> {
        let (stop, stopped) = watch::channel(false);
        let task = if engine.config.background {
            let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
                Error::new(ErrorKind::Config, "the background flusher needs a Tokio runtime").with_source(e)
            })?;
            let span = info_span!(
                "counters_flusher",
                cache = engine.cache.capabilities().name,
                store = engine.store.capabilities().name,
            );
            Some(runtime.spawn(engine.clone().run(stopped).instrument(span)))
        } else {
            None
        };
        Ok(Background { engine, stop, task: Mutex::new(task), shutting_down: tokio::sync::Mutex::new(()) })
    }

    /// Tells the flusher to stop and hands over its task, if it still runs.
    pub(crate) fn stop(&self) -> Option<JoinHandle<()>> {
        let _ = self.stop.send(true);
        self.task.lock().expect("task lock").take()
    }
}

impl<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> Drop for Background<C, S> {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().ok().and_then(|t| t.take()) {
            task.abort();
        }
        if !self.engine.is_closed() {
            let m = self.engine.metrics.snapshot();
            let (batches, cells) = self.engine.backlog_size();
            warn!(
                increments_accepted = m.increments,
                pending_cells_at_last_reading = m.pending_cells,
                held_batches = batches,
                held_cells = cells,
                "counters dropped without shutdown: pending deltas were not flushed by this handle"
            );
        }
    }
}
